//! Lock objects (`locks/<random id>`): how an operation announces itself.

use serde::{Deserialize, Serialize};

use super::{Timestamp, VERSION};
use crate::id::Id;

/// What holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Shared: any number of backups run at once.
    Backup,
    /// Exclusive among prunes.
    Prune,
}

/// One announcement. An operation writes one when it starts, a new one (same `op`,
/// later `time`) to refresh it, and a last one with `finished` set when it ends: lock
/// objects are never overwritten, and a backup never deletes them (prune removes
/// finished and stale ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u8,
    /// Random id of the operation; all its lock objects share it.
    pub op: Id,
    pub kind: LockKind,
    pub host: String,
    pub user: String,
    pub pid: u32,
    pub started: Timestamp,
    /// When this object was written.
    pub time: Timestamp,
    pub finished: bool,
}

impl Lock {
    pub fn new(kind: LockKind) -> Self {
        let now = Timestamp::now();
        Lock {
            version: VERSION,
            op: Id::random(),
            kind,
            host: crate::util::hostname(),
            user: crate::util::username(),
            pid: std::process::id(),
            started: now,
            time: now,
            finished: false,
        }
    }
}
