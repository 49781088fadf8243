//! Webhook sources (API.md "Sources (webhooks in)"): senders that cannot send an
//! `Authorization` header post to a source's ingest URL and prove themselves with their own
//! signature scheme instead. [`verify`] checks those signatures over the raw body; it knows no
//! HTTP framework, so the ingest route hands it a header lookup and the bytes it received.
//!
//! [`Sources`] is what each node keeps beside the replicated sources: ingest tokens' making and
//! hashing, each source's rate limit, and the counts of deliveries accepted and refused. Refusals
//! happen before anything is proposed, so each node adds them up and reports them to the
//! sources' replicated totals about once a second ([`Sources::start`]): one small command per
//! second at most, however many forgeries arrive.

pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use depot_broker::station::TokenHash;
use depot_broker::Broker;
use sha2::{Digest, Sha256};

use crate::rate_limit::{Limited, RateKey, RateLimitConfig, RateLimiter};

/// Random bytes in an ingest token: 192 bits.
const TOKEN_BYTES: usize = 24;
/// How often a node reports the refusals it counted.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// The `source` label of refusals whose URL names no source this node knows: the names come
/// from anyone, so they never become labels.
const UNKNOWN_SOURCE: &str = "(unknown)";

/// A new ingest token and its hash (what the state keeps).
pub fn new_token() -> (String, TokenHash) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>());
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The ingest URL's path for `source` with `token`.
pub fn ingest_path(source: &str, token: &str) -> String {
    format!("/v1/ingest/{source}/{token}")
}

#[derive(Default)]
struct Counts {
    /// This node's totals since it started, for /metrics: (source, outcome, reason).
    totals: BTreeMap<(String, &'static str, &'static str), u64>,
    /// Refusals of known sources not yet reported to the replicated totals.
    unreported: BTreeMap<(String, &'static str), u64>,
}

#[derive(Default)]
struct Inner {
    counts: Mutex<Counts>,
    /// Each source's limiter, with the rate it was made for.
    limiters: Mutex<HashMap<String, (u32, Arc<RateLimiter>)>>,
}

/// This node's side of webhook sources; cheap to clone.
#[derive(Clone, Default)]
pub struct Sources {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sources {
    /// Takes one delivery from `source`'s budget of `rate_per_s` a second (bursts of as many).
    pub fn admit(&self, source: &str, rate_per_s: u32) -> Result<(), Limited> {
        let limiter = {
            let mut limiters = lock(&self.inner.limiters);
            match limiters.get(source) {
                Some((rate, limiter)) if *rate == rate_per_s => limiter.clone(),
                _ => {
                    let config = RateLimitConfig::per_second(rate_per_s, rate_per_s);
                    let limiter = Arc::new(RateLimiter::named("source", config));
                    limiters.insert(source.to_owned(), (rate_per_s, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check(&RateKey::Credential(source.to_owned()))
    }

    /// Forgets the limiters of sources that no longer exist.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        lock(&self.inner.limiters).retain(|name, _| exists(name));
    }

    pub fn accepted(&self, source: &str) {
        *lock(&self.inner.counts).totals.entry((source.to_owned(), "accepted", "")).or_default() += 1;
    }

    /// Counts a refusal; `known` says whether `source` names a source (else it is counted under
    /// one label and not reported to any source's totals).
    pub fn rejected(&self, source: &str, known: bool, reason: &'static str) {
        let mut counts = lock(&self.inner.counts);
        let label = if known { source } else { UNKNOWN_SOURCE };
        *counts.totals.entry((label.to_owned(), "rejected", reason)).or_default() += 1;
        if known {
            *counts.unreported.entry((source.to_owned(), reason)).or_default() += 1;
        }
    }

    /// Reports counted refusals to the replicated totals, about once a second, until aborted.
    pub fn start(&self, broker: Broker) -> tokio::task::JoinHandle<()> {
        let sources = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REPORT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                sources.report(&broker).await;
                sources.retain(|name| broker.source_now(name).is_some());
            }
        })
    }

    async fn report(&self, broker: &Broker) {
        let unreported = std::mem::take(&mut lock(&self.inner.counts).unreported);
        if unreported.is_empty() {
            return;
        }
        let counts = unreported.iter().map(|((s, r), n)| (s.clone(), (*r).to_owned(), *n)).collect();
        if let Err(e) = broker.count_rejected(counts).await {
            tracing::debug!(error = %e, "reporting refused source deliveries failed; retrying");
            let mut counts = lock(&self.inner.counts);
            for (key, n) in unreported {
                *counts.unreported.entry(key).or_default() += n;
            }
        }
    }

    /// The exposition text of this node's counts.
    pub fn render(&self, out: &mut String) {
        let counts = lock(&self.inner.counts);
        let name = "depot_source_requests_total";
        let _ =
            writeln!(out, "# HELP {name} Deliveries posted to source ingest URLs on this node, by outcome and reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((source, outcome, reason), n) in &counts.totals {
            let source = source.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{source=\"{source}\",outcome=\"{outcome}\",reason=\"{reason}\"}} {n}");
        }
    }
}
