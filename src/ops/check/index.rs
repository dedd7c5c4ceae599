//! The index as `check` sees it: read from `index/` on the store into memory, never from
//! the local cache.
//!
//! Memory: each pack keeps its blob list (56 bytes a blob) and a map from blob to its
//! place (about 48 bytes a blob with the hash table's slack), so about 110 bytes a blob:
//! 1.1 GiB for 10 million blobs (about 1.2 TiB of unique data at the default 128 KiB
//! average chunk). restic and rustic hold a similar table for their checks.
//!
//! Prune may replace index files while this runs (write a consolidated file that
//! supersedes older ones, then delete them). A file that vanishes between the listing
//! and the read is not damage: the listing is taken again and the new files are read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::backend::{Backend, list_ids};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, PackBlob, aad, names, open_object};
use crate::id::{BlobId, Id, IndexId, PackId};
use crate::ops::on_rayon;

/// How many times the listing is taken again when files vanish under it.
const RELIST_ROUNDS: usize = 8;

/// What the store says about an indexed pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackState {
    /// Not compared with the listing yet.
    Unknown,
    /// Listed with the indexed size.
    Present,
    /// Not on the store, and a current index file names it.
    Missing,
    /// On the store with another size than indexed (truncated when smaller).
    WrongSize(u64),
    /// Removed by a concurrent prune: no current index file names it any more.
    Gone,
}

pub(crate) struct PackEntry {
    pub id: PackId,
    pub size: u64,
    pub blobs: Vec<PackBlob>,
    pub state: PackState,
    /// The first index file that named it (for messages).
    pub index: IndexId,
}

struct FileInfo {
    packs: Vec<u32>,
    supersedes: Vec<IndexId>,
}

/// Two index entries that disagree.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub object: String,
    pub blob: Option<BlobId>,
    pub message: String,
}

#[derive(Default)]
pub(crate) struct MemIndex {
    pub packs: Vec<PackEntry>,
    pub pack_pos: HashMap<PackId, u32>,
    /// (type, id) -> (pack position, blob position in the pack's list).
    pub blobs: HashMap<(BlobType, BlobId), (u32, u32)>,
    /// Further places of blobs stored in more than one pack.
    pub more: HashMap<(BlobType, BlobId), Vec<(u32, u32)>>,
    files: HashMap<IndexId, FileInfo>,
    /// Index files that could not be read or opened, with why.
    pub damaged: HashMap<IndexId, Error>,
    pub conflicts: Vec<Conflict>,
    /// The latest listing of `index/`.
    pub listed: HashSet<IndexId>,
    /// Packs named by prune's deletion records: out of the index, still valid places
    /// for blobs until the record is carried out.
    pub pending: HashSet<PackId>,
    deletion_records: HashSet<Id>,
    /// Index files treated as read without reading them (`backup --verify-new` reads
    /// only the files its backup wrote).
    pub skip: HashSet<IndexId>,
}

impl MemIndex {
    /// Number of blobs indexed (each place counted once).
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }

    pub fn index_files(&self) -> usize {
        self.files.len()
    }

    /// List `index/` and read every file not read yet; take the listing again while
    /// files vanish between listing and reading (a concurrent prune). Only files in the
    /// final listing stay counted as damaged. Then read prune's deletion records.
    pub async fn refresh(
        &mut self,
        backend: &Arc<dyn Backend>,
        key: &Arc<MasterKey>,
        connections: usize,
    ) -> Result<()> {
        self.refresh_files(backend, key, connections).await?;
        self.read_deletions(backend.as_ref(), key).await
    }

    /// Add the packs of deletion records not read yet. A record is prune's; one that
    /// cannot be read is left to prune, which stops on it with a message.
    async fn read_deletions(&mut self, backend: &dyn Backend, key: &MasterKey) -> Result<()> {
        for id in list_ids::<Id>(backend, names::DELETIONS).await? {
            if self.deletion_records.contains(&id) {
                continue;
            }
            let del = match crate::repository::read_deletion(backend, key, &id).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("cannot read {}: {e}", names::deletion(&id));
                    continue;
                }
            };
            self.deletion_records.insert(id);
            // A pack also named by an index file (put back by prune) is simply indexed.
            let out: Vec<PackId> = del
                .packs
                .iter()
                .map(|p| p.id)
                .filter(|p| !self.pack_pos.contains_key(p))
                .collect();
            self.pending.extend(out);
            // Under a name no listing of index/ holds, so a pack of it that is gone is
            // not missing (prune removed it) unless an index file names it too.
            self.add(IndexId(id), IndexFile::new(del.packs));
        }
        Ok(())
    }

    async fn refresh_files(
        &mut self,
        backend: &Arc<dyn Backend>,
        key: &Arc<MasterKey>,
        connections: usize,
    ) -> Result<()> {
        for _ in 0..RELIST_ROUNDS {
            let listed: HashSet<IndexId> = list_ids(backend.as_ref(), names::INDEX)
                .await?
                .into_iter()
                .collect();
            let todo: Vec<IndexId> = listed
                .iter()
                .filter(|id| {
                    !self.files.contains_key(id)
                        && !self.damaged.contains_key(id)
                        && !self.skip.contains(id)
                })
                .copied()
                .collect();
            let results: Vec<(IndexId, Result<IndexFile>)> = futures::stream::iter(todo)
                .map(|id| {
                    let (backend, key) = (backend.clone(), key.clone());
                    async move {
                        let name = names::index(&id);
                        let opened = match backend.get(&name).await {
                            Ok(bytes) => {
                                on_rayon(move || open_index(&key, &id, &name, &bytes)).await
                            }
                            Err(e) => Err(e),
                        };
                        (id, opened)
                    }
                })
                .buffer_unordered(connections.max(1) * 2)
                .collect()
                .await;
            let mut vanished = false;
            for (id, r) in results {
                match r {
                    Ok(file) => self.add(id, file),
                    Err(Error::NotFound { .. }) => vanished = true,
                    Err(e @ Error::Backend { .. }) => return Err(e),
                    Err(e) => {
                        self.damaged.insert(id, e);
                    }
                }
            }
            self.damaged.retain(|id, _| listed.contains(id));
            self.listed = listed;
            if !vanished {
                return Ok(());
            }
        }
        Err(Error::Backend {
            location: backend.location().to_string(),
            message: format!(
                "index files kept vanishing while being read ({RELIST_ROUNDS} listings); \
                 is a prune running in a loop? run check again"
            ),
        })
    }

    fn add(&mut self, id: IndexId, file: IndexFile) {
        let mut packs = Vec::with_capacity(file.packs.len());
        for p in file.packs {
            if let Some(&pos) = self.pack_pos.get(&p.id) {
                packs.push(pos);
                let known = &self.packs[pos as usize];
                if known.size != p.size {
                    self.conflicts.push(Conflict {
                        object: names::pack(&p.id),
                        blob: None,
                        message: format!(
                            "indexed with size {} in index/{} and {} in index/{id}",
                            known.size, known.index, p.size
                        ),
                    });
                }
                continue;
            }
            let pos = self.packs.len() as u32;
            for (i, b) in p.blobs.iter().enumerate() {
                let place = (pos, i as u32);
                match self.blobs.get(&(b.ty, b.id)) {
                    None => {
                        self.blobs.insert((b.ty, b.id), place);
                    }
                    Some(&(op, ob)) => {
                        let other = &self.packs[op as usize];
                        let o = &other.blobs[ob as usize];
                        if o.raw_length != b.raw_length {
                            self.conflicts.push(Conflict {
                                object: names::pack(&p.id),
                                blob: Some(b.id),
                                message: format!(
                                    "{} blob {} is {} bytes here and {} bytes in {}",
                                    b.ty,
                                    b.id,
                                    b.raw_length,
                                    o.raw_length,
                                    names::pack(&other.id)
                                ),
                            });
                        }
                        self.more.entry((b.ty, b.id)).or_default().push(place);
                    }
                }
            }
            self.pack_pos.insert(p.id, pos);
            self.packs.push(PackEntry {
                id: p.id,
                size: p.size,
                blobs: p.blobs,
                state: PackState::Unknown,
                index: id,
            });
            packs.push(pos);
        }
        self.files.insert(
            id,
            FileInfo {
                packs,
                supersedes: file.supersedes,
            },
        );
    }

    /// Packs named by the index files of the latest listing that no other listed file
    /// supersedes.
    pub fn named_by_current(&self) -> HashSet<u32> {
        let superseded: HashSet<IndexId> = self
            .listed
            .iter()
            .filter_map(|id| self.files.get(id))
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        self.listed
            .iter()
            .filter(|id| !superseded.contains(id))
            .filter_map(|id| self.files.get(id))
            .flat_map(|f| f.packs.iter().copied())
            .collect()
    }

    /// Every place of a blob.
    pub fn places(&self, ty: BlobType, id: &BlobId) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = self.blobs.get(&(ty, *id)).copied().into_iter().collect();
        if let Some(m) = self.more.get(&(ty, *id)) {
            out.extend_from_slice(m);
        }
        out
    }
}

/// Open an index file, checking first that its bytes hash to its name.
pub(crate) fn open_index(
    key: &MasterKey,
    id: &IndexId,
    name: &str,
    bytes: &[u8],
) -> Result<IndexFile> {
    if Id::hash_of(bytes) != id.0 {
        return Err(Error::integrity(
            name,
            "content does not match its name (corrupt or truncated)",
        ));
    }
    open_object(key, aad::INDEX, name, bytes)
}
