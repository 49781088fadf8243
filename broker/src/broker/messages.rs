//! Messages in and out: produce, fetch (long-polling), settle, and reading messages back
//! (one by offset, or a page of them: browsing).

use std::time::{Duration, Instant};

use super::Broker;
use crate::error::BrokerError;
use crate::raft::state_machine::Stored;
use crate::raft::{Applied, StoredMessage};
use crate::receipt::{self, KeyedReceipts, ReceiptKey, SealedReceipt};
use crate::replica;
use crate::station::{
    Command, CommandError, Delivery, ItemError, NewMessage, Outcome, Produced, ReceiptResult, SettleOp,
};

/// What a fetch handed out, aligned: each delivery, its message and its sealed receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub deliveries: Vec<Delivery>,
    pub messages: Vec<StoredMessage>,
    pub receipts: Vec<SealedReceipt>,
}

/// Which fetch [`Broker::when_ready`] proposes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Take {
    Pull { max_messages: u32, max_bytes: Option<u64> },
    Push { max_messages: u32 },
}

/// A page of a station's retained messages, as [`Broker::browse`] read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrowsePage {
    /// The station's incarnation the page was read from: never reused, so an id built from it
    /// and an offset names one message even across a delete and re-create of the station.
    pub station_id: u64,
    /// In the order asked for.
    pub messages: Vec<StoredMessage>,
    /// The offset the next page starts at, in the same order; `None` on the last page.
    pub next: Option<u64>,
}

/// One answer per message of a produce, in order: where it was stored (or that it repeats an
/// earlier one with the same idempotency key), or why it alone was refused.
pub type ProduceResults = Vec<Result<Produced, ItemError>>;

/// An outcome that does not belong to the command: a defect, reported rather than panicked on.
pub(super) fn unexpected(operation: &str, outcome: Outcome) -> BrokerError {
    BrokerError::Storage(format!("{operation}: unexpected outcome {outcome:?}"))
}

impl Broker {
    /// Stores `messages` on `station` in one durable write (one Raft entry), each judged on its
    /// own: answers one result per message, in order. An empty list stores nothing but still
    /// answers `StationNotFound` for an unknown station.
    pub async fn produce(&self, station: &str, messages: Vec<NewMessage>) -> Result<ProduceResults, BrokerError> {
        if messages.is_empty() {
            self.station(station).await?;
            return Ok(Vec::new());
        }
        let count = messages.len();
        let command = Command::Produce { station: station.into(), messages };
        match self.replica.submit(command).await?.outcome {
            Outcome::Produced(results) if results.len() == count => Ok(results),
            other => Err(unexpected("produce", other)),
        }
    }

    /// One retained message by offset, read after a read barrier (`None` once retention
    /// removed it, or before it was produced).
    pub async fn message(&self, station: &str, offset: u64) -> Result<Option<StoredMessage>, BrokerError> {
        self.replica.barrier().await?;
        self.message_now(station, offset).await
    }

    /// Up to `limit` retained messages of `station` from offset `from` on, upward or (with
    /// `descending`) downward, read after one read barrier; nothing changes. `from` defaults to
    /// the first retained offset upward and to the newest downward; upward, offsets retention
    /// removed are skipped. A page stops early once its payloads would pass `max_bytes`, but
    /// always holds at least one message when one is there.
    pub async fn browse(
        &self,
        station: &str,
        from: Option<u64>,
        limit: usize,
        descending: bool,
        max_bytes: u64,
    ) -> Result<BrowsePage, BrokerError> {
        self.replica.barrier().await?;
        let found = self.read(|s| s.station_id(station).and_then(|id| Some((id, s.station_offsets(id)?))));
        let Some((station_id, (first, end))) = found else {
            return Err(CommandError::StationNotFound(station.into()).into());
        };
        let mut page = BrowsePage { station_id, messages: Vec::new(), next: None };
        // Offsets in the order asked for, within the retained range `first..end`.
        let offsets: Box<dyn Iterator<Item = u64>> = if descending {
            let top = from.unwrap_or(u64::MAX).min(end.saturating_sub(1));
            if end == 0 || top < first {
                return Ok(page);
            }
            Box::new((first..=top).rev())
        } else {
            Box::new(from.unwrap_or(first).max(first)..end)
        };
        let mut bytes = 0u64;
        let mut offsets = offsets.peekable();
        while let Some(offset) = offsets.next() {
            // Retention may remove messages while the page is read: upward it only moves
            // `first` past some of them, downward everything below is gone as well.
            let Some(message) = self.message_now(station, offset).await? else {
                if descending {
                    return self.checked(station, page);
                }
                continue;
            };
            let size = message.payload.len() as u64;
            if !page.messages.is_empty() && bytes.saturating_add(size) > max_bytes {
                page.next = Some(offset);
                break;
            }
            bytes = bytes.saturating_add(size);
            page.messages.push(message);
            if page.messages.len() >= limit {
                page.next = offsets.peek().copied();
                break;
            }
        }
        self.checked(station, page)
    }

    /// `page` if `station` is still the incarnation it was read from: the reads go by name, so
    /// a delete and re-create in the middle would have mixed two stations' messages.
    fn checked(&self, station: &str, page: BrowsePage) -> Result<BrowsePage, BrokerError> {
        match self.read(|s| s.station_id(station)) {
            Some(id) if id == page.station_id => Ok(page),
            _ => Err(CommandError::StationNotFound(station.into()).into()),
        }
    }

    /// [`Broker::message`] without the barrier, for a read that follows one. A tiered message
    /// whose local copy is gone is read from the bucket.
    pub(super) async fn message_now(&self, station: &str, offset: u64) -> Result<Option<StoredMessage>, BrokerError> {
        if self.read(|s| s.station_id(station)).is_none() {
            return Err(CommandError::StationNotFound(station.into()).into());
        }
        match self.replica.sm.read_message(station, offset).map_err(crate::replica::storage)? {
            None => Ok(None),
            Some(Stored::Local(message)) => Ok(Some(message)),
            Some(Stored::Tiered(segment)) => {
                let tier = self.replica.tier_reader.as_deref();
                crate::tier::fill::read_one(tier, &segment, offset).await.map(Some)
            }
        }
    }

    /// The key receipts are sealed with: the replicated one, or, before any node has needed
    /// one, a fresh key proposed now (if several nodes propose at once, the first applied wins
    /// and every proposer gets that one back).
    pub async fn receipt_key(&self) -> Result<ReceiptKey, BrokerError> {
        if let Some(key) = self.replica.receipt_key.get().copied().or_else(|| self.read(|s| s.receipt_key())) {
            return Ok(*self.replica.receipt_key.get_or_init(|| key));
        }
        match self.replica.submit(Command::InitReceiptKey { key: ReceiptKey::generate() }).await?.outcome {
            Outcome::ReceiptKey(key) => Ok(*self.replica.receipt_key.get_or_init(|| key)),
            other => Err(unexpected("receipt key", other)),
        }
    }

    /// Settles receipts that a fetch sealed, each handed in for `group` of `station`: answers
    /// one result per receipt, in order. A receipt that does not open (sealed for another
    /// station or group, made up, tampered with, not a receipt at all) answers `Unknown` and is
    /// not proposed; one bound to an earlier incarnation of the station answers `Unknown` when
    /// the command applies. Unknown station or group: `CommandError`, even if nothing opens.
    pub async fn settle(
        &self,
        station: &str,
        group: &str,
        receipts: &[impl AsRef<[u8]>],
        op: SettleOp,
    ) -> Result<Vec<ReceiptResult>, BrokerError> {
        self.refuse_push(station, group)?;
        let key = self.receipt_key().await?.keyed();
        let opened: Vec<_> = receipts.iter().map(|r| receipt::open(&key, station, group, r.as_ref())).collect();
        let bound: Vec<_> = opened.iter().flatten().copied().collect();
        let mut answered = if bound.is_empty() {
            self.group(station, group).await?;
            Vec::new()
        } else {
            let command = Command::Settle { station: station.into(), group: group.into(), receipts: bound, op };
            match self.replica.submit(command).await?.outcome {
                Outcome::Receipts(results) => results,
                other => return Err(unexpected("settle", other)),
            }
        }
        .into_iter();
        opened
            .iter()
            .map(|o| match o {
                None => Ok(ReceiptResult::Unknown),
                Some(_) => {
                    answered.next().ok_or_else(|| BrokerError::Storage("settle: fewer results than receipts".into()))
                }
            })
            .collect()
    }

    /// Fetches up to `max_messages`, waiting up to `wait` for at least one. Waiting costs no
    /// Raft traffic: the fetch is proposed only once the state says something is ready. Each
    /// delivery comes with its receipt sealed for this station incarnation and group.
    pub async fn fetch(
        &self,
        station: &str,
        group: &str,
        max_messages: u32,
        max_bytes: Option<u64>,
        wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        self.refuse_push(station, group)?;
        self.when_ready(station, group, wait, Take::Pull { max_messages, max_bytes }).await
    }

    /// A push group as this node knows it answers pull operations `WrongDelivery` at once
    /// (apply refuses them too, for a group that became one meanwhile).
    fn refuse_push(&self, station: &str, group: &str) -> Result<(), BrokerError> {
        match self.read(|s| s.push_group(station, group).is_some()) {
            true => {
                Err(CommandError::WrongDelivery { station: station.into(), group: group.into(), push: true }.into())
            }
            false => Ok(()),
        }
    }

    /// Proposes one fetch of `group`: a pull consumer's, with receipts sealed, or a push
    /// group's delivering node's, with raw receipts.
    async fn take(
        &self,
        station: &str,
        group: &str,
        take: Take,
        key: Option<&KeyedReceipts>,
    ) -> Result<Fetched, BrokerError> {
        let applied = self.replica.submit(take.command(station, group)).await?;
        take.fetched(key, station, group, applied)
    }

    /// Proposes `take` once the state says `group` has something ready, waiting up to `wait`;
    /// again after a change if another consumer took it first. Answers the first non-empty
    /// take, or an empty one once `wait` is over or the node drains.
    ///
    /// While it waits, the fetch is parked: an entry that stores messages on `station`
    /// meanwhile carries it, so its deliveries come with that entry's apply (see
    /// [`crate::replica::park`]).
    pub(super) async fn when_ready(
        &self,
        station: &str,
        group: &str,
        wait: Duration,
        take: Take,
    ) -> Result<Fetched, BrokerError> {
        let deadline = Instant::now() + wait;
        let mut changes = self.replica.sm.station_changes(station);
        let mut draining = self.replica.draining.subscribe();
        let mut synced = false;
        // Before any delivery is taken, so that sealing them cannot fail.
        let key = match take {
            Take::Pull { .. } => Some(self.receipt_key().await?.keyed()),
            Take::Push { .. } => None,
        };
        loop {
            let now = self.now();
            let ready = match self.read(|s| s.ready(station, group, now)) {
                Ok(ready) => ready,
                // A follower may not have applied the station's creation yet.
                Err(_) if self.replica.clustered && !synced => {
                    self.replica.barrier().await?;
                    synced = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if ready {
                let fetched = self.take(station, group, take, key.as_ref()).await?;
                if !fetched.deliveries.is_empty() || Instant::now() >= deadline {
                    return Ok(fetched);
                }
                // Another consumer took it first: wait for the next change rather than spin.
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || *draining.borrow() {
                return Ok(Fetched::default());
            }
            let next_ready = self.read(|s| s.next_ready_at(station, group));
            let sleep = match next_ready {
                Some(at) => remaining.min(Duration::from_millis(at.saturating_sub(now).max(1) as u64)),
                None => remaining,
            };
            // A change applied since the check above wakes `changes` at once, so nothing
            // stored between the check and parking is missed.
            let mut ticket =
                self.replica.parked.park(station, group, take.max_messages(), take.command(station, group));
            let carried = tokio::select! {
                biased;
                answer = &mut ticket.reply => Some(answer),
                () = changes.changed() => None,
                _ = tokio::time::sleep(sleep) => None,
                _ = draining.changed() => None,
            };
            let answer = match carried {
                Some(answer) => self.replica.answer(std::future::ready(answer)).await,
                // Still parked: no entry carries it, look again.
                None if ticket.unpark() => continue,
                // An entry carries it: the deliveries in its answer are this fetch's.
                None => self.replica.answer(&mut ticket.reply).await,
            };
            let fetched = take.fetched(key.as_ref(), station, group, replica::refused(answer?)?)?;
            if !fetched.deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(fetched);
            }
        }
    }
}

impl Take {
    fn command(self, station: &str, group: &str) -> Command {
        let (station, group) = (station.into(), group.into());
        match self {
            Take::Pull { max_messages, max_bytes } => Command::Fetch { station, group, max_messages, max_bytes },
            Take::Push { max_messages } => Command::PushFetch { station, group, max_messages },
        }
    }

    fn max_messages(self) -> u32 {
        match self {
            Take::Pull { max_messages, .. } | Take::Push { max_messages } => max_messages,
        }
    }

    /// What an applied fetch handed out: receipts sealed with `key` for a pull consumer, raw
    /// for a push group's delivering node.
    fn fetched(
        self,
        key: Option<&KeyedReceipts>,
        station: &str,
        group: &str,
        applied: Applied,
    ) -> Result<Fetched, BrokerError> {
        match (self, key) {
            (Take::Pull { .. }, Some(key)) => seal(key, station, group, applied),
            (Take::Pull { .. }, None) => Err(BrokerError::Storage("fetch: no receipt key to seal with".into())),
            (Take::Push { .. }, _) => match applied.outcome {
                Outcome::Fetched(deliveries) if deliveries.len() == applied.messages.len() => {
                    Ok(Fetched { deliveries, messages: applied.messages, receipts: Vec::new() })
                }
                other => Err(unexpected("push fetch", other)),
            },
        }
    }
}

/// Seals the receipts of an applied `Fetch`.
fn seal(key: &KeyedReceipts, station: &str, group: &str, applied: Applied) -> Result<Fetched, BrokerError> {
    let Outcome::Fetched(deliveries) = applied.outcome else {
        return Err(unexpected("fetch", applied.outcome));
    };
    if deliveries.len() != applied.messages.len() {
        return Err(BrokerError::Storage("fetch answered deliveries and messages of different lengths".into()));
    }
    let receipts = match applied.station_id {
        Some(id) => deliveries.iter().map(|d| receipt::seal(key, id, station, group, d.receipt)).collect(),
        None if deliveries.is_empty() => Vec::new(),
        None => return Err(BrokerError::Storage("fetch: deliveries without a station".into())),
    };
    Ok(Fetched { deliveries, messages: applied.messages, receipts })
}
