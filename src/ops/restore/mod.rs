//! Restore: plan from the trees, create the entries, fetch content pack by pack
//! (`content.rs`), then apply metadata: files first, directories last and deepest
//! first, so writing children does not disturb a parent's times or a read-only mode.
//!
//! Every blob is authenticated and checked against its id before a byte of it is
//! written (invariant 4). A blob that fails is reported with the file and pack it
//! belongs to; the rest of the restore goes on.
//!
//! Rerunning a restore into the same target skips files whose size and modification
//! time already match the snapshot (metadata is applied after content, so such a file
//! was completed by the earlier run). `--verify` instead reads every existing file and
//! fetches only the blobs whose content differs.

mod content;

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::Problem;
use super::select::{SelectOptions, Selector};
use crate::error::{Error, Result};
use crate::format::{Node, NodeKind, Snapshot, Timestamp};
use crate::id::BlobId;
use crate::repository::IndexedRepository;
use content::{ContentJob, ContentStats};

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/` for everything). A directory's contents
    /// go into the target; a file goes into the target under its name.
    pub path: PathBuf,
    /// Restore only paths matching one of these (and what is below them).
    pub include: Vec<String>,
    /// Skip paths matching one of these (and what is below them).
    pub exclude: Vec<String>,
    /// Leave blocks of zeros unwritten (holes) in files created by this restore.
    pub sparse: bool,
    /// Read what is already in the target and fetch only blobs that differ.
    pub verify: bool,
    /// Remove target entries that are not in the snapshot (in restored directories).
    pub delete: bool,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    /// Files already complete in the target, not rewritten.
    pub files_unchanged: u64,
    pub bytes_written: u64,
    /// Stored bytes read from the repository, and in how many requests.
    pub bytes_fetched: u64,
    pub requests: u64,
    pub deleted: u64,
    pub problems: Vec<Problem>,
}

struct FileEntry {
    path: PathBuf,
    node: Node,
}

/// A directory of the walk not yet created: it is made when something below it is
/// restored (so include patterns do not leave empty directories behind).
struct PendingDir {
    path: PathBuf,
    node: Option<Node>,
    created: bool,
    /// Names in the snapshot (for `--delete`), when everything below is restored.
    names: Option<HashSet<OsString>>,
}

struct Walk<'a> {
    repo: &'a IndexedRepository,
    opts: &'a RestoreOptions,
    include: Option<GlobSet>,
    exclude: Selector,
    stack: Vec<PendingDir>,
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileEntry>,
    links: Vec<(PathBuf, PathBuf)>,
    first_link: HashMap<(u64, u64), PathBuf>,
    /// Target directory, its path in the snapshot, and the names to keep there.
    delete_in: Vec<(PathBuf, PathBuf, HashSet<OsString>)>,
    problems: Vec<Problem>,
    stats: RestoreStats,
    xattr_loss: XattrLoss,
}

/// Extended attributes the target would not take (a file system without user xattrs
/// or ACLs, say): counted, with the first failure, for one warning at the end.
#[derive(Default)]
struct XattrLoss {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl XattrLoss {
    fn add(&self, path: &Path, name: &OsStr, e: std::io::Error) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            let first = format!("{}: {}: {e}", path.display(), name.to_string_lossy());
            *self.first.lock().expect("xattr loss") = Some(first);
        }
    }

    fn warn(self) {
        let n = self.count.into_inner();
        if let Some(first) = self.first.into_inner().expect("xattr loss") {
            tracing::warn!(
                "{n} extended attribute(s) could not be set (the first: {first}); \
                 does the target file system support them?"
            );
        }
    }
}

/// Restore `snap` (or a part of it) into `opts.target`.
pub fn restore(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let target = &opts.target;
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let include = if opts.include.is_empty() {
        None
    } else {
        let mut b = GlobSetBuilder::new();
        for p in &opts.include {
            b.add(super::select::glob(p, false)?);
        }
        Some(
            b.build()
                .map_err(|e| Error::Config(format!("include patterns: {e}")))?,
        )
    };
    let exclude = Selector::new(&SelectOptions {
        excludes: opts.exclude.clone(),
        ..Default::default()
    })?;
    let mut w = Walk {
        repo,
        opts,
        include,
        exclude,
        stack: Vec::new(),
        dirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
        first_link: HashMap::new(),
        delete_in: Vec::new(),
        problems: Vec::new(),
        stats: RestoreStats::default(),
        xattr_loss: XattrLoss::default(),
    };
    let base = Path::new("/").join(opts.path.strip_prefix("/").unwrap_or(&opts.path));
    match super::walk::find_node(repo, &snap.tree, &base)? {
        None => w.dir(&snap.tree, &base, target, None, w.include.is_none())?,
        Some(node) => match &node.kind {
            NodeKind::Dir { subtree } => {
                let included = w.include.is_none() || w.included(&base);
                w.dir(subtree, &base, target, None, included)?
            }
            _ => {
                w.stack.push(PendingDir {
                    path: target.clone(),
                    node: None,
                    created: true,
                    names: None,
                });
                let name = OsStr::from_bytes(&node.name);
                w.entry(&base, &target.join(name), &node, true)?;
            }
        },
    }
    let Walk {
        files,
        links,
        dirs,
        delete_in,
        mut problems,
        mut stats,
        xattr_loss,
        exclude,
        ..
    } = w;

    let jobs = prepare_contents(repo, opts, &files, &mut problems, &mut stats);
    let shared = Mutex::new(problems);
    let cstats = ContentStats::default();
    content::restore_contents(repo, &jobs, opts.sparse, &shared, &cstats);
    let mut problems = shared.into_inner().expect("problems");
    stats.bytes_written = cstats.bytes_written.load(Ordering::Relaxed);
    stats.bytes_fetched = cstats.bytes_fetched.load(Ordering::Relaxed);
    stats.requests = cstats.requests.load(Ordering::Relaxed);
    // Per-file system calls run on both cores: with many small files they are most of
    // a restore's time.
    problems.extend(
        jobs.par_iter()
            .filter_map(|j| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&j.path)
                    .and_then(|f| f.set_len(j.size))
                    .err()
                    .map(|e| Problem {
                        path: j.path.clone(),
                        message: format!("cannot set size: {e}"),
                    })
            })
            .collect::<Vec<_>>(),
    );

    for (path, first) in &links {
        let _ = std::fs::remove_file(path);
        if let Err(e) = std::fs::hard_link(first, path) {
            problems.push(Problem {
                path: path.clone(),
                message: format!("cannot hard-link to {}: {e}", first.display()),
            });
        }
    }
    for (dir, snap_dir, names) in &delete_in {
        stats.deleted += delete_extra(dir, snap_dir, names, &exclude, &mut problems);
    }
    // A file whose content failed keeps the time of this run, so a rerun does not take
    // it for complete and writes it again.
    let failed: HashSet<&Path> = problems.iter().map(|p| p.path.as_path()).collect();
    let metadata_problems: Vec<Problem> = files
        .par_iter()
        .filter(|f| !failed.contains(f.path.as_path()))
        .filter_map(|f| {
            apply_metadata(&f.path, &f.node, &xattr_loss)
                .err()
                .map(|e| Problem {
                    path: f.path.clone(),
                    message: e,
                })
        })
        .collect();
    problems.extend(metadata_problems);
    // Children before parents: reverse of the pre-order walk.
    for (path, node) in dirs.iter().rev() {
        if let Err(e) = apply_metadata(path, node, &xattr_loss) {
            problems.push(Problem {
                path: path.clone(),
                message: e,
            });
        }
    }
    xattr_loss.warn();
    stats.problems = problems;
    Ok(stats)
}

impl Walk<'_> {
    fn included(&self, snap_path: &Path) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(snap_path))
    }

    /// Walk tree `id` (snapshot path `snap`) into target directory `tgt`.
    fn dir(
        &mut self,
        id: &BlobId,
        snap: &Path,
        tgt: &Path,
        node: Option<Node>,
        included: bool,
    ) -> Result<()> {
        let tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(Problem {
                    path: tgt.to_path_buf(),
                    message: format!("directory not restored: {e}"),
                });
                return Ok(());
            }
        };
        let is_root = self.stack.is_empty();
        self.stack.push(PendingDir {
            path: tgt.to_path_buf(),
            node,
            created: is_root,
            names: (included && self.opts.delete).then(HashSet::new),
        });
        if included {
            if let Err(e) = self.make_stack() {
                self.stack.pop();
                return Err(e);
            }
        }
        for n in &tree.nodes {
            let name = OsStr::from_bytes(&n.name);
            let (s, t) = (snap.join(name), tgt.join(name));
            if self.exclude.excluded(&s) {
                continue;
            }
            if let Some(names) = self.stack.last_mut().and_then(|d| d.names.as_mut()) {
                names.insert(name.to_os_string());
            }
            let inc = included || self.included(&s);
            if let Err(e) = self.entry(&s, &t, n, inc) {
                self.problems.push(Problem {
                    path: t.clone(),
                    message: e.to_string(),
                });
            }
        }
        let done = self.stack.pop().expect("pushed above");
        if done.created {
            if let Some(names) = done.names {
                self.delete_in
                    .push((done.path.clone(), snap.to_path_buf(), names));
            }
            if let Some(node) = done.node {
                self.dirs.push((done.path, node));
            }
        }
        Ok(())
    }

    /// Create the directories on the stack that do not exist yet.
    fn make_stack(&mut self) -> Result<()> {
        for d in self.stack.iter_mut().filter(|d| !d.created) {
            make_dir(&d.path)?;
            // Writable while its contents are restored; the real mode comes last.
            std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(&d.path, e))?;
            d.created = true;
            self.stats.dirs += 1;
        }
        Ok(())
    }

    fn entry(&mut self, snap: &Path, path: &Path, node: &Node, included: bool) -> Result<()> {
        if let NodeKind::Dir { subtree } = &node.kind {
            return self.dir(subtree, snap, path, Some(node.clone()), included);
        }
        if !included {
            return Ok(());
        }
        self.make_stack()?;
        let io = |e| Error::io(path, e);
        match &node.kind {
            NodeKind::File { .. } => {
                if node.links > 1 {
                    if let Some(first) = self.first_link.get(&(node.device, node.inode)) {
                        self.links.push((path.to_path_buf(), first.clone()));
                        self.stats.files += 1;
                        return Ok(());
                    }
                    self.first_link
                        .insert((node.device, node.inode), path.to_path_buf());
                }
                self.files.push(FileEntry {
                    path: path.to_path_buf(),
                    node: node.clone(),
                });
                self.stats.files += 1;
            }
            NodeKind::Symlink { target } => {
                let _ = std::fs::remove_file(path);
                std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(io)?;
                self.stats.other += 1;
                apply_metadata(path, node, &self.xattr_loss).map_err(Error::Config)?;
            }
            NodeKind::Fifo | NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } => {
                let _ = std::fs::remove_file(path);
                let (kind, rdev) = match node.kind {
                    NodeKind::Fifo => (libc::S_IFIFO, 0),
                    NodeKind::CharDevice { rdev } => (libc::S_IFCHR, rdev),
                    NodeKind::BlockDevice { rdev } => (libc::S_IFBLK, rdev),
                    _ => unreachable!(),
                };
                let c = cstr(path)?;
                // SAFETY: `c` is a valid NUL-terminated path.
                if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, rdev as libc::dev_t) } != 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
                self.stats.other += 1;
                apply_metadata(path, node, &self.xattr_loss).map_err(Error::Config)?;
            }
            // A socket belongs to the process that created it; nothing to restore.
            NodeKind::Socket | NodeKind::Dir { .. } => {}
        }
        Ok(())
    }
}

/// Make `path` a directory. One already there is kept; a file, a symlink or anything
/// else in its place is replaced, so a restore never writes through a symlink to
/// outside the target.
fn make_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
            if m.is_dir() {
                return Ok(());
            }
            std::fs::remove_file(path)
                .and_then(|()| std::fs::create_dir(path))
                .map_err(|e| Error::io(path, e))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Decide per file what to fetch: skip complete files, find present blobs (`--verify`),
/// create or truncate the rest.
fn prepare_contents(
    repo: &IndexedRepository,
    opts: &RestoreOptions,
    files: &[FileEntry],
    problems: &mut Vec<Problem>,
    stats: &mut RestoreStats,
) -> Vec<ContentJob> {
    // Checking and creating files is system calls, one file at a time: on both cores.
    let prepared: Vec<Prepared> = files.par_iter().map(|f| prepare(repo, opts, f)).collect();
    let mut jobs = Vec::new();
    for p in prepared {
        match p {
            Prepared::Skip => {}
            Prepared::Unchanged => stats.files_unchanged += 1,
            Prepared::Failed(problem) => problems.push(problem),
            Prepared::Job {
                job,
                unchanged,
                problem,
            } => {
                if unchanged {
                    stats.files_unchanged += 1;
                }
                problems.extend(problem);
                jobs.push(job);
            }
        }
    }
    jobs
}

/// What preparing one file came to.
enum Prepared {
    /// Not a regular file.
    Skip,
    /// Already complete in the target.
    Unchanged,
    Failed(Problem),
    Job {
        job: ContentJob,
        unchanged: bool,
        problem: Option<Problem>,
    },
}

fn prepare(repo: &IndexedRepository, opts: &RestoreOptions, f: &FileEntry) -> Prepared {
    let NodeKind::File { content } = &f.node.kind else {
        return Prepared::Skip;
    };
    let mut existing = std::fs::symlink_metadata(&f.path)
        .ok()
        .filter(|m| m.file_type().is_file());
    // A file with other names (a hard link from outside the target, or one of this
    // restore's own from an earlier run) is replaced, not written or given metadata
    // through: that would change it under those names too. This restore's own links
    // are made again afterwards.
    if existing.as_ref().is_some_and(|m| m.nlink() > 1) {
        if let Err(e) = std::fs::remove_file(&f.path) {
            return Prepared::Failed(Problem {
                path: f.path.clone(),
                message: format!("cannot replace (it has other hard links): {e}"),
            });
        }
        existing = None;
    }
    let complete = existing.as_ref().is_some_and(|m| {
        m.len() == f.node.size
            && m.mtime() == f.node.mtime.secs
            && m.mtime_nsec() == f.node.mtime.nanos as i64
    });
    let mut present = Vec::new();
    let mut fresh = true;
    let mut problem = None;
    if let Some(m) = &existing {
        if opts.verify {
            match content::present_blobs(repo, &f.path, content) {
                Ok(p) => {
                    fresh = false;
                    present = p;
                    if m.len() != f.node.size {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&f.path)
                            .and_then(|h| h.set_len(f.node.size));
                    }
                }
                Err(e) => {
                    problem = Some(Problem {
                        path: f.path.clone(),
                        message: format!("cannot verify: {e}"),
                    })
                }
            }
        } else if complete {
            return Prepared::Unchanged;
        }
    }
    if fresh {
        if let Ok(m) = std::fs::symlink_metadata(&f.path) {
            if !m.file_type().is_file() {
                let _ = std::fs::remove_file(&f.path);
            }
        }
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&f.path)
            .and_then(|h| h.set_permissions(std::fs::Permissions::from_mode(0o600)));
        if let Err(e) = created {
            return Prepared::Failed(Problem {
                path: f.path.clone(),
                message: format!("cannot create: {e}"),
            });
        }
    }
    let unchanged = present.iter().all(|p| *p) && !present.is_empty();
    Prepared::Job {
        job: ContentJob {
            path: f.path.clone(),
            content: content.clone(),
            size: f.node.size,
            fresh,
            present,
        },
        unchanged,
        problem,
    }
}

/// Remove entries of `dir` (`snap_dir` in the snapshot) whose names are not in `keep`
/// and that `exclude` does not leave alone. Returns how many.
fn delete_extra(
    dir: &Path,
    snap_dir: &Path,
    keep: &HashSet<OsString>,
    exclude: &Selector,
    problems: &mut Vec<Problem>,
) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        if keep.contains(&e.file_name()) || exclude.excluded(&snap_dir.join(e.file_name())) {
            continue;
        }
        let p = e.path();
        let r = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        match r {
            Ok(()) => n += 1,
            Err(e) => problems.push(Problem {
                path: p,
                message: format!("cannot delete: {e}"),
            }),
        }
    }
    n
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("{}: path has a NUL byte", path.display())))
}

fn timespec(t: Timestamp) -> libc::timespec {
    libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nanos as libc::c_long,
    }
}

/// Owner (when root), mode, xattrs and times, without following symlinks.
fn apply_metadata(
    path: &Path,
    node: &Node,
    xattr_loss: &XattrLoss,
) -> std::result::Result<(), String> {
    let c = cstr(path).map_err(|e| e.to_string())?;
    let is_link = matches!(node.kind, NodeKind::Symlink { .. });
    for x in &node.xattrs {
        let name = OsStr::from_bytes(&x.name);
        if let Err(e) = xattr::set(path, name, &x.value) {
            xattr_loss.add(path, name, e);
        }
    }
    // SAFETY: all calls get a valid NUL-terminated path.
    unsafe {
        if libc::geteuid() == 0 && libc::lchown(c.as_ptr(), node.uid, node.gid) != 0 {
            return Err(format!(
                "cannot set owner: {}",
                std::io::Error::last_os_error()
            ));
        }
        // chown clears set-id bits, so the mode comes after it.
        if !is_link && libc::chmod(c.as_ptr(), node.mode as libc::mode_t) != 0 {
            return Err(format!(
                "cannot set mode: {}",
                std::io::Error::last_os_error()
            ));
        }
        // No access time is stored: it is set to the modification time.
        let times = [timespec(node.mtime), timespec(node.mtime)];
        if libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(format!(
                "cannot set times: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
