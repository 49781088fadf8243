//! Depot's test kit, shared by the integration tests of every crate and by `depot-bench`:
//!
//! - [`ports`]: loopback ports for servers started on a known port;
//! - [`process`]: servers as child processes (`depot dev` and others): started, awaited until
//!   they print where they listen, signalled, killed on drop; polling with a deadline;
//! - [`disk`]: a tmpfs of a chosen size, ballast, free space;
//! - [`http`]: the HTTP/1.1 client (one-shot, blocking keep-alive and tokio keep-alive);
//! - [`s3`] and [`s3_faults`]: an S3-compatible server process, and a front of it that answers
//!   500s or answers slowly;
//! - [`cluster`]: clusters of `depot serve` processes with a fault proxy on every link, a
//!   randomized workload and a Jepsen-style checker of its history;
//! - [`serial`]: heavy tests one at a time in a test binary;
//! - [`crash`]: what the crash writer (`src/bin/crash-writer.rs`) produces;
//! - [`receiver`]: a webhook receiver (real HTTP/1.1 on a loopback port) for push delivery;
//! - [`webhooks`]: Standard Webhooks signatures checked by the reference Python library.
//!
//! The kit starts the `depot` binary it is given and never links the gateway, so the gateway's
//! own tests can use it without building the gateway twice. In-process helpers that need the
//! gateway's types live with the gateway's tests.

// A failed unwrap here fails the test (or benchmark) that called in, with its message.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod crash;
pub mod disk;
pub mod http;
pub mod ports;
pub mod process;
pub mod receiver;
pub mod s3;
pub mod s3_faults;
pub mod serial;
pub mod webhooks;

pub use crash::{crash_payload, CRASH_STATION};
