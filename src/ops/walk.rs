//! Walking a snapshot's trees.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind};
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// Split `SNAPSHOT:/sub/path` into the snapshot spec and the path (default `/`).
pub fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once(':') {
        Some((s, p)) if !p.is_empty() => (s, p),
        Some((s, _)) => (s, "/"),
        None => (spec, "/"),
    }
}

/// Find the node at `path` (absolute, inside the snapshot) starting from root tree
/// `root`. `Ok(None)` for `/` itself (the root has no node).
pub fn find_node(repo: &IndexedRepository, root: &BlobId, path: &Path) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found: Option<Node> = None;
    for c in path.components() {
        let name = match c {
            Component::Normal(n) => n.as_bytes(),
            Component::RootDir | Component::CurDir => continue,
            _ => {
                return Err(Error::Config(format!(
                    "'{}': '..' is not allowed",
                    path.display()
                )));
            }
        };
        if let Some(n) = &found {
            match &n.kind {
                NodeKind::Dir { subtree } => tree_id = *subtree,
                _ => {
                    return Err(Error::NotFound {
                        what: format!(
                            "{} in the snapshot (a parent is not a directory)",
                            path.display()
                        ),
                    });
                }
            }
        }
        let tree = repo.load_tree(&tree_id)?;
        found = Some(tree.get(name).cloned().ok_or_else(|| Error::NotFound {
            what: format!("{} in the snapshot", path.display()),
        })?);
    }
    Ok(found)
}

/// Visit every node under tree `root` depth-first in name order, with its path
/// (relative to `prefix`). The visitor returns `false` to skip a directory's contents.
pub fn walk(
    repo: &IndexedRepository,
    root: &BlobId,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    let tree = repo.load_tree(root)?;
    for node in &tree.nodes {
        let path: PathBuf = prefix.join(OsStr::from_bytes(&node.name));
        let descend = visit(&path, node)?;
        if let (true, NodeKind::Dir { subtree }) = (descend, &node.kind) {
            walk(repo, subtree, &path, visit)?;
        }
    }
    Ok(())
}
