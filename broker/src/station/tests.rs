//! Rule-by-rule tests: feed envelopes into a fresh state, assert outcomes, views and effects.

use bytes::Bytes;

use super::*;
use crate::receipt::ReceiptKey;

const ST: &str = "orders";

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        content_type: "text/plain".to_owned(),
        headers: Vec::new(),
        payload: Bytes::from(payload.to_owned()),
        idempotency_key: None,
        deliver_at: None,
    }
}

fn keyed(payload: &str, key: &str) -> NewMessage {
    NewMessage { idempotency_key: Some(key.to_owned()), ..msg(payload) }
}

fn delayed(payload: &str, at: Millis) -> NewMessage {
    NewMessage { deliver_at: Some(at), ..msg(payload) }
}

fn group_config(ack_wait_ms: u64, max_deliveries: u32) -> GroupConfig {
    GroupConfig { ack_wait_ms, max_deliveries, ..GroupConfig::default() }
}

/// A broker with a clock the test moves by hand.
struct H {
    s: BrokerState,
    now: Millis,
}

impl H {
    fn new() -> Self {
        Self::with_station(StationConfig::default())
    }

    fn with_station(config: StationConfig) -> Self {
        let mut h = H { s: BrokerState::default(), now: 1_000 };
        assert_eq!(h.run(Command::PutStation { station: ST.into(), config }), Outcome::Put { created: true });
        h
    }

    fn run(&mut self, command: Command) -> Outcome {
        let outcome = self.s.apply(&Envelope { now: self.now, command });
        self.s.check_invariants();
        outcome
    }

    fn at(&mut self, now: Millis) -> &mut Self {
        self.now = now;
        self
    }

    fn group(&mut self, group: &str, config: GroupConfig) -> GroupView {
        match self.run(Command::PutGroup { station: ST.into(), group: group.into(), config }) {
            Outcome::GroupPut { group, .. } => group,
            other => panic!("put group: {other:?}"),
        }
    }

    fn produce_all(&mut self, messages: Vec<NewMessage>) -> Vec<Result<Produced, ItemError>> {
        match self.run(Command::Produce { station: ST.into(), messages }) {
            Outcome::Produced(results) => results,
            other => panic!("produce: {other:?}"),
        }
    }

    fn produce(&mut self, n: usize) -> Vec<u64> {
        let results = self.produce_all((0..n).map(|i| msg(&format!("m{i}"))).collect());
        results.into_iter().map(|r| r.expect("produced").offset).collect()
    }

    fn fetch_bytes(&mut self, group: &str, max: u32, max_bytes: Option<u64>) -> Vec<Delivery> {
        let command = Command::Fetch { station: ST.into(), group: group.into(), max_messages: max, max_bytes };
        match self.run(command) {
            Outcome::Fetched(deliveries) => deliveries,
            other => panic!("fetch: {other:?}"),
        }
    }

    fn fetch(&mut self, group: &str, max: u32) -> Vec<Delivery> {
        self.fetch_bytes(group, max, None)
    }

    fn receipts(&mut self, command: Command) -> Vec<ReceiptResult> {
        match self.run(command) {
            Outcome::Receipts(results) => results,
            other => panic!("receipts: {other:?}"),
        }
    }

    fn ack(&mut self, group: &str, receipts: &[Receipt]) -> Vec<ReceiptResult> {
        self.receipts(Command::Ack { station: ST.into(), group: group.into(), receipts: receipts.to_vec() })
    }

    fn nack(&mut self, group: &str, receipts: &[Receipt], delay_ms: u64) -> Vec<ReceiptResult> {
        self.receipts(Command::Nack { station: ST.into(), group: group.into(), receipts: receipts.to_vec(), delay_ms })
    }

    fn dead_letter(&mut self, group: &str, receipts: &[Receipt], reason: Option<&str>) -> Vec<ReceiptResult> {
        let reason = reason.map(str::to_owned);
        self.receipts(Command::DeadLetter {
            station: ST.into(),
            group: group.into(),
            receipts: receipts.to_vec(),
            reason,
        })
    }

    fn tick(&mut self) {
        assert_eq!(self.run(Command::Tick), Outcome::Ticked);
    }

    fn view(&self, group: &str) -> GroupView {
        self.s.group_view(ST, group).expect("group exists")
    }

    fn stats(&self) -> StationStats {
        self.s.station_view(ST).expect("station exists").stats
    }

    fn dead(&self) -> Vec<DeadLetterRecord> {
        self.s.dead_letters(ST).expect("station exists")
    }
}

fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.receipt.offset).collect()
}

fn receipts_of(deliveries: &[Delivery]) -> Vec<Receipt> {
    deliveries.iter().map(|d| d.receipt).collect()
}

use ReceiptResult::{Ok as ROk, Stale, Unknown};

#[test]
fn names_are_validated() {
    for good in ["a", "orders", "0rders", "a.b_c-d", &"x".repeat(128)] {
        assert_eq!(validate_name(good), Ok(()), "{good}");
    }
    for bad in ["", "-a", ".a", "_a", "Orders", "a b", "a/b", "é", &"x".repeat(129)] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn put_station_creates_updates_and_validates() {
    let mut h = H::new();
    assert_eq!(h.s.take_effects(), vec![Effect::StationCreated { id: 1, station: ST.into() }]);
    let view = h.s.station_view(ST).expect("view");
    assert_eq!(view.created_at, 1_000);
    assert_eq!(view.stats, StationStats { messages: 0, bytes: 0, first_offset: 0, next_offset: 0 });

    let same = Command::PutStation { station: ST.into(), config: StationConfig::default() };
    assert_eq!(h.run(same), Outcome::Put { created: false });
    let changed = StationConfig { dedup_window_ms: 5, ..StationConfig::default() };
    assert_eq!(
        h.run(Command::PutStation { station: ST.into(), config: changed.clone() }),
        Outcome::Put { created: false }
    );
    assert_eq!(h.s.station_view(ST).expect("view").config, changed);
    assert!(h.s.take_effects().is_empty());

    let invalid = [
        ("Bad", StationConfig::default()),
        ("ok", StationConfig { replicas: 2, ..StationConfig::default() }),
        ("ok", StationConfig { max_message_bytes: 0, ..StationConfig::default() }),
        ("ok", StationConfig { max_message_bytes: u64::MAX, ..StationConfig::default() }),
        (
            "ok",
            StationConfig {
                retention: Retention { max_messages: Some(0), ..Retention::default() },
                ..StationConfig::default()
            },
        ),
    ];
    for (station, config) in invalid {
        let outcome = h.run(Command::PutStation { station: station.into(), config });
        assert!(matches!(outcome, Outcome::Error(CommandError::Invalid(_))), "{outcome:?}");
    }
    assert_eq!(h.s.stations(), vec![(1, ST.to_owned())]);
}

#[test]
fn delete_station_drops_everything_and_ids_are_not_reused() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce(1);
    let d = h.fetch("g", 1);
    h.dead_letter("g", &receipts_of(&d), None);
    assert_eq!(h.s.dead_letters(ST).map(|d| d.len()), Ok(1));
    h.s.take_effects();

    assert_eq!(h.run(Command::DeleteStation { station: ST.into() }), Outcome::Deleted);
    assert_eq!(h.s.take_effects(), vec![Effect::StationDropped { id: 1 }]);
    assert_eq!(h.s.station_view(ST), None);
    assert_eq!(h.s.station_id(ST), None);
    assert_eq!(h.s.station_offsets(1), None);
    assert_eq!(h.s.dead_letters(ST), Err(CommandError::StationNotFound(ST.into())));
    assert!(h.s.outbox(10).is_empty(), "dead letters are kept once, with their station");
    assert_eq!(
        h.run(Command::DeleteStation { station: ST.into() }),
        Outcome::Error(CommandError::StationNotFound(ST.into()))
    );

    h.run(Command::PutStation { station: ST.into(), config: StationConfig::default() });
    assert_eq!(h.s.station_id(ST), Some(2));
    assert_eq!(h.s.take_effects(), vec![Effect::StationCreated { id: 2, station: ST.into() }]);
    assert_eq!(h.s.group_view(ST, "g"), Err(CommandError::GroupNotFound { station: ST.into(), group: "g".into() }));
    assert!(h.dead().is_empty());
}

#[test]
fn unknown_station_and_group_are_errors() {
    let mut h = H::new();
    let missing = CommandError::StationNotFound("nope".into());
    assert_eq!(h.run(Command::Produce { station: "nope".into(), messages: vec![msg("x")] }), Outcome::Error(missing));
    let command = Command::Fetch { station: ST.into(), group: "g".into(), max_messages: 1, max_bytes: None };
    let no_group = CommandError::GroupNotFound { station: ST.into(), group: "g".into() };
    assert_eq!(h.run(command), Outcome::Error(no_group.clone()));
    let ack = Command::Ack { station: ST.into(), group: "g".into(), receipts: vec![] };
    assert_eq!(h.run(ack), Outcome::Error(no_group.clone()));
    assert_eq!(h.run(Command::DeleteGroup { station: ST.into(), group: "g".into() }), Outcome::Error(no_group));
    let invalid = Command::PutGroup { station: ST.into(), group: "G".into(), config: GroupConfig::default() };
    assert!(matches!(h.run(invalid), Outcome::Error(CommandError::Invalid(_))));
    let zero_wait = Command::PutGroup { station: ST.into(), group: "g".into(), config: group_config(0, 5) };
    assert!(matches!(h.run(zero_wait), Outcome::Error(CommandError::Invalid(_))));
}

#[test]
fn group_start_positions() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_messages: Some(8), ..Retention::default() },
        ..StationConfig::default()
    });
    for t in 0..10 {
        h.at(10_000 + t * 100).produce(1);
    }
    // Offsets 0 and 1 fell to the count limit: 2..10 retained, produced at 10_200..=10_900.
    assert_eq!(h.s.station_offsets(1), Some((2, 10)));
    let start = |start| GroupConfig { start, ..GroupConfig::default() };
    assert_eq!(h.group("earliest", start(StartPosition::Earliest)).delivered_offset, 2);
    assert_eq!(h.group("latest", start(StartPosition::Latest)).delivered_offset, 10);
    assert_eq!(h.group("low", start(StartPosition::Offset(0))).delivered_offset, 2);
    assert_eq!(h.group("mid", start(StartPosition::Offset(5))).delivered_offset, 5);
    assert_eq!(h.group("high", start(StartPosition::Offset(99))).delivered_offset, 10);
    assert_eq!(h.group("t-exact", start(StartPosition::Time(10_500))).delivered_offset, 5);
    assert_eq!(h.group("t-between", start(StartPosition::Time(10_450))).delivered_offset, 5);
    assert_eq!(h.group("t-early", start(StartPosition::Time(0))).delivered_offset, 2);
    assert_eq!(h.group("t-late", start(StartPosition::Time(99_999))).delivered_offset, 10);

    let view = h.view("mid");
    assert_eq!((view.lag, view.acked_floor, view.pending), (5, 5, 0));
    assert_eq!(h.view("latest").lag, 0);
    assert_eq!(offsets(&h.fetch("mid", 10)), vec![5, 6, 7, 8, 9]);
}

#[test]
fn put_group_updates_config_keeps_position_and_delete_works() {
    let mut h = H::new();
    h.produce(3);
    h.group("g", GroupConfig::default());
    h.fetch("g", 2);
    let updated = GroupConfig { start: StartPosition::Latest, ack_wait_ms: 5, ..GroupConfig::default() };
    let view = h.group("g", updated.clone());
    assert_eq!(view.config, updated);
    assert_eq!((view.delivered_offset, view.pending, view.lag), (2, 2, 3));
    let station = h.s.station_view(ST).expect("view");
    assert_eq!(station.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), vec!["g"]);

    assert_eq!(h.run(Command::DeleteGroup { station: ST.into(), group: "g".into() }), Outcome::Deleted);
    assert!(h.s.group_view(ST, "g").is_err());
}

#[test]
fn fetch_hands_out_batches_in_order_with_receipts_and_deadlines() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 5));
    assert!(h.fetch("g", 10).is_empty());
    h.produce(5);
    let first = h.fetch("g", 3);
    assert_eq!(offsets(&first), vec![0, 1, 2]);
    assert!(first.iter().all(|d| d.attempt == 1));
    assert_eq!(first.iter().map(|d| d.receipt.delivery).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(offsets(&h.fetch("g", 3)), vec![3, 4]);
    let view = h.view("g");
    assert_eq!((view.pending, view.delivered_offset, view.lag, view.acked_floor), (5, 5, 5, 0));
    assert_eq!(h.s.next_tick_at(), Some(2_000));
    let invalid =
        |max_messages| Command::Fetch { station: ST.into(), group: "g".into(), max_messages, max_bytes: None };
    assert!(matches!(h.run(invalid(0)), Outcome::Error(CommandError::Invalid(_))));
    assert!(matches!(h.run(invalid(1001)), Outcome::Error(CommandError::Invalid(_))));
}

#[test]
fn max_bytes_stops_before_exceeding_but_allows_one() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce_all(vec![msg("aaaa"), msg("bbbb"), msg("cccc")]);
    assert_eq!(offsets(&h.fetch_bytes("g", 10, Some(2))), vec![0], "one message even when larger");
    assert_eq!(offsets(&h.fetch_bytes("g", 10, Some(7))), vec![1]);
    assert_eq!(offsets(&h.fetch_bytes("g", 10, Some(8))), vec![2]);
    assert_eq!(h.stats().bytes, 12);
}

#[test]
fn receipts_are_ok_stale_or_unknown() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 5));
    h.produce(3);
    let d = h.fetch("g", 2);
    let (r0, r1) = (d[0].receipt, d[1].receipt);
    assert_eq!(h.s.receipt_status(ST, "g", r0), Ok(ROk));
    let never =
        [Receipt { offset: 0, delivery: 99 }, Receipt { offset: 2, delivery: 1 }, Receipt { offset: 0, delivery: 0 }];
    assert_eq!(h.ack("g", &never), vec![Unknown, Unknown, Unknown]);
    let swapped = Receipt { offset: 0, delivery: r1.delivery };
    assert_eq!(h.ack("g", &[r0, swapped, r0]), vec![ROk, Stale, Stale]);
    let view = h.view("g");
    assert_eq!((view.acked_floor, view.pending, view.lag), (1, 1, 2));
    assert_eq!(h.ack("g", &[r1]), vec![ROk]);
    assert_eq!(h.view("g").acked_floor, 2);
}

#[test]
fn out_of_order_acks_advance_the_floor_only_when_contiguous() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce(4);
    let d = h.fetch("g", 4);
    h.ack("g", &[d[1].receipt, d[3].receipt]);
    let view = h.view("g");
    assert_eq!((view.acked_floor, view.lag, view.pending), (0, 2, 2));
    h.ack("g", &[d[0].receipt]);
    assert_eq!(h.view("g").acked_floor, 2);
    h.ack("g", &[d[2].receipt]);
    let view = h.view("g");
    assert_eq!((view.acked_floor, view.lag, view.pending), (4, 0, 0));
}

#[test]
fn nack_redelivers_after_the_delay_and_old_receipt_goes_stale() {
    let mut h = H::new();
    h.group("g", group_config(10_000, 5));
    h.produce(2);
    let d = h.fetch("g", 1);
    assert_eq!(h.nack("g", &[d[0].receipt], 500), vec![ROk]);
    assert_eq!(h.view("g").pending, 0);
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(1_000), "offset 1 is ready now");
    assert_eq!(offsets(&h.fetch("g", 5)), vec![1], "nacked message waits for its delay");
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(1_500));
    assert!(!h.s.has_ready(ST, "g", 1_499));
    assert!(h.s.has_ready(ST, "g", 1_500));
    let again = h.at(1_500).fetch("g", 5);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].receipt.offset, again[0].attempt), (0, 2));
    assert_eq!(h.ack("g", &[d[0].receipt]), vec![Stale]);
    assert_eq!(h.nack("g", &[again[0].receipt], 0), vec![ROk]);
    assert_eq!(h.fetch("g", 5)[0].attempt, 3, "a zero delay is due at once");
}

#[test]
fn extend_pushes_the_deadline() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 5));
    h.produce(1);
    let d = h.fetch("g", 1);
    let extend =
        Command::Extend { station: ST.into(), group: "g".into(), receipts: vec![d[0].receipt], ack_wait_ms: 5_000 };
    assert_eq!(h.at(1_500).receipts(extend), vec![ROk]);
    assert_eq!(h.s.next_tick_at(), Some(6_500));
    assert!(h.at(6_000).fetch("g", 1).is_empty());
    assert_eq!(h.ack("g", &[d[0].receipt]), vec![ROk]);
}

#[test]
fn unacked_delivery_is_redelivered_after_ack_wait() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 5));
    h.produce(1);
    let d = h.fetch("g", 1);
    assert!(h.at(1_999).fetch("g", 1).is_empty());
    assert!(!h.s.has_ready(ST, "g", 1_999));
    assert!(h.s.has_ready(ST, "g", 2_000));
    let again = h.at(2_000).fetch("g", 1);
    assert_eq!((again[0].receipt.offset, again[0].attempt), (0, 2));
    assert_eq!(h.ack("g", &[d[0].receipt]), vec![Stale]);

    // A tick expires the delivery too; the group then waits for a fetch.
    h.at(3_000).tick();
    assert_eq!(h.view("g").pending, 0);
    assert_eq!(h.ack("g", &[again[0].receipt]), vec![Stale]);
    assert_eq!(h.fetch("g", 1)[0].attempt, 3);
}

#[test]
fn backoff_steps_follow_the_attempt_number_and_repeat_the_last() {
    let mut h = H::new();
    h.group(
        "g",
        GroupConfig { ack_wait_ms: 100, max_deliveries: 10, backoff_ms: vec![1_000, 5_000], ..GroupConfig::default() },
    );
    h.produce(1);
    h.fetch("g", 1); // attempt 1, deadline 1_100, then redelivery at 2_100
    h.at(1_100).tick();
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(2_100));
    assert!(h.at(2_099).fetch("g", 1).is_empty());
    assert_eq!(h.at(2_100).fetch("g", 1)[0].attempt, 2); // deadline 2_200, then + 5_000
    assert!(h.at(7_199).fetch("g", 1).is_empty());
    assert_eq!(h.at(7_200).fetch("g", 1)[0].attempt, 3); // deadline 7_300, then + 5_000 again
    assert!(h.at(12_299).fetch("g", 1).is_empty());
    assert_eq!(h.at(12_300).fetch("g", 1)[0].attempt, 4);
}

#[test]
fn max_deliveries_dead_letters_for_that_group_only() {
    let mut h = H::new();
    h.group("a", group_config(1_000, 2));
    h.group("b", group_config(1_000, 2));
    h.produce(1);
    assert_eq!(h.fetch("a", 1)[0].attempt, 1);
    assert_eq!(h.at(2_000).fetch("a", 1)[0].attempt, 2);
    assert!(h.at(3_000).fetch("a", 1).is_empty(), "second expiry reaches max deliveries");
    let dead = h.dead();
    assert_eq!(dead.len(), 1);
    let expected = DeadLetterRecord {
        id: 1,
        station: ST.into(),
        group: "a".into(),
        offset: 0,
        reason: DeadLetterReason::MaxDeliveries,
        attempts: 2,
        last_error: None,
        dead_at: 3_000,
    };
    assert_eq!(dead[0], expected);
    assert!(h.s.outbox(10).is_empty(), "no second copy of the record");
    let view = h.view("a");
    assert_eq!((view.dead_lettered, view.lag, view.acked_floor, view.pending), (1, 0, 1, 0));

    let b = h.fetch("b", 1);
    assert_eq!(b.len(), 1, "the other group still gets the message");
    assert_eq!(h.ack("b", &receipts_of(&b)), vec![ROk]);
    assert_eq!(h.view("b").dead_lettered, 0);
}

#[test]
fn nack_at_max_deliveries_dead_letters() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 1));
    h.produce(1);
    let d = h.fetch("g", 1);
    assert_eq!(h.nack("g", &receipts_of(&d), 0), vec![ROk]);
    assert_eq!(h.dead()[0].reason, DeadLetterReason::MaxDeliveries);
    assert!(h.fetch("g", 1).is_empty());
}

#[test]
fn explicit_dead_letter_records_the_reason() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce(2);
    let d = h.fetch("g", 2);
    assert_eq!(h.at(1_234).dead_letter("g", &[d[1].receipt, d[1].receipt], Some("bad json")), vec![ROk, Stale]);
    let dead = h.dead();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].offset, dead[0].reason, dead[0].attempts), (1, DeadLetterReason::Explicit, 1));
    assert_eq!((dead[0].last_error.as_deref(), dead[0].dead_at), (Some("bad json"), 1_234));
    let view = h.view("g");
    assert_eq!((view.dead_lettered, view.lag, view.pending, view.acked_floor), (1, 1, 1, 0));
}

#[test]
fn disabled_dead_letters_just_end_the_message() {
    let mut h = H::with_station(StationConfig {
        dead_letter: DeadLetterConfig { enabled: false, retention_ms: 1 },
        ..StationConfig::default()
    });
    h.group("g", GroupConfig::default());
    h.produce(1);
    let d = h.fetch("g", 1);
    assert_eq!(h.dead_letter("g", &receipts_of(&d), None), vec![ROk]);
    assert!(h.dead().is_empty());
    assert!(h.s.outbox(10).is_empty());
    let view = h.view("g");
    assert_eq!((view.lag, view.acked_floor, view.dead_lettered), (0, 1, 0));
}

/// Two groups, each dead-letters offsets 0 and 1 explicitly; records 1..=4 are (a,0) (a,1) (b,0) (b,1).
fn four_dead_letters() -> H {
    let mut h = H::new();
    h.group("a", GroupConfig::default());
    h.group("b", GroupConfig::default());
    h.produce(3);
    for g in ["a", "b"] {
        let d = h.fetch(g, 2);
        h.dead_letter(g, &receipts_of(&d), None);
    }
    assert_eq!(h.dead().len(), 4);
    h
}

#[test]
fn redrive_by_ids_returns_the_message_to_its_group_only() {
    let mut h = four_dead_letters();
    let redrive = Command::Redrive { station: ST.into(), selector: RedriveSelector::Ids(vec![2, 2, 77]) };
    assert_eq!(h.run(redrive), Outcome::Redriven(1));
    assert_eq!(h.dead().iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3, 4]);
    assert_eq!(h.view("a").acked_floor, 1, "offset 1 is not done for a any more");
    let a = h.fetch("a", 10);
    assert_eq!(a.iter().map(|d| (d.receipt.offset, d.attempt)).collect::<Vec<_>>(), vec![(1, 1), (2, 1)]);
    let b = h.fetch("b", 10);
    assert_eq!(offsets(&b), vec![2]);
}

#[test]
fn redrive_by_group_and_all() {
    let mut h = four_dead_letters();
    let by_group = Command::Redrive { station: ST.into(), selector: RedriveSelector::Group(Some("b".into())) };
    assert_eq!(h.run(by_group), Outcome::Redriven(2));
    assert_eq!(h.dead().iter().map(|r| r.group.as_str()).collect::<Vec<_>>(), vec!["a", "a"]);
    assert_eq!(offsets(&h.fetch("b", 10)), vec![0, 1, 2]);
    let all = Command::Redrive { station: ST.into(), selector: RedriveSelector::Group(None) };
    assert_eq!(h.run(all), Outcome::Redriven(2));
    assert!(h.dead().is_empty());
    assert_eq!(offsets(&h.fetch("a", 10)), vec![0, 1, 2]);
}

#[test]
fn redrive_skips_records_whose_message_is_gone() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_messages: Some(2), ..Retention::default() },
        ..StationConfig::default()
    });
    h.group("g", GroupConfig::default());
    h.produce(1);
    let d = h.fetch("g", 1);
    h.dead_letter("g", &receipts_of(&d), None);
    h.produce(2);
    assert_eq!(h.stats().first_offset, 1);
    let all = Command::Redrive { station: ST.into(), selector: RedriveSelector::Group(None) };
    assert_eq!(h.run(all), Outcome::Redriven(0));
    assert_eq!(h.dead().len(), 1);
}

#[test]
fn delete_dead_letter() {
    let mut h = four_dead_letters();
    assert_eq!(h.run(Command::DeleteDeadLetter { station: ST.into(), id: 3 }), Outcome::Deleted);
    assert_eq!(
        h.run(Command::DeleteDeadLetter { station: ST.into(), id: 3 }),
        Outcome::Error(CommandError::DeadLetterNotFound(3))
    );
    assert_eq!(h.dead().iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 4]);
}

#[test]
fn delayed_messages_do_not_hold_back_ready_ones() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce_all(vec![delayed("late", 5_000), msg("now"), delayed("past", 500), delayed("later", 3_000)]);
    assert_eq!(h.view("g").delivered_offset, 1, "the cursor moved past the delayed head at once");
    assert!(h.s.has_ready(ST, "g", h.now));
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(h.now));
    assert_eq!(offsets(&h.fetch("g", 10)), vec![1, 2]);
    let view = h.view("g");
    assert_eq!((view.delivered_offset, view.lag, view.pending), (4, 4, 2));
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(3_000));
    assert!(!h.s.has_ready(ST, "g", 2_999));
    assert!(h.s.has_ready(ST, "g", 3_000));
    assert!(h.at(2_999).fetch("g", 10).is_empty());
    assert_eq!(offsets(&h.at(6_000).fetch("g", 10)), vec![3, 0], "due delayed messages by due time");
    assert!(h.fetch("g", 10).iter().all(|d| d.attempt == 1));
}

#[test]
fn a_group_created_over_delayed_messages_skips_them_too() {
    let mut h = H::new();
    h.produce_all(vec![delayed("late", 5_000), msg("now")]);
    h.group("g", GroupConfig::default());
    assert_eq!(h.view("g").delivered_offset, 1, "offset 0 went into the delayed set");
    assert_eq!(offsets(&h.fetch("g", 10)), vec![1]);
    assert_eq!(offsets(&h.at(5_000).fetch("g", 10)), vec![0]);
}

#[test]
fn idempotent_produce() {
    let mut h = H::with_station(StationConfig { dedup_window_ms: 1_000, ..StationConfig::default() });
    let first = h.produce_all(vec![keyed("a", "k1"), msg("x"), keyed("a", "k1"), keyed("b", "k1")]);
    let expected = vec![
        Ok(Produced { offset: 0, duplicate: false }),
        Ok(Produced { offset: 1, duplicate: false }),
        Ok(Produced { offset: 0, duplicate: true }),
        Err(ItemError::IdempotencyKeyReused),
    ];
    assert_eq!(first, expected);
    assert_eq!(h.at(1_999).produce_all(vec![keyed("a", "k1")]), vec![Ok(Produced { offset: 0, duplicate: true })]);
    assert_eq!(h.stats().next_offset, 2, "duplicates are not appended");
    // The window runs from the original produce (1_000), not from the repeat.
    assert_eq!(h.at(2_000).produce_all(vec![keyed("b", "k1")]), vec![Ok(Produced { offset: 2, duplicate: false })]);

    let bad_keys = h.produce_all(vec![keyed("a", ""), keyed("a", &"k".repeat(257)), keyed("a", &"k".repeat(256))]);
    assert!(matches!(bad_keys[0], Err(ItemError::Invalid(_))));
    assert!(matches!(bad_keys[1], Err(ItemError::Invalid(_))));
    assert_eq!(bad_keys[2], Ok(Produced { offset: 3, duplicate: false }));
}

#[test]
fn dedup_keys_expire_on_tick() {
    let mut h = H::with_station(StationConfig { dedup_window_ms: 1_000, ..StationConfig::default() });
    h.produce_all((0..50).map(|i| keyed("p", &format!("k{i}"))).collect());
    h.at(1_500).produce_all(vec![keyed("p", "k0"), keyed("p", "late")]);
    assert_eq!(h.s.stations.get(ST).map(|s| s.dedup_len()), Some(51));
    assert_eq!(h.s.next_tick_at(), Some(2_000));
    h.at(2_000).tick();
    assert_eq!(h.s.stations.get(ST).map(|s| s.dedup_len()), Some(1), "only the key from 1_500 is left");
    assert_eq!(h.s.next_tick_at(), Some(2_500));
    h.at(2_500).tick();
    assert_eq!(h.s.stations.get(ST).map(|s| s.dedup_len()), Some(0));
    assert_eq!(h.s.next_tick_at(), Some(1_000 + 7 * 24 * 3600 * 1000), "age retention of the oldest message");
}

#[test]
fn max_message_size_is_enforced_per_item() {
    let mut h = H::with_station(StationConfig { max_message_bytes: 3, ..StationConfig::default() });
    let results = h.produce_all(vec![msg("abc"), msg("abcd"), msg("")]);
    assert_eq!(
        results,
        vec![
            Ok(Produced { offset: 0, duplicate: false }),
            Err(ItemError::TooLarge { size: 4, limit: 3 }),
            Ok(Produced { offset: 1, duplicate: false }),
        ]
    );
}

#[test]
fn max_pending_limits_fetches() {
    let mut h = H::new();
    h.group("g", GroupConfig { max_pending: 3, ..GroupConfig::default() });
    h.produce(5);
    assert_eq!(offsets(&h.fetch("g", 2)), vec![0, 1]);
    assert_eq!(offsets(&h.fetch("g", 10)), vec![2]);
    assert!(h.fetch("g", 10).is_empty());
    assert!(!h.s.has_ready(ST, "g", h.now));
    assert_eq!(h.s.next_ready_at(ST, "g"), Some(31_000), "only an ack deadline frees a slot by itself");
    let first = h.s.group_view(ST, "g").map(|v| v.pending);
    assert_eq!(first, Ok(3));
    h.ack("g", &[Receipt { offset: 1, delivery: 2 }]);
    assert!(h.s.has_ready(ST, "g", h.now));
    assert_eq!(offsets(&h.fetch("g", 10)), vec![3]);
}

#[test]
fn retention_by_age() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_age_ms: Some(1_000), ..Retention::default() },
        ..StationConfig::default()
    });
    h.produce(2);
    h.at(1_500).produce(1);
    h.s.take_effects();
    assert_eq!(h.s.next_tick_at(), Some(2_000));
    h.at(2_000).tick();
    assert_eq!(h.s.take_effects(), vec![Effect::PrefixRemoved { id: 1, first_offset: 2 }]);
    assert_eq!(h.stats(), StationStats { messages: 1, bytes: 2, first_offset: 2, next_offset: 3 });
    assert_eq!(h.s.next_tick_at(), Some(2_500));
    h.at(2_500).tick();
    assert_eq!(h.stats(), StationStats { messages: 0, bytes: 0, first_offset: 3, next_offset: 3 });
    assert_eq!(h.s.next_tick_at(), None);
}

#[test]
fn retention_by_count_and_bytes() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_age_ms: None, max_messages: Some(3), max_bytes: Some(10), ack_based: false },
        ..StationConfig::default()
    });
    h.produce_all(vec![msg("1"), msg("22"), msg("333"), msg("4444")]);
    assert_eq!(h.stats(), StationStats { messages: 3, bytes: 9, first_offset: 1, next_offset: 4 });
    h.produce_all(vec![msg("55555")]);
    // Count keeps 2..5 (12 bytes); bytes then drops 2 as well.
    assert_eq!(h.stats(), StationStats { messages: 2, bytes: 9, first_offset: 3, next_offset: 5 });
    assert_eq!(
        h.s.take_effects(),
        vec![
            Effect::StationCreated { id: 1, station: ST.into() },
            Effect::PrefixRemoved { id: 1, first_offset: 1 },
            Effect::PrefixRemoved { id: 1, first_offset: 3 },
        ]
    );
}

#[test]
fn ack_based_retention_waits_for_every_group() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_age_ms: None, max_messages: None, max_bytes: None, ack_based: true },
        ..StationConfig::default()
    });
    h.produce(3);
    h.tick();
    assert_eq!(h.stats().first_offset, 0, "no group yet: nothing is acked by every group");
    h.group("a", GroupConfig::default());
    h.group("b", GroupConfig::default());
    let a = h.fetch("a", 2);
    h.ack("a", &receipts_of(&a));
    assert_eq!(h.stats().first_offset, 0);
    let b = h.fetch("b", 3);
    h.ack("b", &receipts_of(&b)[..1]);
    assert_eq!(h.stats().first_offset, 1);
    h.dead_letter("b", &receipts_of(&b)[1..], None);
    assert_eq!(h.stats().first_offset, 2);
    assert_eq!(h.view("a").lag, 1);
}

#[test]
fn retention_dead_letters_delivered_unacked_messages_as_expired() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_messages: Some(2), ..Retention::default() },
        ..StationConfig::default()
    });
    h.group("slow", GroupConfig::default());
    h.group("idle", GroupConfig::default());
    h.produce(2);
    let d = h.fetch("slow", 1);
    h.at(1_500).produce(2);
    let dead = h.dead();
    assert_eq!(dead.len(), 1, "only the delivered message becomes a dead letter");
    assert_eq!((dead[0].group.as_str(), dead[0].offset), ("slow", 0));
    assert_eq!((dead[0].reason, dead[0].attempts, dead[0].dead_at), (DeadLetterReason::Expired, 1, 1_500));
    let slow = h.view("slow");
    assert_eq!((slow.delivered_offset, slow.acked_floor, slow.pending, slow.lag, slow.dead_lettered), (2, 2, 0, 2, 1));
    let idle = h.view("idle");
    assert_eq!((idle.delivered_offset, idle.acked_floor, idle.lag, idle.dead_lettered), (2, 2, 2, 0));
    assert_eq!(h.ack("slow", &receipts_of(&d)), vec![Stale]);
    assert_eq!(offsets(&h.fetch("idle", 10)), vec![2, 3]);
}

#[test]
fn dead_letter_records_expire_after_their_retention() {
    let mut h = H::with_station(StationConfig {
        dead_letter: DeadLetterConfig { enabled: true, retention_ms: 1_000 },
        ..StationConfig::default()
    });
    h.group("g", GroupConfig::default());
    h.produce(2);
    let d = h.fetch("g", 2);
    h.dead_letter("g", &[d[0].receipt], None);
    h.at(1_400).dead_letter("g", &[d[1].receipt], None);
    h.run(Command::OutboxAdvance { upto: 2 });
    assert_eq!(h.s.next_tick_at(), Some(2_000));
    h.at(2_000).tick();
    assert_eq!(h.dead().iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
    h.at(2_400).tick();
    assert!(h.dead().is_empty());
}

#[test]
fn outbox_advance_still_applies_and_new_dead_letters_are_not_copied() {
    let mut h = four_dead_letters();
    assert!(h.s.outbox(10).is_empty());
    assert_eq!(h.run(Command::OutboxAdvance { upto: 3 }), Outcome::Ticked);
    assert_eq!(h.dead().len(), 4);
}

#[test]
fn seek_repositions_and_invalidates_receipts() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    for t in 0..5 {
        h.at(10_000 + t * 100).produce(1);
    }
    let d = h.fetch("g", 4);
    let seek = |to| Command::Seek { station: ST.into(), group: "g".into(), to };
    let Outcome::Group(view) = h.run(seek(SeekTo::Offset(2))) else { panic!("seek") };
    assert_eq!((view.delivered_offset, view.acked_floor, view.pending, view.lag), (2, 2, 0, 3));
    assert_eq!(h.ack("g", &receipts_of(&d)), vec![Stale, Stale, Unknown, Unknown]);
    let again = h.fetch("g", 10);
    assert_eq!(
        again.iter().map(|d| (d.receipt.offset, d.attempt, d.receipt.delivery)).collect::<Vec<_>>(),
        vec![(2, 1, 5), (3, 1, 6), (4, 1, 7)]
    );
    let Outcome::Group(view) = h.run(seek(SeekTo::Time(10_050))) else { panic!("seek") };
    assert_eq!((view.delivered_offset, view.pending), (1, 0));
    let Outcome::Group(view) = h.run(seek(SeekTo::Offset(1_000))) else { panic!("seek") };
    assert_eq!((view.delivered_offset, view.lag, view.acked_floor), (5, 0, 5));
}

#[test]
fn a_recreated_group_never_accepts_an_old_receipt() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce(1);
    let old = h.fetch("g", 1);
    h.run(Command::DeleteGroup { station: ST.into(), group: "g".into() });
    h.group("g", GroupConfig::default());
    assert_eq!(h.ack("g", &receipts_of(&old)), vec![Unknown]);
    let new = h.fetch("g", 1);
    assert_ne!(new[0].receipt, old[0].receipt);
    assert_eq!(h.ack("g", &receipts_of(&old)), vec![Unknown]);
    assert_eq!(h.ack("g", &receipts_of(&new)), vec![ROk]);
}

#[test]
fn clock_never_goes_backwards() {
    let mut h = H::new();
    h.group("g", group_config(1_000, 5));
    h.at(5_000).produce(1);
    assert_eq!(h.at(4_000).fetch("g", 1).len(), 1);
    assert_eq!(h.s.clock(), 5_000);
    assert_eq!(h.s.next_tick_at(), Some(6_000), "deadline from the state clock, not the stale stamp");
}

#[test]
fn snapshot_round_trip_then_restore_gives_identical_state() {
    let mut h = H::with_station(StationConfig {
        retention: Retention { max_messages: Some(6), ..Retention::default() },
        ..StationConfig::default()
    });
    h.group("a", GroupConfig { backoff_ms: vec![10], ..group_config(1_000, 2) });
    h.group("b", GroupConfig::default());
    h.produce_all(vec![msg("one"), keyed("two", "k"), delayed("three", 9_000), msg("four")]);
    h.produce(4);
    let a = h.fetch("a", 3);
    h.ack("a", &[a[0].receipt]);
    h.nack("a", &[a[1].receipt], 100);
    let b = h.fetch("b", 1);
    h.dead_letter("b", &receipts_of(&b), Some("x"));
    h.run(Command::InitReceiptKey { key: ReceiptKey::from_bytes([3; 32]) });
    h.s.take_effects();

    let bytes = h.s.to_bytes().expect("serialize");
    let mut copy = BrokerState::from_bytes(&bytes).expect("deserialize");
    for (id, _) in copy.stations() {
        let (first, next) = copy.station_offsets(id).expect("offsets");
        let metas: Vec<MessageMeta> = (first..next).filter_map(|o| h.s.message_meta(id, o)).collect();
        copy.restore_messages(id, metas);
    }
    copy.check_invariants();
    assert_eq!(copy.list_stations(), h.s.list_stations());
    assert_eq!(copy.dead_letters(ST), h.s.dead_letters(ST));
    assert_eq!(copy.outbox(100), h.s.outbox(100));
    assert_eq!(copy.next_tick_at(), h.s.next_tick_at());
    assert_eq!(copy.receipt_key(), Some(ReceiptKey::from_bytes([3; 32])));
    assert_eq!(copy.to_bytes().expect("serialize"), bytes);

    // Both go on identically, including time-driven work that needs the restored metas.
    let script = [
        Envelope {
            now: 3_000,
            command: Command::Fetch { station: ST.into(), group: "a".into(), max_messages: 10, max_bytes: Some(9) },
        },
        Envelope {
            now: 3_000,
            command: Command::Produce { station: ST.into(), messages: vec![keyed("two", "k"), msg("n")] },
        },
        Envelope { now: 10_000, command: Command::Tick },
        Envelope {
            now: 10_000,
            command: Command::Fetch { station: ST.into(), group: "b".into(), max_messages: 10, max_bytes: None },
        },
    ];
    for env in &script {
        assert_eq!(copy.apply(env), h.s.apply(env));
        assert_eq!(copy.take_effects(), h.s.take_effects());
    }
    assert_eq!(bincode::serialize(&copy).expect("serialize"), bincode::serialize(&h.s).expect("serialize"));
    assert_eq!(copy.list_stations(), h.s.list_stations());
}

#[test]
fn restore_pads_a_short_log() {
    let mut h = H::new();
    h.produce(3);
    let bytes = bincode::serialize(&h.s).expect("serialize");
    let mut copy: BrokerState = bincode::deserialize(&bytes).expect("deserialize");
    copy.restore_messages(1, [MessageMeta { produced_at: 1, deliver_at: 0, size: 7 }]);
    copy.restore_messages(99, []);
    let stats = copy.station_view(ST).expect("view").stats;
    assert_eq!((stats.messages, stats.bytes), (3, 7));
    assert_eq!(copy.message_meta(1, 2), Some(MessageMeta { produced_at: 1_000, deliver_at: 0, size: 0 }));
}

#[test]
fn put_group_says_whether_it_created() {
    let mut h = H::new();
    let put =
        |h: &mut H| h.run(Command::PutGroup { station: ST.into(), group: "g".into(), config: GroupConfig::default() });
    assert!(matches!(put(&mut h), Outcome::GroupPut { created: true, .. }));
    assert!(matches!(put(&mut h), Outcome::GroupPut { created: false, .. }));
}

fn bound(station_id: u64, deliveries: &[Delivery]) -> Vec<BoundReceipt> {
    deliveries.iter().map(|d| BoundReceipt { station_id, receipt: d.receipt }).collect()
}

fn settle(h: &mut H, group: &str, receipts: Vec<BoundReceipt>, op: SettleOp) -> Vec<ReceiptResult> {
    h.receipts(Command::Settle { station: ST.into(), group: group.into(), receipts, op })
}

#[test]
fn settle_acts_only_on_the_station_incarnation_its_receipts_are_bound_to() {
    let mut h = H::new();
    let old_id = h.s.station_id(ST).expect("station");
    h.group("g", GroupConfig::default());
    h.produce(1);
    let old = h.fetch("g", 1);
    h.run(Command::DeleteStation { station: ST.into() });
    h.run(Command::PutStation { station: ST.into(), config: StationConfig::default() });
    let new_id = h.s.station_id(ST).expect("station");
    assert_ne!(new_id, old_id, "station ids are never reused");
    h.group("g", GroupConfig::default());
    h.produce(1);
    let new = h.fetch("g", 1);
    assert_eq!(new[0].receipt, old[0].receipt, "the same offset and delivery number on the new station");

    assert_eq!(settle(&mut h, "g", bound(old_id, &old), SettleOp::Ack), vec![Unknown]);
    assert_eq!(h.view("g").pending, 1, "an old incarnation's receipt changed nothing");
    let mixed = [bound(old_id, &old), bound(new_id, &new)].concat();
    assert_eq!(settle(&mut h, "g", mixed, SettleOp::Ack), vec![Unknown, ROk]);
    assert_eq!(h.view("g").pending, 0);
}

#[test]
fn settle_does_what_each_op_says() {
    let mut h = H::new();
    let id = h.s.station_id(ST).expect("station");
    h.group("g", group_config(1_000, 5));
    h.produce(3);
    let d = h.fetch("g", 3);
    let extend = SettleOp::Extend { ack_wait_ms: 5_000 };
    assert_eq!(settle(&mut h, "g", bound(id, &d[..1]), extend), vec![ROk]);
    assert_eq!(settle(&mut h, "g", bound(id, &d[1..2]), SettleOp::Nack { delay_ms: 0 }), vec![ROk]);
    let dead = SettleOp::DeadLetter { reason: Some("bad".into()) };
    assert_eq!(settle(&mut h, "g", bound(id, &d[2..]), dead), vec![ROk]);
    assert_eq!(h.dead()[0].last_error.as_deref(), Some("bad"));
    let again = h.at(2_000).fetch("g", 3);
    assert_eq!(offsets(&again), vec![1], "extended past 2_000, nacked back, dead-lettered gone");
    assert_eq!(settle(&mut h, "g", bound(id, &d[..1]), SettleOp::Ack), vec![ROk]);
    assert_eq!(settle(&mut h, "g", bound(id, &d[1..2]), SettleOp::Ack), vec![Stale]);
}

#[test]
fn the_first_receipt_key_applied_stays() {
    let mut h = H::new();
    assert_eq!(h.s.receipt_key(), None);
    let (first, second) = (ReceiptKey::from_bytes([1; 32]), ReceiptKey::from_bytes([2; 32]));
    assert_eq!(h.run(Command::InitReceiptKey { key: first }), Outcome::ReceiptKey(first));
    assert_eq!(h.run(Command::InitReceiptKey { key: second }), Outcome::ReceiptKey(first));
    assert_eq!(h.s.receipt_key(), Some(first));
}

#[test]
fn a_state_serialized_before_receipt_keys_still_reads() {
    let mut h = H::new();
    h.group("g", GroupConfig::default());
    h.produce(3);
    let d = h.fetch("g", 2);
    h.ack("g", &receipts_of(&d[..1]));
    h.s.take_effects();
    // What the previous version wrote: these fields, in this order, and no marker.
    let s = &h.s;
    let v1 = StateV1 {
        clock: s.clock,
        last_station_id: s.last_station_id,
        stations: s.stations.clone(),
        names: s.names.clone(),
        outbox: s.outbox.clone(),
    };
    let legacy = bincode::serialize(&v1).expect("serialize");
    let mut read = BrokerState::from_bytes(&legacy).expect("a legacy state reads");
    assert_eq!(read.receipt_key(), None);
    assert_eq!(read.clock(), h.s.clock());
    let (id, _) = read.stations()[0].clone();
    let metas: Vec<MessageMeta> = (0..3).filter_map(|o| h.s.message_meta(id, o)).collect();
    read.restore_messages(id, metas);
    assert_eq!(read.list_stations(), h.s.list_stations());
    assert_eq!(read.to_bytes().expect("serialize"), h.s.to_bytes().expect("serialize"));
    assert!(BrokerState::from_bytes(&legacy[..legacy.len() - 1]).is_err(), "a truncated state is refused");
}

fn push_config(url: &str) -> PushConfig {
    PushConfig {
        url: url.to_owned(),
        headers: Vec::new(),
        timeout_ms: 1_000,
        max_in_flight: 16,
        rate_per_s: None,
        body: PushBody::Raw,
        hook_created_at: None,
    }
}

impl H {
    fn push_group(&mut self, group: &str, config: GroupConfig, secret: SecretChoice) -> GroupView {
        let command = Command::PutPushGroup {
            station: ST.into(),
            group: group.into(),
            config,
            push: push_config("https://example.com/hook"),
            secret,
        };
        match self.run(command) {
            Outcome::GroupPut { group, .. } => group,
            other => panic!("put push group: {other:?}"),
        }
    }

    fn push_fetch(&mut self, group: &str, max: u32) -> Vec<Delivery> {
        match self.run(Command::PushFetch { station: ST.into(), group: group.into(), max_messages: max }) {
            Outcome::Fetched(d) => d,
            other => panic!("push fetch: {other:?}"),
        }
    }

    fn push_settle(&mut self, group: &str, results: Vec<(Receipt, PushResult)>) -> Vec<ReceiptResult> {
        match self.run(Command::PushSettle { station: ST.into(), group: group.into(), results }) {
            Outcome::Receipts(r) => r,
            other => panic!("push settle: {other:?}"),
        }
    }
}

fn failed(error: &str, retry_after_ms: Option<u64>) -> PushResult {
    PushResult::Failed { error: error.to_owned(), retry_after_ms }
}

#[test]
fn a_push_group_refuses_pull_operations_and_a_pull_group_push_ones() {
    let mut h = H::new();
    h.push_group("p", GroupConfig::default(), SecretChoice::Generated("whsec_a".into()));
    h.group("q", GroupConfig::default());
    h.produce(1);
    let refused = |push| Outcome::Error(CommandError::WrongDelivery { station: ST.into(), group: "p".into(), push });
    let fetch = Command::Fetch { station: ST.into(), group: "p".into(), max_messages: 1, max_bytes: None };
    assert_eq!(h.run(fetch), refused(true));
    let settle = Command::Settle { station: ST.into(), group: "p".into(), receipts: Vec::new(), op: SettleOp::Ack };
    assert_eq!(h.run(settle), refused(true));
    let pull = Command::PushFetch { station: ST.into(), group: "q".into(), max_messages: 1 };
    assert_eq!(
        h.run(pull),
        Outcome::Error(CommandError::WrongDelivery { station: ST.into(), group: "q".into(), push: false })
    );
    // Both groups see the message, each its own way.
    assert_eq!(h.push_fetch("p", 10).len(), 1);
    assert_eq!(h.fetch("q", 10).len(), 1);
    // A plain PUT turns the push group into a pull group.
    h.group("p", GroupConfig::default());
    assert_eq!(h.s.push_group(ST, "p"), None);
}

#[test]
fn push_results_ack_retry_with_backoff_or_retry_after_and_dead_letter_with_the_last_error() {
    let mut h = H::new();
    let config =
        GroupConfig { backoff_ms: vec![100], max_deliveries: 2, ack_wait_ms: 30_000, ..GroupConfig::default() };
    h.push_group("p", config, SecretChoice::Generated("whsec_a".into()));
    h.produce(2);
    let d = h.push_fetch("p", 10);
    assert_eq!(d.len(), 2);
    let results = h
        .push_settle("p", vec![(d[0].receipt, PushResult::Delivered), (d[1].receipt, failed("HTTP 429", Some(2_000)))]);
    assert_eq!(results, vec![ReceiptResult::Ok, ReceiptResult::Ok]);
    // Retry-After (2 s) wins over the 100 ms backoff step.
    h.at(1_000 + 1_999);
    assert!(h.push_fetch("p", 10).is_empty());
    h.at(1_000 + 2_000);
    let again = h.push_fetch("p", 10);
    assert_eq!((again.len(), again[0].attempt), (1, 2));
    h.push_settle("p", vec![(again[0].receipt, failed("HTTP 500", None))]);
    let dead = h.s.dead_letters(ST).expect("station");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].reason, dead[0].attempts), (DeadLetterReason::MaxDeliveries, 2));
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
    let view = h.s.group_view(ST, "p").expect("group");
    assert_eq!((view.lag, view.pending), (0, 0));
    let stats = view.push.expect("push").stats;
    assert_eq!((stats.delivered_total, stats.failed_total), (1, 2));
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!((stats.last_attempt_at, stats.last_success_at), (Some(h.now), Some(1_000)));
}

#[test]
fn without_backoff_a_failed_push_waits_the_ack_wait() {
    let mut h = H::new();
    h.push_group("p", group_config(5_000, 5), SecretChoice::Generated("whsec_a".into()));
    h.produce(1);
    let d = h.push_fetch("p", 1);
    h.push_settle("p", vec![(d[0].receipt, failed("timeout", None))]);
    h.at(1_000 + 4_999);
    assert!(h.push_fetch("p", 1).is_empty());
    h.at(1_000 + 5_000);
    assert_eq!(h.push_fetch("p", 1).len(), 1);
}

#[test]
fn gone_disables_the_group_and_hands_the_message_back_uncounted_and_resume_carries_on() {
    let mut h = H::new();
    h.push_group("p", group_config(30_000, 1), SecretChoice::Generated("whsec_a".into()));
    h.produce(1);
    let d = h.push_fetch("p", 1);
    h.push_settle("p", vec![(d[0].receipt, PushResult::Gone)]);
    let push = h.s.push_group(ST, "p").cloned().expect("push");
    assert_eq!(push.state, PushState::Disabled);
    assert!(push.disabled_reason.is_some());
    assert!(h.push_fetch("p", 1).is_empty(), "a disabled group hands out nothing");
    assert!(h.s.dead_letters(ST).expect("station").is_empty(), "the 410'd attempt does not count");
    let resume =
        Command::SetPushState { station: ST.into(), group: "p".into(), state: PushState::Active, reason: None };
    assert!(matches!(h.run(resume), Outcome::Group(_)));
    let again = h.push_fetch("p", 1);
    assert_eq!((again.len(), again[0].attempt), (1, 1));
}

#[test]
fn an_ack_wait_no_longer_than_the_push_timeout_is_refused() {
    let mut h = H::new();
    let command = Command::PutPushGroup {
        station: ST.into(),
        group: "p".into(),
        config: group_config(1_000, 5),
        push: push_config("https://example.com/hook"),
        secret: SecretChoice::Generated("whsec_a".into()),
    };
    assert!(matches!(h.run(command), Outcome::Error(CommandError::Invalid(d)) if d.contains("ack_wait_ms")));
    assert!(h.s.push_groups().is_empty());
}

#[test]
fn secrets_keep_on_update_unless_given_and_rotation_keeps_the_old_one_for_a_while() {
    let mut h = H::new();
    let view = h.push_group("p", GroupConfig::default(), SecretChoice::Generated("whsec_first".into()));
    assert_eq!(view.push.expect("push").secrets[0].secret, "whsec_first");
    h.push_group("p", GroupConfig::default(), SecretChoice::Generated("whsec_ignored".into()));
    let push = h.s.push_group(ST, "p").cloned().expect("push");
    assert_eq!(push.signing_secrets(h.now).collect::<Vec<_>>(), ["whsec_first"]);
    let rotate = Command::RotatePushSecret {
        station: ST.into(),
        group: "p".into(),
        secret: "whsec_second".into(),
        old_valid_ms: 1_000,
    };
    h.run(rotate);
    let push = h.s.push_group(ST, "p").cloned().expect("push");
    assert_eq!(push.signing_secrets(h.now + 999).collect::<Vec<_>>(), ["whsec_second", "whsec_first"]);
    assert_eq!(push.signing_secrets(h.now + 1_000).collect::<Vec<_>>(), ["whsec_second"]);
    h.push_group("p", GroupConfig::default(), SecretChoice::Given("whsec_given".into()));
    let push = h.s.push_group(ST, "p").cloned().expect("push");
    assert_eq!(push.signing_secrets(h.now).collect::<Vec<_>>(), ["whsec_given"]);
    // Deleting the group or the station forgets its push side.
    h.run(Command::DeleteGroup { station: ST.into(), group: "p".into() });
    assert!(h.s.push_groups().is_empty());
}

#[test]
fn a_state_with_push_groups_round_trips_and_one_serialized_before_them_still_reads() {
    let mut h = H::new();
    h.push_group("p", GroupConfig::default(), SecretChoice::Generated("whsec_a".into()));
    h.produce(2);
    h.run(Command::InitReceiptKey { key: ReceiptKey::from_bytes([5; 32]) });
    let bytes = h.s.to_bytes().expect("serialize");
    let copy = BrokerState::from_bytes(&bytes).expect("deserialize");
    assert_eq!(copy.push_groups(), h.s.push_groups());

    // What the previous version wrote: the ST2 marker and these fields.
    let s = &h.s;
    let v2 = StateV2 {
        clock: s.clock,
        last_station_id: s.last_station_id,
        stations: s.stations.clone(),
        names: s.names.clone(),
        outbox: s.outbox.clone(),
        receipt_key: s.receipt_key,
    };
    let mut legacy = STATE_V2_MARKER.to_vec();
    legacy.extend(bincode::serialize(&v2).expect("serialize"));
    let read = BrokerState::from_bytes(&legacy).expect("an ST2 state reads");
    assert_eq!(read.receipt_key(), Some(ReceiptKey::from_bytes([5; 32])));
    assert!(read.push_groups().is_empty());
}

fn source_config(station: &str) -> SourceConfig {
    SourceConfig {
        station: station.into(),
        verify: Some(SourceVerify {
            scheme: "github".into(),
            secret: "It's a Secret to Everybody".into(),
            header: None,
            tolerance_ms: 300_000,
        }),
        capture_headers: vec!["x-github-event".into()],
        idempotency_header: None,
        rate_per_s: 1000,
    }
}

impl H {
    fn ingest(&mut self, source: &str, token: u8, message: NewMessage) -> Outcome {
        self.run(Command::Ingest { source: source.into(), token_hash: [token; 32], message })
    }
}

#[test]
fn a_source_produces_on_its_station_only_with_its_current_token() {
    let mut h = H::new();
    let put = |source: &str, config: SourceConfig, token: u8| Command::PutSource {
        source: source.into(),
        config,
        token_hash: [token; 32],
    };
    // Its station must exist; its name and config are checked.
    assert_eq!(
        h.run(put("gh", source_config("nope"), 1)),
        Outcome::Error(CommandError::StationNotFound("nope".into()))
    );
    assert!(matches!(h.run(put("Bad Name", source_config(ST), 1)), Outcome::Error(CommandError::Invalid(_))));
    let mut bad = source_config(ST);
    bad.capture_headers = vec!["X-Upper".into()];
    assert!(matches!(h.run(put("gh", bad, 1)), Outcome::Error(CommandError::Invalid(_))));
    let mut bad = source_config(ST);
    bad.rate_per_s = 0;
    assert!(matches!(h.run(put("gh", bad, 1)), Outcome::Error(CommandError::Invalid(_))));

    // Every scheme's name is taken (hmac_sha256 has digits).
    let mut generic = source_config(ST);
    generic.verify = Some(SourceVerify {
        scheme: "hmac_sha256".into(),
        secret: "s".into(),
        header: Some("x-signature".into()),
        tolerance_ms: 300_000,
    });
    assert!(matches!(h.run(put("generic", generic, 7)), Outcome::Source { created: true, .. }));
    let Outcome::Source { created: true, source } = h.run(put("gh", source_config(ST), 1)) else {
        panic!("not created")
    };
    assert_eq!((source.token_hash, source.created_at, source.accepted_total), ([1; 32], 1_000, 0));
    // An update keeps the token.
    let mut changed = source_config(ST);
    changed.capture_headers.push("x-github-delivery".into());
    let Outcome::Source { created: false, source } = h.run(put("gh", changed.clone(), 9)) else {
        panic!("not updated")
    };
    assert_eq!((source.token_hash, source.config), ([1; 32], changed));

    assert_eq!(
        h.ingest("gh", 1, keyed("a", "d-1")),
        Outcome::Produced(vec![Ok(Produced { offset: 0, duplicate: false })])
    );
    // The sender's retry finds the first one; a wrong token or unknown source stores nothing.
    assert_eq!(
        h.ingest("gh", 1, keyed("a", "d-1")),
        Outcome::Produced(vec![Ok(Produced { offset: 0, duplicate: true })])
    );
    assert_eq!(h.ingest("gh", 2, msg("b")), Outcome::Error(CommandError::IngestRefused));
    assert_eq!(h.ingest("other", 1, msg("b")), Outcome::Error(CommandError::IngestRefused));
    assert_eq!(h.s.source("gh").map(|s| s.accepted_total), Some(2));

    // After a rotation only the new token works.
    let rotated = h.run(Command::RotateSourceToken { source: "gh".into(), token_hash: [3; 32] });
    assert!(matches!(rotated, Outcome::Source { ref source, .. } if source.token_hash == [3; 32]));
    assert_eq!(h.ingest("gh", 1, msg("c")), Outcome::Error(CommandError::IngestRefused));
    assert_eq!(h.ingest("gh", 3, msg("c")), Outcome::Produced(vec![Ok(Produced { offset: 1, duplicate: false })]));
    assert_eq!(h.s.station_view(ST).map(|v| v.stats.next_offset), Some(2));

    // Deleting the source, or its station, refuses it.
    assert_eq!(h.run(Command::DeleteSource { source: "gh".into() }), Outcome::Deleted);
    assert_eq!(h.ingest("gh", 3, msg("d")), Outcome::Error(CommandError::IngestRefused));
    assert_eq!(
        h.run(Command::DeleteSource { source: "gh".into() }),
        Outcome::Error(CommandError::SourceNotFound("gh".into()))
    );
    h.run(put("gh2", source_config(ST), 4));
    h.run(Command::DeleteStation { station: ST.into() });
    assert!(h.s.sources().is_empty());
}

#[test]
fn an_ingest_indexes_its_stations_deadlines_and_rejections_are_counted_by_reason() {
    let mut h = H::new();
    h.run(Command::PutSource { source: "gh".into(), config: source_config(ST), token_hash: [1; 32] });
    // A keyed produce gives the station a dedup deadline; `run` checks the index after apply.
    h.ingest("gh", 1, keyed("a", "d-1"));
    assert!(h.s.next_tick_at().is_some());
    let counts = vec![
        ("gh".into(), "bad_signature".into(), 3),
        ("gh".into(), "invalid_token".into(), 1),
        ("gone".into(), "bad_signature".into(), 5),
    ];
    h.run(Command::CountRejected { counts });
    h.run(Command::CountRejected { counts: vec![("gh".into(), "bad_signature".into(), 2)] });
    let source = h.s.source("gh").cloned().expect("source");
    assert_eq!(source.rejected.get("bad_signature"), Some(&5));
    assert_eq!(source.rejected_total(), 6);
    // Reasons are bounded: past 16 they count as "other".
    let many = (0..20).map(|i| ("gh".into(), format!("r{i}"), 1)).collect();
    h.run(Command::CountRejected { counts: many });
    let source = h.s.source("gh").cloned().expect("source");
    assert_eq!(source.rejected.len(), 17);
    assert_eq!(source.rejected_total(), 26);
}

#[test]
fn a_state_with_sources_round_trips_and_one_serialized_before_them_still_reads() {
    let mut h = H::new();
    h.push_group("p", GroupConfig::default(), SecretChoice::Generated("whsec_a".into()));
    h.run(Command::PutSource { source: "gh".into(), config: source_config(ST), token_hash: [1; 32] });
    let copy = BrokerState::from_bytes(&h.s.to_bytes().expect("serialize")).expect("deserialize");
    assert_eq!(copy.sources(), h.s.sources());

    let s = &h.s;
    let v3 = StateV3 {
        clock: s.clock,
        last_station_id: s.last_station_id,
        stations: s.stations.clone(),
        names: s.names.clone(),
        outbox: s.outbox.clone(),
        receipt_key: s.receipt_key,
        push: s.push.clone(),
    };
    let mut legacy = STATE_V3_MARKER.to_vec();
    legacy.extend(bincode::serialize(&v3).expect("serialize"));
    let read = BrokerState::from_bytes(&legacy).expect("an ST3 state reads");
    assert_eq!(read.push_groups(), h.s.push_groups());
    assert!(read.sources().is_empty());
}

fn tiered(first: u64, last: u64) -> TieredSegment {
    TieredSegment { first_offset: first, last_offset: last, bytes: 100, key: format!("k/{first}-{last}"), tiered_at: 1 }
}

#[test]
fn the_tiering_catalog_takes_each_range_once_and_lets_go_of_what_retention_and_deletion_remove() {
    let mut h = H::new();
    let tier = |first, last| Command::TierSegment { station: ST.into(), station_id: 1, segment: tiered(first, last) };
    // The setting: at least a second, on an existing station.
    let set = |after_ms| Command::SetStationTiering { station: ST.into(), tiering: Some(StationTiering { after_ms }) };
    assert!(matches!(h.run(set(999)), Outcome::Error(CommandError::Invalid(_))));
    h.run(set(1000));
    assert_eq!(h.s.tiering_stations(), vec![(ST.to_owned(), 1, StationTiering { after_ms: 1000 })]);
    let other = Command::SetStationTiering { station: "nope".into(), tiering: None };
    assert_eq!(h.run(other), Outcome::Error(CommandError::StationNotFound("nope".into())));

    h.produce(10);
    assert_eq!(h.run(tier(0, 3)), Outcome::Ticked);
    // The same upload again (a leader change) changes nothing; an overlapping range from a
    // leader whose segments are cut elsewhere becomes garbage.
    assert_eq!(h.run(tier(0, 3)), Outcome::Ticked);
    assert_eq!(h.run(tier(2, 5)), Outcome::Ticked);
    assert_eq!(h.s.tier_garbage(), vec!["k/2-5".to_owned()]);
    h.run(Command::TierForget { keys: vec!["k/2-5".into()] });
    assert!(h.s.tier_garbage().is_empty());
    // Ranges past the log, inverted, or of another incarnation are refused.
    assert!(matches!(h.run(tier(4, 10)), Outcome::Error(CommandError::Invalid(_))));
    assert!(matches!(h.run(tier(5, 4)), Outcome::Error(CommandError::Invalid(_))));
    let stale = Command::TierSegment { station: ST.into(), station_id: 9, segment: tiered(4, 5) };
    assert!(matches!(h.run(stale), Outcome::Error(CommandError::Invalid(_))));
    assert_eq!(h.s.tier_garbage(), vec!["k/4-5".to_owned()]);
    h.run(Command::TierForget { keys: vec!["k/4-5".into()] });
    h.run(tier(4, 7));
    assert!(h.s.is_tiered(1, 7, 9) && !h.s.is_tiered(1, 8, 9));
    let view = h.s.station_view(ST).expect("station");
    assert_eq!(view.tiering, Some(StationTiering { after_ms: 1000 }));
    assert_eq!(view.tiered, TierStats { segments: 2, bytes: 200, first_offset: Some(0), last_offset: Some(7) });

    // Retention past a segment moves its object to the garbage; a state round trip keeps it all.
    let retained = StationConfig {
        retention: Retention { max_messages: Some(5), ..Retention::default() },
        ..StationConfig::default()
    };
    h.run(Command::PutStation { station: ST.into(), config: retained });
    assert_eq!(h.s.tier_garbage(), vec!["k/0-3".to_owned()]);
    assert_eq!(h.s.tiered_segments(1), vec![tiered(4, 7)]);
    let copy = BrokerState::from_bytes(&h.s.to_bytes().expect("serialize")).expect("deserialize");
    assert_eq!((copy.tier_garbage(), copy.tiered_segments(1)), (h.s.tier_garbage(), h.s.tiered_segments(1)));
    assert_eq!(copy.tiering_stations(), h.s.tiering_stations());
    // A segment that retention removed before its upload was catalogued is garbage at once.
    assert!(matches!(h.run(tier(1, 2)), Outcome::Error(CommandError::Invalid(_))));
    assert!(h.s.tier_garbage().contains(&"k/1-2".to_owned()));

    // Deleting the station lets go of every object and of the setting.
    h.run(Command::DeleteStation { station: ST.into() });
    assert!(h.s.tier_garbage().contains(&"k/4-7".to_owned()));
    assert!(h.s.tiering_stations().is_empty() && h.s.tiered_segments(1).is_empty());
}

#[test]
fn a_state_serialized_before_tiering_still_reads() {
    let mut h = H::new();
    h.run(Command::PutSource { source: "gh".into(), config: source_config(ST), token_hash: [1; 32] });
    let s = &h.s;
    let v4 = StateV4 {
        clock: s.clock,
        last_station_id: s.last_station_id,
        stations: s.stations.clone(),
        names: s.names.clone(),
        outbox: s.outbox.clone(),
        receipt_key: s.receipt_key,
        push: s.push.clone(),
        sources: s.sources.clone(),
    };
    let mut legacy = STATE_V4_MARKER.to_vec();
    legacy.extend(bincode::serialize(&v4).expect("serialize"));
    let read = BrokerState::from_bytes(&legacy).expect("an ST4 state reads");
    assert_eq!(read.sources(), h.s.sources());
    assert!(read.tiering_stations().is_empty() && read.tier_garbage().is_empty());
}
