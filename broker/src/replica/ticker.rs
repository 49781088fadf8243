//! Time-driven work: expired deliveries, due delayed messages, retention and dedup windows are
//! applied by a `Tick` command that the leader proposes when the state says one is due.

use std::sync::Arc;
use std::time::Duration;

use super::Replica;
use crate::error::BrokerError;
use crate::station::Command;

/// How far the ticker may sleep past due work; expirations are also applied lazily by Fetch.
const TICK_MAX_SLEEP: Duration = Duration::from_millis(100);

/// Proposes a `Tick` when the state says time-driven work is due, while this node leads.
pub(crate) async fn run_ticker(replica: Arc<Replica>) {
    let mut shutdown = replica.shutdown.subscribe();
    // The flag, not only the change notification, ends the loop: a notification can be consumed
    // by a wait that lost a select race.
    while !*shutdown.borrow() {
        let now = replica.clock.now();
        let due = replica.read(|s| s.next_tick_at());
        if replica.leads() && due.is_some_and(|at| at <= now) {
            match replica.submit(Command::Tick).await {
                Ok(_) | Err(BrokerError::Command(_)) => {}
                Err(BrokerError::ShuttingDown) => return,
                Err(e) => tracing::warn!(error = %e, "tick not applied"),
            }
        }
        let sleep = match due {
            Some(at) if at > now => Duration::from_millis((at - now) as u64).min(TICK_MAX_SLEEP),
            Some(_) => Duration::from_millis(5),
            None => TICK_MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {}
        }
    }
}
