//! Live configuration: moninit follows its sources after boot.
//!
//! - [`last_good`]: the last known good inputs, kept on disk for a boot that cannot reach
//!   S3 or SSM.

pub mod last_good;
