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
    /// Written before the index files naming these packs are removed, so readers always
    /// find them, and replaced by a final record once `wait_for` is known. A prune that
    /// finds one (its writer died) marks the packs again instead of carrying it out.
    pub provisional: bool,
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
            provisional: false,
            packs,
        }
    }

    pub fn provisional(packs: Vec<IndexPack>) -> Self {
        Deletion {
            provisional: true,
            ..Deletion::new(Vec::new(), packs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::format::{BlobType, PackBlob, aad, open_object, seal_object};
    use crate::id::{BlobId, PackId};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn deletion_round_trip(waits in proptest::collection::vec(any::<[u8; 32]>(), 0..4),
                               packs in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>(), 0..5usize), 0..6)) {
            let packs = packs.into_iter().map(|(id, size, n)| IndexPack {
                id: PackId(Id(id)),
                size,
                blobs: (0..n).map(|i| PackBlob { ty: BlobType::Tree, id: BlobId(Id([i as u8; 32])), offset: i as u64, length: 9, raw_length: 3 }).collect(),
            }).collect();
            let d = Deletion::new(waits.into_iter().map(Id).collect(), packs);
            let k = MasterKey::random();
            let bytes = seal_object(&k, aad::DELETION, 3, &d);
            let back: Deletion = open_object(&k, aad::DELETION, "deletions/x", &bytes).unwrap();
            prop_assert_eq!(back, d);
            prop_assert!(open_object::<Deletion>(&k, aad::LOCK, "deletions/x", &bytes).is_err());
        }
    }
}
