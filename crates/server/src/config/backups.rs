//! The `backups:` section: retention, the caps on uploaded archives, and
//! how long backup requests may run.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vectorizer_service::backup::{BackupOptions, ReadCaps};

use super::{ConfigError, bad};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupsConfig {
    /// Backups kept per user; after each create the oldest beyond it go.
    pub max_per_user: usize,
    /// Backups older than this are removed; 0: kept until the count
    /// pushes them out.
    pub max_age_seconds: u64,
    /// Seconds between sweeps of every user's backups by the two rules.
    pub sweep_interval_seconds: u64,
    /// Largest uploaded archive (413 beyond it).
    pub max_upload_bytes: u64,
    /// Most entries in an uploaded archive.
    pub max_entries: u64,
    /// Largest file in an uploaded archive, decompressed.
    pub max_file_bytes: u64,
    /// Largest uploaded archive, decompressed.
    pub max_total_bytes: u64,
    /// Largest ratio of decompressed to compressed size of an upload.
    pub max_ratio: u64,
    /// An upload whose body stops arriving this long is refused.
    pub idle_timeout_seconds: u64,
    /// How long a create, restore, upload or download may take before its
    /// answer (instead of `server.request_timeout_seconds`).
    pub request_timeout_seconds: u64,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        let o = BackupOptions::default();
        BackupsConfig {
            max_per_user: o.max_per_user,
            max_age_seconds: o.max_age.map_or(0, |a| a.as_secs()),
            sweep_interval_seconds: 3600,
            max_upload_bytes: o.max_upload_bytes,
            max_entries: o.caps.max_entries,
            max_file_bytes: o.caps.max_file_bytes,
            max_total_bytes: o.caps.max_total_bytes,
            max_ratio: o.caps.max_ratio,
            idle_timeout_seconds: o.idle_timeout.as_secs(),
            request_timeout_seconds: 3600,
        }
    }
}

impl BackupsConfig {
    /// The service's options from this section.
    pub fn options(&self) -> BackupOptions {
        BackupOptions {
            max_per_user: self.max_per_user,
            max_age: (self.max_age_seconds > 0).then(|| Duration::from_secs(self.max_age_seconds)),
            max_upload_bytes: self.max_upload_bytes,
            caps: ReadCaps {
                max_entries: self.max_entries,
                max_file_bytes: self.max_file_bytes,
                max_total_bytes: self.max_total_bytes,
                max_ratio: self.max_ratio,
            },
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, why: &str| if ok { Ok(()) } else { Err(bad(key, why)) };
        check(
            (1..=10_000).contains(&self.max_per_user),
            "backups.max_per_user",
            "must be between 1 and 10000",
        )?;
        check(
            (1..=86_400).contains(&self.sweep_interval_seconds),
            "backups.sweep_interval_seconds",
            "must be between 1 and 86400",
        )?;
        check(
            (1024..=1 << 40).contains(&self.max_upload_bytes),
            "backups.max_upload_bytes",
            "must be between 1 KiB and 1 TiB",
        )?;
        check(
            (3..=1_000_000).contains(&self.max_entries),
            "backups.max_entries",
            "must be between 3 and 1000000",
        )?;
        check(
            self.max_file_bytes >= 1024 && self.max_file_bytes <= self.max_total_bytes,
            "backups.max_file_bytes",
            "must be at least 1 KiB and at most backups.max_total_bytes",
        )?;
        check(
            self.max_total_bytes <= 1 << 42,
            "backups.max_total_bytes",
            "must be at most 4 TiB",
        )?;
        check(
            (2..=100_000).contains(&self.max_ratio),
            "backups.max_ratio",
            "must be between 2 and 100000",
        )?;
        check(
            (1..=3600).contains(&self.idle_timeout_seconds),
            "backups.idle_timeout_seconds",
            "must be between 1 and 3600",
        )?;
        check(
            (1..=86_400).contains(&self.request_timeout_seconds),
            "backups.request_timeout_seconds",
            "must be between 1 and 86400",
        )
    }
}
