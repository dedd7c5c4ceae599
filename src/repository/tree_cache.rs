//! Whole tree packs kept in memory while trees are read.
//!
//! Tree blobs live in their own packs, so a walk over a snapshot (a backup comparing
//! with its parent, a restore, `ls`, `diff`) reads a handful of packs many times. One
//! request per pack instead of one per directory matters on S3 and removes a thread hop
//! per directory on local disk. Bounded by bytes; least recently used packs go first.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use crate::id::PackId;

/// Bytes of tree packs kept at most.
const CAPACITY: usize = 64 << 20;

#[derive(Default)]
pub(super) struct TreePackCache {
    packs: Mutex<VecDeque<(PackId, Bytes)>>,
}

impl TreePackCache {
    pub fn get(&self, id: &PackId) -> Option<Bytes> {
        let mut packs = self.packs.lock().expect("tree cache");
        let i = packs.iter().position(|(p, _)| p == id)?;
        let entry = packs.remove(i).expect("found");
        let bytes = entry.1.clone();
        packs.push_front(entry);
        Some(bytes)
    }

    pub fn insert(&self, id: PackId, bytes: Bytes) {
        if bytes.len() > CAPACITY / 2 {
            return;
        }
        let mut packs = self.packs.lock().expect("tree cache");
        if packs.iter().any(|(p, _)| *p == id) {
            return;
        }
        packs.push_front((id, bytes));
        let mut total: usize = packs.iter().map(|(_, b)| b.len()).sum();
        while total > CAPACITY {
            let (_, b) = packs.pop_back().expect("non-empty");
            total -= b.len();
        }
    }
}
