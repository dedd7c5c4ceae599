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
use std::ffi::{CStr, CString, OsStr};
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::Problem;
use super::scan::{self, Dir, Meta, ts};
use super::select::{SelectOptions, Selector};
use super::stream_check::{Checker, Checking, StreamCheck, Verdict};
use crate::chunker;
use crate::error::{Error, Result};
use crate::format::{
    BlobType, Node, NodeKind, Snapshot, StreamInfo, Timestamp, Tree, Xattr, names,
};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{
    Announcement, BlobWriter, IndexedRepository, REFRESH, STALE_AFTER, SnapshotHead,
};
use crate::util::NameCache;
use std::sync::Arc;

/// Bytes read and chunked at a time from a streamed file (at least three chunks of the
/// largest size). One batch per worker is in memory. 4 MiB was no faster and left 5 MiB
/// more in the allocator's arenas.
const BATCH_BYTES: usize = 2 << 20;

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
    /// The index cache's generation when the backup started
    /// ([`crate::repository::IndexCache::generation`]).
    generation: u64,
    /// Mark complete trees in the index cache (not in a dry run, which writes nothing).
    mark_complete: bool,
    /// Sources given inside another source ([`source_roots`]).
    nested: Vec<PathBuf>,
}

impl Ctx<'_> {
    /// Was `path` given as a source inside another one?
    fn named(&self, path: &Path) -> bool {
        self.nested.iter().any(|n| n == path)
    }

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
    // The sources to walk and those given inside them, worked out once.
    let roots = match &source {
        Source::Paths(paths) => Some(source_roots(paths)?),
        _ => None,
    };
    let parent = match (&roots, opts.force) {
        (Some((sources, _)), false) => find_parent(repo, opts.parent, &host, sources)?,
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
        roots.unwrap_or_default(),
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
    (sources, nested): (Vec<PathBuf>, Vec<PathBuf>),
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
        generation: repo.index().generation(),
        mark_complete: !opts.dry_run,
        nested,
    };
    let parent_tree = parent.as_ref().map(|(_, p)| p.tree);
    let pool = super::cpu_pool()?;
    let walked = pool.install(|| match source {
        Source::Paths(_) => backup_paths(&ctx, &sources, parent_tree).map(|(t, p)| (t, p, None)),
        Source::Stream { name, reader, info } => {
            backup_stream(&ctx, &name, reader, info).map(|(t, p, i)| (t, p, Some(i)))
        }
        Source::Command { name, argv } => {
            super::command::backup_command(&ctx, &name, &argv).map(|(t, p, i)| (t, p, Some(i)))
        }
    });
    let mut problems = ctx.problems.into_inner().expect("problems");
    let nested = ctx.nested;
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
    // A source inside another that the walk of the outer one never reached (a mount
    // point above it with -x, a symlink on the way) is not in the snapshot: say so.
    if !opts.dry_run {
        for n in &nested {
            match super::walk::find_node(repo, &tree, n) {
                Ok(_) => {}
                Err(Error::NotFound { .. }) => {
                    let p = Problem {
                        path: n.clone(),
                        message: "given as a path to back up, but not reached from the path \
                                  it is inside (a mount point above it with -x, or a symlink \
                                  on the way); give it on its own, not inside another path"
                            .into(),
                    };
                    tracing::warn!("{p}");
                    problems.push(p);
                }
                Err(e) => return Err(e),
            }
        }
    }
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
    s.files_new = progress
        .files
        .load(Ordering::Relaxed)
        .saturating_sub(s.files_changed);
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
            let id = repo.save_snapshot(&snap)?;
            // The next backup finds its parent without reading this one back.
            if let Err(e) = repo
                .index()
                .put_snapshot_head(&id, &SnapshotHead::of(&snap))
            {
                tracing::warn!("{e}");
            }
            Some(id)
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
///
/// The heads of snapshots seen before (time, host, paths) come from the index cache, so
/// only new snapshots are read and opened, not every snapshot at every backup.
fn find_parent(
    repo: &IndexedRepository,
    asked: Option<SnapshotId>,
    host: &str,
    sources: &[PathBuf],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if let Some(id) = asked {
        return Ok(Some((id, repo.load_snapshot(&id)?)));
    }
    // The paths a snapshot records ([`source_roots`]: nested sources are not among them).
    let want: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    let cache = repo.index();
    let ids: Vec<SnapshotId> = repo.block_on(crate::backend::list_ids(
        repo.backend().as_ref(),
        names::SNAPSHOTS,
    ))?;
    let mut heads = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match cache.snapshot_head(&id)? {
            Some(h) => heads.push((id, h)),
            None => missing.push(id),
        }
    }
    // A few new ones are read one by one; many (a new cache) all at once, concurrently.
    let mut loaded = None;
    if missing.len() > 4 {
        let all = repo.snapshots()?;
        heads.clear();
        for (id, s) in &all {
            let h = SnapshotHead::of(s);
            cache.put_snapshot_head(id, &h)?;
            heads.push((*id, h));
        }
        loaded = Some(all);
    } else {
        for id in missing {
            match repo.load_snapshot(&id) {
                Ok(s) => {
                    let h = SnapshotHead::of(&s);
                    cache.put_snapshot_head(&id, &h)?;
                    heads.push((id, h));
                }
                // Removed since the listing.
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => tracing::warn!("skipping {}: {e}", names::snapshot(&id)),
            }
        }
    }
    let best = heads
        .into_iter()
        .filter(|(_, h)| {
            let mut have = h.paths.clone();
            have.sort();
            h.host == host && have == want && !h.stream
        })
        .max_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let Some((id, _)) = best else {
        return Ok(None);
    };
    if let Some(s) = loaded.and_then(|all| all.into_iter().find(|(i, _)| *i == id)) {
        return Ok(Some(s));
    }
    Ok(Some((id, repo.load_snapshot(&id)?)))
}

/// The sources to walk, absolute and sorted, and the sources given inside another one
/// (walked as part of it; `-x` and exclude markers do not leave them out).
fn source_roots(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut cleaned: Vec<PathBuf> = paths
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<_>>()?;
    cleaned.sort();
    cleaned.dedup();
    let (mut sources, mut nested) = (Vec::<PathBuf>::new(), Vec::new());
    for p in cleaned {
        if sources.iter().any(|s| p.starts_with(s)) {
            nested.push(p);
        } else {
            sources.push(p);
        }
    }
    Ok((sources, nested))
}

/// A source inside another source that an exclude pattern or marker file would leave
/// out, with a directory above it: the two requests contradict each other, so the
/// backup stops before it starts rather than guess which one was meant.
fn check_nested(select: &Selector, sources: &[PathBuf], nested: &[PathBuf]) -> Result<()> {
    for n in nested {
        let outer = sources
            .iter()
            .find(|s| n.starts_with(s))
            .expect("nested in a source");
        for a in n
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(outer) && a != outer)
        {
            let why = if select.excluded(a) {
                "an exclude pattern leaves out"
            } else if select.marked(a) {
                "an exclude marker file leaves out"
            } else {
                continue;
            };
            return Err(Error::Config(format!(
                "{} is given as a path to back up, but {why} {} above it: \
                 remove the path or change the exclude",
                n.display(),
                a.display()
            )));
        }
    }
    Ok(())
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

impl VDir {
    /// The sources below this directory.
    fn sources(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        for e in self.children.values() {
            match e {
                VEntry::Source(p) => out.push(p.as_path()),
                VEntry::Dir(d) => out.extend(d.sources()),
            }
        }
        out
    }
}

/// Make a path absolute and drop `.` and `..` lexically. A symlink given as a source is
/// stored as the symlink, as the user named it; given with a trailing `/`, it is
/// replaced by the directory it leads to.
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
    // `link/` asks for the directory a symlink leads to, as with tar and rsync.
    let bytes = p.as_os_str().as_bytes();
    if (bytes.ends_with(b"/") || bytes.ends_with(b"/.")) && out.is_symlink() && out.is_dir() {
        return std::fs::canonicalize(&out).map_err(|e| Error::io(&out, e));
    }
    Ok(out)
}

/// Back up `sources` ([`source_roots`]; those given inside them are in `ctx.nested`).
fn backup_paths(
    ctx: &Ctx,
    sources: &[PathBuf],
    parent: Option<BlobId>,
) -> Result<(BlobId, Vec<String>)> {
    if sources.is_empty() {
        return Err(Error::Config(
            "nothing to back up: give at least one path".into(),
        ));
    }
    check_nested(&ctx.select, sources, &ctx.nested)?;
    for s in sources.iter().filter(|s| s.is_symlink()) {
        tracing::warn!(
            "{}: a symlink, stored as the link; give it as `{}/` to back up what it leads to",
            s.display(),
            s.display()
        );
    }
    // When no source exists at all, the paths are wrong or a volume is not mounted: an
    // empty, incomplete snapshot would only hide that among the others.
    let absent = |s: &PathBuf| {
        use std::io::ErrorKind::{NotADirectory, NotFound};
        matches!(std::fs::symlink_metadata(s), Err(e) if matches!(e.kind(), NotFound | NotADirectory))
    };
    if sources.iter().all(absent) {
        let list: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
        return Err(Error::Config(format!(
            "nothing to back up: {} {} not exist; no snapshot was written. \
             Check the paths (is a volume not mounted?)",
            list.join(", "),
            if list.len() == 1 { "does" } else { "do" },
        )));
    }
    let mut root = VDir::default();
    for s in sources {
        let comps: Vec<&OsStr> = s.iter().skip(1).collect();
        if comps.is_empty() {
            // Backing up "/" itself: the root's entries become the snapshot's root.
            let dev = Meta::of_path(s).map_err(|e| Error::io(s, e))?.dev;
            let dir = Dir::open(nix::fcntl::AT_FDCWD, c"/").map_err(|e| Error::io(s, e))?;
            let ptree = parent_tree(ctx, parent)?;
            let (tree, _) = backup_dir_contents(ctx, s, &dir, ptree, dev)?;
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
    let (tree, _) = backup_vdir(ctx, &root, Path::new("/"), parent_tree(ctx, parent)?)?;
    Ok((
        tree,
        sources.iter().map(|p| p.display().to_string()).collect(),
    ))
}

/// The parent's tree with its id, when change detection is on; a tree that cannot be
/// read only means its files are read again.
fn parent_tree(ctx: &Ctx, id: Option<BlobId>) -> Result<Option<(BlobId, Tree)>> {
    let Some(id) = id.filter(|_| ctx.use_parent) else {
        return Ok(None);
    };
    match ctx.repo.load_tree(&id) {
        Ok(t) => Ok(Some((id, t))),
        // An unreachable store stops the backup; a damaged parent only costs rereading.
        Err(e @ Error::Backend { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("parent tree {id} unreadable ({e}); reading its files again");
            Ok(None)
        }
    }
}

fn parent_subtree(parent: Option<&Node>) -> Option<BlobId> {
    match parent.map(|n| &n.kind) {
        Some(NodeKind::Dir { subtree }) => Some(*subtree),
        _ => None,
    }
}

/// Take the node named `name` out of a parent tree.
fn take_node(parent: &mut Option<(BlobId, Tree)>, name: &[u8]) -> Option<Node> {
    let nodes = &mut parent.as_mut()?.1.nodes;
    let i = nodes
        .binary_search_by(|n| n.name.as_slice().cmp(name))
        .ok()?;
    Some(nodes.remove(i))
}

fn backup_vdir(
    ctx: &Ctx,
    dir: &VDir,
    real: &Path,
    mut parent: Option<(BlobId, Tree)>,
) -> Result<(BlobId, bool)> {
    let parent_of = parent.as_ref().map(|(id, t)| (*id, t.nodes.len()));
    let mut entries = Vec::new();
    for (name, e) in &dir.children {
        let name_os = OsStr::from_bytes(name);
        let pnode = take_node(&mut parent, name);
        match e {
            VEntry::Source(p) => {
                let dev = Meta::of_path(p).map(|m| m.dev).unwrap_or(0);
                let Ok(abs) = CString::new(p.as_os_str().as_bytes()) else {
                    ctx.problem(p, "the path holds a NUL byte");
                    continue;
                };
                // `p` is `real/name`: the virtual directories are its components.
                let at = nix::fcntl::AT_FDCWD;
                let name = Listed {
                    rel: &abs,
                    name: name_os,
                    as_file: false,
                };
                if let Some(e) = backup_entry(ctx, at, name, real, pnode, dev)? {
                    entries.push(e);
                }
            }
            VEntry::Dir(sub) => {
                let path = real.join(name_os);
                // A symlink on the way is stored as the directory it leads to (its own
                // mode, 0777, would make the restored directory world-writable).
                let meta = match Meta::of_path_followed(&path) {
                    Ok(m) => m,
                    // Nothing below a directory that cannot be stat-ed can be read.
                    Err(e) => {
                        for s in sub.sources() {
                            ctx.problem(s, format!("cannot stat {}: {e}", path.display()));
                        }
                        continue;
                    }
                };
                let ptree = parent_tree(ctx, parent_subtree(pnode.as_ref()))?;
                let (subtree, complete) = backup_vdir(ctx, sub, &path, ptree)?;
                let mut node = node_from_meta(ctx, name.clone(), &meta, NodeKind::Dir { subtree });
                node.xattrs = xattrs_or_problem(ctx, &path, read_xattrs(&path));
                let same = pnode.is_some_and(|p| same_node(&node, &p));
                entries.push(Entry {
                    node,
                    state: State::Done { complete },
                    same,
                });
            }
        }
    }
    finish_tree(ctx, real, entries, parent_of)
}

/// Store a tree of nodes that need no further checks (the synthetic directories of a
/// stream).
fn store_tree(ctx: &Ctx, nodes: Vec<Node>) -> Result<BlobId> {
    let tree = Tree::new(nodes);
    ctx.w.add(BlobType::Tree, &tree.encode()).map(|(id, _)| id)
}

/// A directory entry on its way into its tree.
struct Entry {
    node: Node,
    state: State,
    /// Equal to the parent tree's node of the same name.
    same: bool,
}

enum State {
    /// Final. `complete`: the node's blobs, and the whole tree below a directory, are in
    /// the index cache (not only pending in this backup's writer).
    Done { complete: bool },
    /// A file whose size, mtime, ctime and inode equal its node in the parent tree: the
    /// node carries the parent's blob list, not yet checked against the index.
    Unchecked(Meta),
}

/// Finish a directory: its tree id and whether the tree is complete (it and every blob
/// below it in the index cache, so it is marked for the next backup).
///
/// The shortcut for an unchanged directory. When the new tree has the parent's tree id
/// (every entry equal to the parent's node: same metadata, same content, same subtree
/// ids) and that tree is marked complete in the index cache, the blobs of the files
/// reused from the parent are known to be indexed without looking each one up: the mark
/// says the tree and everything below it were found in the cache's `b` space, which only
/// grows until it is cleared, marks included (`repository/index.rs`). So a reused file
/// still refers only to blobs in this backup's index view, exactly as when each blob is
/// looked up, and the argument of docs/design.md ("Prune beside backups") holds
/// unchanged: the backup deduplicates only against index entries, never against packs
/// in deletion records.
///
/// Why a mark and not "the tree is in the index": an indexed tree does not imply indexed
/// descendants. A prune keeps a partly used tree pack whose unused trees' data packs it
/// removes; a running backup's tree pack can be indexed before its data packs; a blob
/// of the parent can sit in a pack awaiting deletion (a prune ran beside the parent's
/// backup) while the parent's new trees are indexed. Each would let a reused file point
/// at a blob the index does not hold.
///
/// Otherwise the reused files' blobs are looked up one by one, as before: a file with a
/// blob the index does not hold is read again.
fn finish_tree(
    ctx: &Ctx,
    dir: &Path,
    mut entries: Vec<Entry>,
    parent: Option<(BlobId, usize)>,
) -> Result<(BlobId, bool)> {
    // Every entry equal to the parent's node of its name, and as many: the parent's
    // tree, whose id is known without encoding and hashing this one.
    let same = parent.is_some_and(|(_, n)| n == entries.len()) && entries.iter().all(|e| e.same);
    let parent = parent.map(|(id, _)| id);
    if let Some(id) = parent.filter(|_| same) {
        if ctx.repo.index().tree_complete(&id)? {
            count_reused(ctx, entries.iter().map(|e| &e.state));
            return Ok((id, true));
        }
    }
    entries.sort_by(|a, b| a.node.name.cmp(&b.node.name));
    let (nodes, states): (Vec<Node>, Vec<State>) =
        entries.into_iter().map(|e| (e.node, e.state)).unzip();
    let mut tree = Tree::new(nodes);
    let (mut id, mut bytes) = match parent.filter(|_| same) {
        Some(id) => (id, None),
        None => {
            let bytes = tree.encode();
            (ctx.repo.key().blob_id(&bytes), Some(bytes))
        }
    };
    if !same && parent == Some(id) && ctx.repo.index().tree_complete(&id)? {
        count_reused(ctx, &states);
        return Ok((id, true));
    }
    // Check the reused files' blobs; read again those with a blob the index lacks.
    let mut checked = Vec::with_capacity(states.len());
    tree.nodes
        .par_iter_mut()
        .zip(states.par_iter())
        .map(|(node, state)| match state {
            State::Done { complete } => Ok(Outcome::Kept {
                complete: *complete,
            }),
            State::Unchecked(meta) => check_reused(ctx, dir, node, meta),
        })
        .collect_into_vec(&mut checked);
    let outcomes: Vec<Outcome> = checked.into_iter().collect::<Result<_>>()?;
    let mut complete = true;
    let mut changed = false;
    for o in &outcomes {
        match o {
            Outcome::Kept { complete: c } => complete &= c,
            Outcome::Read | Outcome::Dropped => {
                complete = false;
                changed = true;
            }
        }
    }
    if changed {
        let mut o = outcomes.iter();
        tree.nodes
            .retain(|_| !matches!(o.next(), Some(Outcome::Dropped)));
        let b = tree.encode();
        id = ctx.repo.key().blob_id(&b);
        bytes = Some(b);
    }
    if complete && ctx.w.indexed(BlobType::Tree, &id)? {
        let marked =
            ctx.mark_complete && ctx.repo.index().mark_tree_complete(&id, ctx.generation)?;
        return Ok((id, marked));
    }
    let bytes = bytes.unwrap_or_else(|| tree.encode());
    Ok((ctx.w.add(BlobType::Tree, &bytes)?.0, false))
}

/// Count the files reused unchecked from the parent as unmodified (their directory's
/// tree is marked complete).
fn count_reused<'a>(ctx: &Ctx, states: impl IntoIterator<Item = &'a State>) {
    for s in states {
        if let State::Unchecked(meta) = s {
            count_unmodified(ctx, meta.size);
        }
    }
}

/// What became of an entry when its directory was finished.
enum Outcome {
    Kept {
        complete: bool,
    },
    /// A reused file read again (its node changed).
    Read,
    /// A reused file that could not be read again (a problem is recorded).
    Dropped,
}

/// Check the blobs of a file reused from the parent; read it again when one is not
/// known.
fn check_reused(ctx: &Ctx, dir: &Path, node: &mut Node, meta: &Meta) -> Result<Outcome> {
    let NodeKind::File { content } = &node.kind else {
        unreachable!("only files are reused unchecked")
    };
    let mut complete = true;
    for id in content {
        if ctx.w.indexed(BlobType::Data, id)? {
            continue;
        }
        if ctx.w.pending(BlobType::Data, id) {
            // Stored by this backup a moment ago: reusable, indexed only at the end.
            complete = false;
            continue;
        }
        let path = dir.join(OsStr::from_bytes(&node.name));
        let Ok(abs) = CString::new(path.as_os_str().as_bytes()) else {
            ctx.problem(&path, "the path holds a NUL byte");
            return Ok(Outcome::Dropped);
        };
        return Ok(
            match backup_file(ctx, nix::fcntl::AT_FDCWD, &abs, &path, meta, None)? {
                Some(f) => {
                    // Counted once read: `files` counts only files read, and
                    // new = files - changed.
                    ctx.progress.files_changed.fetch_add(1, Ordering::Relaxed);
                    node.kind = NodeKind::File { content: f.content };
                    // The size of the stored content, as for any file read.
                    node.size = f.read;
                    node.xattrs = f.xattrs;
                    Outcome::Read
                }
                None => Outcome::Dropped,
            },
        );
    }
    count_unmodified(ctx, meta.size);
    Ok(Outcome::Kept { complete })
}

fn count_unmodified(ctx: &Ctx, len: u64) {
    ctx.progress
        .files_unmodified
        .fetch_add(1, Ordering::Relaxed);
    ctx.progress.bytes_done.fetch_add(len, Ordering::Relaxed);
    ctx.total_bytes.fetch_add(len, Ordering::Relaxed);
}

/// An entry to back up: `rel` under a directory's descriptor (its name in the open
/// directory, or its absolute path with `AT_FDCWD`), and its name.
struct Listed<'a> {
    rel: &'a CStr,
    name: &'a OsStr,
    /// The directory listing gave it as a regular file (`d_type`).
    as_file: bool,
}

/// One directory entry, `dir/name`; `Ok(None)` when it could not be read (a problem is
/// recorded) or is excluded. `Err` only for repository failures, which stop the backup.
/// `parent` is the same entry in the parent snapshot, taken: an unchanged file's node is
/// the parent's, brought up to date. `dev` is the source's file system.
fn backup_entry(
    ctx: &Ctx,
    at: BorrowedFd<'_>,
    listed: Listed<'_>,
    dir: &Path,
    parent: Option<Node>,
    dev: u64,
) -> Result<Option<Entry>> {
    let Listed {
        rel,
        name,
        as_file: listed_as_file,
    } = listed;
    // A new file (none in the parent to compare with) is opened first and statted
    // open: one path lookup fewer. When that fails, or finds something else, it is
    // statted by name as any other entry, and its problems are named the same way.
    let opened = if listed_as_file && parent.is_none() {
        scan::open_file(at, rel)
            .ok()
            .and_then(|f| match Meta::of_file(&f) {
                Ok(m) if m.is_file() => Some((f, m)),
                _ => None,
            })
    } else {
        None
    };
    let meta = match &opened {
        Some((_, m)) => *m,
        None => match Meta::at(at, rel) {
            Ok(m) => m,
            Err(e) => {
                ctx.problem(&dir.join(name), format!("cannot stat: {e}"));
                return Ok(None);
            }
        },
    };
    // The bytes a read stored, which differ from the stat's size when the file changed.
    let mut read_size = None;
    let mut parent = match parent {
        Some(mut node) if meta.is_file() && same_file(&node, &meta) => {
            // Unchanged (same ctime: same extended attributes too). Its blobs are
            // checked when the directory is finished. No path, no allocation.
            let same = refresh_node(ctx, &mut node, &meta);
            return Ok(Some(Entry {
                node,
                state: State::Unchecked(meta),
                same,
            }));
        }
        p => p,
    };
    let path = dir.join(name);
    let parent_subtree = parent_subtree(parent.as_ref());
    let parent_was_file = matches!(
        parent.as_ref().map(|p| &p.kind),
        Some(NodeKind::File { .. })
    );
    let name = match &mut parent {
        Some(p) => std::mem::take(&mut p.name),
        None => name.as_bytes().to_vec(),
    };
    // A directory's or file's extended attributes are read from it while it is open.
    let mut xattrs = None;
    let (kind, complete) = if meta.is_dir() {
        // A source given inside this one is backed up even where it is a mount point
        // (`-x / /boot`) or carries a marker, on its own file system.
        let named = ctx.named(&path);
        if ctx.select.marked(&path) && !named {
            return Ok(None);
        }
        let dev = if named { meta.dev } else { dev };
        let contents = if ctx.select.one_file_system && meta.dev != dev {
            // A mount point: keep the directory, not the other file system's contents.
            finish_tree(ctx, &path, Vec::new(), None)
        } else {
            match Dir::open(at, rel) {
                Ok(d) => {
                    let ptree = parent_tree(ctx, parent_subtree)?;
                    let contents = backup_dir_contents(ctx, &path, &d, ptree, dev);
                    xattrs = Some(xattrs_or_problem(ctx, &path, d.xattrs()));
                    contents
                }
                Err(e) => Err(Error::io(&path, e)),
            }
        };
        match contents {
            Ok((subtree, complete)) => {
                ctx.progress.dirs.fetch_add(1, Ordering::Relaxed);
                (NodeKind::Dir { subtree }, complete)
            }
            Err(Error::Io { path, error }) => {
                ctx.problem(&path, format!("cannot read directory: {error}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    } else if meta.is_file() {
        match backup_file(ctx, at, rel, &path, &meta, opened.map(|(f, _)| f))? {
            // Its blobs may be pending in this backup's writer: not complete.
            Some(f) => {
                if parent_was_file {
                    ctx.progress.files_changed.fetch_add(1, Ordering::Relaxed);
                }
                read_size = Some(f.read);
                xattrs = Some(f.xattrs);
                (NodeKind::File { content: f.content }, false)
            }
            None => return Ok(None),
        }
    } else if meta.is_symlink() {
        match nix::fcntl::readlinkat(at, rel) {
            Ok(t) => (
                NodeKind::Symlink {
                    target: t.as_bytes().to_vec(),
                },
                true,
            ),
            Err(e) => {
                ctx.problem(
                    &path,
                    format!("cannot read link: {}", std::io::Error::from(e)),
                );
                return Ok(None);
            }
        }
    } else if meta.is_fifo() {
        (NodeKind::Fifo, true)
    } else if meta.is_socket() {
        (NodeKind::Socket, true)
    } else if meta.is_char_device() {
        (NodeKind::CharDevice { rdev: meta.rdev }, true)
    } else if meta.is_block_device() {
        (NodeKind::BlockDevice { rdev: meta.rdev }, true)
    } else {
        ctx.problem(&path, "unknown file type, skipped");
        return Ok(None);
    };
    let mut node = node_from_meta(ctx, name, &meta, kind);
    // The size a reader gets is that of the stored content (restore, dump and tar agree).
    node.size = read_size.unwrap_or(node.size);
    node.xattrs = xattrs.unwrap_or_else(|| xattrs_or_problem(ctx, &path, read_xattrs(&path)));
    let same = parent.is_some_and(|p| same_node(&node, &p));
    Ok(Some(Entry {
        node,
        state: State::Done { complete },
        same,
    }))
}

/// Is this the parent's file with the same size, mtime, ctime and inode?
fn same_file(p: &Node, meta: &Meta) -> bool {
    matches!(p.kind, NodeKind::File { .. })
        && p.size == meta.size
        && p.mtime == meta.mtime
        && p.ctime == meta.ctime
        && p.inode == meta.ino
}

fn backup_dir_contents(
    ctx: &Ctx,
    path: &Path,
    dir: &Dir,
    parent: Option<(BlobId, Tree)>,
    dev: u64,
) -> Result<(BlobId, bool)> {
    let (names, err) = dir.names();
    if let Some(e) = err {
        ctx.problem(path, format!("error while listing: {e}"));
    }
    let (parent_of, pnodes) = match parent {
        Some((id, t)) => (Some((id, t.nodes.len())), t.nodes),
        None => (None, Vec::new()),
    };
    // Pair each entry with its node in the parent tree (both sorted by name), moving the
    // nodes out of the parent tree.
    let mut pnodes = pnodes.into_iter().peekable();
    let work: Vec<(usize, Option<Node>)> = (0..names.len())
        .map(|i| {
            let n = names.get(i).0.as_bytes();
            while pnodes.next_if(|p| p.name.as_slice() < n).is_some() {}
            (i, pnodes.next_if(|p| p.name.as_slice() == n))
        })
        .collect();
    drop(pnodes);
    let fd = dir.fd();
    // Collected in place (an indexed iterator), then the first error is taken.
    let mut done = Vec::with_capacity(work.len());
    work.into_par_iter()
        .map(|(i, p)| {
            let (n, c) = names.get(i);
            if ctx.select.excludes_any() {
                let p = path.join(n);
                if ctx.select.excluded(&p) && !ctx.named(&p) {
                    return Ok(None);
                }
            }
            let name = Listed {
                rel: c,
                name: n,
                as_file: names.listed_as_file(i),
            };
            backup_entry(ctx, fd, name, path, p, dev)
        })
        .collect_into_vec(&mut done);
    let mut entries = Vec::with_capacity(done.len());
    for e in done {
        entries.extend(e?);
    }
    finish_tree(ctx, path, entries, parent_of)
}

/// Store a file's content; its blobs and length. `Ok(None)` when it could not be read
/// (problem recorded). `opened` is the file already open, when `meta` is its `fstat`.
fn backup_file(
    ctx: &Ctx,
    at: BorrowedFd<'_>,
    rel: &CStr,
    path: &Path,
    meta: &Meta,
    opened: Option<std::fs::File>,
) -> Result<Option<ReadFile>> {
    let statted_open = opened.is_some();
    // Opened through its directory's descriptor: no path lookup.
    let file = match opened.map_or_else(|| scan::open_file(at, rel), Ok) {
        Ok(f) => f,
        Err(e) => {
            ctx.problem(path, format!("cannot open: {e}"));
            return Ok(None);
        }
    };
    ctx.progress.files.fetch_add(1, Ordering::Relaxed);
    // A file read whole is read up to its size and checked after. One that may be
    // streamed (larger than a chunk, or listed as empty, which is read to its end) is
    // checked before (unless `meta` is already the open file's), so a FIFO or device
    // that took its name since it was listed is not read without end.
    let may_stream = meta.size == 0 || meta.size > ctx.repo.config().chunker.max as u64;
    if may_stream && !statted_open {
        match file.metadata() {
            Ok(now) if now.file_type().is_file() => {}
            Ok(now) => {
                ctx.problem(path, replaced(&now));
                return Ok(None);
            }
            Err(e) => {
                ctx.problem(path, format!("cannot stat the open file: {e}"));
                return Ok(None);
            }
        }
    }
    let (content, read) = match store_stream(ctx, &file, meta.size) {
        Ok(r) => r,
        Err(Error::Io { error, .. }) => {
            let problem = match file.metadata() {
                Ok(now) if !is_listed_file(&now, meta) => replaced(&now),
                _ => format!("read error: {error}"),
            };
            ctx.problem(path, problem);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    ctx.total_bytes.fetch_add(read, Ordering::Relaxed);
    match file.metadata() {
        // What was read is not the file that was listed: it took the name since. Another
        // regular file is kept as read (a config file replaced by a rename, say).
        Ok(now) if !is_listed_file(&now, meta) => {
            ctx.problem(path, replaced(&now));
            if !now.file_type().is_file() {
                return Ok(None);
            }
        }
        _ if read != meta.size => ctx.problem(
            path,
            format!(
                "file changed while being read (size was {}, read {read} bytes)",
                meta.size
            ),
        ),
        // Grew while (or since it was statted and before it was) read: what was stored
        // is its first `size` bytes.
        Ok(now) if now.len() != meta.size => ctx.problem(
            path,
            format!(
                "file changed while being read (size was {}, is now {})",
                meta.size,
                now.len()
            ),
        ),
        Ok(now) if ts(now.mtime(), now.mtime_nsec()) != meta.mtime => {
            ctx.problem(path, "file changed while being read (mtime changed)")
        }
        _ => {}
    }
    Ok(Some(ReadFile {
        content,
        read,
        xattrs: xattrs_or_problem(ctx, path, scan::file_xattrs(&file)),
    }))
}

/// Whether an open file is the regular file `meta` describes.
fn is_listed_file(now: &std::fs::Metadata, meta: &Meta) -> bool {
    now.file_type().is_file() && (now.dev(), now.ino()) == (meta.dev, meta.ino)
}

/// The problem of a file that another one replaced between listing and opening.
fn replaced(now: &std::fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let ty = now.file_type();
    if ty.is_file() {
        return "file was replaced by another file since it was listed".to_string();
    }
    let what = if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_char_device() || ty.is_block_device() {
        "a device"
    } else if ty.is_socket() {
        "a socket"
    } else {
        "something else"
    };
    format!("file was replaced by {what} since it was listed; not read")
}

/// What [`backup_file`] stored of a file.
struct ReadFile {
    content: Vec<BlobId>,
    /// Bytes read and stored (the size of the stored content).
    read: u64,
    xattrs: Vec<Xattr>,
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
        // Read the size the stat gave and no further, which saves the read that would
        // find the end: the caller compares the size after reading. A size of 0 may be
        // a file that has content all the same (procfs), so that one is read to its end.
        let limit = match size_hint {
            0 => params.max as u64 + 1,
            n => n,
        };
        let mut buf = Vec::with_capacity(size_hint as usize);
        reader
            .by_ref()
            .take(limit)
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

/// Chunk a stream and store the chunks. Each worker that is free takes the next batch
/// (read and chunked under a lock, so in order) and stores it, so one large file keeps
/// every core busy, with no wait at the end of each batch for the slowest chunk. One
/// batch per worker is in memory, and chunks are sealed from where they were read.
fn stream_chunks<R: Read + Send>(ctx: &Ctx, reader: R) -> Result<(Vec<BlobId>, u64)> {
    let params = ctx.repo.config().chunker;
    let seed = ctx.repo.key().chunker_seed();
    // The batches, and the number of the next one.
    let source = Mutex::new((chunker::Batches::new(&params, seed, reader, BATCH_BYTES), 0));
    let stored = Mutex::new(Vec::new());
    let failed = Mutex::new(None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let work = || -> Result<()> {
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (i, batch) = {
                let mut source = source.lock().expect("batches");
                let Some(batch) = source
                    .0
                    .next_batch(std::mem::take(&mut buf))
                    .map_err(|e| Error::io("<input>", e))?
                else {
                    return Ok(());
                };
                source.1 += 1;
                (source.1 - 1, batch)
            };
            let n = batch.data.len() as u64;
            total.fetch_add(n, Ordering::Relaxed);
            ctx.progress.bytes_read.fetch_add(n, Ordering::Relaxed);
            let ids = batch
                .chunks()
                .map(|c| ctx.w.add(BlobType::Data, c).map(|(id, _)| id))
                .collect::<Result<Vec<_>>>()?;
            ctx.progress.bytes_done.fetch_add(n, Ordering::Relaxed);
            stored.lock().expect("stored batches").push((i, ids));
            buf = batch.data;
        }
        Ok(())
    };
    let run = || {
        if let Err(e) = work() {
            stop.store(true, Ordering::Relaxed);
            failed.lock().expect("failure").get_or_insert(e);
        }
    };
    rayon::scope(|s| {
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| run());
        }
        run();
    });
    if let Some(e) = failed.into_inner().expect("failure") {
        return Err(e);
    }
    let mut stored = stored.into_inner().expect("stored batches");
    stored.sort_unstable_by_key(|&(i, _)| i);
    let ids = stored.into_iter().flat_map(|(_, ids)| ids).collect();
    Ok((ids, total.into_inner()))
}

fn node_from_meta(ctx: &Ctx, name: Vec<u8>, m: &Meta, kind: NodeKind) -> Node {
    let size = match kind {
        NodeKind::File { .. } => m.size,
        _ => 0,
    };
    Node {
        name,
        kind,
        mode: m.mode & 0o7777,
        uid: m.uid,
        gid: m.gid,
        user: ctx.names.user(m.uid),
        group: ctx.names.group(m.gid),
        mtime: m.mtime,
        ctime: m.ctime,
        size,
        inode: m.ino,
        device: m.dev,
        links: m.nlink,
        xattrs: Vec::new(),
    }
}

/// Bring a node taken from the parent tree up to date with `m`, as
/// [`node_from_meta`] would build it (its name, kind and extended attributes stay).
/// `true` when nothing changed.
fn refresh_node(ctx: &Ctx, node: &mut Node, m: &Meta) -> bool {
    let size = match node.kind {
        NodeKind::File { .. } => m.size,
        _ => 0,
    };
    let old = stat_fields(node);
    node.size = size;
    node.mode = m.mode & 0o7777;
    node.uid = m.uid;
    node.gid = m.gid;
    node.mtime = m.mtime;
    node.ctime = m.ctime;
    node.inode = m.ino;
    node.device = m.dev;
    node.links = m.nlink;
    let same_user = ctx.names.set_user(&mut node.user, m.uid);
    let same_group = ctx.names.set_group(&mut node.group, m.gid);
    stat_fields(node) == old && same_user && same_group
}

/// The fields of a node that come from its `stat`, to compare.
fn stat_fields(n: &Node) -> impl PartialEq + use<> {
    (
        n.size, n.mode, n.uid, n.gid, n.mtime, n.ctime, n.inode, n.device, n.links,
    )
}

/// Is `new` the parent's node `old` (their names aside, which are equal)?
fn same_node(new: &Node, old: &Node) -> bool {
    // Every field named, so that a new one is not forgotten here.
    let Node {
        name: _,
        kind,
        mode,
        uid,
        gid,
        user,
        group,
        mtime,
        ctime,
        size,
        inode,
        device,
        links,
        xattrs,
    } = new;
    *kind == old.kind
        && *mode == old.mode
        && *uid == old.uid
        && *gid == old.gid
        && *user == old.user
        && *group == old.group
        && *mtime == old.mtime
        && *ctime == old.ctime
        && *size == old.size
        && *inode == old.inode
        && *device == old.device
        && *links == old.links
        && *xattrs == old.xattrs
}

/// The extended attributes of `path` (not following a symlink).
fn read_xattrs(path: &Path) -> (Vec<Xattr>, Option<std::io::Error>) {
    match xattr::list(path) {
        Ok(names) => super::scan::collect_xattrs(names, |n| xattr::get(path, n)),
        Err(e) => (Vec::new(), super::scan::not_unsupported(e)),
    }
}

/// Extended attributes read, with the failure to read some named as a problem: an ACL
/// or a capability left out silently would restore a file that does not work.
fn xattrs_or_problem(
    ctx: &Ctx,
    path: &Path,
    (list, error): (Vec<Xattr>, Option<std::io::Error>),
) -> Vec<Xattr> {
    if let Some(e) = error {
        ctx.problem(path, format!("extended attributes not read: {e}"));
    }
    list
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
            } else if r.1 == 0 {
                // A dump is never empty: its producer failed, and in a pipe (`pg_dump |
                // cairn backup --stdin`) its exit status did not reach cairn. Counted
                // retention keeps complete snapshots first, so this one must not count.
                ctx.problem(
                    Path::new(name),
                    "the stream was empty: did the command writing it fail? \
                     (with --stdin, use `set -o pipefail` so the shell sees it)",
                );
            }
            r
        }
        Err(Error::Io { error, .. }) => {
            ctx.problem(
                Path::new(name),
                format!("reading the stream failed: {error}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What took a listed file's name between listing and opening: the same file, another
    /// regular file (kept, named), or a FIFO (named, not read).
    #[test]
    fn what_took_a_listed_files_name_is_told_apart() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"listed").unwrap();
        std::fs::write(t.path().join("g"), b"another").unwrap();
        nix::unistd::mkfifo(
            &t.path().join("p"),
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let listed = scan::Meta::of_path(&t.path().join("f")).unwrap();
        let now = |name: &str| std::fs::symlink_metadata(t.path().join(name)).unwrap();
        assert!(is_listed_file(&now("f"), &listed));
        assert!(!is_listed_file(&now("g"), &listed));
        assert_eq!(
            replaced(&now("g")),
            "file was replaced by another file since it was listed"
        );
        assert!(!is_listed_file(&now("p"), &listed));
        assert_eq!(
            replaced(&now("p")),
            "file was replaced by a FIFO since it was listed; not read"
        );
    }
}
