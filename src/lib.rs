//! gebeta-operator: manages Gebeta Maps service accounts and keeps their short-lived access
//! tokens fresh in Kubernetes Secrets.
//!
//! The binaries in `src/bin/` are thin: all logic lives in these modules.

pub mod bench;
pub mod cli;
pub mod controllers;
pub mod crd;
pub mod gebeta;
pub mod metrics;
pub mod runtime;
pub mod sim;
pub mod testbed;
