//! Backup: walk the sources, chunk and store file contents, write one tree blob per
//! directory bottom-up, then the snapshot.
//!
//! Directory entries are processed in parallel on rayon (many small files at once);
//! a large file is read as a stream and its chunks are sealed in parallel batches, so
//! memory per file is bounded by a batch of chunks, not by the file. Store I/O happens in
//! the [`BlobWriter`]'s upload task.
//!
//! An input that cannot be read is reported as a [`Problem`], left out, and the snapshot
//! is recorded as incomplete (invariant 5); the backup itself goes on.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::Problem;
use super::select::{SelectOptions, Selector};
use super::stream_check::{Checker, Checking, StreamCheck, Verdict};
use crate::chunker;
use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeKind, Snapshot, StreamInfo, Timestamp, Tree, Xattr};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{Announcement, BlobWriter, IndexedRepository, REFRESH, STALE_AFTER};
use crate::util::NameCache;
use std::sync::Arc;

/// Bytes of chunks sealed in parallel per batch of a streamed file (a batch holds at
/// least two chunks, so both cores have work). Two batches are in memory per file.
const BATCH_BYTES: usize = 4 << 20;

/// What to back up.
pub enum Source {
    /// Files and directories, stored under their absolute paths.
    Paths(Vec<PathBuf>),
    /// A byte stream stored as the file `name` (a relative path like `harbor/db.sql`).
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
        /// Producer details recorded in the snapshot.
        info: StreamInfo,
    },
    /// The standard output of a command, stored as the file `name`. A command that
    /// exits non-zero (or is killed) fails the backup: no snapshot is written.
    Command { name: String, argv: Vec<String> },
}

/// Options of a backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// Overrides the host name recorded.
    pub host: Option<String>,
    /// Overrides the snapshot time.
    pub time: Option<Timestamp>,
    /// Use this snapshot for change detection instead of the latest with the same host
    /// and paths.
    pub parent: Option<SnapshotId>,
    /// Read every file, trusting no parent snapshot.
    pub force: bool,
    /// Read and chunk everything, write nothing.
    pub dry_run: bool,
    pub select: SelectOptions,
    /// Download and verify the packs this backup wrote before writing the snapshot.
    pub verify_new: bool,
    /// How a stream (`--stdin`, `--stdin-from-command`) is checked.
    pub stream_check: StreamCheck,
}

/// Live counters, readable from another thread for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files read (new or changed).
    pub files: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unmodified: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Bytes read plus the sizes of unmodified files: how far through the input.
    pub bytes_done: AtomicU64,
    /// Total bytes expected (the parent snapshot's size), 0 when unknown.
    pub bytes_expected: AtomicU64,
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupResult {
    /// `None` for a dry run.
    pub id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub problems: Vec<Problem>,
    /// With `verify_new`: packs and bytes read back and verified.
    pub verified: Option<(u64, u64)>,
}

pub(super) struct Ctx<'a> {
    w: &'a BlobWriter<'a>,
    repo: &'a IndexedRepository,
    names: NameCache,
    problems: Mutex<Vec<Problem>>,
    progress: &'a Progress,
    total_bytes: AtomicU64,
    select: Selector,
    /// Compare against the parent's trees (off with `force` or without a parent).
    use_parent: bool,
    stream_check: StreamCheck,
    /// The check a stream passed or failed, for the snapshot.
    stream_checked: Mutex<Option<String>>,
}

impl Ctx<'_> {
    pub(super) fn problem(&self, path: &Path, message: impl Into<String>) {
        let p = Problem {
            path: path.to_path_buf(),
            message: message.into(),
        };
        tracing::warn!("{p}");
        self.problems.lock().expect("problems").push(p);
    }
}

/// Back up `source` and write a snapshot.
pub fn backup(
    repo: &IndexedRepository,
    source: Source,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupResult> {
    let started = Instant::now();
    let select = Selector::new(&opts.select)?;
    let host = opts.host.clone().unwrap_or_else(crate::util::hostname);
    let parent = match (&source, opts.force) {
        (Source::Paths(paths), false) => find_parent(repo, opts.parent, &host, paths)?,
        _ => None,
    };
    if let Some((_, p)) = &parent {
        progress
            .bytes_expected
            .store(p.summary.total_bytes, Ordering::Relaxed);
    }
    // The backup announced itself before it loaded the index (a key that may not
    // write failed there, with nothing read and nothing stored).
    let announcement = if opts.dry_run {
        None
    } else {
        Some(repo.take_announcement().ok_or_else(|| {
            Error::Config(
                "a backup needs a repository opened with `into_indexed_announced(LockKind::Backup)`: \
                 it must announce itself before it reads the index (docs/design.md)"
                    .into(),
            )
        })?)
    };
    let result = run(
        repo,
        source,
        opts,
        progress,
        started,
        select,
        host,
        parent,
        announcement.as_ref(),
    );
    // The finished marker is written whatever happened, so prune need not wait for this
    // backup's lock to go stale.
    if let Some(a) = announcement {
        a.finish();
    }
    result
}

/// The backup proper, between announcing it and marking it finished.
#[allow(clippy::too_many_arguments)]
fn run(
    repo: &IndexedRepository,
    source: Source,
    opts: &BackupOptions,
    progress: &Progress,
    started: Instant,
    select: Selector,
    host: String,
    parent: Option<(SnapshotId, Snapshot)>,
    announcement: Option<&Announcement>,
) -> Result<BackupResult> {
    // Index files already there; --verify-new reads the packs of the ones added since.
    let before = if opts.verify_new && !opts.dry_run {
        Some(super::check::list_index_files(repo)?)
    } else {
        None
    };
    let writer = if opts.dry_run {
        repo.dry_run_writer()
    } else {
        repo.writer()
    };
    let ctx = Ctx {
        w: &writer,
        repo,
        names: NameCache::default(),
        problems: Mutex::new(Vec::new()),
        progress,
        total_bytes: AtomicU64::new(0),
        select,
        use_parent: parent.is_some(),
        stream_check: opts.stream_check,
        stream_checked: Mutex::new(None),
    };
    let parent_tree = parent.as_ref().map(|(_, p)| p.tree);
    let pool = super::cpu_pool()?;
    let walked = pool.install(|| match source {
        Source::Paths(paths) => backup_paths(&ctx, &paths, parent_tree).map(|(t, p)| (t, p, None)),
        Source::Stream { name, reader, info } => {
            backup_stream(&ctx, &name, reader, info).map(|(t, p, i)| (t, p, Some(i)))
        }
        Source::Command { name, argv } => {
            super::command::backup_command(&ctx, &name, &argv).map(|(t, p, i)| (t, p, Some(i)))
        }
    });
    let problems = ctx.problems.into_inner().expect("problems");
    let ctx_checked = ctx.stream_checked.into_inner().expect("stream check");
    let total_bytes = ctx.total_bytes.into_inner();
    // Index what was uploaded even when the walk failed, so a rerun reuses it.
    let finished = writer.finish();
    // When both failed, the writer's error is the cause (the walk only saw uploads stop).
    let (tree, paths, stream) = match (walked, &finished) {
        (Err(_), Err(_)) => return Err(finished.expect_err("matched Err")),
        (w, _) => w?,
    };
    let stats = finished?;
    let verified = match before {
        None => None,
        Some(before) => Some(verify_new(repo, before)?),
    };

    let mut snap = Snapshot::new(tree, paths);
    snap.host = host;
    if let Some(t) = opts.time {
        snap.time = t;
    }
    snap.parent = parent.map(|(id, _)| id);
    snap.tags = opts.tags.clone();
    snap.complete = problems.is_empty();
    snap.problems = problems.iter().map(|p| p.to_string()).collect();
    snap.stream = stream;
    if let Some(c) = ctx_checked {
        snap.extra.insert("stream_check".into(), c);
    }
    let s = &mut snap.summary;
    s.files_changed = progress.files_changed.load(Ordering::Relaxed);
    s.files_new = progress.files.load(Ordering::Relaxed) - s.files_changed;
    s.files_unmodified = progress.files_unmodified.load(Ordering::Relaxed);
    s.dirs = progress.dirs.load(Ordering::Relaxed);
    s.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
    s.total_bytes = total_bytes;
    s.data_blobs_added = stats.data_blobs;
    s.tree_blobs_added = stats.tree_blobs;
    s.bytes_added = stats.bytes_added;
    s.packs_added = stats.packs;
    s.duration_ms = started.elapsed().as_millis() as u64;
    let id = match announcement {
        None => None,
        Some(a) => {
            // A backup whose lock went unrefreshed long enough to look dead to prune
            // may reference packs prune has since removed: it stops before the snapshot.
            a.check_fresh(STALE_AFTER - REFRESH)?;
            Some(repo.save_snapshot(&snap)?)
        }
    };
    Ok(BackupResult {
        id,
        snapshot: snap,
        problems,
        verified,
    })
}

/// Read back the packs written since `before` was listed; any damage fails the backup
/// before its snapshot is written.
fn verify_new(
    repo: &IndexedRepository,
    before: std::collections::HashSet<crate::id::IndexId>,
) -> Result<(u64, u64)> {
    let v = super::check::verify_new_packs(repo, before)?;
    match v.damage.first() {
        None => Ok((v.packs, v.bytes)),
        Some(d) => Err(Error::integrity(
            &d.object,
            format!(
                "{} ({} damaged object(s) found by --verify-new); no snapshot was written. \
                 Run `cairn check --read-data`, then `cairn repair index`",
                d.message,
                v.damage.len()
            ),
        )),
    }
}

/// The parent snapshot: the one asked for, or the latest complete-or-not snapshot of
/// this host with the same source paths.
fn find_parent(
    repo: &IndexedRepository,
    asked: Option<SnapshotId>,
    host: &str,
    paths: &[PathBuf],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if let Some(id) = asked {
        return Ok(Some((id, repo.load_snapshot(&id)?)));
    }
    let mut want: Vec<String> = paths
        .iter()
        .map(|p| clean_absolute(p).map(|p| p.display().to_string()))
        .collect::<Result<_>>()?;
    want.sort();
    want.dedup();
    Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| {
        let mut have = s.paths.clone();
        have.sort();
        s.host == host && have == want && s.stream.is_none()
    }))
}

/// A directory of the virtual root: the path components leading to the sources.
#[derive(Default)]
struct VDir {
    children: BTreeMap<Vec<u8>, VEntry>,
}

enum VEntry {
    Source(PathBuf),
    Dir(VDir),
}

/// Make a path absolute and drop `.` and `..` lexically (a symlink given as a source
/// is stored as the symlink, as the user named it).
fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn backup_paths(
    ctx: &Ctx,
    paths: &[PathBuf],
    parent: Option<BlobId>,
) -> Result<(BlobId, Vec<String>)> {
    if paths.is_empty() {
        return Err(Error::Config(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut cleaned: Vec<PathBuf> = paths
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<_>>()?;
    cleaned.sort();
    cleaned.dedup();
    // A source inside another source is already covered by it.
    let mut sources: Vec<PathBuf> = Vec::new();
    for p in cleaned {
        if !sources.iter().any(|s| p.starts_with(s)) {
            sources.push(p);
        }
    }
    let mut root = VDir::default();
    for s in &sources {
        let comps: Vec<&OsStr> = s.iter().skip(1).collect();
        if comps.is_empty() {
            // Backing up "/" itself: the root's entries become the snapshot's root.
            let dev = std::fs::symlink_metadata(s)
                .map_err(|e| Error::io(s, e))?
                .dev();
            let tree =
                backup_dir_contents(ctx, s, parent_tree(ctx, parent.as_ref())?.as_ref(), dev)?;
            return Ok((tree, vec!["/".into()]));
        }
        let mut dir = &mut root;
        for (i, c) in comps.iter().enumerate() {
            let name = c.as_bytes().to_vec();
            if i + 1 == comps.len() {
                dir.children.insert(name, VEntry::Source(s.clone()));
            } else {
                let e = dir
                    .children
                    .entry(name)
                    .or_insert_with(|| VEntry::Dir(VDir::default()));
                dir = match e {
                    VEntry::Dir(d) => d,
                    VEntry::Source(_) => unreachable!("sources inside sources were removed"),
                };
            }
        }
    }
    let tree = backup_vdir(
        ctx,
        &root,
        Path::new("/"),
        parent_tree(ctx, parent.as_ref())?.as_ref(),
    )?;
    Ok((
        tree,
        sources.iter().map(|p| p.display().to_string()).collect(),
    ))
}

/// The parent's tree, when change detection is on; a tree that cannot be read only
/// means its files are read again.
fn parent_tree(ctx: &Ctx, id: Option<&BlobId>) -> Result<Option<Tree>> {
    let Some(id) = id.filter(|_| ctx.use_parent) else {
        return Ok(None);
    };
    match ctx.repo.load_tree(id) {
        Ok(t) => Ok(Some(t)),
        // An unreachable store stops the backup; a damaged parent only costs rereading.
        Err(e @ Error::Backend { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("parent tree {id} unreadable ({e}); reading its files again");
            Ok(None)
        }
    }
}

fn parent_subtree(parent: Option<&Node>) -> Option<&BlobId> {
    match parent.map(|n| &n.kind) {
        Some(NodeKind::Dir { subtree }) => Some(subtree),
        _ => None,
    }
}

fn backup_vdir(ctx: &Ctx, dir: &VDir, real: &Path, parent: Option<&Tree>) -> Result<BlobId> {
    let mut nodes = Vec::new();
    for (name, e) in &dir.children {
        let path = real.join(OsStr::from_bytes(name));
        let pnode = parent.and_then(|t| t.get(name));
        match e {
            VEntry::Source(p) => {
                let dev = match std::fs::symlink_metadata(p) {
                    Ok(m) => m.dev(),
                    Err(_) => 0,
                };
                if let Some(n) = backup_entry(ctx, p, name.clone(), pnode, dev, None)? {
                    nodes.push(n);
                }
            }
            VEntry::Dir(sub) => {
                let ptree = parent_tree(ctx, parent_subtree(pnode))?;
                let subtree = backup_vdir(ctx, sub, &path, ptree.as_ref())?;
                let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                let mut n =
                    node_from_meta(ctx, &path, name.clone(), &meta, NodeKind::Dir { subtree });
                n.xattrs = read_xattrs(&path);
                nodes.push(n);
            }
        }
    }
    store_tree(ctx, nodes)
}

fn store_tree(ctx: &Ctx, nodes: Vec<Node>) -> Result<BlobId> {
    let tree = Tree::new(nodes);
    ctx.w.add(BlobType::Tree, &tree.encode()).map(|(id, _)| id)
}

/// One directory entry; `Ok(None)` when it could not be read (a problem is recorded) or
/// is excluded. `Err` only for repository failures, which stop the backup. `parent` is
/// the same entry in the parent snapshot; `dev` the source's file system.
fn backup_entry(
    ctx: &Ctx,
    path: &Path,
    name: Vec<u8>,
    parent: Option<&Node>,
    dev: u64,
    meta: Option<std::io::Result<std::fs::Metadata>>,
) -> Result<Option<Node>> {
    let meta = match meta.unwrap_or_else(|| std::fs::symlink_metadata(path)) {
        Ok(m) => m,
        Err(e) => {
            ctx.problem(path, format!("cannot stat: {e}"));
            return Ok(None);
        }
    };
    // An unchanged file (same ctime) has the parent's extended attributes too.
    let mut same_xattrs: Option<&Vec<crate::format::Xattr>> = None;
    // The bytes a read stored, which differ from the stat's size when the file changed.
    let mut read_size = None;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        if ctx.select.marked(path) {
            return Ok(None);
        }
        let contents = if ctx.select.one_file_system && meta.dev() != dev {
            // A mount point: keep the directory, not the other file system's contents.
            store_tree(ctx, Vec::new())
        } else {
            let ptree = parent_tree(ctx, parent_subtree(parent))?;
            backup_dir_contents(ctx, path, ptree.as_ref(), dev)
        };
        match contents {
            Ok(subtree) => {
                ctx.progress.dirs.fetch_add(1, Ordering::Relaxed);
                NodeKind::Dir { subtree }
            }
            Err(Error::Io { path, source }) => {
                ctx.problem(&path, format!("cannot read directory: {source}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    } else if ft.is_file() {
        if let Some(content) = unchanged_content(ctx, parent, &meta)? {
            same_xattrs = parent.map(|p| &p.xattrs);
            ctx.progress
                .files_unmodified
                .fetch_add(1, Ordering::Relaxed);
            ctx.progress
                .bytes_done
                .fetch_add(meta.len(), Ordering::Relaxed);
            ctx.total_bytes.fetch_add(meta.len(), Ordering::Relaxed);
            NodeKind::File { content }
        } else {
            if matches!(parent.map(|p| &p.kind), Some(NodeKind::File { .. })) {
                ctx.progress.files_changed.fetch_add(1, Ordering::Relaxed);
            }
            match backup_file(ctx, path, &meta) {
                Ok(Some((content, read))) => {
                    read_size = Some(read);
                    NodeKind::File { content }
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    } else if ft.is_symlink() {
        match std::fs::read_link(path) {
            Ok(t) => NodeKind::Symlink {
                target: t.as_os_str().as_bytes().to_vec(),
            },
            Err(e) => {
                ctx.problem(path, format!("cannot read link: {e}"));
                return Ok(None);
            }
        }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: meta.rdev() }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { rdev: meta.rdev() }
    } else {
        ctx.problem(path, "unknown file type, skipped");
        return Ok(None);
    };
    let mut node = node_from_meta(ctx, path, name, &meta, kind);
    // The size a reader gets is that of the stored content (restore, dump and tar agree).
    node.size = read_size.unwrap_or(node.size);
    node.xattrs = match same_xattrs {
        Some(x) => x.clone(),
        None => read_xattrs(path),
    };
    Ok(Some(node))
}

/// The parent's blob list for a file whose size, mtime, ctime and inode are unchanged
/// and whose blobs are all still indexed; `None` means "read it".
fn unchanged_content(
    ctx: &Ctx,
    parent: Option<&Node>,
    meta: &std::fs::Metadata,
) -> Result<Option<Vec<BlobId>>> {
    let Some(p) = parent else { return Ok(None) };
    let NodeKind::File { content } = &p.kind else {
        return Ok(None);
    };
    let same = p.size == meta.len()
        && p.mtime == ts(meta.mtime(), meta.mtime_nsec())
        && p.ctime == ts(meta.ctime(), meta.ctime_nsec())
        && p.inode == meta.ino();
    if !same {
        return Ok(None);
    }
    for id in content {
        if !ctx.w.known(BlobType::Data, id)? {
            return Ok(None);
        }
    }
    Ok(Some(content.clone()))
}

fn backup_dir_contents(ctx: &Ctx, path: &Path, parent: Option<&Tree>, dev: u64) -> Result<BlobId> {
    let rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut entries = Vec::new();
    for e in rd {
        match e {
            Ok(e) => entries.push((e.file_name(), e)),
            Err(e) => ctx.problem(path, format!("error while listing: {e}")),
        }
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let nodes: Vec<Option<Node>> = entries
        .par_iter()
        .map(|(n, e)| {
            let child = path.join(n);
            if ctx.select.excluded(&child) {
                return Ok(None);
            }
            let pnode = parent.and_then(|t| t.get(n.as_bytes()));
            // fstatat relative to the open directory: no walk of the whole path.
            backup_entry(
                ctx,
                &child,
                n.as_bytes().to_vec(),
                pnode,
                dev,
                Some(e.metadata()),
            )
        })
        .collect::<Result<_>>()?;
    store_tree(ctx, nodes.into_iter().flatten().collect())
}

/// Store a file's content; its blobs and length. `Ok(None)` when it could not be read
/// (problem recorded).
fn backup_file(
    ctx: &Ctx,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<Option<(Vec<BlobId>, u64)>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            ctx.problem(path, format!("cannot open: {e}"));
            return Ok(None);
        }
    };
    ctx.progress.files.fetch_add(1, Ordering::Relaxed);
    let (content, read) = match store_stream(ctx, file, meta.len()) {
        Ok(r) => r,
        Err(Error::Io { source, .. }) => {
            ctx.problem(path, format!("read error: {source}"));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    ctx.total_bytes.fetch_add(read, Ordering::Relaxed);
    if read != meta.len() {
        ctx.problem(
            path,
            format!(
                "file changed while being read (size was {}, read {read} bytes)",
                meta.len()
            ),
        );
    } else if let Ok(after) = std::fs::symlink_metadata(path) {
        if after.mtime() != meta.mtime() || after.mtime_nsec() != meta.mtime_nsec() {
            ctx.problem(path, "file changed while being read (mtime changed)");
        }
    }
    Ok(Some((content, read)))
}

/// Chunk and store a stream; returns the blob list and the byte count. Small inputs are
/// read whole; large ones are streamed in batches of chunks sealed in parallel.
pub(super) fn store_stream<R: Read + Send>(
    ctx: &Ctx,
    mut reader: R,
    size_hint: u64,
) -> Result<(Vec<BlobId>, u64)> {
    let params = ctx.repo.config().chunker;
    let seed = ctx.repo.key().chunker_seed();
    let io = |e: std::io::Error| Error::io("<input>", e);
    if size_hint <= params.max as u64 {
        let mut buf = Vec::with_capacity(size_hint as usize);
        reader
            .by_ref()
            .take(params.max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() <= params.max as usize {
            ctx.progress
                .bytes_read
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            let mut ids = Vec::new();
            let mut at = 0;
            for len in chunker::chunk_slice(&params, seed, &buf) {
                ids.push(ctx.w.add(BlobType::Data, &buf[at..at + len])?.0);
                at += len;
            }
            return Ok((ids, buf.len() as u64));
        }
        // Grew since stat: stream the rest after what was read.
        return stream_chunks(ctx, std::io::Cursor::new(buf).chain(reader));
    }
    stream_chunks(ctx, reader)
}

/// Chunk a stream and store the chunks. Reading and chunking the next batch overlaps
/// with sealing the current one (`rayon::join`), so one large file keeps both cores busy;
/// at most two batches are in memory.
fn stream_chunks<R: Read + Send>(ctx: &Ctx, reader: R) -> Result<(Vec<BlobId>, u64)> {
    let params = ctx.repo.config().chunker;
    let seed = ctx.repo.key().chunker_seed();
    let mut chunks = chunker::chunk_stream(&params, seed, reader);
    let mut total = 0u64;
    type Chunks<'c> = dyn Iterator<Item = std::io::Result<Vec<u8>>> + Send + 'c;
    let mut read_batch = |chunks: &mut Chunks| -> Result<Vec<Vec<u8>>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        #[allow(clippy::while_let_on_iterator)] // `for` would need a sized iterator
        while let Some(chunk) = chunks.next() {
            let chunk = chunk.map_err(|e| Error::io("<input>", e))?;
            let n = chunk.len() as u64;
            total += n;
            ctx.progress.bytes_read.fetch_add(n, Ordering::Relaxed);
            ctx.progress.bytes_done.fetch_add(n, Ordering::Relaxed);
            bytes += chunk.len();
            batch.push(chunk);
            if bytes >= BATCH_BYTES && batch.len() >= 2 {
                break;
            }
        }
        Ok(batch)
    };
    let store = |batch: &[Vec<u8>]| -> Result<Vec<BlobId>> {
        batch
            .par_iter()
            .map(|c| ctx.w.add(BlobType::Data, c).map(|(id, _)| id))
            .collect()
    };
    let mut ids = Vec::new();
    let mut next = read_batch(&mut chunks)?;
    while !next.is_empty() {
        let current = next;
        let (stored, read) = rayon::join(|| store(&current), || read_batch(&mut chunks));
        ids.extend(stored?);
        next = read?;
    }
    Ok((ids, total))
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

fn node_from_meta(
    ctx: &Ctx,
    _path: &Path,
    name: Vec<u8>,
    m: &std::fs::Metadata,
    kind: NodeKind,
) -> Node {
    let size = match kind {
        NodeKind::File { .. } => m.len(),
        _ => 0,
    };
    Node {
        name,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        user: ctx.names.user(m.uid()),
        group: ctx.names.group(m.gid()),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
        size,
        inode: m.ino(),
        device: m.dev(),
        links: m.nlink(),
        xattrs: Vec::new(),
    }
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok()??;
            Some(Xattr {
                name: n.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Back up a stream as one file under `name`, with synthetic parent directories.
pub(super) fn backup_stream(
    ctx: &Ctx,
    name: &str,
    reader: Box<dyn Read + Send>,
    mut info: StreamInfo,
) -> Result<(BlobId, Vec<String>, StreamInfo)> {
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Error::Config(format!(
            "--stdin-name '{name}' must be a relative path like harbor/registry.sql"
        )));
    }
    ctx.progress.files.fetch_add(1, Ordering::Relaxed);
    let checker = Arc::new(Mutex::new(Checker::start(ctx.stream_check)?));
    let reader = Box::new(Checking {
        inner: reader,
        checker: checker.clone(),
    });
    let (content, bytes) = match store_stream(ctx, reader, u64::MAX) {
        Ok(r) => {
            let verdict = std::mem::take(&mut *checker.lock().expect("checker")).verdict();
            *ctx.stream_checked.lock().expect("stream check") = verdict.recorded();
            if let Verdict::Skipped(kind, why) = &verdict {
                tracing::warn!("{name}: the {kind} check was skipped: {why}");
            }
            if let Some(p) = verdict.problem() {
                ctx.problem(Path::new(name), p);
            }
            r
        }
        Err(Error::Io { source, .. }) => {
            ctx.problem(
                Path::new(name),
                format!("reading the stream failed: {source}"),
            );
            (Vec::new(), 0)
        }
        Err(e) => return Err(e),
    };
    ctx.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    info.name = parts.join("/");
    info.bytes = bytes;
    let now = Timestamp::now();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let synthetic = |name: &str, kind: NodeKind, mode: u32, size: u64| Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid,
        gid,
        user: ctx.names.user(uid),
        group: ctx.names.group(gid),
        mtime: now,
        ctime: now,
        size,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    };
    let (file_name, dirs) = parts.split_last().expect("non-empty");
    let mut tree = store_tree(
        ctx,
        vec![synthetic(
            file_name,
            NodeKind::File { content },
            0o644,
            bytes,
        )],
    )?;
    for d in dirs.iter().rev() {
        tree = store_tree(
            ctx,
            vec![synthetic(d, NodeKind::Dir { subtree: tree }, 0o755, 0)],
        )?;
    }
    Ok((tree, vec![format!("/{}", info.name)], info))
}
