//! Answers to proposals, handed to each serving thread in one batch per entry.
//!
//! An applied entry answers every proposal in it, from the thread that runs Raft. Sent straight
//! down its oneshot, each answer wakes its proposer's task from that thread, and tokio's
//! current-thread scheduler (an HTTP worker's) writes its eventfd for every such remote wake: one
//! system call per message on a busy node, measured as about one `write` per single POST.
//!
//! A thread that serves requests calls [`serve_this_thread`] once, inside its runtime. Proposals
//! made on that thread then carry its [`Mailbox`]: the answers of one entry are queued there, the
//! thread is woken once, and a task on it hands them out, each proposer woken without a system
//! call. A thread that never called it (tests, the push workers' runtime) is answered directly.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::error::BrokerError;
use crate::raft::Applied;

pub(crate) type Answer = Result<Applied, BrokerError>;
pub(crate) type Reply = oneshot::Sender<Answer>;

/// Answers waiting for one serving thread.
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

struct Queue {
    /// False once the task that hands answers out is gone (its runtime stopped).
    open: bool,
    answers: Vec<(Reply, Answer)>,
    /// Times the thread was woken to hand answers out.
    #[cfg(test)]
    wakes: usize,
}

thread_local! {
    static THIS_THREAD: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

/// Makes the calling thread take the answers to its proposals in batches (see the module doc).
/// Call it once per thread, from inside the runtime that will run that thread's requests; it
/// spawns the task that hands answers out.
///
/// # Panics
/// Outside a Tokio runtime.
pub fn serve_this_thread() {
    let mailbox = Arc::new(Mailbox {
        queue: Mutex::new(Queue {
            open: true,
            answers: Vec::new(),
            #[cfg(test)]
            wakes: 0,
        }),
        ready: Notify::new(),
    });
    let handing = Closing(mailbox.clone());
    tokio::spawn(async move {
        loop {
            handing.0.ready.notified().await;
            let answers = std::mem::take(&mut handing.0.lock().answers);
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
        }
    });
    THIS_THREAD.with(|this| *this.borrow_mut() = Some(mailbox));
}

/// The calling thread's mailbox, if it serves one.
pub(crate) fn this_thread() -> Option<Arc<Mailbox>> {
    THIS_THREAD.with(|this| this.borrow().clone())
}

/// Answers one proposal: through the mailbox of the thread that proposed it, if any.
pub(crate) fn answer(mailbox: Option<&Mailbox>, reply: Reply, answer: Answer) {
    match mailbox {
        Some(mailbox) => mailbox.put(reply, answer),
        None => {
            let _ = reply.send(answer);
        }
    }
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, reply: Reply, answer: Answer) {
        let mut queue = self.lock();
        if !queue.open {
            drop(queue);
            let _ = reply.send(answer);
            return;
        }
        let first = queue.answers.is_empty();
        queue.answers.push((reply, answer));
        #[cfg(test)]
        if first {
            queue.wakes += 1;
        }
        drop(queue);
        if first {
            // A permit is kept if the task is not waiting yet, so no wake is lost.
            self.ready.notify_one();
        }
    }
}

/// Held by the task that hands answers out: when its runtime drops it, the mailbox closes and
/// whatever was queued is answered directly, as every later answer will be.
struct Closing(Arc<Mailbox>);

impl Drop for Closing {
    fn drop(&mut self) {
        let answers = {
            let mut queue = self.0.lock();
            queue.open = false;
            std::mem::take(&mut queue.answers)
        };
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn applied(n: u64) -> Answer {
        Err(BrokerError::Storage(format!("answer {n}")))
    }

    fn text(answer: Answer) -> String {
        match answer {
            Err(BrokerError::Storage(text)) => text,
            other => panic!("{other:?}"),
        }
    }

    /// A serving thread: a current-thread runtime on its own OS thread, as an HTTP worker's.
    fn serving_thread() -> (tokio::runtime::Runtime, Arc<Mailbox>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mailbox = rt.block_on(async {
            serve_this_thread();
            this_thread().unwrap()
        });
        (rt, mailbox)
    }

    #[test]
    fn one_entrys_answers_wake_the_serving_thread_once_and_each_reaches_its_proposer() {
        let (rt, mailbox) = serving_thread();
        let (replies, receivers): (Vec<_>, Vec<_>) = (0..50).map(|_| oneshot::channel()).unzip();
        // The Raft thread answers the whole entry while the serving thread is busy elsewhere.
        let answering = std::thread::spawn({
            let mailbox = mailbox.clone();
            move || {
                for (n, reply) in replies.into_iter().enumerate() {
                    answer(Some(&mailbox), reply, applied(n as u64));
                }
            }
        });
        answering.join().unwrap();
        let answers = rt.block_on(async {
            let mut answers = Vec::new();
            for rx in receivers {
                answers.push(tokio::time::timeout(Duration::from_secs(10), rx).await.unwrap().unwrap());
            }
            answers
        });
        let texts: Vec<String> = answers.into_iter().map(text).collect();
        assert_eq!(texts, (0..50).map(|n| format!("answer {n}")).collect::<Vec<_>>());
        assert_eq!(mailbox.lock().wakes, 1, "50 answers of one entry woke the serving thread more than once");
    }

    #[test]
    fn once_the_serving_runtime_is_gone_answers_go_straight_to_their_proposers() {
        let (rt, mailbox) = serving_thread();
        let (queued, queued_rx) = oneshot::channel();
        // Queued but not handed out yet when the runtime stops: answered by the closing mailbox.
        answer(Some(&mailbox), queued, applied(1));
        drop(rt);
        assert_eq!(text(queued_rx.blocking_recv().unwrap()), "answer 1");
        let (later, later_rx) = oneshot::channel();
        answer(Some(&mailbox), later, applied(2));
        assert_eq!(text(later_rx.blocking_recv().unwrap()), "answer 2");
    }

    #[test]
    fn a_thread_that_does_not_serve_is_answered_directly() {
        assert!(std::thread::spawn(this_thread).join().unwrap().is_none());
        let (reply, rx) = oneshot::channel();
        answer(None, reply, applied(3));
        assert_eq!(text(rx.blocking_recv().unwrap()), "answer 3");
    }
}
