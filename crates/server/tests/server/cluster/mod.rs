//! Cluster mode over real processes: see each module.

mod conformance;
mod harness;
mod large;
mod ledger;
mod repair;
