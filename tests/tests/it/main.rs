//! The kit's own integration tests, one binary: one module per scenario.

mod crash;
mod s3;
