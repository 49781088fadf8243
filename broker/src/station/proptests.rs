//! Consumer-group rules over random interleavings of produce, fetch, ack, nack, extend,
//! dead-letter and tick, with two groups and consumers that sometimes lose receipts or hand in
//! one bound to another incarnation of the station.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const ST: &str = "s";
const GROUPS: [&str; 2] = ["a", "b"];

#[derive(Clone, Debug)]
enum Op {
    Produce {
        n: u8,
        delay_ms: Option<u16>,
        key: Option<(u8, bool)>,
    },
    Fetch {
        g: usize,
        max: u32,
    },
    Ack {
        g: usize,
        pick: usize,
    },
    Nack {
        g: usize,
        pick: usize,
        delay_ms: u16,
    },
    Extend {
        g: usize,
        pick: usize,
        wait_ms: u16,
    },
    DeadLetter {
        g: usize,
        pick: usize,
    },
    /// The consumer forgets a receipt without answering it.
    Lose {
        g: usize,
        pick: usize,
    },
    /// Replays a superseded or answered receipt: it must be Stale and change nothing.
    AckOld {
        g: usize,
        pick: usize,
    },
    /// Hands in a held receipt bound to another incarnation of the station: it must be Unknown
    /// and change nothing.
    AckElsewhere {
        g: usize,
        pick: usize,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let g = 0..GROUPS.len();
    prop_oneof![
        3 => (1u8..4, prop::option::weighted(0.2, 1u16..5_000), prop::option::weighted(0.3, (0u8..4, any::<bool>())))
            .prop_map(|(n, delay_ms, key)| Op::Produce { n, delay_ms, key }),
        3 => (g.clone(), 1u32..5).prop_map(|(g, max)| Op::Fetch { g, max }),
        3 => (g.clone(), any::<usize>()).prop_map(|(g, pick)| Op::Ack { g, pick }),
        1 => (g.clone(), any::<usize>(), 0u16..2_000).prop_map(|(g, pick, delay_ms)| Op::Nack { g, pick, delay_ms }),
        1 => (g.clone(), any::<usize>(), 1u16..3_000).prop_map(|(g, pick, wait_ms)| Op::Extend { g, pick, wait_ms }),
        1 => (g.clone(), any::<usize>()).prop_map(|(g, pick)| Op::DeadLetter { g, pick }),
        1 => (g.clone(), any::<usize>()).prop_map(|(g, pick)| Op::Lose { g, pick }),
        1 => (g.clone(), any::<usize>()).prop_map(|(g, pick)| Op::AckOld { g, pick }),
        1 => (g, any::<usize>()).prop_map(|(g, pick)| Op::AckElsewhere { g, pick }),
        1 => Just(Op::Tick),
    ]
}

/// What the test knows about one group from the answers it got.
#[derive(Default)]
struct Model {
    /// Receipts the consumers still hold.
    held: Vec<Receipt>,
    /// Every receipt issued, with whether it was answered Ok since.
    issued: BTreeMap<Receipt, bool>,
    /// The latest delivery number issued per offset.
    latest: BTreeMap<u64, u64>,
    acked: BTreeSet<u64>,
    dead: BTreeSet<u64>,
    /// The last offset first delivered among non-delayed messages (FIFO check).
    last_first: Option<u64>,
}

impl Model {
    fn superseded(&self, receipt: &Receipt) -> bool {
        self.latest.get(&receipt.offset).is_some_and(|latest| *latest > receipt.delivery)
            || self.issued.get(receipt).copied().unwrap_or(false)
    }
}

struct Run {
    state: BrokerState,
    now: Millis,
    log: Vec<Envelope>,
    models: Vec<Model>,
    produced: BTreeSet<u64>,
    /// Offsets produced with a delay, and when they become deliverable.
    delayed: BTreeMap<u64, Millis>,
}

fn group_config(g: usize) -> GroupConfig {
    if g == 0 {
        GroupConfig {
            ack_wait_ms: 1_000,
            max_deliveries: 3,
            backoff_ms: vec![200, 700],
            max_pending: 6,
            ..Default::default()
        }
    } else {
        GroupConfig {
            ack_wait_ms: 2_000,
            max_deliveries: 2,
            backoff_ms: Vec::new(),
            max_pending: 4,
            ..Default::default()
        }
    }
}

impl Run {
    /// `max_messages`: count retention for the station (none: every message stays until the end).
    fn new(max_messages: Option<u64>) -> Self {
        let mut run = Run {
            state: BrokerState::default(),
            now: 1_000,
            log: Vec::new(),
            models: GROUPS.iter().map(|_| Model::default()).collect(),
            produced: BTreeSet::new(),
            delayed: BTreeMap::new(),
        };
        let config = StationConfig {
            retention: Retention { max_age_ms: None, max_messages, ..Retention::default() },
            dedup_window_ms: 3_000,
            ..StationConfig::default()
        };
        run.apply(Command::PutStation { station: ST.into(), config });
        for (g, name) in GROUPS.iter().enumerate() {
            run.apply(Command::PutGroup { station: ST.into(), group: (*name).into(), config: group_config(g) });
        }
        run
    }

    fn apply(&mut self, command: Command) -> Outcome {
        let env = Envelope { now: self.now, command };
        let outcome = self.state.apply(&env);
        self.log.push(env);
        self.state.take_effects();
        self.state.check_invariants();
        assert!(!matches!(outcome, Outcome::Error(_)), "{outcome:?}");
        outcome
    }

    fn take_held(&mut self, g: usize, pick: usize) -> Option<Receipt> {
        let held = &mut self.models[g].held;
        (!held.is_empty()).then(|| held.swap_remove(pick % held.len()))
    }

    fn receipts(&mut self, g: usize, command: Command, receipt: Receipt) -> ReceiptResult {
        let Outcome::Receipts(results) = self.apply(command) else { panic!("receipts expected") };
        assert_eq!(results.len(), 1);
        let result = results[0];
        let model = &mut self.models[g];
        if model.superseded(&receipt) {
            assert_eq!(result, ReceiptResult::Stale, "old receipt {receipt:?}");
        }
        if result == ReceiptResult::Ok {
            model.issued.insert(receipt, true);
        }
        result
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Produce { n, delay_ms, key } => {
                let deliver_at = delay_ms.map(|d| self.now + Millis::from(d));
                let messages = (0..n)
                    .map(|i| NewMessage {
                        content_type: "text/plain".into(),
                        headers: Vec::new(),
                        payload: Bytes::from(format!("p{}", key.map_or(u32::from(i), |(_, same)| u32::from(same)))),
                        idempotency_key: key.map(|(k, _)| format!("k{k}")),
                        deliver_at,
                    })
                    .collect();
                let Outcome::Produced(results) = self.apply(Command::Produce { station: ST.into(), messages }) else {
                    panic!("produced expected")
                };
                for produced in results.into_iter().flatten().filter(|p| !p.duplicate) {
                    assert!(self.produced.insert(produced.offset), "offset assigned twice");
                    if let Some(at) = deliver_at {
                        self.delayed.insert(produced.offset, at);
                    }
                }
            }
            Op::Fetch { g, max } => self.fetch(g, max),
            Op::Ack { g, pick } => {
                let Some(receipt) = self.take_held(g, pick) else { return };
                let station_id = self.state.station_id(ST).expect("station");
                let command = Command::Settle {
                    station: ST.into(),
                    group: GROUPS[g].into(),
                    receipts: vec![BoundReceipt { station_id, receipt }],
                    op: SettleOp::Ack,
                };
                if self.receipts(g, command, receipt) == ReceiptResult::Ok {
                    assert!(self.models[g].acked.insert(receipt.offset), "acked twice");
                }
            }
            Op::Nack { g, pick, delay_ms } => {
                let Some(receipt) = self.take_held(g, pick) else { return };
                let command = Command::Nack {
                    station: ST.into(),
                    group: GROUPS[g].into(),
                    receipts: vec![receipt],
                    delay_ms: u64::from(delay_ms),
                };
                self.receipts(g, command, receipt);
            }
            Op::Extend { g, pick, wait_ms } => {
                let Some(receipt) = self.models[g].held.get(pick % self.models[g].held.len().max(1)).copied() else {
                    return;
                };
                let command = Command::Extend {
                    station: ST.into(),
                    group: GROUPS[g].into(),
                    receipts: vec![receipt],
                    ack_wait_ms: u64::from(wait_ms),
                };
                // Extending keeps the delivery in flight, so the receipt stays current.
                if self.receipts(g, command, receipt) == ReceiptResult::Ok {
                    self.models[g].issued.insert(receipt, false);
                }
            }
            Op::DeadLetter { g, pick } => {
                let Some(receipt) = self.take_held(g, pick) else { return };
                let command = Command::DeadLetter {
                    station: ST.into(),
                    group: GROUPS[g].into(),
                    receipts: vec![receipt],
                    reason: Some("bad".into()),
                };
                if self.receipts(g, command, receipt) == ReceiptResult::Ok {
                    assert!(self.models[g].dead.insert(receipt.offset), "dead-lettered twice");
                }
            }
            Op::Lose { g, pick } => {
                self.take_held(g, pick);
            }
            Op::AckOld { g, pick } => {
                let old: Vec<Receipt> =
                    self.models[g].issued.keys().filter(|r| self.models[g].superseded(r)).copied().collect();
                let Some(receipt) = old.get(pick % old.len().max(1)).copied() else { return };
                let before = bincode::serialize(&self.state).expect("serialize");
                self.now = self.state.clock();
                let command = Command::Ack { station: ST.into(), group: GROUPS[g].into(), receipts: vec![receipt] };
                assert_eq!(self.receipts(g, command, receipt), ReceiptResult::Stale);
                assert_eq!(bincode::serialize(&self.state).expect("serialize"), before, "a stale ack changed state");
            }
            Op::AckElsewhere { g, pick } => {
                let held = &self.models[g].held;
                let Some(receipt) = held.get(pick % held.len().max(1)).copied() else { return };
                let station_id = self.state.station_id(ST).expect("station") + 1;
                let before = bincode::serialize(&self.state).expect("serialize");
                self.now = self.state.clock();
                let command = Command::Settle {
                    station: ST.into(),
                    group: GROUPS[g].into(),
                    receipts: vec![BoundReceipt { station_id, receipt }],
                    op: SettleOp::Ack,
                };
                assert_eq!(self.apply(command), Outcome::Receipts(vec![ReceiptResult::Unknown]));
                assert_eq!(
                    bincode::serialize(&self.state).expect("serialize"),
                    before,
                    "another station's receipt changed state"
                );
            }
            Op::Tick => {
                self.apply(Command::Tick);
            }
        }
        self.check();
    }

    fn fetch(&mut self, g: usize, max: u32) {
        let ready = self.state.has_ready(ST, GROUPS[g], self.now);
        if ready {
            let at = self.state.next_ready_at(ST, GROUPS[g]);
            assert!(at.is_some_and(|at| at <= self.now), "ready now yet next_ready_at is {at:?}");
        }
        let command =
            Command::Fetch { station: ST.into(), group: GROUPS[g].into(), max_messages: max, max_bytes: None };
        let Outcome::Fetched(deliveries) = self.apply(command) else { panic!("fetched expected") };
        assert_eq!(ready, !deliveries.is_empty(), "has_ready mispredicted the fetch");
        assert!(deliveries.len() <= max as usize);
        let max_deliveries = group_config(g).max_deliveries;
        let model = &mut self.models[g];
        for delivery in deliveries {
            let receipt = delivery.receipt;
            assert!(delivery.attempt >= 1 && delivery.attempt <= max_deliveries, "{delivery:?}");
            assert!(
                !model.acked.contains(&receipt.offset) && !model.dead.contains(&receipt.offset),
                "done yet redelivered"
            );
            let deliver_at = self.delayed.get(&receipt.offset);
            assert!(deliver_at.is_none_or(|at| *at <= self.now), "delivered before its time");
            if delivery.attempt == 1 && deliver_at.is_none() {
                assert!(model.last_first.is_none_or(|last| last < receipt.offset), "first deliveries out of order");
                model.last_first = Some(receipt.offset);
            }
            assert!(model.issued.insert(receipt, false).is_none(), "receipt issued twice");
            let previous = model.latest.insert(receipt.offset, receipt.delivery);
            assert!(previous.is_none_or(|p| p < receipt.delivery));
            model.held.push(receipt);
        }
    }

    /// Receipt rules after every step: only the latest delivery of an offset may be Ok (so
    /// never two valid deliveries of one offset), and superseded or answered ones are Stale.
    fn check(&self) {
        for (g, model) in self.models.iter().enumerate() {
            let mut ok_offsets = BTreeSet::new();
            for receipt in model.issued.keys() {
                let status = self.state.receipt_status(ST, GROUPS[g], *receipt).expect("group exists");
                if model.superseded(receipt) {
                    assert_eq!(status, ReceiptResult::Stale, "{receipt:?}");
                }
                if status == ReceiptResult::Ok {
                    assert!(ok_offsets.insert(receipt.offset), "two valid deliveries of {}", receipt.offset);
                }
            }
            let view = self.state.group_view(ST, GROUPS[g]).expect("group exists");
            assert_eq!(view.pending, ok_offsets.len() as u64);
        }
    }

    /// Keeps time moving and acks everything fetched until both groups are drained.
    fn drain(&mut self) {
        for _ in 0..50 {
            self.now += 10_000;
            self.apply(Command::Tick);
            for (g, name) in GROUPS.iter().enumerate() {
                loop {
                    let before = self.models[g].held.len();
                    self.fetch(g, 1_000);
                    if self.models[g].held.len() == before {
                        break;
                    }
                    let receipts: Vec<Receipt> = self.models[g].held.drain(..).collect();
                    let command =
                        Command::Ack { station: ST.into(), group: (*name).into(), receipts: receipts.clone() };
                    let Outcome::Receipts(results) = self.apply(command) else { panic!("receipts expected") };
                    for (receipt, result) in receipts.iter().zip(results) {
                        if result == ReceiptResult::Ok {
                            self.models[g].issued.insert(*receipt, true);
                            self.models[g].acked.insert(receipt.offset);
                        }
                    }
                }
            }
            let drained = GROUPS.iter().all(|name| self.state.group_view(ST, name).is_ok_and(|v| v.lag == 0));
            if drained {
                return;
            }
        }
        panic!("groups not drained: {:?}", GROUPS.map(|name| self.state.group_view(ST, name)));
    }
}

type Ops = Vec<(Op, u16)>;

fn ops() -> impl Strategy<Value = Ops> {
    prop::collection::vec((op(), 0u16..1_500), 1..120)
}

fn run_rules(ops: &Ops, split: prop::sample::Index, max_messages: Option<u64>) -> Result<(), TestCaseError> {
    let mut run = Run::new(max_messages);
    for (op, step_ms) in ops {
        run.now += Millis::from(*step_ms);
        run.step(op);
    }
    run.drain();
    run.check();

    // (a) every message ends acked or dead-lettered, exactly once, in every group; with
    // retention, a message removed before the group ever got it may be neither.
    let records = run.state.dead_letters(ST).expect("station exists");
    let (first, next) = run.state.station_offsets(1).expect("station exists");
    prop_assert_eq!(next, run.produced.len() as u64);
    for (g, name) in GROUPS.iter().enumerate() {
        let dead: Vec<u64> = records.iter().filter(|r| r.group == *name).map(|r| r.offset).collect();
        let dead_set: BTreeSet<u64> = dead.iter().copied().collect();
        prop_assert_eq!(dead.len(), dead_set.len(), "a message died twice");
        let acked = &run.models[g].acked;
        prop_assert!(acked.is_disjoint(&dead_set));
        let done: BTreeSet<u64> = acked.union(&dead_set).copied().collect();
        if max_messages.is_none() {
            prop_assert_eq!(&done, &run.produced);
        } else {
            prop_assert!(run.produced.range(first..).all(|offset| done.contains(offset)));
            let expired = records.iter().filter(|r| r.group == *name && r.reason == DeadLetterReason::Expired);
            prop_assert!(expired.clone().all(|r| r.offset < first && r.attempts > 0));
        }
        let view = run.state.group_view(ST, name).expect("group exists");
        prop_assert_eq!((view.lag, view.pending, view.dead_lettered), (0, 0, dead.len() as u64));
        prop_assert_eq!(view.acked_floor, next);
    }
    prop_assert!(run.state.outbox(usize::MAX).is_empty(), "dead letters are kept once");

    // (e) determinism: a fresh replica replaying the log ends byte-identical, and so does one
    // that restarts from a snapshot taken part-way (with the metas restored).
    let final_bytes = bincode::serialize(&run.state).expect("serialize");
    let mut replica = BrokerState::default();
    let cut = split.index(run.log.len());
    for (i, env) in run.log.iter().enumerate() {
        if i == cut {
            let snapshot = bincode::serialize(&replica).expect("serialize");
            let mut restored: BrokerState = bincode::deserialize(&snapshot).expect("deserialize");
            for (id, _) in replica.stations() {
                let (first, next) = replica.station_offsets(id).expect("offsets");
                restored.restore_messages(id, (first..next).filter_map(|o| replica.message_meta(id, o)));
            }
            replica = restored;
        }
        replica.apply(env);
    }
    prop_assert_eq!(bincode::serialize(&replica).expect("serialize"), final_bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn consumer_group_rules(ops in ops(), split in any::<prop::sample::Index>()) {
        run_rules(&ops, split, None)?;
    }

    #[test]
    fn consumer_group_rules_under_count_retention(ops in ops(), split in any::<prop::sample::Index>()) {
        run_rules(&ops, split, Some(4))?;
    }
}
