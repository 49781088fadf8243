//! Depot's broker: durable stations and consumer groups, replicated with openraft.
//!
//! ```text
//!  Broker (facade)  submit(Command) -> Applied; reads; long-poll waits
//!     | proposer: coalesces concurrent commands into one Raft entry (group commit)
//!  openraft  (a cluster of one on a single node; same path as three nodes)
//!     | LogStore: Raft log in a SegmentedLog, fsynced by a GroupCommit thread before ack
//!     | StateMachine: BrokerState (pure, deterministic) + one SegmentedLog per station
//!  log::SegmentedLog  segments, checksums, offset index, torn-tail recovery
//! ```
//!
//! `station` is pure: it decides offsets, deliveries and receipts from the command and the
//! leader's timestamp, never from the local clock. Everything that touches disk is in `log` and
//! `raft`, plus `identity` (which cluster and node a data dir belongs to) and `inspect` (the
//! read-only report behind `depot admin inspect`). The gateway only sees [`Broker`],
//! [`BrokerError`], the `station` types and `inspect`.

#![deny(unsafe_code)]

mod broker;
pub mod cluster;
pub mod dir_lock;
pub mod dirs;
pub mod disk;
mod error;
pub mod failpoint;
pub mod identity;
pub mod inspect;
pub mod log;
pub mod net;
pub mod open_files;
pub mod raft;
pub mod receipt;
mod replica;
pub mod station;
pub mod tier;

pub use broker::{Broker, BrokerOptions, BrowsePage, DeadLetterPage, Fetched, ProduceResults, Put, RaftStatus};
pub use error::BrokerError;
pub use inspect::{inspect, Inspection};
pub use raft::{Applied, StoredMessage};
pub use replica::replies::serve_this_thread as serve_replies_on_this_thread;
