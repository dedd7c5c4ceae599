//! Grow a repository to many snapshots quickly, for `scripts/bench-check-structure.sh`.
//!
//! Takes the latest snapshot and writes `COUNT` more, each changing `CHANGES` files
//! (chosen by a seeded generator) to new small contents: the trees along the changed
//! paths are rewritten and everything else is shared, as with daily backups of a tree
//! that changes a little. Far faster than `COUNT` real backups of the whole tree.
//!
//!     cargo run --release --example many_snapshots -- REPO COUNT [CHANGES]
//!
//! The password comes from CAIRN_PASSWORD; the cache from CAIRN_CACHE_DIR.

use std::path::PathBuf;

use cairn::format::{BlobType, NodeKind, Tree};
use cairn::id::BlobId;
use cairn::repository::{BlobWriter, IndexedRepository, RepoOptions, Repository};

/// Every file's path from the root, as name components.
fn files(repo: &IndexedRepository, tree: &BlobId, prefix: &[Vec<u8>], out: &mut Vec<Vec<Vec<u8>>>) {
    for n in repo.load_tree(tree).expect("tree").nodes {
        let mut p = prefix.to_vec();
        p.push(n.name.clone());
        match n.kind {
            NodeKind::File { .. } => out.push(p),
            NodeKind::Dir { subtree } => files(repo, &subtree, &p, out),
            _ => {}
        }
    }
}

/// Trees written by this run (not readable from the store until their index is written).
type Written = std::collections::HashMap<BlobId, Tree>;

/// Rewrite the trees along `path` so that the file at its end holds `content`.
fn rewrite(
    repo: &IndexedRepository,
    w: &BlobWriter,
    written: &mut Written,
    tree: &BlobId,
    path: &[Vec<u8>],
    content: &[u8],
) -> BlobId {
    let mut t = match written.get(tree) {
        Some(t) => t.clone(),
        None => repo.load_tree(tree).expect("tree"),
    };
    let node = t
        .nodes
        .iter_mut()
        .find(|n| n.name == path[0])
        .expect("path in tree");
    match &mut node.kind {
        NodeKind::File { content: c } if path.len() == 1 => {
            let (id, _) = w.add(BlobType::Data, content).expect("add blob");
            *c = vec![id];
            node.size = content.len() as u64;
            node.mtime.secs += 1;
        }
        NodeKind::Dir { subtree } => {
            *subtree = rewrite(repo, w, written, subtree, &path[1..], content)
        }
        _ => panic!("unexpected node"),
    }
    let t = Tree::new(t.nodes);
    let id = w.add(BlobType::Tree, &t.encode()).expect("add tree").0;
    written.insert(id, t);
    id
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repo_path = args.get(1).expect("REPO");
    let count: u64 = args.get(2).expect("COUNT").parse().expect("COUNT");
    let changes: usize = args
        .get(3)
        .map(|c| c.parse().expect("CHANGES"))
        .unwrap_or(3);
    let password = std::env::var("CAIRN_PASSWORD").expect("CAIRN_PASSWORD");
    let store = cairn::backend::open(
        repo_path,
        false,
        &cairn::backend::S3Options::with_defaults(),
    )
    .expect("open store");
    let opts = RepoOptions {
        cache_dir: std::env::var_os("CAIRN_CACHE_DIR").map(PathBuf::from),
        ..RepoOptions::default()
    };
    let repo = Repository::open(store, password.as_bytes(), opts)
        .expect("open repository")
        .into_indexed()
        .expect("index");
    let (first_parent, base) = repo.find_snapshot("latest").expect("a first snapshot");
    let mut all = Vec::new();
    files(&repo, &base.tree, &[], &mut all);
    let w = repo.writer();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut snaps = Vec::new();
    let mut written = Written::new();
    let mut root = base.tree;
    for i in 0..count {
        for c in 0..changes {
            let f = &all[(next() % all.len() as u64) as usize];
            root = rewrite(
                &repo,
                &w,
                &mut written,
                &root,
                f,
                format!("snapshot {i} change {c}\n").as_bytes(),
            );
        }
        let mut s = base.clone();
        s.tree = root;
        s.time.secs = base.time.secs + 3600 * (i as i64 + 1);
        snaps.push(s);
    }
    // Index files before snapshots.
    w.finish().expect("finish");
    let mut parent = first_parent;
    for mut s in snaps {
        s.parent = Some(parent);
        parent = repo.save_snapshot(&s).expect("save snapshot");
    }
    println!("wrote {count} snapshots over {} files", all.len());
}
