//! Password work on a bounded pool.
//!
//! One argon2id hash takes 19 MiB and tens of milliseconds of one core. Run on tokio's blocking
//! pool without a bound, a flood of logins starts hundreds of threads and holds gigabytes. So at
//! most [`PasswordPool::size`] hashes run at once (by default one per available core); a login
//! that cannot start one within the pool's wait bound answers 503 `overloaded` with
//! `Retry-After`, and the rest of the node (other requests, probes) keeps its threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::AuthError;

/// How long a password check waits for a free worker by default before answering 503.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// One worker per core the process may use but one, which stays free to serve requests while
/// a login flood hashes (at least one worker).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).saturating_sub(1).max(1)
}

/// A bounded pool for CPU- and memory-heavy password work.
#[derive(Debug)]
pub struct PasswordPool {
    permits: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl PasswordPool {
    /// A pool running at most `size` (at least 1) jobs at once; a job waits at most `wait` to
    /// start (zero: it starts at once or not at all).
    pub fn new(size: usize, wait: Duration) -> PasswordPool {
        let size = size.max(1);
        PasswordPool {
            permits: Arc::new(Semaphore::new(size)),
            size,
            wait,
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The most jobs that ever ran at once: never above [`PasswordPool::size`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Runs `work` on the blocking pool once a worker is free, or answers 503 `overloaded` when
    /// none frees up within the wait bound.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        let permit = if self.wait.is_zero() {
            Arc::clone(&self.permits).try_acquire_owned().ok()
        } else {
            tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned()).await.ok().and_then(Result::ok)
        };
        let Some(permit) = permit else {
            return Err(AuthError::Overloaded("too many password checks at once; retry shortly".to_owned()));
        };
        let (running, peak) = (Arc::clone(&self.running), Arc::clone(&self.peak));
        tokio::task::spawn_blocking(move || {
            // Held until the work is done, even when the caller has gone away: the bound is on
            // the work, not on the requests waiting for it.
            let _permit = permit;
            peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let out = work();
            running.fetch_sub(1, Ordering::SeqCst);
            out
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password work: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    /// A gate the jobs block on until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        changed: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.changed.notify_all();
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_runs_at_most_size_jobs_at_once() {
        let pool = Arc::new(PasswordPool::new(2, Duration::from_secs(60)));
        let gate = Arc::new(Gate::default());
        let jobs: Vec<_> = (0..40)
            .map(|i| {
                let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
                tokio::spawn(async move { pool.run(move || gate.wait()).await.map(|()| i) })
            })
            .collect();
        until("both workers are busy", || pool.running() == 2).await;
        // The other 38 wait for a permit instead of taking a blocking thread each.
        assert_eq!(pool.running(), 2);
        gate.open();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(pool.peak(), 2, "never more than the pool's size at once");
        assert_eq!(pool.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_wait_bound_is_overloaded_and_a_freed_worker_serves_again() {
        let pool = Arc::new(PasswordPool::new(1, Duration::ZERO));
        let gate = Arc::new(Gate::default());
        let busy = {
            let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
            tokio::spawn(async move { pool.run(move || gate.wait()).await })
        };
        until("the worker is busy", || pool.running() == 1).await;
        match pool.run(|| ()).await {
            Err(AuthError::Overloaded(_)) => {}
            other => panic!("a full pool past its wait bound must be Overloaded, got {other:?}"),
        }
        gate.open();
        busy.await.unwrap().unwrap();
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
