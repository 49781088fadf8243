//! The commands the replicated state machine applies, and what each one answers.
//!
//! Everything here is plain data: serializable into the Raft log, free of I/O and of HTTP.
//! Times are unix milliseconds taken from the leader's clock when it proposed the command.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Unix time in milliseconds, as stamped by the leader.
pub type Millis = i64;

/// A station or consumer-group name, validated by [`crate::station::validate_name`].
pub type Name = String;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub max_age_ms: Option<u64>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    /// Delete a message once every consumer group has acked (or dead-lettered) it.
    pub ack_based: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: Some(7 * 24 * 3600 * 1000), max_messages: None, max_bytes: None, ack_based: false }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterConfig {
    pub enabled: bool,
    /// How long a dead-letter record is kept.
    pub retention_ms: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig { enabled: true, retention_ms: 7 * 24 * 3600 * 1000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationConfig {
    pub retention: Retention,
    pub replicas: u8,
    pub dedup_window_ms: u64,
    pub max_message_bytes: u64,
    pub dead_letter: DeadLetterConfig,
}

impl Default for StationConfig {
    fn default() -> Self {
        StationConfig {
            retention: Retention::default(),
            replicas: 1,
            dedup_window_ms: 120_000,
            max_message_bytes: 1024 * 1024,
            dead_letter: DeadLetterConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    Earliest,
    Latest,
    Offset(u64),
    /// The first message produced at or after this time.
    Time(Millis),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub start: StartPosition,
    pub ack_wait_ms: u64,
    pub max_deliveries: u32,
    /// Redelivery delay after the n-th failed attempt is `backoff_ms[min(n, len) - 1]`; empty = 0.
    pub backoff_ms: Vec<u64>,
    pub max_pending: u32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            start: StartPosition::Earliest,
            ack_wait_ms: 30_000,
            max_deliveries: 5,
            backoff_ms: Vec::new(),
            max_pending: 10_000,
        }
    }
}

/// Whether a push group delivers now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushState {
    Active,
    Paused,
    /// Stopped by the endpoint (HTTP 410); messages are kept and resume carries on.
    Disabled,
}

impl PushState {
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Active => "active",
            PushState::Paused => "paused",
            PushState::Disabled => "disabled",
        }
    }
}

/// What a push delivery's request body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushBody {
    /// The payload as stored, with its content type.
    Raw,
    /// A JSON object of the message (a REST hook's body).
    Message,
}

/// Where and how a push group delivers: the part of its configuration a PUT sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushConfig {
    pub url: String,
    /// Sent with every delivery, in order.
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub max_in_flight: u32,
    /// Deliveries started per second at most; `None`: no limit.
    pub rate_per_s: Option<u32>,
    pub body: PushBody,
    /// Set for a REST hook: when it was created.
    pub hook_created_at: Option<Millis>,
}

/// A signing secret (`whsec_...`) and, once rotated out, when it stops signing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSecret {
    pub secret: String,
    pub expires_at: Option<Millis>,
}

impl std::fmt::Debug for PushSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSecret").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// What a push group's attempts came to, as settled through Raft: the same on every node and
/// across leader changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStats {
    pub delivered_total: u64,
    pub failed_total: u64,
    pub last_attempt_at: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// The replicated side of a push group: its configuration, secrets, state and totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushGroup {
    pub config: PushConfig,
    /// Newest first; the first never expires.
    pub secrets: Vec<PushSecret>,
    pub state: PushState,
    pub disabled_reason: Option<String>,
    pub stats: PushStats,
}

impl PushGroup {
    /// The secrets that sign at `now`, newest first.
    pub fn signing_secrets(&self, now: Millis) -> impl Iterator<Item = &str> {
        self.secrets.iter().filter(move |s| s.expires_at.is_none_or(|at| at > now)).map(|s| s.secret.as_str())
    }
}

/// SHA-256 of a source's ingest token: the token itself is never stored.
pub type TokenHash = [u8; 32];

/// How a source's sender signs: the scheme's name (checked by the gateway, which knows the
/// schemes), its secret and settings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVerify {
    pub scheme: String,
    pub secret: String,
    /// For schemes that take the signature from a header the user names.
    pub header: Option<String>,
    pub tolerance_ms: u64,
}

impl std::fmt::Debug for SourceVerify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceVerify")
            .field("scheme", &self.scheme)
            .field("secret", &"<redacted>")
            .field("header", &self.header)
            .field("tolerance_ms", &self.tolerance_ms)
            .finish()
    }
}

/// What a source's owner sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Where its deliveries are produced.
    pub station: Name,
    /// None: the token alone admits a delivery.
    pub verify: Option<SourceVerify>,
    /// Request headers stored as message headers (lower-case names).
    pub capture_headers: Vec<String>,
    /// The request header whose value is the Idempotency-Key (lower-case); None: the scheme's.
    pub idempotency_header: Option<String>,
    /// Deliveries per second each node admits.
    pub rate_per_s: u32,
}

/// A webhook source as replicated: its config, token hash and totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: Name,
    pub config: SourceConfig,
    pub token_hash: TokenHash,
    pub created_at: Millis,
    /// Deliveries stored or found to be duplicates.
    pub accepted_total: u64,
    /// Deliveries refused, by reason, as the nodes reported them.
    pub rejected: BTreeMap<String, u64>,
}

impl Source {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The signing secret a push-group PUT carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretChoice {
    /// Given by the client: replaces the group's secrets.
    Given(String),
    /// Generated by the proposer: used only if the group has no secret yet.
    Generated(String),
}

impl std::fmt::Debug for SecretChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretChoice::Given(_) => "Given(..)",
            SecretChoice::Generated(_) => "Generated(..)",
        })
    }
}

/// How one push delivery ended, as the delivering node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushResult {
    /// A 2xx: acked.
    Delivered,
    /// Any other answer or none: retried after the backoff step (or the ack wait when the
    /// group has no backoff), and no sooner than `retry_after_ms`; dead-lettered with `error`
    /// once max deliveries is reached.
    Failed { error: String, retry_after_ms: Option<u64> },
    /// HTTP 410: the group is disabled and the message handed back, its attempt not counted.
    Gone,
}

/// A message as the producer handed it in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub content_type: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
    /// No group delivers the message before this time.
    pub deliver_at: Option<Millis>,
}

/// Identifies one delivery of one message to one group. It goes stale when the message is
/// delivered again (`delivery` is a per-group counter, unique for the group's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Receipt {
    pub offset: u64,
    pub delivery: u64,
}

/// A receipt together with the station incarnation (the station's id, never reused) it was
/// handed out by, as opened from a sealed receipt (see [`crate::receipt`]). It settles nothing
/// on a station of another id, such as one deleted and re-created under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BoundReceipt {
    pub station_id: u64,
    pub receipt: Receipt,
}

/// What [`Command::Settle`] does to each delivery it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettleOp {
    Ack,
    /// Redeliver after `delay_ms`.
    Nack {
        delay_ms: u64,
    },
    /// Push the ack deadline to `ack_wait_ms` from now.
    Extend {
        ack_wait_ms: u64,
    },
    /// Dead-letter now, with `reason` as the last error.
    DeadLetter {
        reason: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeekTo {
    Offset(u64),
    Time(Millis),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    MaxDeliveries,
    Explicit,
    /// Retention removed the message before the group acked it.
    Expired,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MaxDeliveries => "max_deliveries",
            DeadLetterReason::Explicit => "explicit",
            DeadLetterReason::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedriveSelector {
    /// These dead-letter ids.
    Ids(Vec<u64>),
    /// Every dead letter of this group (`None`: of every group of the station).
    Group(Option<Name>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    PutStation {
        station: Name,
        config: StationConfig,
    },
    DeleteStation {
        station: Name,
    },
    PutGroup {
        station: Name,
        group: Name,
        config: GroupConfig,
    },
    DeleteGroup {
        station: Name,
        group: Name,
    },
    Seek {
        station: Name,
        group: Name,
        to: SeekTo,
    },
    Produce {
        station: Name,
        messages: Vec<NewMessage>,
    },
    Fetch {
        station: Name,
        group: Name,
        max_messages: u32,
        max_bytes: Option<u64>,
    },
    /// `Ack`, `Nack`, `Extend` and `DeadLetter` take receipts as a fetch returned them, trusted
    /// as they are: for in-process callers and for entries written before receipts were bound
    /// to their station. What consumers hand in goes through [`Command::Settle`].
    Ack {
        station: Name,
        group: Name,
        receipts: Vec<Receipt>,
    },
    Nack {
        station: Name,
        group: Name,
        receipts: Vec<Receipt>,
        delay_ms: u64,
    },
    Extend {
        station: Name,
        group: Name,
        receipts: Vec<Receipt>,
        ack_wait_ms: u64,
    },
    DeadLetter {
        station: Name,
        group: Name,
        receipts: Vec<Receipt>,
        reason: Option<String>,
    },
    Redrive {
        station: Name,
        selector: RedriveSelector,
    },
    DeleteDeadLetter {
        station: Name,
        id: u64,
    },
    /// Time-driven work: expired deliveries, retention, dedup expiry, dead-letter retention.
    Tick,
    /// The outbox consumer has durably taken every outbox entry with `seq <= upto`.
    OutboxAdvance {
        upto: u64,
    },
    /// Sets the key receipts are sealed with, unless one is set already (the first wins, so
    /// concurrent proposals agree). Answers `Outcome::ReceiptKey` with the key in force.
    InitReceiptKey {
        key: ReceiptKey,
    },
    /// Settles receipts opened from sealed ones: each acts only if its station id is the
    /// station's current one, else it answers `Unknown`.
    Settle {
        station: Name,
        group: Name,
        receipts: Vec<BoundReceipt>,
        op: SettleOp,
    },
    /// Creates or updates a push group: `PutGroup` plus where and how it delivers.
    PutPushGroup {
        station: Name,
        group: Name,
        config: GroupConfig,
        push: PushConfig,
        secret: SecretChoice,
    },
    /// Pause, resume or disable a push group.
    SetPushState {
        station: Name,
        group: Name,
        state: PushState,
        reason: Option<String>,
    },
    /// Makes `secret` the signing secret; the others keep signing for `old_valid_ms`.
    RotatePushSecret {
        station: Name,
        group: Name,
        secret: String,
        old_valid_ms: u64,
    },
    /// A push group's delivering node takes messages to send: `Fetch` for push groups, which
    /// hands out nothing unless the group is active.
    PushFetch {
        station: Name,
        group: Name,
        max_messages: u32,
    },
    /// What the delivering node's attempts came to.
    PushSettle {
        station: Name,
        group: Name,
        results: Vec<(Receipt, PushResult)>,
    },
    /// Creates or updates a webhook source. `token_hash` becomes its ingest token's hash only
    /// when this creates it; an update keeps the token.
    PutSource {
        source: Name,
        config: SourceConfig,
        token_hash: TokenHash,
    },
    /// Gives a source a new ingest token: the old one is refused from this entry on.
    RotateSourceToken {
        source: Name,
        token_hash: TokenHash,
    },
    DeleteSource {
        source: Name,
    },
    /// A delivery a source's sender posted, already verified: produced on the source's station
    /// if `token_hash` is still the source's (so a rotation or deletion committed before it
    /// refuses it on every node alike).
    Ingest {
        source: Name,
        token_hash: TokenHash,
        message: NewMessage,
    },
    /// Sets or clears when a station's sealed segments move to the bucket.
    SetStationTiering {
        station: Name,
        tiering: Option<StationTiering>,
    },
    /// The leader uploaded a sealed segment of the station whose id is `station_id`: it enters
    /// the catalog (a segment retention already removed, or of another incarnation, does not).
    TierSegment {
        station: Name,
        station_id: u64,
        segment: TieredSegment,
    },
    /// The leader deleted these objects (of segments retention or a station's deletion let go).
    TierForget {
        keys: Vec<String>,
    },
    /// Deliveries refused at the door (bad token or signature, too large, rate limited), counted
    /// by a node since its last report: (source, reason, count).
    CountRejected {
        counts: Vec<(Name, String, u64)>,
    },
}

impl Command {
    /// The new messages the command stores: a produce's, or an ingest's one.
    pub fn new_messages(&self) -> &[NewMessage] {
        match self {
            Command::Produce { messages, .. } => messages,
            Command::Ingest { message, .. } => std::slice::from_ref(message),
            _ => &[],
        }
    }

    /// The one station the command acts on; `None` for commands that act on none or on many.
    pub fn station(&self) -> Option<&str> {
        match self {
            Command::PutStation { station, .. }
            | Command::DeleteStation { station }
            | Command::PutGroup { station, .. }
            | Command::DeleteGroup { station, .. }
            | Command::Seek { station, .. }
            | Command::Produce { station, .. }
            | Command::Fetch { station, .. }
            | Command::Ack { station, .. }
            | Command::Nack { station, .. }
            | Command::Extend { station, .. }
            | Command::DeadLetter { station, .. }
            | Command::Redrive { station, .. }
            | Command::DeleteDeadLetter { station, .. }
            | Command::Settle { station, .. }
            | Command::PutPushGroup { station, .. }
            | Command::SetPushState { station, .. }
            | Command::RotatePushSecret { station, .. }
            | Command::PushFetch { station, .. }
            | Command::PushSettle { station, .. } => Some(station),
            Command::PutSource { config, .. } => Some(&config.station),
            Command::SetStationTiering { station, .. } | Command::TierSegment { station, .. } => Some(station),
            // An ingest's station is the source's, known only to the state: apply re-indexes it.
            Command::Tick
            | Command::OutboxAdvance { .. }
            | Command::InitReceiptKey { .. }
            | Command::RotateSourceToken { .. }
            | Command::DeleteSource { .. }
            | Command::Ingest { .. }
            | Command::CountRejected { .. }
            | Command::TierForget { .. } => None,
        }
    }
}

/// A command with the leader's clock reading. `apply` uses `now` and never the local clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub now: Millis,
    pub command: Command,
}

/// Errors a command can answer with. They are outcomes of a deterministic apply, not faults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("station {0} not found")]
    StationNotFound(Name),
    #[error("consumer group {group} not found on station {station}")]
    GroupNotFound { station: Name, group: Name },
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("dead letter {0} not found")]
    DeadLetterNotFound(u64),
    /// Pull operations on a push group, or push operations on a pull group.
    #[error("consumer group {group} on station {station} {}", if *.push { "is a push group: the server delivers its messages" } else { "is not a push group" })]
    WrongDelivery { station: Name, group: Name, push: bool },
    #[error("source {0} not found")]
    SourceNotFound(Name),
    /// An ingest whose source is gone or whose token is no longer the source's.
    #[error("the ingest URL is not valid: unknown source or wrong token")]
    IngestRefused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ItemError {
    #[error("message of {size} bytes exceeds the station's limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("idempotency key reused with a different payload")]
    IdempotencyKeyReused,
    #[error("invalid: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    pub offset: u64,
    pub duplicate: bool,
}

/// One message handed to a consumer by `Fetch`. The payload is read from the station log by
/// the storage layer; the state machine decides only which offsets and receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub receipt: Receipt,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptResult {
    Ok,
    Stale,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `created` is false for an update (or an identical re-put).
    Put {
        created: bool,
    },
    Deleted,
    Group(GroupView),
    /// Answer to `PutGroup`: whether this command created the group.
    GroupPut {
        created: bool,
        group: GroupView,
    },
    Produced(Vec<Result<Produced, ItemError>>),
    Fetched(Vec<Delivery>),
    Receipts(Vec<ReceiptResult>),
    Redriven(u64),
    Ticked,
    Error(CommandError),
    /// Answer to `InitReceiptKey`: the key in force.
    ReceiptKey(ReceiptKey),
    /// Answer to `PutSource` and `RotateSourceToken`.
    Source {
        created: bool,
        source: Source,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationStats {
    pub messages: u64,
    pub bytes: u64,
    /// Offset of the oldest retained message; equals `next_offset` when empty.
    pub first_offset: u64,
    /// Offset the next produced message will get.
    pub next_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: Name,
    pub config: GroupConfig,
    /// Messages this group has not yet acked or dead-lettered, among retained ones.
    pub lag: u64,
    /// Deliveries in flight (delivered, not yet acked, nacked or expired).
    pub pending: u64,
    /// The next offset to be delivered for the first time.
    pub delivered_offset: u64,
    /// Every offset below this one is acked or dead-lettered.
    pub acked_floor: u64,
    pub dead_lettered: u64,
    /// Set for a push group.
    pub push: Option<PushGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationView {
    pub name: Name,
    pub config: StationConfig,
    pub stats: StationStats,
    pub groups: Vec<GroupView>,
    pub created_at: Millis,
    /// When sealed segments move to the bucket; `None`: never.
    pub tiering: Option<StationTiering>,
    /// What of the station is in the bucket.
    pub tiered: TierStats,
    /// The station's incarnation.
    pub id: u64,
    /// Bytes of the station's log on this node's disk (segments and metas files); set by the
    /// broker's facade, which knows the disk (0 in the replicated state's own views).
    pub local_bytes: u64,
}

/// A station's tiering setting (API.md: station config `tiering: {after_ms}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationTiering {
    /// Sealed segments whose newest message is older than this move to the bucket.
    pub after_ms: u64,
}

/// One segment of a station in the bucket: offsets `first_offset..=last_offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TieredSegment {
    pub first_offset: u64,
    pub last_offset: u64,
    /// The object's size.
    pub bytes: u64,
    /// The object's full key.
    pub key: String,
    pub tiered_at: Millis,
}

/// A station's tiered segments, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStats {
    pub segments: u64,
    pub bytes: u64,
    pub first_offset: Option<u64>,
    pub last_offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub id: u64,
    pub station: Name,
    pub group: Name,
    pub offset: u64,
    pub reason: DeadLetterReason,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_at: Millis,
}

/// An entry of the dead-letter outbox: handed once to the metadata store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: u64,
    pub record: DeadLetterRecord,
}

/// What the state machine keeps of each retained message, so it can schedule delivery and
/// retention without reading payloads. Rebuilt from the station log on recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub produced_at: Millis,
    /// 0 when the message is not delayed.
    pub deliver_at: Millis,
    /// Payload bytes (what retention by bytes counts).
    pub size: u32,
}

/// The cluster-wide secret receipts are sealed with: 32 random bytes, part of the replicated state.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptKey([u8; 32]);

impl ReceiptKey {
    /// A fresh key from the operating system's randomness (through the thread-local CSPRNG).
    /// Only ever called outside apply: the leader proposes it in a command.
    pub fn generate() -> ReceiptKey {
        ReceiptKey(rand::random())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> ReceiptKey {
        ReceiptKey(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(..)")
    }
}

/// `time + ms`, saturating instead of overflowing.
pub(crate) fn after(time: Millis, ms: u64) -> Millis {
    time.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// What the storage layer must do to the station logs after an apply, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Create an empty message log for the station, starting at offset 0.
    StationCreated { id: u64, station: Name },
    /// Retention: messages below `first_offset` are gone; storage may delete them.
    PrefixRemoved { id: u64, first_offset: u64 },
    /// The station was deleted: storage deletes its log.
    StationDropped { id: u64 },
}
