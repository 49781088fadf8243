//! What every metadata store must do, run by `meta_sqlite` and `meta_postgres`.

pub mod conformance;
pub mod revival;
