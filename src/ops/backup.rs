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
use crate::chunker;
use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeKind, Snapshot, StreamInfo, Timestamp, Tree, Xattr};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{BlobWriter, IndexedRepository};
use crate::util::NameCache;

/// Chunks sealed in parallel per batch of a streamed file.
const BATCH: usize = 8;

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
}

/// Options of a backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// Overrides the host name recorded.
    pub host: Option<String>,
}

/// Live counters, readable from another thread for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes_read: AtomicU64,
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupResult {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub problems: Vec<Problem>,
}

struct Ctx<'a> {
    w: &'a BlobWriter<'a>,
    repo: &'a IndexedRepository,
    names: NameCache,
    problems: Mutex<Vec<Problem>>,
    progress: &'a Progress,
    total_bytes: AtomicU64,
}

impl Ctx<'_> {
    fn problem(&self, path: &Path, message: impl Into<String>) {
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
    let writer = repo.writer();
    let ctx = Ctx {
        w: &writer,
        repo,
        names: NameCache::default(),
        problems: Mutex::new(Vec::new()),
        progress,
        total_bytes: AtomicU64::new(0),
    };
    let pool = super::cpu_pool()?;
    let walked = pool.install(|| match source {
        Source::Paths(paths) => backup_paths(&ctx, &paths).map(|(t, p)| (t, p, None)),
        Source::Stream { name, reader, info } => {
            backup_stream(&ctx, &name, reader, info).map(|(t, p, i)| (t, p, Some(i)))
        }
    });
    let problems = ctx.problems.into_inner().expect("problems");
    let total_bytes = ctx.total_bytes.into_inner();
    // Index what was uploaded even when the walk failed, so a rerun reuses it.
    let finished = writer.finish();
    let (tree, paths, stream) = walked?;
    let stats = finished?;

    let mut snap = Snapshot::new(tree, paths);
    if let Some(h) = &opts.host {
        snap.host = h.clone();
    }
    snap.tags = opts.tags.clone();
    snap.complete = problems.is_empty();
    snap.problems = problems.iter().map(|p| p.to_string()).collect();
    snap.stream = stream;
    let s = &mut snap.summary;
    s.files_new = progress.files.load(Ordering::Relaxed);
    s.dirs = progress.dirs.load(Ordering::Relaxed);
    s.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
    s.total_bytes = total_bytes;
    s.data_blobs_added = stats.data_blobs;
    s.tree_blobs_added = stats.tree_blobs;
    s.bytes_added = stats.bytes_added;
    s.packs_added = stats.packs;
    s.duration_ms = started.elapsed().as_millis() as u64;
    let id = repo.save_snapshot(&snap)?;
    Ok(BackupResult {
        id,
        snapshot: snap,
        problems,
    })
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

fn backup_paths(ctx: &Ctx, paths: &[PathBuf]) -> Result<(BlobId, Vec<String>)> {
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
            let tree = backup_dir_contents(ctx, s)?;
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
    let tree = backup_vdir(ctx, &root, Path::new("/"))?;
    Ok((
        tree,
        sources.iter().map(|p| p.display().to_string()).collect(),
    ))
}

fn backup_vdir(ctx: &Ctx, dir: &VDir, real: &Path) -> Result<BlobId> {
    let mut nodes = Vec::new();
    for (name, e) in &dir.children {
        let path = real.join(OsStr::from_bytes(name));
        match e {
            VEntry::Source(p) => {
                if let Some(n) = backup_entry(ctx, p, name.clone())? {
                    nodes.push(n);
                }
            }
            VEntry::Dir(sub) => {
                let subtree = backup_vdir(ctx, sub, &path)?;
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

/// One directory entry; `Ok(None)` when it could not be read (a problem is recorded).
/// `Err` only for repository failures, which stop the backup.
fn backup_entry(ctx: &Ctx, path: &Path, name: Vec<u8>) -> Result<Option<Node>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            ctx.problem(path, format!("cannot stat: {e}"));
            return Ok(None);
        }
    };
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        match backup_dir_contents(ctx, path) {
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
        match backup_file(ctx, path, &meta) {
            Ok(Some(content)) => NodeKind::File { content },
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
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
    node.xattrs = read_xattrs(path);
    Ok(Some(node))
}

fn backup_dir_contents(ctx: &Ctx, path: &Path) -> Result<BlobId> {
    let rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut names = Vec::new();
    for e in rd {
        match e {
            Ok(e) => names.push(e.file_name()),
            Err(e) => ctx.problem(path, format!("error while listing: {e}")),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let nodes: Vec<Option<Node>> = names
        .par_iter()
        .map(|n| backup_entry(ctx, &path.join(n), n.as_bytes().to_vec()))
        .collect::<Result<_>>()?;
    store_tree(ctx, nodes.into_iter().flatten().collect())
}

/// Store a file's content. `Ok(None)` when it could not be read (problem recorded).
fn backup_file(ctx: &Ctx, path: &Path, meta: &std::fs::Metadata) -> Result<Option<Vec<BlobId>>> {
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
    Ok(Some(content))
}

/// Chunk and store a stream; returns the blob list and the byte count. Small inputs are
/// read whole; large ones are streamed in batches of chunks sealed in parallel.
fn store_stream<R: Read + Send>(
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

fn stream_chunks<R: Read>(ctx: &Ctx, reader: R) -> Result<(Vec<BlobId>, u64)> {
    let params = ctx.repo.config().chunker;
    let seed = ctx.repo.key().chunker_seed();
    let mut ids = Vec::new();
    let mut total = 0u64;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<Vec<u8>>, ids: &mut Vec<BlobId>| -> Result<()> {
        let got: Vec<BlobId> = batch
            .par_iter()
            .map(|c| ctx.w.add(BlobType::Data, c).map(|(id, _)| id))
            .collect::<Result<_>>()?;
        ids.extend(got);
        batch.clear();
        Ok(())
    };
    for chunk in chunker::chunk_stream(&params, seed, reader) {
        let chunk = chunk.map_err(|e| Error::io("<input>", e))?;
        total += chunk.len() as u64;
        ctx.progress
            .bytes_read
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        batch.push(chunk);
        if batch.len() == BATCH {
            flush(&mut batch, &mut ids)?;
        }
    }
    flush(&mut batch, &mut ids)?;
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
fn backup_stream(
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
    let (content, bytes) = match store_stream(ctx, reader, u64::MAX) {
        Ok(r) => r,
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
