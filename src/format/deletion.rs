//! Deletion records (`deletions/<random id>`): packs prune has taken out of the index
//! and will remove once no backup that could still use them runs.

use serde::{Deserialize, Serialize};

use super::{IndexPack, Timestamp, VERSION};
use crate::id::Id;

/// Packs waiting to be removed, and the backups to wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub version: u8,
    /// When prune wrote it (its clock).
    pub time: Timestamp,
    /// Operations (backups) that ran while prune worked out what is unused; the packs
    /// go only when each has finished or gone stale.
    pub wait_for: Vec<Id>,
    /// The packs, with the blobs each holds (empty for a pack whose header could not be
    /// read), so a blob a waited-for backup came to use can be put back in the index.
    pub packs: Vec<IndexPack>,
}

impl Deletion {
    pub fn new(wait_for: Vec<Id>, packs: Vec<IndexPack>) -> Self {
        Deletion {
            version: VERSION,
            time: Timestamp::now(),
            wait_for,
            packs,
        }
    }
}
