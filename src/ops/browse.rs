//! Looking into snapshots without restoring them: diff, find, stats.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::format::{BlobType, Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// What changed at a path between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Change {
    Added,
    Removed,
    /// Content differs.
    Modified,
    /// Same path, another kind of entry (a file became a directory).
    TypeChanged,
    /// Same content, other mode, owner or modification time (with `metadata`).
    Metadata,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub path: PathBuf,
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
}

/// Differences between trees `a` (old) and `b` (new), in path order. Subtrees with the
/// same id are skipped without being read.
pub fn diff(
    repo: &IndexedRepository,
    a: &BlobId,
    b: &BlobId,
    metadata: bool,
    out: &mut dyn FnMut(DiffEntry),
) -> Result<()> {
    diff_trees(repo, Some(a), Some(b), Path::new("/"), metadata, out)
}

fn load(repo: &IndexedRepository, id: Option<&BlobId>) -> Result<Tree> {
    match id {
        Some(id) => repo.load_tree(id),
        None => Ok(Tree::new(Vec::new())),
    }
}

fn subtree(n: &Node) -> Option<&BlobId> {
    match &n.kind {
        NodeKind::Dir { subtree } => Some(subtree),
        _ => None,
    }
}

fn size(n: &Node) -> Option<u64> {
    matches!(n.kind, NodeKind::File { .. }).then_some(n.size)
}

fn diff_trees(
    repo: &IndexedRepository,
    a: Option<&BlobId>,
    b: Option<&BlobId>,
    prefix: &Path,
    metadata: bool,
    out: &mut dyn FnMut(DiffEntry),
) -> Result<()> {
    if a.is_some() && a == b {
        return Ok(());
    }
    let (ta, tb) = (load(repo, a)?, load(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let (na, nb) = (ta.nodes.get(i), tb.nodes.get(j));
        let order = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = na.expect("left");
                let p = prefix.join(OsStr::from_bytes(&n.name));
                out(DiffEntry {
                    change: Change::Removed,
                    path: p.clone(),
                    old_size: size(n),
                    new_size: None,
                });
                if let Some(s) = subtree(n) {
                    diff_trees(repo, Some(s), None, &p, metadata, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = nb.expect("right");
                let p = prefix.join(OsStr::from_bytes(&n.name));
                out(DiffEntry {
                    change: Change::Added,
                    path: p.clone(),
                    old_size: None,
                    new_size: size(n),
                });
                if let Some(s) = subtree(n) {
                    diff_trees(repo, None, Some(s), &p, metadata, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("left"), nb.expect("right"));
                let p = prefix.join(OsStr::from_bytes(&x.name));
                let entry = |change| DiffEntry {
                    change,
                    path: p.clone(),
                    old_size: size(x),
                    new_size: size(y),
                };
                match (&x.kind, &y.kind) {
                    (NodeKind::Dir { subtree: sa }, NodeKind::Dir { subtree: sb }) => {
                        if metadata && meta_differs(x, y) {
                            out(entry(Change::Metadata));
                        }
                        diff_trees(repo, Some(sa), Some(sb), &p, metadata, out)?;
                    }
                    (ka, kb) if std::mem::discriminant(ka) != std::mem::discriminant(kb) => {
                        out(entry(Change::TypeChanged));
                        if let Some(s) = subtree(x) {
                            diff_trees(repo, Some(s), None, &p, metadata, out)?;
                        }
                        if let Some(s) = subtree(y) {
                            diff_trees(repo, None, Some(s), &p, metadata, out)?;
                        }
                    }
                    (ka, kb) if ka != kb || x.size != y.size => out(entry(Change::Modified)),
                    _ if metadata && meta_differs(x, y) => out(entry(Change::Metadata)),
                    _ => {}
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn meta_differs(x: &Node, y: &Node) -> bool {
    x.mode != y.mode
        || x.uid != y.uid
        || x.gid != y.gid
        || x.mtime != y.mtime
        || x.xattrs != y.xattrs
}

/// Sizes of a set of snapshots.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub snapshots: u64,
    /// Files and bytes a restore of every snapshot would write (hardlinks once each).
    pub files: u64,
    pub restore_size: u64,
    /// Distinct blobs the snapshots reference, their plaintext and stored sizes.
    pub blobs: u64,
    pub raw_size: u64,
    pub stored_size: u64,
}

impl Stats {
    /// Restore size over distinct plaintext: how much deduplication saves.
    pub fn dedup_ratio(&self) -> f64 {
        self.restore_size as f64 / self.raw_size.max(1) as f64
    }
    /// Plaintext over stored bytes: how much compression saves.
    pub fn compression_ratio(&self) -> f64 {
        self.raw_size as f64 / self.stored_size.max(1) as f64
    }
}

/// Walk the trees of `roots` and add up sizes. `raw_data` also collects the distinct
/// blobs (memory: one id per distinct blob).
pub fn stats(repo: &IndexedRepository, roots: &[BlobId], raw_data: bool) -> Result<Stats> {
    let mut s = Stats {
        snapshots: roots.len() as u64,
        ..Default::default()
    };
    let mut blobs: HashSet<(BlobType, BlobId)> = HashSet::new();
    for root in roots {
        let mut links: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![*root];
        while let Some(t) = stack.pop() {
            if raw_data {
                blobs.insert((BlobType::Tree, t));
            }
            for n in repo.load_tree(&t)?.nodes {
                match &n.kind {
                    NodeKind::Dir { subtree } => stack.push(*subtree),
                    NodeKind::File { content } => {
                        if n.links > 1 && !links.insert((n.device, n.inode)) {
                            continue;
                        }
                        s.files += 1;
                        s.restore_size += n.size;
                        if raw_data {
                            blobs.extend(content.iter().map(|b| (BlobType::Data, *b)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for (ty, id) in &blobs {
        if let Some(loc) = repo.index().find(*ty, id)? {
            s.blobs += 1;
            s.raw_size += loc.raw_length as u64;
            s.stored_size += loc.length as u64;
        }
    }
    Ok(s)
}
