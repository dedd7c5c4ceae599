//! Prune's working sets, kept in a RocksDB database of their own in the cache directory
//! so that prune's memory does not grow with the repository (invariant 7): what each
//! pack holds, which packs hold each blob, which blobs the snapshots use and which pack
//! keeps each of them. In memory prune holds only per-pack figures.
//!
//! Keys (a space byte, then the key): `k` `pack id` -> postcard(the pack's blobs);
//! `i` `type` `blob id` `pack id` -> the blob's sealed length (u32, little-endian): the
//! pack, which the index names, holds the blob; `w` `type` `blob id` -> empty: a pack
//! awaiting deletion holds it; `u` `type` `blob id` -> empty, or the id of the pack
//! whose copy is kept once planned: a snapshot uses the blob. Both `i` and `u` are in
//! blob order, so the plan walks them side by side instead of looking blobs up one by
//! one.
//!
//! The database lives in a directory `prune-*` of the cache directory and is removed
//! when prune ends. Each prune holds a lock (flock) on the file `owner` in its directory
//! while it runs; the lock ends with its process, however it ends. A new prune, holding
//! the lock of `prune.lock` in the cache directory while it looks, removes the `prune-*`
//! directories whose `owner` it can lock (their prune was killed), then makes its own
//! and locks its `owner` before letting go of `prune.lock`. So a directory is never
//! without a live owner's lock while another prune looks (two copies of a repository
//! share a cache directory).

use std::path::{Path, PathBuf};

use rocksdb::{DB, WriteBatch};

use crate::error::{Error, Result};
use crate::format::{BlobType, IndexPack, PackBlob};
use crate::id::{BlobId, Id, PackId};
use crate::repository::index::{cache_err, db_options, space_key, write_options};

/// A set of blobs in the scratch database.
#[derive(Debug, Clone, Copy)]
pub(super) enum Set {
    /// Blobs a pack awaiting deletion holds.
    Waiting = b'w' as isize,
    /// Blobs the snapshots use.
    Used = b'u' as isize,
}

const PACK: u8 = b'k';
const INDEXED: u8 = b'i';

pub(super) struct Scratch {
    db: DB,
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// `owner` in the directory, locked while this prune runs (when it could be).
    _owner: Option<std::fs::File>,
}

impl Scratch {
    /// A fresh database under `cache` (created if missing), or under the system's
    /// temporary directory when `cache` cannot be written.
    pub(super) fn create(cache: &Path) -> Result<Self> {
        let (dir, owner) = match make_dir(cache) {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(
                    "cannot make prune's working directory in {}: {e}; using the system's \
                     temporary directory",
                    cache.display()
                );
                let dir = tempfile::Builder::new()
                    .prefix("cairn-prune-")
                    .tempdir()
                    .map_err(|e| Error::io(std::env::temp_dir(), e))?;
                (dir, None)
            }
        };
        let mut o = db_options();
        o.set_write_buffer_size(8 << 20);
        o.set_max_write_buffer_number(2);
        let db = DB::open(&o, dir.path()).map_err(|e| cache_err(dir.path(), e))?;
        Ok(Scratch {
            db,
            path: dir.path().to_path_buf(),
            _dir: dir,
            _owner: owner,
        })
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        cache_err(&self.path, e)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db
            .write_opt(batch, &write_options())
            .map_err(|e| self.err(e))
    }

    /// Record a pack's blobs, and that it holds each of them.
    pub(super) fn add_pack(&self, p: &IndexPack) -> Result<()> {
        let mut batch = WriteBatch::default();
        let blobs = postcard::to_stdvec(&p.blobs).expect("blob lists encode");
        batch.put(pack_key(&p.id), blobs);
        for b in &p.blobs {
            batch.put(holder_key(b.ty, &b.id, &p.id), b.length.to_le_bytes());
        }
        self.write(batch)
    }

    /// Forget a pack recorded with [`Scratch::add_pack`].
    pub(super) fn remove_pack(&self, id: &PackId) -> Result<()> {
        let mut batch = WriteBatch::default();
        for b in self.pack_blobs(id)? {
            batch.delete(holder_key(b.ty, &b.id, id));
        }
        batch.delete(pack_key(id));
        self.write(batch)
    }

    /// Whether a recorded pack for which `counts` is true holds the blob.
    #[cfg(test)]
    pub(super) fn held_by(
        &self,
        ty: BlobType,
        id: &BlobId,
        counts: impl Fn(&PackId) -> bool,
    ) -> Result<bool> {
        self.holders().held_by(ty, id, counts)
    }

    /// A reader of the packs recording each blob, for many questions in a row.
    pub(super) fn holders(&self) -> Holders<'_> {
        Holders {
            it: self.db.raw_iterator(),
            scratch: self,
        }
    }

    /// The blobs of a pack recorded with [`Scratch::add_pack`].
    pub(super) fn pack_blobs(&self, id: &PackId) -> Result<Vec<PackBlob>> {
        let v = self
            .db
            .get_pinned(pack_key(id))
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::Cache {
                path: self.path.clone(),
                message: format!("pack {id} is missing from prune's working set"),
            })?;
        postcard::from_bytes(&v).map_err(|e| Error::Cache {
            path: self.path.clone(),
            message: format!("pack {id}: {e}"),
        })
    }

    pub(super) fn insert(&self, set: Set, ty: BlobType, id: &BlobId) -> Result<()> {
        self.db
            .put_opt(space_key(set as u8, ty, id), [], &write_options())
            .map_err(|e| self.err(e))
    }

    /// Insert many blobs into `set`.
    pub(super) fn insert_all<'a>(
        &self,
        set: Set,
        blobs: impl IntoIterator<Item = (BlobType, &'a BlobId)>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (ty, id) in blobs {
            batch.put(space_key(set as u8, ty, id), []);
        }
        self.write(batch)
    }

    /// Insert; true when the blob was not in `set` before.
    pub(super) fn insert_new(&self, set: Set, ty: BlobType, id: &BlobId) -> Result<bool> {
        if self.contains(set, ty, id)? {
            return Ok(false);
        }
        self.insert(set, ty, id)?;
        Ok(true)
    }

    pub(super) fn contains(&self, set: Set, ty: BlobType, id: &BlobId) -> Result<bool> {
        self.db
            .get_pinned(space_key(set as u8, ty, id))
            .map(|v| v.is_some())
            .map_err(|e| self.err(e))
    }

    /// For a used blob, `Some(pack keeping it)` (`Some(None)` before one is chosen);
    /// `None` for a blob no snapshot uses.
    #[cfg(test)]
    pub(super) fn keeper(&self, ty: BlobType, id: &BlobId) -> Result<Option<Option<PackId>>> {
        let v = self
            .db
            .get_pinned(space_key(Set::Used as u8, ty, id))
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| <[u8; 32]>::try_from(&v[..]).ok().map(|b| PackId(Id(b)))))
    }

    /// [`Scratch::keeper`] of each of `blobs`, read in one batch.
    pub(super) fn keepers(&self, blobs: &[PackBlob]) -> Result<Vec<Option<Option<PackId>>>> {
        let keys: Vec<[u8; 34]> = blobs
            .iter()
            .map(|b| space_key(Set::Used as u8, b.ty, &b.id))
            .collect();
        self.db
            .multi_get(&keys)
            .into_iter()
            .map(|v| {
                let v = v.map_err(|e| self.err(e))?;
                Ok(v.map(|v| <[u8; 32]>::try_from(&v[..]).ok().map(|b| PackId(Id(b)))))
            })
            .collect()
    }

    /// Set the keepers of used blobs.
    pub(super) fn set_keepers(&self, keepers: &[(BlobType, BlobId, PackId)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (ty, id, pack) in keepers {
            batch.put(space_key(Set::Used as u8, *ty, id), pack.as_bytes());
        }
        self.write(batch)
    }

    /// Call `f` with every used blob, in blob order: its type and id, its keeper (see
    /// [`Scratch::keeper`]), and the packs recorded as holding it with the length of
    /// each copy (none: no pack in the index holds it).
    pub(super) fn for_each_used(
        &self,
        mut f: impl FnMut(BlobType, BlobId, Option<PackId>, &[(PackId, u32)]) -> Result<()>,
    ) -> Result<()> {
        let mut used = self.db.raw_iterator();
        used.seek([Set::Used as u8]);
        let mut held = self.db.raw_iterator();
        held.seek([INDEXED]);
        let mut holders = Vec::new();
        while let Some((k, v)) = used.item() {
            if k.len() != 34 || k[0] != Set::Used as u8 {
                break;
            }
            let blob = &k[1..];
            holders.clear();
            // Both spaces are in (type, blob id) order: move the holders along.
            while let Some(h) = held.key() {
                if h.len() != 66 || h[0] != INDEXED || &h[1..34] > blob {
                    break;
                }
                if &h[1..34] == blob {
                    let len = held.value().and_then(|v| <[u8; 4]>::try_from(v).ok());
                    let pack = PackId(Id(h[34..].try_into().expect("66-byte key")));
                    holders.push((pack, len.map_or(0, u32::from_le_bytes)));
                }
                held.next();
            }
            held.status().map_err(|e| self.err(e))?;
            let ty = if k[1] == 0 {
                BlobType::Data
            } else {
                BlobType::Tree
            };
            let id = BlobId(Id(k[2..].try_into().expect("34-byte key")));
            let keeper = <[u8; 32]>::try_from(v).ok().map(|b| PackId(Id(b)));
            f(ty, id, keeper, &holders)?;
            used.next();
        }
        used.status().map_err(|e| self.err(e))
    }
}

/// See [`Scratch::holders`]: one iterator, sought again for each blob.
pub(super) struct Holders<'a> {
    it: rocksdb::DBRawIterator<'a>,
    scratch: &'a Scratch,
}

impl Holders<'_> {
    /// Whether a recorded pack for which `counts` is true holds the blob.
    pub(super) fn held_by(
        &mut self,
        ty: BlobType,
        id: &BlobId,
        counts: impl Fn(&PackId) -> bool,
    ) -> Result<bool> {
        let prefix = space_key(INDEXED, ty, id);
        self.it.seek(prefix);
        while let Some(k) = self.it.key() {
            if k.len() != 66 || !k.starts_with(&prefix) {
                break;
            }
            if counts(&PackId(Id(k[34..].try_into().expect("66-byte key")))) {
                return Ok(true);
            }
            self.it.next();
        }
        self.it
            .status()
            .map(|()| false)
            .map_err(|e| self.scratch.err(e))
    }
}

fn holder_key(ty: BlobType, id: &BlobId, pack: &PackId) -> [u8; 66] {
    let mut k = [0u8; 66];
    k[..34].copy_from_slice(&space_key(INDEXED, ty, id));
    k[34..].copy_from_slice(pack.as_bytes());
    k
}

fn pack_key(id: &PackId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = PACK;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// Make this prune's working directory in `cache` and lock its `owner`, first removing
/// the directories of killed prunes; all while holding the lock of `prune.lock`. Where
/// the file system takes no locks, nothing is removed and the directory is made anyway.
fn make_dir(cache: &Path) -> std::io::Result<(tempfile::TempDir, Option<std::fs::File>)> {
    std::fs::create_dir_all(cache)?;
    let guard = lock_file(&cache.join("prune.lock"), true);
    if guard.is_some() {
        for e in std::fs::read_dir(cache)?.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with("prune-")
                || !e.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            // No `owner` at all: made by a prune killed before it locked one.
            let owner = e.path().join("owner");
            let dead = !owner.exists() || lock_file(&owner, false).is_some();
            if dead {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!("cannot remove {}: {err}", e.path().display());
                }
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("prune-")
        .tempdir_in(cache)?;
    let owner = lock_file(&dir.path().join("owner"), false);
    drop(guard);
    Ok((dir, owner))
}

/// Open (or create) `path` and lock it (flock(2)), waiting for the lock when `wait`.
/// None when it cannot be opened or locked; the reason is logged.
fn lock_file(path: &Path, wait: bool) -> Option<std::fs::File> {
    use rustix::fs::FlockOperation;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .or_else(|_| std::fs::File::open(path));
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("cannot open {}: {e}", path.display());
            return None;
        }
    };
    let how = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(&file, how) {
        Ok(()) => Some(file),
        Err(e) => {
            if e != rustix::io::Errno::WOULDBLOCK {
                tracing::debug!("cannot lock {}: {e}", path.display());
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId(Id([n; 32]))
    }

    fn blob(n: u8) -> PackBlob {
        PackBlob {
            ty: BlobType::Data,
            id: id(n),
            offset: n as u64 * 100,
            length: 90 + n as u32,
            raw_length: 80,
        }
    }

    fn pack(n: u8, blobs: Vec<PackBlob>) -> IndexPack {
        IndexPack {
            id: PackId(Id([n; 32])),
            size: 1000,
            blobs,
        }
    }

    #[test]
    fn sets_keep_their_members_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path()).unwrap();
        assert!(s.insert_new(Set::Used, BlobType::Data, &id(1)).unwrap());
        assert!(!s.insert_new(Set::Used, BlobType::Data, &id(1)).unwrap());
        s.insert(Set::Waiting, BlobType::Data, &id(3)).unwrap();
        assert!(!s.contains(Set::Used, BlobType::Tree, &id(1)).unwrap());
        assert!(!s.contains(Set::Waiting, BlobType::Data, &id(1)).unwrap());
        assert!(s.contains(Set::Waiting, BlobType::Data, &id(3)).unwrap());
        assert_eq!(s.keeper(BlobType::Data, &id(1)).unwrap(), Some(None));
        assert_eq!(s.keeper(BlobType::Data, &id(3)).unwrap(), None);
        let p = PackId(Id([9; 32]));
        s.set_keepers(&[(BlobType::Data, id(1), p)]).unwrap();
        assert_eq!(s.keeper(BlobType::Data, &id(1)).unwrap(), Some(Some(p)));
    }

    #[test]
    fn used_blobs_come_in_order_with_every_pack_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path()).unwrap();
        let mut tree = blob(2);
        tree.ty = BlobType::Tree;
        s.add_pack(&pack(7, vec![blob(1), blob(2), tree])).unwrap();
        s.add_pack(&pack(8, vec![blob(2), blob(4)])).unwrap();
        for (ty, n) in [
            (BlobType::Data, 4),
            (BlobType::Tree, 2),
            (BlobType::Data, 2),
            (BlobType::Data, 3),
        ] {
            s.insert(Set::Used, ty, &id(n)).unwrap();
        }
        let mut seen = Vec::new();
        s.for_each_used(|ty, b, keeper, holders| {
            assert_eq!(keeper, None);
            seen.push((ty, b, holders.to_vec()));
            Ok(())
        })
        .unwrap();
        let (p7, p8) = (PackId(Id([7; 32])), PackId(Id([8; 32])));
        assert_eq!(
            seen,
            vec![
                (BlobType::Data, id(2), vec![(p7, 92), (p8, 92)]),
                (BlobType::Data, id(3), vec![]),
                (BlobType::Data, id(4), vec![(p8, 94)]),
                (BlobType::Tree, id(2), vec![(p7, 92)]),
            ]
        );
        let all = |_: &PackId| true;
        assert!(s.held_by(BlobType::Data, &id(1), all).unwrap());
        assert!(!s.held_by(BlobType::Data, &id(3), all).unwrap());
        assert!(!s.held_by(BlobType::Tree, &id(4), all).unwrap());
        // Only the packs that count: blob 2 is in both, blob 4 only in pack 8.
        let not_8 = |p: &PackId| *p != p8;
        assert!(s.held_by(BlobType::Data, &id(2), not_8).unwrap());
        assert!(!s.held_by(BlobType::Data, &id(4), not_8).unwrap());
        s.remove_pack(&p8).unwrap();
        assert!(!s.held_by(BlobType::Data, &id(4), all).unwrap());
        assert!(s.held_by(BlobType::Data, &id(2), all).unwrap());
        assert!(s.pack_blobs(&p8).is_err());
    }

    #[test]
    fn a_pack_reads_back_with_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path()).unwrap();
        let p = pack(7, vec![blob(1), blob(2)]);
        s.add_pack(&p).unwrap();
        assert_eq!(s.pack_blobs(&p.id).unwrap(), p.blobs);
        let err = s.pack_blobs(&PackId(Id([8; 32]))).unwrap_err().to_string();
        assert!(err.contains("missing from prune's working set"), "{err}");
    }

    #[test]
    fn the_working_directory_goes_with_the_prune_and_a_killed_ones_with_the_next() {
        let dir = tempfile::tempdir().unwrap();
        // Killed prunes' directories: one whose owner nobody holds, one killed before
        // it had an owner.
        let dead = dir.path().join("prune-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("owner"), b"").unwrap();
        let unowned = dir.path().join("prune-unowned");
        drop(DB::open(&db_options(), &unowned).unwrap());
        let a = Scratch::create(dir.path()).unwrap();
        assert!(!dead.exists(), "a killed prune's directory is removed");
        assert!(!unowned.exists(), "a directory without an owner is removed");
        // Prunes on the same cache (copies of a repository) leave each other's
        // directories alone, also after the first of them has ended.
        let b = Scratch::create(dir.path()).unwrap();
        assert!(a.path.exists());
        let b_dir = b.path.clone();
        drop(a);
        let c = Scratch::create(dir.path()).unwrap();
        assert!(b_dir.exists(), "a running prune's directory stays");
        drop(b);
        drop(c);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("prune.lock")]);
    }
}
