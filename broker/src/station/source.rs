//! Webhook sources: a named way into one station for senders that sign instead of sending a
//! bearer token. The state keeps each source's config, the hash of its ingest token and its
//! totals; the gateway checks signatures before it proposes anything, and apply checks the
//! token hash again so a rotation or deletion refuses the old token on every node from the
//! same log entry on.

use subtle::ConstantTimeEq;

use super::{validate_name, BrokerState, CommandError, Name, NewMessage, Outcome, Source, SourceConfig, TokenHash};

/// Most sources a cluster keeps.
pub const MAX_SOURCES: usize = 1000;
/// Most headers a source captures into each message.
pub const MAX_CAPTURE_HEADERS: usize = 32;
/// Longest header name a source names, in bytes.
const MAX_HEADER_NAME_BYTES: usize = 128;
/// Bounds of a source's secret, in characters.
pub const MAX_SOURCE_SECRET_CHARS: usize = 1024;
/// Most deliveries per second a source may admit on each node.
pub const MAX_SOURCE_RATE_PER_S: u32 = 100_000;
/// Rejection reasons a source counts apart; further ones count as "other".
const MAX_REJECT_REASONS: usize = 16;
const MAX_REASON_BYTES: usize = 64;

/// An HTTP field name as RFC 9110 allows (a token), lower-case.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_source(config: &SourceConfig) -> Result<(), String> {
    if config.capture_headers.len() > MAX_CAPTURE_HEADERS {
        return Err(format!("capture_headers may name at most {MAX_CAPTURE_HEADERS} headers"));
    }
    let named = config.capture_headers.iter().chain(&config.idempotency_header);
    let named = named.chain(config.verify.as_ref().and_then(|v| v.header.as_ref()));
    if let Some(bad) = named.into_iter().find(|h| !is_header_name(h)) {
        return Err(format!("{bad:?} is not a lower-case HTTP header name of at most {MAX_HEADER_NAME_BYTES} bytes"));
    }
    if !(1..=MAX_SOURCE_RATE_PER_S).contains(&config.rate_per_s) {
        return Err(format!("rate_per_s must be 1-{MAX_SOURCE_RATE_PER_S}"));
    }
    if let Some(verify) = &config.verify {
        if verify.secret.is_empty() || verify.secret.chars().count() > MAX_SOURCE_SECRET_CHARS {
            return Err(format!("the secret must be 1-{MAX_SOURCE_SECRET_CHARS} characters"));
        }
        let named = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        if verify.scheme.is_empty() || verify.scheme.len() > 64 || !verify.scheme.bytes().all(named) {
            return Err("the scheme must be a name of a-z, 0-9 and _".to_owned());
        }
    }
    Ok(())
}

impl BrokerState {
    pub(super) fn put_source(
        &mut self,
        name: &str,
        config: &SourceConfig,
        token_hash: &TokenHash,
    ) -> Result<Outcome, CommandError> {
        validate_name(name).map_err(CommandError::Invalid)?;
        validate_source(config).map_err(CommandError::Invalid)?;
        self.station(&config.station)?;
        if let Some(source) = self.sources.get_mut(name) {
            source.config = config.clone();
            return Ok(Outcome::Source { created: false, source: source.clone() });
        }
        if self.sources.len() >= MAX_SOURCES {
            return Err(CommandError::Invalid(format!("the cluster has {MAX_SOURCES} sources, the most it may have")));
        }
        let source = Source {
            name: name.to_owned(),
            config: config.clone(),
            token_hash: *token_hash,
            created_at: self.clock,
            accepted_total: 0,
            rejected: Default::default(),
        };
        self.sources.insert(name.to_owned(), source.clone());
        Ok(Outcome::Source { created: true, source })
    }

    pub(super) fn rotate_source_token(&mut self, name: &str, token_hash: &TokenHash) -> Result<Outcome, CommandError> {
        let source = self.sources.get_mut(name).ok_or_else(|| CommandError::SourceNotFound(name.to_owned()))?;
        source.token_hash = *token_hash;
        Ok(Outcome::Source { created: false, source: source.clone() })
    }

    pub(super) fn delete_source(&mut self, name: &str) -> Result<Outcome, CommandError> {
        self.sources.remove(name).ok_or_else(|| CommandError::SourceNotFound(name.to_owned()))?;
        Ok(Outcome::Deleted)
    }

    pub(super) fn ingest(
        &mut self,
        name: &str,
        token_hash: &TokenHash,
        message: &NewMessage,
    ) -> Result<Outcome, CommandError> {
        let source = self.sources.get(name).ok_or(CommandError::IngestRefused)?;
        if !bool::from(source.token_hash.ct_eq(token_hash)) {
            return Err(CommandError::IngestRefused);
        }
        let station = source.config.station.clone();
        let (state, mut ctx) = self.station_mut(&station)?;
        let results = state.produce(std::slice::from_ref(message), &mut ctx);
        self.index_deadline(&station);
        if results.iter().all(Result::is_ok) {
            if let Some(source) = self.sources.get_mut(name) {
                source.accepted_total += 1;
            }
        }
        Ok(Outcome::Produced(results))
    }

    pub(super) fn count_rejected(&mut self, counts: &[(Name, String, u64)]) -> Outcome {
        for (name, reason, count) in counts {
            let Some(source) = self.sources.get_mut(name) else { continue };
            let known = source.rejected.contains_key(reason);
            let reason = if !known && (source.rejected.len() >= MAX_REJECT_REASONS || reason.len() > MAX_REASON_BYTES) {
                "other".to_owned()
            } else {
                reason.clone()
            };
            let total = source.rejected.entry(reason).or_default();
            *total = total.saturating_add(*count);
        }
        Outcome::Ticked
    }

    /// Every source, by name.
    pub fn sources(&self) -> Vec<Source> {
        self.sources.values().cloned().collect()
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }
}
