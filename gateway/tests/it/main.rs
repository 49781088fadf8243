//! The gateway's integration tests, one binary: one module per scenario (named as the file),
//! and the harnesses they share, compiled once. In-process tests build the app from the
//! library (`common`); end-to-end ones run the `depot` binary through the test kit
//! (`depot-tests`: `e2e`, `cluster`). Heavy tests hold `depot_tests::serial::Heavy`, so at most
//! one of them runs at a time beside the light ones.

#![allow(clippy::unwrap_used)]

mod cluster;
mod common;
mod e2e;
mod meta;
mod scrape;

mod auth;
mod browse;
mod cli_client;
mod cluster_auth;
mod cluster_failover;
mod cluster_jepsen;
mod cluster_power_cut;
mod cluster_push;
mod cluster_sources;
mod cluster_tiering;
mod consume;
mod deploy_artifacts;
mod deploy_files;
mod dev_binary;
mod disk_full;
mod e2e_auth;
mod e2e_delivery;
mod e2e_http_errors;
mod e2e_inspect;
mod e2e_postgres;
mod e2e_push;
mod e2e_sources;
mod e2e_tier_faults;
mod e2e_tier_reads;
mod e2e_tiering;
mod first_run;
mod http_wire;
mod many_stations;
mod messages;
mod meta_postgres;
mod meta_postgres_tls;
mod meta_sqlite;
mod observability;
mod observability_cluster;
mod observability_dashboard;
mod observability_traces;
mod open_files;
mod openapi;
mod power_cut;
mod push_client;
mod push_sign;
mod source_verify;
mod stations;
mod terraform_boot;
mod tier_common;
mod token_errors;
mod ui;
