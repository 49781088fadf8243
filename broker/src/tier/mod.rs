//! Tiering: sealed station segments move to an S3-compatible bucket (API.md and DESIGN.md,
//! "Tiering"). [`bucket`] is the S3 client, [`object`] the layout of what is stored, and the
//! uploader the leader's work: upload, catalog through Raft, delete what the catalog let go.

pub mod bucket;
pub mod object;
pub(crate) mod uploader;

pub use bucket::{Bucket, BucketError, TierOptions, DEFAULT_PART_BYTES, MIN_PART_BYTES};
pub use uploader::TierStatus;
