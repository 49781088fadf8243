//! The broker's own thread: the proposer, the Raft core, the state machine and the broker's
//! background tasks run on one single-threaded Tokio runtime, apart from the HTTP workers.
//!
//! A write crosses several tasks between the request and its answer (proposer, Raft core, the
//! log's sync thread, apply, the reply). On a multi-threaded runtime each of those hand-offs may
//! wake another parked worker thread, and on a virtual machine a wake costs tens of
//! microseconds of CPU; on one thread they are plain task wakes. docs/benchmarks.md ("Issue
//! 19") has the figures. Tasks the broker spawns inherit the runtime they are spawned from, so
//! opening the broker here is all it takes.

use std::future::Future;

use anyhow::Context;
use tokio::sync::oneshot;

/// The running thread; dropping it stops the runtime (cancelling what still runs on it) and
/// waits for the thread. Keep it until the broker is shut down.
pub struct CoreThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreThread {
    /// Starts the thread (named `depot-core`) and its runtime.
    pub fn start() -> anyhow::Result<CoreThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("depot-core")
            .build()
            .context("building the broker's runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("depot-core".to_owned())
            .spawn(move || {
                // Spawned tasks run while this waits; the runtime is shut down here, on its
                // own thread, where blocking is allowed, without waiting forever for a
                // blocking task that does not end.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            })
            .context("starting the broker's thread")?;
        Ok(CoreThread { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Runs `future` on the broker's thread (and every task it spawns there) and waits for it
    /// from the caller's runtime.
    pub async fn run<F>(&self, future: F) -> anyhow::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future).await.context("the broker's thread stopped")
    }
}

impl Drop for CoreThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_spawned_on_the_core_thread_stay_on_it() {
        let core = CoreThread::start().expect("start");
        let (outer, inner) = core
            .run(async {
                let outer = std::thread::current().name().map(str::to_owned);
                let inner = tokio::spawn(async { std::thread::current().name().map(str::to_owned) }).await;
                (outer, inner.expect("join"))
            })
            .await
            .expect("run");
        assert_eq!(outer.as_deref(), Some("depot-core"));
        assert_eq!(inner.as_deref(), Some("depot-core"));
        // Dropping it from inside an async context neither panics nor hangs.
        drop(core);
    }
}
