//! The broker's integration tests, one binary: one module per scenario (named as the file).

#![allow(clippy::unwrap_used)]

mod cluster;
mod corruption;
mod facade;
mod inspect;
mod power_cut;
mod raft_storage_suite;
mod snapshots;
mod tier_reader;
mod tiered_local;
