//! A limit on failed password logins per username, against password guessing.
//!
//! Each username has a window of [`LoginLimit::window`] that starts at its first failure; within
//! it, at most [`LoginLimit::max_failures`] attempts may fail. Later attempts, right password or
//! not, are refused with 429 until the window ends, so guessing gets at most that many tries per
//! window. A successful login clears the username's count.
//!
//! An attempt is counted before its password is checked and uncounted when it succeeds, so
//! concurrent attempts cannot all slip under the limit. Unknown usernames are counted exactly like
//! known ones: the answers do not reveal which usernames exist. Usernames are kept as SHA-256
//! digests, and the table is bounded by [`MAX_TRACKED`]. The count is per node: a cluster of N
//! nodes allows up to N times as many guesses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::meta::Digest;
use crate::rate_limit::Limited;

/// Failed logins allowed per username and window, by default.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// The window, by default: 15 minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most usernames tracked at once. When full, expired windows go first, then usernames that are
/// not locked out: a flood of random names cannot unlock the ones under attack. Should every
/// tracked name be locked out, a new name is refused until room frees up (fail closed); filling the
/// table so takes ten times as many failed logins per window as the password pool can check.
pub const MAX_TRACKED: usize = 100_000;

/// The `RateLimit-Policy` name of a refusal.
pub const POLICY: &str = "login";

struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
pub struct LoginLimit {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<Digest, Window>>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").field("failures", &self.failures).finish_non_exhaustive()
    }
}

impl LoginLimit {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimit {
        LoginLimit { max_failures: max_failures.max(1), window, entries: Mutex::new(HashMap::new()) }
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Window>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an attempt on `user` as failed until [`LoginLimit::succeeded`] says otherwise, or
    /// refuses it when the username has used up its failures in the current window.
    pub fn attempt(&self, user: &Digest, now: Instant) -> Result<(), Limited> {
        let mut entries = self.entries();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(user) {
            self.make_room(&mut entries, now);
            if entries.len() >= MAX_TRACKED {
                return Err(self.limited(self.window));
            }
        }
        let window = entries.entry(*user).or_insert(Window { started: now, failures: 0 });
        let ends = window.started + self.window;
        if now >= ends {
            *window = Window { started: now, failures: 0 };
        } else if window.failures >= self.max_failures {
            return Err(self.limited(ends.saturating_duration_since(now)));
        }
        window.failures += 1;
        Ok(())
    }

    fn limited(&self, left: Duration) -> Limited {
        Limited {
            policy: POLICY,
            retry_after: (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1),
            burst: self.max_failures,
            window: self.window.as_secs(),
        }
    }

    /// The attempt was neither right nor wrong (the store or the password pool could not answer):
    /// it does not count.
    pub fn uncount(&self, user: &Digest) {
        if let Some(window) = self.entries().get_mut(user) {
            window.failures = window.failures.saturating_sub(1);
        }
    }

    /// The attempt succeeded: the username starts afresh.
    pub fn succeeded(&self, user: &Digest) {
        self.entries().remove(user);
    }

    /// Usernames tracked now.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(&self, entries: &mut HashMap<Digest, Window>, now: Instant) {
        entries.retain(|_, w| now < w.started + self.window);
        if entries.len() >= MAX_TRACKED {
            entries.retain(|_, w| w.failures >= self.max_failures);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(name: &str) -> Digest {
        crate::auth::digest(name)
    }

    #[test]
    fn the_eleventh_attempt_in_a_window_is_refused_until_it_ends() {
        let limit = LoginLimit::new(10, DEFAULT_WINDOW);
        let t0 = Instant::now();
        for i in 0..10 {
            limit.attempt(&user("carol"), t0 + Duration::from_secs(i)).unwrap();
        }
        let refused = limit.attempt(&user("carol"), t0 + Duration::from_secs(60)).unwrap_err();
        assert_eq!(refused.policy, "login");
        assert_eq!(refused.retry_after, 15 * 60 - 60, "until the window that began at the first failure ends");
        assert_eq!((refused.burst, refused.window), (10, 900));
        // Refusals do not extend the window, and other usernames are not affected.
        assert!(limit.attempt(&user("carol"), t0 + Duration::from_secs(899)).is_err());
        limit.attempt(&user("dave"), t0 + Duration::from_secs(60)).unwrap();
        // A new window starts once the old one is over.
        limit.attempt(&user("carol"), t0 + DEFAULT_WINDOW).unwrap();
    }

    #[test]
    fn a_success_clears_the_count() {
        let limit = LoginLimit::new(3, DEFAULT_WINDOW);
        let t0 = Instant::now();
        for _ in 0..3 {
            limit.attempt(&user("erin"), t0).unwrap();
        }
        assert!(limit.attempt(&user("erin"), t0).is_err());
        let limit = LoginLimit::new(3, DEFAULT_WINDOW);
        for _ in 0..2 {
            limit.attempt(&user("erin"), t0).unwrap();
        }
        limit.attempt(&user("erin"), t0).unwrap();
        limit.succeeded(&user("erin"));
        assert!(limit.is_empty());
        for _ in 0..3 {
            limit.attempt(&user("erin"), t0).unwrap();
        }
    }

    #[test]
    fn a_full_table_keeps_the_locked_out_usernames() {
        let limit = LoginLimit::new(1, DEFAULT_WINDOW);
        let t0 = Instant::now();
        limit.attempt(&user("target"), t0).unwrap();
        for i in 1..MAX_TRACKED {
            limit.attempt(&user(&format!("noise-{i}")), t0).unwrap();
        }
        // Every noise name has used its one failure too, so all are locked: none is dropped, and
        // a new name is refused rather than tracked beyond the bound.
        assert!(limit.attempt(&user("one-more"), t0).is_err(), "a full table of locked names fails closed");
        assert_eq!(limit.len(), MAX_TRACKED);
        assert!(limit.attempt(&user("target"), t0).is_err(), "a flood of names must not unlock the target");
        // Once the windows end, room is made by dropping expired entries.
        limit.attempt(&user("later"), t0 + DEFAULT_WINDOW).unwrap();
        assert!(limit.len() <= 2, "{}", limit.len());
    }
}
