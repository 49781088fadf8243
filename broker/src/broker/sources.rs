//! Webhook sources: their configuration, tokens and totals, and the produce a verified
//! delivery makes. Signature schemes are the caller's: the broker keeps what is replicated.

use super::messages::unexpected;
use super::{Broker, Put};
use crate::error::BrokerError;
use crate::station::{Command, ItemError, Name, NewMessage, Outcome, Produced, Source, SourceConfig, TokenHash};

impl Broker {
    /// Creates source `name` with the token whose hash is `token_hash`, or updates its config
    /// (keeping its token).
    pub async fn put_source(
        &self,
        name: &str,
        config: SourceConfig,
        token_hash: TokenHash,
    ) -> Result<Put<Source>, BrokerError> {
        let command = Command::PutSource { source: name.into(), config, token_hash };
        match self.replica.submit(command).await?.outcome {
            Outcome::Source { created, source } => Ok(Put { created, value: source }),
            other => Err(unexpected("put source", other)),
        }
    }

    /// Replaces the source's token: from this command on, every node refuses the old one.
    pub async fn rotate_source_token(&self, name: &str, token_hash: TokenHash) -> Result<Source, BrokerError> {
        let command = Command::RotateSourceToken { source: name.into(), token_hash };
        match self.replica.submit(command).await?.outcome {
            Outcome::Source { source, .. } => Ok(source),
            other => Err(unexpected("rotate source token", other)),
        }
    }

    pub async fn delete_source(&self, name: &str) -> Result<(), BrokerError> {
        match self.replica.submit(Command::DeleteSource { source: name.into() }).await?.outcome {
            Outcome::Deleted => Ok(()),
            other => Err(unexpected("delete source", other)),
        }
    }

    /// Produces a verified delivery on the source's station, if `token_hash` is still the
    /// source's when the command applies (else `IngestRefused`).
    pub async fn ingest(
        &self,
        name: &str,
        token_hash: TokenHash,
        message: NewMessage,
    ) -> Result<Result<Produced, ItemError>, BrokerError> {
        let command = Command::Ingest { source: name.into(), token_hash, message };
        match self.replica.submit(command).await?.outcome {
            Outcome::Produced(mut results) if results.len() == 1 => Ok(results.remove(0)),
            other => Err(unexpected("ingest", other)),
        }
    }

    /// Adds refused deliveries to the sources' totals: (source, reason, count).
    pub async fn count_rejected(&self, counts: Vec<(Name, String, u64)>) -> Result<(), BrokerError> {
        match self.replica.submit(Command::CountRejected { counts }).await?.outcome {
            Outcome::Ticked => Ok(()),
            other => Err(unexpected("count rejected", other)),
        }
    }

    /// One source as this node has applied it.
    pub fn source_now(&self, name: &str) -> Option<Source> {
        self.read(|s| s.source(name).cloned())
    }

    /// Every source as this node has applied them, by name.
    pub fn sources_now(&self) -> Vec<Source> {
        self.read(|s| s.sources())
    }
}
