//! Tiering: sealed station segments move to an S3-compatible bucket (API.md and DESIGN.md,
//! "Tiering"). [`bucket`] is the S3 client, [`object`] the layout of what is stored, the
//! uploader the leader's work: upload, catalog through Raft, delete what the catalog let go, and
//! [`reader`] reads records back from the bucket through a cache on disk.

pub mod bucket;
pub(crate) mod fill;
pub mod object;
pub mod reader;
pub(crate) mod uploader;

pub use bucket::{Bucket, BucketError, GetError, TierOptions, DEFAULT_PART_BYTES, MIN_PART_BYTES};
pub use reader::{TierCacheStats, TierReadError, TierReader};
pub use uploader::TierStatus;
