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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::format::{aad, open_object, seal_object};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lock_round_trip(host in ".{0,30}", pid in any::<u32>(), finished in any::<bool>(), prune in any::<bool>()) {
            let mut l = Lock::new(if prune { LockKind::Prune } else { LockKind::Backup });
            l.host = host;
            l.pid = pid;
            l.finished = finished;
            let k = MasterKey::random();
            let bytes = seal_object(&k, aad::LOCK, 3, &l);
            let back: Lock = open_object(&k, aad::LOCK, "locks/x", &bytes).unwrap();
            prop_assert_eq!(back, l);
        }
    }
}
