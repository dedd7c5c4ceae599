//! A repository: a backend plus the master key and config, and (once the index is
//! loaded) the blob store.
//!
//! Typestate: [`Repository`] is open (key and config read); [`IndexedRepository`] also
//! has the index cache in step with `index/` and is what reads and writes blobs.

pub(crate) mod index;
mod keys;
mod lock;
mod tree_cache;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::crypto::kdf::KdfParams;
use crate::error::{Error, Result};
use crate::format::{
    self, BlobType, CONFIG_MAGIC, ChunkerParams, Config, IndexFile, KeyFile, Snapshot, Tree, aad,
    names,
};
use crate::id::{BlobId, IndexId, KeyId, PackId, SnapshotId};

pub use index::{BlobLocation, IndexCache, SnapshotHead, SyncStats, read_deletion};
pub use keys::KeyInfo;
pub use lock::{Announcement, Freshness, Locks, OpState, OpStatus, REFRESH, STALE_AFTER};
pub use writer::{BlobWriter, WriteStats};

/// Settings of this process (not of the repository).
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// Root of the local cache; `None` for `$XDG_CACHE_HOME/cairn`.
    pub cache_dir: Option<PathBuf>,
    /// Concurrent requests to the store.
    pub connections: usize,
}

impl Default for RepoOptions {
    fn default() -> Self {
        RepoOptions {
            cache_dir: None,
            connections: 4,
        }
    }
}

/// Settings fixed at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression: i32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression: 3,
            kdf: KdfParams::new_random(),
        }
    }
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    rt: Arc<IoRuntime>,
    key: Arc<MasterKey>,
    key_id: KeyId,
    config: Config,
    opts: RepoOptions,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.backend.location())
    }
}

fn runtime() -> Result<Arc<IoRuntime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-io")
        .enable_all()
        .build()
        .map(|rt| Arc::new(IoRuntime(Some(rt))))
        .map_err(|e| Error::io("tokio runtime", e))
}

/// The runtime that runs a repository's store I/O.
///
/// A task can hold the last reference to its repository (a mount's read-ahead that
/// finishes after the file system was dropped), and then the runtime is dropped on one
/// of its own threads, where tokio cannot wait for its tasks and panics. There it is
/// shut down without waiting; everywhere else it waits as usual.
pub struct IoRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for IoRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime is taken only on drop")
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
        }
    }
}

impl Repository {
    /// Create a repository: a key file for `password`, then `config` (create-only, so two
    /// racing inits cannot both succeed). Refuses, changing nothing, where a repository
    /// already is.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        init: InitOptions,
        opts: RepoOptions,
    ) -> Result<Self> {
        let rt = runtime()?;
        let config = Config::new(init.chunker, init.pack_size, init.compression)?;
        if rt.block_on(backend.head(names::CONFIG))?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("a repository at {}", backend.location()),
            });
        }
        let conditional =
            rt.block_on(crate::backend::probe_conditional_writes(backend.as_ref()))?;
        if !conditional {
            tracing::warn!(
                "{} ignores or rejects conditional writes (If-None-Match); cairn checks names before \
                 writing instead. Every name is a content hash or random, so this stays safe, but two \
                 `cairn init` racing on one location could not be told apart",
                backend.location()
            );
        }
        backend.set_conditional_writes(conditional);
        let key = MasterKey::random();
        let kf = KeyFile::create(&key, password, init.kdf)?;
        let key_id = KeyId(crate::id::Id::random());
        rt.block_on(backend.create(&names::key(&key_id), Bytes::from(kf.to_bytes())))?;
        let mut cfg_bytes = CONFIG_MAGIC.to_vec();
        cfg_bytes.extend(format::seal_object(&key, aad::CONFIG, 3, &config));
        let written = rt
            .block_on(backend.create(names::CONFIG, Bytes::from(cfg_bytes.clone())))
            .and_then(|()| {
                // Without conditional writes a racing init could have replaced ours.
                let back = rt.block_on(backend.get(names::CONFIG))?;
                if back != cfg_bytes {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "a repository at {} (created concurrently)",
                            backend.location()
                        ),
                    });
                }
                Ok(())
            });
        if let Err(e) = written {
            // Lost a race with another init: leave its repository alone, remove our key.
            let _ = rt.block_on(backend.delete(&names::key(&key_id)));
            return Err(match e {
                Error::AlreadyExists { .. } => Error::AlreadyExists {
                    what: format!("a repository at {}", backend.location()),
                },
                e => e,
            });
        }
        let repo = Repository {
            backend,
            rt,
            key: Arc::new(key),
            key_id,
            config,
            opts,
        };
        repo.save_capabilities(conditional);
        Ok(repo)
    }

    fn capabilities_path(&self) -> PathBuf {
        self.cache_dir().join("capabilities.json")
    }

    /// Record what the store supports, in the local cache (never in the repository: other
    /// clients may reach it through other servers).
    fn save_capabilities(&self, conditional_writes: bool) {
        let path = self.capabilities_path();
        let body = serde_json::json!({ "conditional_writes": conditional_writes, "location": self.backend.location() });
        let r = std::fs::create_dir_all(path.parent().expect("in cache dir"))
            .and_then(|()| std::fs::write(&path, body.to_string()));
        if let Err(e) = r {
            tracing::warn!(
                "cannot record store capabilities in {}: {e}",
                path.display()
            );
        }
    }

    /// Apply recorded capabilities (conditional writes are assumed where none are known).
    fn load_capabilities(&self) {
        if let Ok(text) = std::fs::read_to_string(self.capabilities_path()) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if v["conditional_writes"] == false {
                    self.backend.set_conditional_writes(false);
                }
            }
        }
    }

    /// Open with a password: [`Error::NoRepository`] when there is no `config`,
    /// [`Error::WrongPassword`] when no key file opens with it.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8], opts: RepoOptions) -> Result<Self> {
        let rt = runtime()?;
        let cfg = match rt.block_on(backend.get(names::CONFIG)) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NoRepository {
                    location: backend.location().to_string(),
                    hint: "there is no `config` object; check --repo (and for S3 the bucket and prefix), or run `cairn init`".into(),
                });
            }
            Err(e) => return Err(e),
        };
        if cfg.len() < CONFIG_MAGIC.len() || cfg[..7] != CONFIG_MAGIC[..7] {
            return Err(Error::NoRepository {
                location: backend.location().to_string(),
                hint: "`config` is not a cairn repository config".into(),
            });
        }
        if cfg[7] != CONFIG_MAGIC[7] {
            return Err(Error::format(
                "config",
                format!(
                    "repository format {} is not supported by cairn {}; upgrade cairn",
                    cfg[7],
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
        let (key_id, key) = keys::find_key(&rt, backend.as_ref(), password)?;
        let config: Config =
            format::open_object(&key, aad::CONFIG, "config", &cfg[CONFIG_MAGIC.len()..])?;
        config.validate()?;
        let repo = Repository {
            backend,
            rt,
            key: Arc::new(key),
            key_id,
            config,
            opts,
        };
        repo.load_capabilities();
        Ok(repo)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn key(&self) -> &Arc<MasterKey> {
        &self.key
    }

    /// The key file this process opened the repository with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn options(&self) -> &RepoOptions {
        &self.opts
    }

    /// Run store I/O from synchronous code. Never call from inside a rayon task or the
    /// runtime itself.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn runtime(&self) -> &Arc<IoRuntime> {
        &self.rt
    }

    /// This repository's cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        let root = self
            .opts
            .cache_dir
            .clone()
            .unwrap_or_else(default_cache_root);
        root.join(self.config.id.to_hex())
    }

    /// Load every snapshot, sorted by time (oldest first). Unreadable snapshot objects
    /// are reported and skipped so one damaged object does not hide all the others.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (good, bad) = self.snapshots_and_damage()?;
        for (name, e) in bad {
            tracing::warn!("skipping {name}: {e}");
        }
        Ok(good)
    }

    /// Every snapshot that opens (sorted by time), and the objects in `snapshots/` that
    /// do not, with why.
    #[allow(clippy::type_complexity)]
    pub fn snapshots_and_damage(
        &self,
    ) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(String, Error)>)> {
        use futures::StreamExt;
        let ids: Vec<SnapshotId> = self.block_on(crate::backend::list_ids(
            self.backend.as_ref(),
            names::SNAPSHOTS,
        ))?;
        let results: Vec<_> = self.block_on(
            futures::stream::iter(ids)
                .map(|id| async move { (id, self.backend.get(&names::snapshot(&id)).await) })
                .buffer_unordered(self.opts.connections.max(1) * 2)
                .collect(),
        );
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for (id, bytes) in results {
            match bytes.and_then(|b| self.open_snapshot(&id, &b)) {
                Ok(s) => out.push((id, s)),
                Err(Error::NotFound { .. }) => {} // removed since the listing
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => damaged.push((names::snapshot(&id), e)),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((out, damaged))
    }

    /// Read every index file from the store (not the cache), several at a time, sorted
    /// by id. Files removed since the listing are skipped; damaged ones are returned
    /// apart.
    #[allow(clippy::type_complexity)]
    pub fn read_index_files(&self) -> Result<(Vec<(IndexId, IndexFile)>, Vec<(String, Error)>)> {
        let mut good = Vec::new();
        let bad = self.for_each_index_file(|id, f| {
            good.push((id, f));
            Ok(())
        })?;
        good.sort_by_key(|(id, _)| *id);
        Ok((good, bad))
    }

    /// Read every index file from the store and hand each to `f` as it arrives, so that
    /// only the files in flight are held. Files removed since the listing are skipped;
    /// damaged ones are returned.
    pub fn for_each_index_file(
        &self,
        mut f: impl FnMut(IndexId, IndexFile) -> Result<()>,
    ) -> Result<Vec<(String, Error)>> {
        use futures::StreamExt;
        let listed: Vec<IndexId> = self.block_on(crate::backend::list_ids(
            self.backend.as_ref(),
            names::INDEX,
        ))?;
        self.block_on(async {
            // Each file is fetched by a task of its own, so downloads go on while `f`
            // works; the files that arrive meanwhile wait whole in memory.
            let mut fetched = futures::stream::iter(listed)
                .map(|id| {
                    let backend = self.backend.clone();
                    let task = self.rt.spawn(async move {
                        let name = names::index(&id);
                        backend.get(&name).await
                    });
                    async move { (id, task.await) }
                })
                .buffer_unordered(self.opts.connections.max(1));
            let mut bad = Vec::new();
            while let Some((id, bytes)) = fetched.next().await {
                let name = names::index(&id);
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => {
                        return Err(Error::Backend {
                            location: self.backend.location().to_string(),
                            message: format!("reading {name}: {e}"),
                        });
                    }
                };
                match bytes.and_then(|b| {
                    format::open_object::<IndexFile>(&self.key, aad::INDEX, &name, &b)
                }) {
                    Ok(file) => f(id, file)?,
                    Err(Error::NotFound { .. }) => {}
                    Err(e @ Error::Backend { .. }) => return Err(e),
                    Err(e) => bad.push((name, e)),
                }
            }
            Ok(bad)
        })
    }

    /// Read a pack's header from its tail (two range requests), for a pack of `size`
    /// bytes that may be in no index.
    pub async fn read_pack_header(&self, pack: &PackId, size: u64) -> Result<format::PackHeader> {
        let name = names::pack(pack);
        let trailer_len = format::PACK_TRAILER_LEN as u64;
        if size < trailer_len {
            return Err(Error::integrity(
                &name,
                format!("only {size} bytes: truncated"),
            ));
        }
        let trailer = self
            .backend
            .get_range(&name, size - trailer_len..size)
            .await?;
        let hlen = format::pack_header_len(pack, size, &trailer)? as u64;
        let start = size - trailer_len - hlen;
        let sealed = self
            .backend
            .get_range(&name, start..size - trailer_len)
            .await?;
        format::PackHeader::open(&self.key, pack, &sealed, start)
    }

    fn open_snapshot(&self, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let name = names::snapshot(id);
        if crate::id::Id::hash_of(bytes) != id.0 {
            return Err(Error::integrity(&name, "content does not match its name"));
        }
        format::open_object(&self.key, aad::SNAPSHOT, &name, bytes)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.block_on(self.backend.get(&names::snapshot(id)))?;
        self.open_snapshot(id, &bytes)
    }

    /// Resolve `latest`, a full id or a unique prefix of at least 4 hex digits.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            let (mut good, bad) = self.snapshots_and_damage()?;
            let newest = good.pop().ok_or_else(|| Error::NotFound {
                what: format!("any snapshot in {}", self.backend.location()),
            })?;
            // A damaged object may have been the newest: `latest` is then an older one.
            for (name, e) in &bad {
                tracing::warn!(
                    "{name} cannot be read ({e}); `latest` is the newest readable snapshot, \
                     {}, which may not be the newest one taken",
                    newest.0.short()
                );
            }
            return Ok(newest);
        }
        if spec.len() == 64 {
            let id: SnapshotId = spec.parse()?;
            return Ok((id, self.load_snapshot(&id)?));
        }
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Config(format!(
                "'{spec}' is not a snapshot id: use `latest`, a full id or at least 4 hex digits"
            )));
        }
        let spec_l = spec.to_ascii_lowercase();
        let list = self.block_on(self.backend.list(names::SNAPSHOTS))?;
        let matches: Vec<SnapshotId> = list
            .iter()
            .filter_map(|o| o.name.rsplit('/').next())
            .filter(|n| n.starts_with(&spec_l))
            .filter_map(|n| n.parse().ok())
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NotFound {
                what: format!("snapshot {spec}"),
            }),
            _ => Err(Error::Config(format!(
                "snapshot prefix '{spec}' is ambiguous ({} matches); give more digits",
                matches.len()
            ))),
        }
    }

    /// Remove a snapshot object (forget). Its data stays until a prune.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.block_on(self.backend.delete(&names::snapshot(id)))
    }

    /// Replace a snapshot by a changed copy (snapshots are never changed in place): write
    /// the copy, naming the first version in `original`, then remove the old object.
    pub fn replace_snapshot(&self, id: &SnapshotId, mut snap: Snapshot) -> Result<SnapshotId> {
        snap.original = Some(snap.original.unwrap_or(*id));
        let new = self.save_snapshot(&snap)?;
        if new != *id {
            self.delete_snapshot(id)?;
        }
        Ok(new)
    }

    /// Write a snapshot object (the last write of a backup).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let bytes = format::seal_object(&self.key, aad::SNAPSHOT, self.config.compression, snap);
        let id = SnapshotId(crate::id::Id::hash_of(&bytes));
        self.block_on(
            self.backend
                .create(&names::snapshot(&id), Bytes::from(bytes)),
        )?;
        Ok(id)
    }

    /// Write an index file; returns its id.
    pub async fn save_index(&self, file: &IndexFile) -> Result<IndexId> {
        save_index(
            self.backend.as_ref(),
            &self.key,
            self.config.compression,
            file,
        )
        .await
    }

    /// Sync the index cache and return the repository that can read and write blobs.
    pub fn into_indexed(self) -> Result<IndexedRepository> {
        let dir = self.cache_dir().join("index-v1");
        let index = Arc::new(IndexCache::open(&dir)?);
        let stats = self.block_on(index.sync(self.backend.as_ref(), &self.key))?;
        Ok(IndexedRepository {
            repo: self,
            index,
            sync: stats,
            tree_packs: Default::default(),
            announcement: Mutex::new(None),
            freshness: None,
            resync: tokio::sync::Mutex::new(()),
        })
    }

    /// Announce an operation with a lock object, then load the index. A backup must
    /// open the repository this way: prune's protocol relies on every backup that can
    /// have seen an index entry having announced itself before it read the index.
    pub fn into_indexed_announced(self, kind: format::LockKind) -> Result<IndexedRepository> {
        let announcement = self.announce(kind)?;
        let mut repo = self.into_indexed()?;
        repo.freshness = Some(announcement.freshness());
        *repo.announcement.lock().expect("announcement") = Some(announcement);
        Ok(repo)
    }
}

pub(crate) async fn save_index(
    backend: &dyn Backend,
    key: &MasterKey,
    level: i32,
    file: &IndexFile,
) -> Result<IndexId> {
    let bytes = format::seal_object(key, aad::INDEX, level, file);
    let id = IndexId(crate::id::Id::hash_of(&bytes));
    match backend.create(&names::index(&id), Bytes::from(bytes)).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(id),
        Err(e) => Err(e),
    }
}

fn default_cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cairn");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("cairn");
    }
    std::env::temp_dir().join("cairn-cache")
}

/// A repository whose index is loaded: reads and writes blobs.
pub struct IndexedRepository {
    repo: Repository,
    index: Arc<IndexCache>,
    sync: SyncStats,
    tree_packs: tree_cache::TreePackCache,
    announcement: Mutex<Option<Announcement>>,
    /// The announcement's freshness, which outlives taking the announcement: the
    /// writer checks it before each index file it writes.
    freshness: Option<Freshness>,
    resync: tokio::sync::Mutex<()>,
}

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    pub fn index(&self) -> &Arc<IndexCache> {
        &self.index
    }

    /// The announcement made by [`Repository::into_indexed_announced`], once.
    pub fn take_announcement(&self) -> Option<Announcement> {
        self.announcement.lock().expect("announcement").take()
    }

    /// What the index sync at open found (damaged index files, for example).
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync
    }

    /// Where a blob is, or [`Error::NotFound`] naming it.
    pub fn locate(&self, ty: BlobType, id: &BlobId) -> Result<BlobLocation> {
        self.index.find(ty, id)?.ok_or_else(|| Error::NotFound {
            what: format!("{ty} blob {id} in the index"),
        })
    }

    /// Bring the index cache in step with `index/` again, after a pack the index named
    /// was not found: a prune running beside this reader moved the blob to a new pack
    /// and removed the old one. Concurrent callers wait for one sync.
    pub async fn resync_index(&self) -> Result<()> {
        let _one = self.resync.lock().await;
        tracing::info!("reading the index again (new index files, or a pack moved by a prune)");
        let stats = self.index.sync(self.backend().as_ref(), self.key()).await?;
        tracing::debug!("resync: {} index files read", stats.read);
        Ok(())
    }

    /// Fetch a blob's sealed bytes by range and open them (authenticated and checked
    /// against its id: invariant 4). When its pack is gone, reads the index again once
    /// (a concurrent prune moved it) before giving up.
    pub async fn read_blob_async(&self, ty: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        match self.read_blob_once(ty, id).await {
            Err(Error::NotFound { .. }) => {
                self.resync_index().await?;
                self.read_blob_once(ty, id).await
            }
            r => r,
        }
    }

    async fn read_blob_once(&self, ty: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(ty, id)?;
        let name = names::pack(&loc.pack);
        let sealed = self
            .backend()
            .get_range(&name, loc.offset..loc.offset + loc.length as u64)
            .await?;
        format::open_blob(self.key(), ty, id, &sealed, Some(loc.raw_length)).map_err(|e| match e {
            Error::Integrity { object, reason } => Error::Integrity {
                object: format!("{object} in {name}"),
                reason,
            },
            e => e,
        })
    }

    pub fn read_blob(&self, ty: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        self.block_on(self.read_blob_async(ty, id))
    }

    /// Read and decode a tree, through the cache of whole tree packs. Like
    /// [`IndexedRepository::read_blob_async`], survives a concurrent prune moving it.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        match self.load_tree_once(id) {
            Err(Error::NotFound { .. }) => {
                self.block_on(self.resync_index())?;
                self.load_tree_once(id)
            }
            r => r,
        }
    }

    fn load_tree_once(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate(BlobType::Tree, id)?;
        let end = loc.offset + loc.length as u64;
        let pack = match self.tree_packs.get(&loc.pack) {
            Some(p) => p,
            // Whole packs only when packs are of a size worth holding in memory.
            None if self.config().pack_size <= 32 << 20 => {
                let p = self.block_on(self.backend().get(&names::pack(&loc.pack)))?;
                self.tree_packs.insert(loc.pack, p.clone());
                p
            }
            None => return self.load_tree_uncached(id),
        };
        if end > pack.len() as u64 {
            return Err(Error::integrity(
                names::pack(&loc.pack),
                format!(
                    "pack is {} bytes, the index places tree {id} at {}..{end}",
                    pack.len(),
                    loc.offset
                ),
            ));
        }
        let sealed = &pack[loc.offset as usize..end as usize];
        let bytes = format::open_blob(self.key(), BlobType::Tree, id, sealed, Some(loc.raw_length))
            .map_err(|e| match e {
                Error::Integrity { object, reason } => Error::Integrity {
                    object: format!("{object} in {}", names::pack(&loc.pack)),
                    reason,
                },
                e => e,
            })?;
        Tree::decode(&format!("tree {id}"), &bytes)
    }

    fn load_tree_uncached(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(BlobType::Tree, id)?;
        Tree::decode(&format!("tree {id}"), &bytes)
    }

    /// A writer for new blobs (one per backup).
    pub fn writer(&self) -> BlobWriter<'_> {
        BlobWriter::new(self, false, false)
    }

    /// A writer for prune's repacking: it also returns the index files it wrote.
    pub fn repack_writer(&self) -> BlobWriter<'_> {
        BlobWriter::new(self, false, true)
    }

    /// A writer that counts what would be stored and stores nothing (`--dry-run`).
    pub fn dry_run_writer(&self) -> BlobWriter<'_> {
        BlobWriter::new(self, true, false)
    }
}

/// A repository in `dir/repo` with its cache in `dir/cache`, password `pw`, and an
/// Argon2id cost low enough for unit tests.
#[cfg(test)]
pub(crate) fn test_repository(dir: &std::path::Path, connections: usize) -> Repository {
    let root = dir.join("repo");
    let store = crate::backend::open(
        root.to_str().expect("a UTF-8 temporary directory"),
        true,
        &crate::backend::S3Options::with_defaults(),
    )
    .expect("a local store");
    let init = InitOptions {
        kdf: KdfParams::with_cost(1024, 1, 1),
        ..Default::default()
    };
    let opts = RepoOptions {
        cache_dir: Some(dir.join("cache")),
        connections,
    };
    Repository::init(store, b"pw", init, opts).expect("init")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that drops the last reference to its repository, and with it the runtime
    /// the task runs on, goes on instead of panicking in tokio.
    #[test]
    fn the_last_reference_dropped_in_a_task_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), 1);
        let (done, finished) = std::sync::mpsc::channel();
        // A handle does not keep the runtime itself alive; the task holds the only
        // reference to the repository.
        repo.runtime().handle().clone().spawn(async move {
            tokio::task::yield_now().await;
            drop(repo);
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the task went on after dropping the runtime");
    }
}
