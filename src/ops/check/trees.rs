//! Walking snapshots: every tree must open and decode, every blob must have a readable
//! place. Damage found on the way collects the snapshot and path it makes unrestorable.
//!
//! A tree walked without finding damage is not walked again (trees of unchanged
//! directories are shared by every snapshot, so 1,000 snapshots of one tree cost little
//! more than one). A tree with damage below it is walked again for each snapshot that
//! holds it, so that every snapshot's paths are named.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Checker, DamageKind};
use crate::error::{Error, Result};
use crate::format::{self, BlobType, NodeKind, Tree, names};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repository::Repository;

/// Bytes of whole tree packs kept in memory.
const CACHE_BYTES: usize = 64 << 20;
/// Packs up to this size are fetched whole (tree packs are read many times).
const WHOLE_PACK: u64 = 32 << 20;

/// Reads tree blobs, keeping recently used tree packs whole in memory.
pub(crate) struct TreeReader {
    packs: VecDeque<(u32, Bytes)>,
    whole: bool,
}

impl TreeReader {
    pub fn new(pack_size: u32) -> Self {
        TreeReader {
            packs: VecDeque::new(),
            whole: pack_size as u64 <= WHOLE_PACK,
        }
    }

    fn cached(&mut self, pos: u32) -> Option<Bytes> {
        let i = self.packs.iter().position(|(p, _)| *p == pos)?;
        let e = self.packs.remove(i).expect("found");
        let b = e.1.clone();
        self.packs.push_front(e);
        Some(b)
    }

    /// The sealed bytes at `offset..offset+length` of pack `id` (position `pos`).
    pub fn read(
        &mut self,
        repo: &Repository,
        pos: u32,
        id: &PackId,
        size: u64,
        offset: u64,
        length: u32,
    ) -> Result<Bytes> {
        let name = names::pack(id);
        let end = offset + length as u64;
        let pack = match self.cached(pos) {
            Some(p) => p,
            None if self.whole && size <= WHOLE_PACK => {
                let p = repo.block_on(repo.backend().get(&name))?;
                self.packs.push_front((pos, p.clone()));
                let mut total: usize = self.packs.iter().map(|(_, b)| b.len()).sum();
                while total > CACHE_BYTES && self.packs.len() > 1 {
                    total -= self.packs.pop_back().expect("non-empty").1.len();
                }
                p
            }
            None => return repo.block_on(repo.backend().get_range(&name, offset..end)),
        };
        if end > pack.len() as u64 {
            return Err(Error::integrity(
                &name,
                format!(
                    "pack is {} bytes, the blob lies at {offset}..{end}",
                    pack.len()
                ),
            ));
        }
        Ok(pack.slice(offset as usize..end as usize))
    }
}

impl Checker<'_> {
    /// A pack listed as present answered "not found": look at `index/` again.
    fn pack_vanished(&mut self, pos: u32) -> Result<()> {
        self.refresh_index()?;
        self.settle_absent(&[pos]);
        Ok(())
    }

    /// Open and decode a tree from any readable place; `Ok(Err(damage))` when none is.
    pub fn load_tree(&mut self, id: &BlobId) -> Result<std::result::Result<Tree, usize>> {
        if let Some(&d) = self.missing.get(&(BlobType::Tree, *id)) {
            return Ok(Err(d));
        }
        loop {
            let (p, b) = match self.find_blob(BlobType::Tree, id) {
                Ok(place) => place,
                Err(d) => return Ok(Err(d)),
            };
            let pack = &self.idx.packs[p as usize];
            let (pack_id, size, e) = (pack.id, pack.size, pack.blobs[b as usize]);
            let sealed = match self
                .trees
                .read(self.repo, p, &pack_id, size, e.offset, e.length)
            {
                Ok(bytes) => bytes,
                Err(Error::NotFound { .. }) => {
                    self.pack_vanished(p)?;
                    continue;
                }
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(err) => {
                    self.mark_bad(p, b, err.to_string());
                    continue;
                }
            };
            let plain = match format::open_blob(
                self.repo.key(),
                BlobType::Tree,
                id,
                &sealed,
                Some(e.raw_length),
            ) {
                Ok(plain) => plain,
                Err(err) => {
                    self.mark_bad(p, b, reason(&err));
                    continue;
                }
            };
            return Ok(match Tree::decode(&format!("tree {id}"), &plain) {
                Ok(t) => Ok(t),
                Err(err) => {
                    let d = self.add_damage(
                        DamageKind::Tree,
                        names::pack(&pack_id),
                        Some(*id),
                        err.to_string(),
                    );
                    // The content is wrong whatever place it is read from.
                    self.missing.insert((BlobType::Tree, *id), d);
                    Err(d)
                }
            });
        }
    }

    /// Walk one snapshot's trees from its root.
    pub fn check_snapshot(&mut self, snap: SnapshotId, root: BlobId) -> Result<()> {
        let mut path = Vec::new();
        self.check_tree(snap, &root, &mut path).map(drop)
    }

    /// Returns whether anything at or below this tree is damaged.
    fn check_tree(&mut self, snap: SnapshotId, id: &BlobId, path: &mut Vec<u8>) -> Result<bool> {
        if self.tree_memo.get(id) == Some(&false) {
            return Ok(false);
        }
        let tree = match self.load_tree(id)? {
            Ok(t) => t,
            Err(d) => {
                self.affect(d, snap, path);
                self.tree_memo.insert(*id, true);
                return Ok(true);
            }
        };
        if !self.tree_memo.contains_key(id) {
            self.stats.trees += 1;
        }
        let mut damaged = false;
        for node in &tree.nodes {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&node.name);
            match &node.kind {
                NodeKind::File { content } => {
                    for b in content {
                        if let Err(d) = self.find_blob(BlobType::Data, b) {
                            self.affect(d, snap, path);
                            damaged = true;
                        }
                    }
                }
                NodeKind::Dir { subtree } => damaged |= self.check_tree(snap, subtree, path)?,
                _ => {}
            }
            path.truncate(len);
        }
        self.tree_memo.insert(*id, damaged);
        Ok(damaged)
    }
}

/// The reason of an integrity or format error, without the object (the damage names it).
pub(crate) fn reason(e: &Error) -> String {
    match e {
        Error::Integrity { reason, .. } | Error::Format { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}
