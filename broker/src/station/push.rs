//! Push groups in the replicated state: the push side of a group (its delivery config,
//! signing secrets, state and totals) beside the consumer group it belongs to, and how the
//! delivering node's results settle the group's deliveries.

use super::{
    validate_group_config, validate_name, BrokerState, CommandError, GroupConfig, GroupView, Name, Outcome, PushConfig,
    PushGroup, PushResult, PushSecret, PushState, PushStats, Receipt, SecretChoice,
};

/// Longest push URL, in bytes.
pub const MAX_PUSH_URL_BYTES: usize = 2048;
/// Most extra headers a push group may send.
pub(super) const MAX_PUSH_HEADERS: usize = 32;
/// Most signing secrets a push group keeps (the newest and those still valid after rotations).
pub(super) const MAX_PUSH_SECRETS: usize = 8;

pub(super) fn validate_push(push: &PushConfig) -> Result<(), String> {
    if push.url.is_empty() || push.url.len() > MAX_PUSH_URL_BYTES {
        return Err(format!("push.url must be 1-{MAX_PUSH_URL_BYTES} bytes"));
    }
    if !(1000..=60_000).contains(&push.timeout_ms) {
        return Err("push.timeout_ms must be 1000-60000".to_owned());
    }
    if !(1..=1000).contains(&push.max_in_flight) {
        return Err("push.max_in_flight must be 1-1000".to_owned());
    }
    if push.rate_per_s == Some(0) {
        return Err("push.rate_per_s must be positive when set".to_owned());
    }
    if push.headers.len() > MAX_PUSH_HEADERS {
        return Err(format!("push.headers may have at most {MAX_PUSH_HEADERS} entries"));
    }
    Ok(())
}

pub(super) fn wrong_delivery(station: &str, group: &str, push: bool) -> CommandError {
    CommandError::WrongDelivery { station: station.to_owned(), group: group.to_owned(), push }
}

impl BrokerState {
    /// Pull consumers' fetch and settle do not apply to push groups.
    pub(super) fn refuse_push(&self, station: &str, group: &str) -> Result<(), CommandError> {
        match self.push.contains_key(&(station.to_owned(), group.to_owned())) {
            true => Err(wrong_delivery(station, group, true)),
            false => Ok(()),
        }
    }

    pub(super) fn push_mut(&mut self, station: &str, group: &str) -> Result<&mut PushGroup, CommandError> {
        self.station(station)?.group(group)?;
        self.push.get_mut(&(station.to_owned(), group.to_owned())).ok_or_else(|| wrong_delivery(station, group, false))
    }

    pub(super) fn put_push_group(
        &mut self,
        station: &str,
        group: &str,
        config: &GroupConfig,
        push: &PushConfig,
        secret: &SecretChoice,
    ) -> Result<Outcome, CommandError> {
        validate_name(group).map_err(CommandError::Invalid)?;
        validate_group_config(config).map_err(CommandError::Invalid)?;
        validate_push(push).map_err(CommandError::Invalid)?;
        if config.ack_wait_ms <= push.timeout_ms {
            return Err(CommandError::Invalid(format!(
                "ack_wait_ms ({}) must be longer than push.timeout_ms ({}): an attempt still under way would \
                 be handed out again",
                config.ack_wait_ms, push.timeout_ms
            )));
        }
        let (state, mut ctx) = self.station_mut(station)?;
        let (created, view) = state.put_group(group, config.clone(), &mut ctx)?;
        let key = (station.to_owned(), group.to_owned());
        let fresh = |secret: &str| vec![PushSecret { secret: secret.to_owned(), expires_at: None }];
        match (self.push.get_mut(&key), secret) {
            (Some(existing), SecretChoice::Generated(_)) => existing.config = push.clone(),
            (Some(existing), SecretChoice::Given(given)) => {
                existing.config = push.clone();
                existing.secrets = fresh(given);
            }
            (None, SecretChoice::Given(s) | SecretChoice::Generated(s)) => {
                let value = PushGroup {
                    config: push.clone(),
                    secrets: fresh(s),
                    state: PushState::Active,
                    disabled_reason: None,
                    stats: PushStats::default(),
                };
                self.push.insert(key, value);
            }
        }
        Ok(Outcome::GroupPut { created, group: self.with_push(station, view) })
    }

    pub(super) fn push_settle(
        &mut self,
        station: &str,
        group: &str,
        results: &[(Receipt, PushResult)],
    ) -> Result<Outcome, CommandError> {
        let now = self.clock;
        let push = self.push_mut(station, group)?;
        let stats = &mut push.stats;
        for (_, result) in results {
            stats.last_attempt_at = Some(now);
            match result {
                PushResult::Delivered => {
                    stats.delivered_total += 1;
                    stats.last_success_at = Some(now);
                }
                PushResult::Failed { error, .. } => {
                    stats.failed_total += 1;
                    stats.last_error = Some(error.clone());
                }
                PushResult::Gone => {
                    stats.failed_total += 1;
                    stats.last_error = Some("HTTP 410".to_owned());
                }
            }
        }
        if results.iter().any(|(_, r)| *r == PushResult::Gone) {
            push.state = PushState::Disabled;
            push.disabled_reason = Some("the endpoint answered 410 Gone".to_owned());
        }
        let (state, mut ctx) = self.station_mut(station)?;
        let items: Vec<&(Receipt, PushResult)> = results.iter().collect();
        let results = state.on_receipts(group, &items, &mut ctx, |g, (receipt, result), dead| match result {
            PushResult::Delivered => g.ack(*receipt),
            PushResult::Failed { error, retry_after_ms } => {
                g.push_failed(*receipt, now, error, retry_after_ms.unwrap_or(0), dead)
            }
            PushResult::Gone => g.release(*receipt),
        })?;
        Ok(Outcome::Receipts(results))
    }

    /// `view` with its push side, if it is a push group of `station`.
    pub(super) fn with_push(&self, station: &str, mut view: GroupView) -> GroupView {
        view.push = self.push.get(&(station.to_owned(), view.name.clone())).cloned();
        view
    }

    /// Every push group as (station, group, push side), by station and group.
    pub fn push_groups(&self) -> Vec<(Name, Name, PushGroup)> {
        self.push.iter().map(|((s, g), p)| (s.clone(), g.clone(), p.clone())).collect()
    }

    /// The push side of one group, if it is a push group.
    pub fn push_group(&self, station: &str, group: &str) -> Option<&PushGroup> {
        self.push.get(&(station.to_owned(), group.to_owned()))
    }
}
