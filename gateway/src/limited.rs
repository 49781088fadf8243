//! A refusal by a rate limit (per client IP, per credential, per username at login): what the
//! 429 answer says. A leaf, so the limiters, auth and the HTTP error all use it without importing
//! one another.

/// Why a request was refused by a rate limit, for the 429 headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: `ip`, `credential` or `login`.
    pub policy: &'static str,
    /// Seconds until a request would pass, rounded up, at least 1.
    pub retry_after: u64,
    pub burst: u32,
    /// Seconds for an empty bucket to refill completely, rounded up.
    pub window: u64,
}

impl Limited {
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w={}", self.policy, self.burst, self.window)
    }

    pub fn ratelimit_header(&self) -> String {
        format!("\"{}\";r=0;t={}", self.policy, self.retry_after)
    }
}
