//! Restore: plan from the trees, create the entries, fetch and verify content
//! concurrently, then apply metadata (files first, directories last and deepest first,
//! so writing children does not disturb a parent's times or a read-only mode).
//!
//! Every blob is authenticated and checked against its id before a byte of it is
//! written (invariant 4). A blob that fails is reported with the file and pack it belongs
//! to; the rest of the restore goes on.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::{Problem, on_rayon, walk};
use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeKind, Snapshot, Timestamp};
use crate::repository::IndexedRepository;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/` for everything). A directory's contents
    /// go into the target; a file goes into the target under its name.
    pub path: PathBuf,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

/// Restore `snap` (or a part of it) into `opts.target`.
pub fn restore(
    repo: &IndexedRepository,
    snap: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let target = &opts.target;
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut stats = RestoreStats::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut files: Vec<FileJob> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut problems = Vec::new();

    let mut visit = |path: &Path, node: &Node| -> Result<bool> {
        let r = create_entry(
            path,
            node,
            &mut stats,
            &mut dirs,
            &mut files,
            &mut links,
            &mut first_link,
        );
        if let Err(e) = r {
            problems.push(Problem {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
            return Ok(false);
        }
        Ok(true)
    };
    match walk::find_node(repo, &snap.tree, &opts.path)? {
        None => walk::walk(repo, &snap.tree, target, &mut visit)?,
        Some(node) => match &node.kind {
            NodeKind::Dir { subtree } => walk::walk(repo, subtree, target, &mut visit)?,
            _ => {
                let path = target.join(std::ffi::OsStr::from_bytes(&node.name));
                if visit(&path, &node)? {}
            }
        },
    }

    let problems = Arc::new(Mutex::new(problems));
    stats.bytes = restore_contents(repo, &files, &problems)?;
    let mut problems = Arc::try_unwrap(problems)
        .expect("restore tasks finished")
        .into_inner()
        .expect("problems");

    for (path, first) in &links {
        let _ = std::fs::remove_file(path);
        if let Err(e) = std::fs::hard_link(first, path) {
            problems.push(Problem {
                path: path.clone(),
                message: format!("cannot hard-link to {}: {e}", first.display()),
            });
        }
    }
    for f in &files {
        if let Err(e) = apply_metadata(&f.path, &f.node) {
            problems.push(Problem {
                path: f.path.clone(),
                message: e,
            });
        }
    }
    // Children before parents: reverse of the pre-order walk.
    for (path, node) in dirs.iter().rev() {
        if let Err(e) = apply_metadata(path, node) {
            problems.push(Problem {
                path: path.clone(),
                message: e,
            });
        }
    }
    stats.problems = problems;
    Ok(stats)
}

#[allow(clippy::too_many_arguments)]
fn create_entry(
    path: &Path,
    node: &Node,
    stats: &mut RestoreStats,
    dirs: &mut Vec<(PathBuf, Node)>,
    files: &mut Vec<FileJob>,
    links: &mut Vec<(PathBuf, PathBuf)>,
    first_link: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let io = |e| Error::io(path, e);
    match &node.kind {
        NodeKind::Dir { .. } => {
            match std::fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(io(e)),
            }
            // Writable while its contents are restored; the real mode comes last.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            dirs.push((path.to_path_buf(), node.clone()));
            stats.dirs += 1;
        }
        NodeKind::File { .. } => {
            if node.links > 1 {
                if let Some(first) = first_link.get(&(node.device, node.inode)) {
                    links.push((path.to_path_buf(), first.clone()));
                    stats.files += 1;
                    return Ok(());
                }
                first_link.insert((node.device, node.inode), path.to_path_buf());
            }
            remove_non_file(path);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(io)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            files.push(FileJob {
                path: path.to_path_buf(),
                node: node.clone(),
            });
            stats.files += 1;
        }
        NodeKind::Symlink { target } => {
            let _ = std::fs::remove_file(path);
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).map_err(io)?;
            stats.other += 1;
            apply_metadata(path, node).map_err(Error::Config)?;
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
            stats.other += 1;
            apply_metadata(path, node).map_err(Error::Config)?;
        }
        // A socket belongs to the process that created it; there is nothing to restore.
        NodeKind::Socket => {}
    }
    Ok(())
}

fn remove_non_file(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_file() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Fetch, verify and write every file's content. Returns bytes written.
fn restore_contents(
    repo: &IndexedRepository,
    files: &[FileJob],
    problems: &Arc<Mutex<Vec<Problem>>>,
) -> Result<u64> {
    let conns = repo.options().connections.max(1);
    let total: u64 = repo.block_on(
        futures::stream::iter(files)
            .map(|f| restore_file(repo, f, problems, conns))
            .buffer_unordered(conns)
            .fold(0u64, |acc, n| async move { acc + n }),
    );
    Ok(total)
}

async fn restore_file(
    repo: &IndexedRepository,
    job: &FileJob,
    problems: &Arc<Mutex<Vec<Problem>>>,
    conns: usize,
) -> u64 {
    let report = |message: String| {
        problems.lock().expect("problems").push(Problem {
            path: job.path.clone(),
            message,
        })
    };
    let NodeKind::File { content } = &job.node.kind else {
        return 0;
    };
    let file = match std::fs::OpenOptions::new().write(true).open(&job.path) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            report(format!("cannot open for writing: {e}"));
            return 0;
        }
    };
    // Offsets come from the plaintext lengths in the index.
    let mut jobs = Vec::with_capacity(content.len());
    let mut offset = 0u64;
    for id in content {
        match repo.locate(BlobType::Data, id) {
            Ok(loc) => {
                jobs.push((*id, offset));
                offset += loc.raw_length as u64;
            }
            Err(e) => {
                report(format!("{e}; the file is incomplete from byte {offset}"));
                return 0;
            }
        }
    }
    let written = futures::stream::iter(jobs)
        .map(|(id, offset)| {
            let file = file.clone();
            async move {
                let sealed = repo.read_blob_async(BlobType::Data, &id).await?;
                on_rayon(move || {
                    file.write_all_at(&sealed, offset)
                        .map(|_| sealed.len() as u64)
                        .map_err(|e| Error::io("", e))
                })
                .await
            }
        })
        .buffer_unordered(conns)
        .fold(0u64, |acc, r| {
            let v = match r {
                Ok(n) => acc + n,
                Err(e) => {
                    report(e.to_string());
                    acc
                }
            };
            async move { v }
        })
        .await;
    if let Err(e) = file.set_len(job.node.size) {
        report(format!("cannot set size: {e}"));
    }
    written
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
fn apply_metadata(path: &Path, node: &Node) -> std::result::Result<(), String> {
    let c = cstr(path).map_err(|e| e.to_string())?;
    let is_link = matches!(node.kind, NodeKind::Symlink { .. });
    for x in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&x.name);
        if let Err(e) = xattr::set(path, name, &x.value) {
            tracing::debug!("{}: xattr {:?} not restored: {e}", path.display(), name);
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
