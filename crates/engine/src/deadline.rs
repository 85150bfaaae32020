//! When a request's work must stop: its deadline has passed, or whoever
//! asked has gone away. Long scans check it every few thousand points, so
//! abandoned work frees its thread within milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{EngineError, Result};

/// Points a scan visits between two checks.
pub(crate) const CHECK_EVERY: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct Deadline {
    at: Option<Instant>,
    cancelled: Option<Arc<AtomicBool>>,
}

impl Deadline {
    /// No deadline: the work runs to its end.
    pub fn none() -> Deadline {
        Deadline::default()
    }

    /// Stops at `at`, or once `cancelled` is set.
    pub fn new(at: Option<Instant>, cancelled: Arc<AtomicBool>) -> Deadline {
        Deadline {
            at,
            cancelled: Some(cancelled),
        }
    }

    pub fn expired(&self) -> bool {
        self.cancelled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
            || self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// `Err(Cancelled)` once the work should stop.
    pub fn check(&self) -> Result<()> {
        if self.expired() {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }
}
