//! The local blob index: a RocksDB database under the cache directory mapping
//! `(type, blob id) -> location`, kept in step with the repository's `index/` folder.
//!
//! The cache is never the truth. At open it lists `index/`, reads only index files it
//! has not seen, and starts over when one it had seen is gone (prune replaced it).
//! Deleting the cache costs time, never data. Lookups go to RocksDB, so memory does not
//! grow with the number of blobs in the repository (invariant 7).
//!
//! Packs a prune has taken out of the index but not yet removed (listed in
//! `deletions/`) are kept apart: a reader finds blobs there ([`IndexCache::find`]),
//! deduplication never does ([`IndexCache::get`]), so no new snapshot comes to depend on
//! a pack about to go, while a snapshot a running backup wrote meanwhile stays readable.
//!
//! Keys: `b` `type` `id` -> postcard([`BlobLocation`]); `i` `index id` -> empty (seen);
//! `p` `type` `id` -> location in a pack awaiting deletion; `e` `deletion id` -> empty;
//! `b` `2` `tree id` -> empty: the tree is complete ([`IndexCache::tree_complete`]);
//! `s` `snapshot id` -> postcard([`SnapshotHead`]).
//!
//! Complete trees. A backup that found a tree and every blob below it in the `b` space
//! marks the tree complete, so the next backup checks one key for an unchanged directory
//! instead of every blob of its files. The mark lives in the `b` space on purpose: the
//! `b` space only grows until it is cleared as a whole (a rebuild, here or by an older
//! cairn that knows nothing of marks), and the marks go with it. So a mark always means
//! "this tree and its descendants are in the `b` space", exactly what deduplication
//! trusts; it says nothing about the repository that the `b` space does not.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use futures::StreamExt;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, list_ids};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, PackBlob, Snapshot, Timestamp, aad, names, open_object};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub pack: PackId,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// What a backup's search for its parent snapshot needs of a snapshot, kept by id so
/// that the search does not read and open every snapshot each time. A snapshot never
/// changes (its id is the hash of its bytes), so neither does this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHead {
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    /// A stream's snapshot (`--stdin`, `--stdin-from-command`).
    pub stream: bool,
}

impl SnapshotHead {
    pub fn of(s: &Snapshot) -> Self {
        SnapshotHead {
            time: s.time,
            host: s.host.clone(),
            paths: s.paths.clone(),
            stream: s.stream.is_some(),
        }
    }
}

/// Counts from a sync with `index/`.
#[derive(Debug, Default, Clone)]
pub struct SyncStats {
    pub index_files: usize,
    pub read: usize,
    pub rebuilt: bool,
    /// Index files that could not be read or opened (skipped; `check` names them).
    pub damaged: Vec<String>,
}

/// The RocksDB-backed index cache.
pub struct IndexCache {
    db: DB,
    path: PathBuf,
    /// Counts the clears of the `b` space in this process. Held for reading while a mark
    /// is written, for writing while the space is cleared (see [`IndexCache::generation`]).
    generation: RwLock<u64>,
    // Keeps a private fallback database alive (and removes it on drop).
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexCache({})", self.path.display())
    }
}

pub(crate) fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    o.set_write_buffer_size(4 << 20);
    o.set_max_open_files(256);
    let mut t = rocksdb::BlockBasedOptions::default();
    // Bloom filters answer most "is this chunk new?" lookups without reading a block.
    // Filters and index blocks stay with their table readers, outside the small block
    // cache: in it they were evicted by data blocks and re-read on every lookup
    // (10 thousand lookups a second at 10 million blobs). Held this way they cost about
    // 1.3 bytes a blob.
    t.set_bloom_filter(10.0, false);
    // The memtable gets a Bloom filter too: most lookups during a backup are for new
    // chunks, which it then answers without searching the memtable's skip list.
    o.set_memtable_prefix_bloom_ratio(0.02);
    o.set_memtable_whole_key_filtering(true);
    t.set_block_cache(&rocksdb::Cache::new_lru_cache(8 << 20));
    t.set_cache_index_and_filter_blocks(false);
    o.set_block_based_table_factory(&t);
    // Every command opens the cache, so opening is kept short: its tables are opened
    // by two threads (one per core here, not a pool of 16 started for each open), the
    // per-table statistics for compaction are not loaded, and the info log holds
    // warnings only, with two old logs kept instead of a thousand.
    o.set_max_file_opening_threads(2);
    o.set_skip_stats_update_on_db_open(true);
    o.set_log_level(rocksdb::LogLevel::Warn);
    o.set_keep_log_file_num(2);
    o
}

/// Writes skip RocksDB's write-ahead log. Without it a write goes to the memtable only,
/// and the memtable reaches a table file when it is full (4 MiB) or the database is
/// closed. With it every write was a system call, and the next open replayed the log
/// into a new table file (with its syncs) before doing anything else. A crash now loses
/// the writes since the last table file: always a suffix of them, so what remains is
/// an earlier state of the cache (index files then look unseen and are read again, a
/// mark is never without the entries it vouches for, which were written before it).
pub(crate) fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

fn blob_key(ty: BlobType, id: &BlobId) -> [u8; 34] {
    space_key(b'b', ty, id)
}

pub(crate) fn space_key(space: u8, ty: BlobType, id: &BlobId) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[0] = space;
    k[1] = match ty {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    };
    k[2..].copy_from_slice(id.as_bytes());
    k
}

/// The mark of a complete tree: in the `b` space, after the two blob types.
fn complete_key(id: &BlobId) -> [u8; 34] {
    let mut k = blob_key(BlobType::Tree, id);
    k[1] = 2;
    k
}

fn seen_key(id: &IndexId) -> [u8; 33] {
    id_key(b'i', id.as_bytes())
}

fn id_key(space: u8, id: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = space;
    k[1..].copy_from_slice(id);
    k
}

pub(crate) fn cache_err(path: &Path, e: impl std::fmt::Display) -> Error {
    let mut message = e.to_string();
    if message.contains("No space left on device") {
        message.push_str("; make room there, or give --cache-dir on a file system with room");
    }
    Error::Cache {
        path: path.to_path_buf(),
        message,
    }
}

impl IndexCache {
    /// Open (or create) the cache at `dir`. When another cairn process on this machine
    /// holds it, use a private temporary database instead: slower, never wrong.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        match DB::open(&db_options(), dir) {
            Ok(db) => Ok(Self::new(db, dir.to_path_buf(), None)),
            Err(e) if e.to_string().contains("lock") => {
                tracing::warn!(
                    "index cache {} is in use by another cairn process; using a private temporary cache",
                    dir.display()
                );
                Self::temporary()
            }
            Err(e) => {
                // A damaged cache is rebuilt: it is only a cache.
                tracing::warn!(
                    "index cache {} unusable ({e}); rebuilding it",
                    dir.display()
                );
                let _ = DB::destroy(&Options::default(), dir);
                let db = DB::open(&db_options(), dir).map_err(|e| cache_err(dir, e))?;
                Ok(Self::new(db, dir.to_path_buf(), None))
            }
        }
    }

    /// A cache in a fresh temporary directory, removed when dropped.
    pub fn temporary() -> Result<Self> {
        let t = tempfile::Builder::new()
            .prefix("cairn-index-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let db = DB::open(&db_options(), t.path()).map_err(|e| cache_err(t.path(), e))?;
        Ok(Self::new(db, t.path().to_path_buf(), Some(t)))
    }

    fn new(db: DB, path: PathBuf, temp: Option<tempfile::TempDir>) -> Self {
        IndexCache {
            db,
            path,
            generation: RwLock::new(0),
            _temp: temp,
        }
    }

    /// Where a blob is, for deduplication: only packs the index holds.
    pub fn get(&self, ty: BlobType, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.lookup(blob_key(ty, id))
    }

    /// Where a blob is, for reading: the index, else a pack awaiting deletion.
    pub fn find(&self, ty: BlobType, id: &BlobId) -> Result<Option<BlobLocation>> {
        match self.get(ty, id)? {
            Some(l) => Ok(Some(l)),
            None => self.lookup(space_key(b'p', ty, id)),
        }
    }

    fn lookup(&self, key: [u8; 34]) -> Result<Option<BlobLocation>> {
        match self
            .db
            .get_pinned(key)
            .map_err(|e| cache_err(&self.path, e))?
        {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| cache_err(&self.path, format!("bad entry: {e}"))),
        }
    }

    pub fn contains(&self, ty: BlobType, id: &BlobId) -> Result<bool> {
        Ok(self.get(ty, id)?.is_some())
    }

    /// Was tree `id` marked complete: is it, with every blob reachable from it, in the
    /// index (the `b` space)? `false` only means "not known to be".
    pub fn tree_complete(&self, id: &BlobId) -> Result<bool> {
        Ok(self
            .db
            .get_pinned(complete_key(id))
            .map_err(|e| cache_err(&self.path, e))?
            .is_some())
    }

    /// The head of a snapshot seen before (`None` also for an entry this cairn cannot
    /// read: the snapshot is read again).
    pub fn snapshot_head(&self, id: &SnapshotId) -> Result<Option<SnapshotHead>> {
        Ok(self
            .db
            .get_pinned(id_key(b's', id.as_bytes()))
            .map_err(|e| cache_err(&self.path, e))?
            .and_then(|v| postcard::from_bytes(&v).ok()))
    }

    pub fn put_snapshot_head(&self, id: &SnapshotId, head: &SnapshotHead) -> Result<()> {
        let v = postcard::to_stdvec(head).expect("a snapshot head encodes");
        self.put(&id_key(b's', id.as_bytes()), &v)
    }

    /// How many times this process cleared the `b` space. A caller reads it before it
    /// starts checking blobs and hands it to [`IndexCache::mark_tree_complete`].
    pub fn generation(&self) -> u64 {
        *self.generation.read().expect("generation")
    }

    /// Mark tree `id` complete. The caller has found the tree and every blob reachable
    /// from it in this cache (with [`IndexCache::contains`], or below trees marked
    /// complete), all since it read `generation`. When the space was cleared since then
    /// the facts may be gone: nothing is written and the answer is `false`.
    pub fn mark_tree_complete(&self, id: &BlobId, generation: u64) -> Result<bool> {
        let g = self.generation.read().expect("generation");
        if *g != generation {
            return Ok(false);
        }
        self.put(&complete_key(id), &[])?;
        Ok(true)
    }

    /// Write without the write-ahead log ([`write_options`]).
    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db
            .write_opt(batch, &write_options())
            .map_err(|e| cache_err(&self.path, e))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_opt(key, value, &write_options())
            .map_err(|e| cache_err(&self.path, e))
    }

    /// Record an index file's entries (and that it has been seen) atomically. The
    /// entries go in in key order: RocksDB's memtable then inserts each next to the one
    /// before, where in the random order of blob ids every insert searched the whole
    /// skip list.
    pub fn add_index_file(&self, id: &IndexId, file: &IndexFile) -> Result<()> {
        let mut entries: Vec<([u8; 34], &PackId, &PackBlob)> = file
            .packs
            .iter()
            .flat_map(|p| {
                p.blobs
                    .iter()
                    .map(move |b| (blob_key(b.ty, &b.id), &p.id, b))
            })
            .collect();
        // Stable: of a blob listed twice, the last listing is kept, as in file order.
        entries.sort_by_key(|e| e.0);
        let mut batch = WriteBatch::default();
        for (key, pack, b) in entries {
            batch.put(key, entry(pack, b));
        }
        batch.put(seen_key(id), []);
        self.write(batch)
    }

    fn seen(&self) -> Result<HashSet<IndexId>> {
        Ok(self
            .ids(b'i')?
            .into_iter()
            .map(|b| IndexId(crate::id::Id(b)))
            .collect())
    }

    fn ids(&self, space: u8) -> Result<HashSet<[u8; 32]>> {
        let mut out = HashSet::new();
        for item in self.db.prefix_iterator([space]) {
            let (k, _) = item.map_err(|e| cache_err(&self.path, e))?;
            if k.first() != Some(&space) {
                break;
            }
            if let Ok(b) = <[u8; 32]>::try_from(&k[1..]) {
                out.insert(b);
            }
        }
        Ok(out)
    }

    /// Bring the entries of packs awaiting deletion in step with `deletions/`.
    async fn sync_deletions(&self, backend: &dyn Backend, key: &MasterKey) -> Result<()> {
        let listed: HashSet<crate::id::Id> = list_ids(backend, names::DELETIONS)
            .await?
            .into_iter()
            .collect();
        let seen = self.ids(b'e')?;
        let to_read: Vec<crate::id::Id> =
            if seen.iter().any(|b| !listed.contains(&crate::id::Id(*b))) {
                let mut batch = WriteBatch::default();
                batch.delete_range(b"p", b"q");
                batch.delete_range(b"e", b"f");
                self.write(batch)?;
                listed.into_iter().collect()
            } else {
                listed
                    .into_iter()
                    .filter(|id| !seen.contains(id.as_bytes()))
                    .collect()
            };
        for id in to_read {
            let del = match read_deletion(backend, key, &id).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", names::deletion(&id));
                    continue;
                }
            };
            let mut batch = WriteBatch::default();
            for p in &del.packs {
                for b in &p.blobs {
                    batch.put(space_key(b'p', b.ty, &b.id), entry(&p.id, b));
                }
            }
            batch.put(id_key(b'e', id.as_bytes()), []);
            self.write(batch)?;
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        // Range-delete both key spaces (the marks of complete trees are in `b`); cheaper
        // than destroying an open database.
        let mut g = self.generation.write().expect("generation");
        *g += 1;
        let mut batch = WriteBatch::default();
        batch.delete_range(b"b", b"c");
        batch.delete_range(b"i", b"j");
        self.write(batch)
    }

    /// Bring the cache in step with `index/`.
    pub async fn sync(&self, backend: &dyn Backend, key: &MasterKey) -> Result<SyncStats> {
        let listed: HashSet<IndexId> = list_ids(backend, names::INDEX).await?.into_iter().collect();
        let seen = self.seen()?;
        let mut stats = SyncStats {
            index_files: listed.len(),
            ..Default::default()
        };
        let to_read: Vec<IndexId> = if seen.iter().any(|id| !listed.contains(id)) {
            tracing::info!("index files were replaced; rebuilding the local index cache");
            self.clear()?;
            stats.rebuilt = true;
            listed.iter().copied().collect()
        } else {
            listed.difference(&seen).copied().collect()
        };
        let mut fetches = futures::stream::iter(to_read)
            .map(|id| async move {
                let name = names::index(&id);
                let bytes = backend.get(&name).await;
                (id, name, bytes)
            })
            .buffer_unordered(8);
        while let Some((id, name, bytes)) = fetches.next().await {
            let opened = bytes.and_then(|bytes| {
                tokio::task::block_in_place(|| {
                    open_object::<IndexFile>(key, aad::INDEX, &name, &bytes)
                })
            });
            match opened {
                Ok(file) => {
                    self.add_index_file(&id, &file)?;
                    stats.read += 1;
                }
                // Removed between the listing and the read (prune replaced it): its
                // replacement is read instead.
                Err(Error::NotFound { .. }) => {}
                // A damaged index file must not stop restores of everything else; its
                // blobs look absent (a backup stores them again). `check` reports it.
                Err(e) if !matches!(e, Error::Backend { .. }) => {
                    tracing::warn!(
                        "skipping {name}: {e}; run `cairn check`, then `cairn repair index`"
                    );
                    stats.damaged.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        drop(fetches);
        self.sync_deletions(backend, key).await?;
        Ok(stats)
    }
}

/// Read and open `deletions/<id>`; `None` when it is gone (carried out since listed).
pub async fn read_deletion(
    backend: &dyn Backend,
    key: &MasterKey,
    id: &crate::id::Id,
) -> Result<Option<crate::format::Deletion>> {
    let name = names::deletion(id);
    match backend.get(&name).await {
        Ok(b) => open_object(key, aad::DELETION, &name, &b).map(Some),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn entry(pack: &PackId, b: &PackBlob) -> Vec<u8> {
    postcard::to_stdvec(&BlobLocation {
        pack: *pack,
        offset: b.offset,
        length: b.length,
        raw_length: b.raw_length,
    })
    .expect("location encodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn id(n: u8) -> BlobId {
        BlobId(Id([n; 32]))
    }

    #[test]
    fn marks_of_complete_trees_go_with_every_clear() {
        let c = IndexCache::temporary().unwrap();
        let g = c.generation();
        assert!(!c.tree_complete(&id(1)).unwrap());
        assert!(c.mark_tree_complete(&id(1), g).unwrap());
        assert!(c.tree_complete(&id(1)).unwrap());
        // A mark is not a blob: deduplication and readers do not see it.
        assert!(!c.contains(BlobType::Tree, &id(1)).unwrap());
        assert!(c.find(BlobType::Tree, &id(1)).unwrap().is_none());
        // A rebuild drops the marks with the entries they vouch for.
        c.clear().unwrap();
        assert!(!c.tree_complete(&id(1)).unwrap());
        // A caller that checked before the clear cannot mark after it.
        assert!(!c.mark_tree_complete(&id(2), g).unwrap());
        assert!(!c.tree_complete(&id(2)).unwrap());
        assert!(c.mark_tree_complete(&id(2), c.generation()).unwrap());
        // An older cairn clears the `b` space with the same range delete, marks included.
        let mut batch = WriteBatch::default();
        batch.delete_range(b"b", b"c");
        c.db.write(batch).unwrap();
        assert!(!c.tree_complete(&id(2)).unwrap());
    }

    #[test]
    fn writes_without_the_write_ahead_log_reach_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.mark_tree_complete(&id(3), c.generation()).unwrap());
        drop(c);
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.tree_complete(&id(3)).unwrap());
    }
}
