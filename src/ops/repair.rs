//! Repair after damage that `check` found.
//!
//! * [`repair_index`] rebuilds the index from what is in `data/`: entries of packs that
//!   are there with their indexed size are kept, every other pack's header is read
//!   (`read_all_packs` reads every header), packs that are gone are dropped. The result
//!   is written as new index files that supersede every index file listed at the start,
//!   which are then deleted. Index files written meanwhile by a running backup are
//!   neither superseded nor deleted.
//! * [`repair_snapshots`] writes, for each snapshot with damage, a new snapshot without
//!   the unreadable parts: files with a blob that cannot be read and directories whose
//!   tree cannot be read are left out, each named in the new snapshot's `problems`
//!   (which also marks it incomplete), with `original` naming the damaged snapshot and a
//!   `repaired` tag. The damaged snapshot stays unless `forget` is set.
//!
//! Both take `dry_run`: report what would be done, write and delete nothing.

use std::collections::HashMap;

use futures::StreamExt;
use serde::Serialize;

use super::check::{CheckProgress, Checker, ReadData};
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, IndexPack, NodeKind, Tree, names};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repository::{IndexedRepository, Repository};

/// Packs per index file written by a repair.
const PACKS_PER_FILE: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct RepairIndexOptions {
    pub dry_run: bool,
    /// Read every pack's header, not only those of packs the index does not describe.
    pub read_all_packs: bool,
}

/// What `repair index` did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    /// Packs kept with their existing index entries.
    pub packs_kept: u64,
    /// Packs indexed from their headers (unindexed, or their index file was damaged).
    pub packs_added: Vec<String>,
    /// Indexed packs that are not in the repository: dropped from the index.
    pub packs_dropped: Vec<String>,
    /// Packs whose header cannot be read. The index entries of theirs that lie inside
    /// the pack as it is now are kept ([`Self::packs_kept_from_index`]); a pack with none
    /// is not indexed (its blobs are lost).
    pub packs_unreadable: Vec<(String, String)>,
    /// Packs with an unreadable header indexed from their existing entries, and how
    /// many entries were kept of how many.
    pub packs_kept_from_index: Vec<(String, usize, usize)>,
    /// Index files replaced (deleted after the new ones were written).
    pub index_files_replaced: Vec<String>,
    pub index_files_written: Vec<IndexId>,
}

async fn read_header(repo: &Repository, id: PackId, size: u64) -> Result<IndexPack> {
    let header = repo.read_pack_header(&id, size).await?;
    Ok(IndexPack {
        id,
        size,
        blobs: header.blobs,
    })
}

/// Rebuild the index from the packs in the repository.
pub fn repair_index(repo: &Repository, opts: &RepairIndexOptions) -> Result<RepairIndexReport> {
    let progress = CheckProgress::default();
    let mut c = Checker::new(repo, &progress);
    c.refresh_index()?;
    let listed = c.list_packs()?;
    let mut report = RepairIndexReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut packs: Vec<IndexPack> = Vec::new();
    let mut to_read: Vec<(PackId, u64)> = Vec::new();
    for (id, &size) in &listed {
        // Packs prune took out of the index stay out: the deletion record decides.
        if c.idx.pending.contains(id) {
            continue;
        }
        match c.idx.pack_pos.get(id).map(|&p| &c.idx.packs[p as usize]) {
            Some(p) if p.size == size && !opts.read_all_packs => {
                report.packs_kept += 1;
                packs.push(IndexPack {
                    id: *id,
                    size,
                    blobs: p.blobs.clone(),
                });
            }
            _ => to_read.push((*id, size)),
        }
    }
    for p in &c.idx.packs {
        if !listed.contains_key(&p.id) && !c.idx.pending.contains(&p.id) {
            report.packs_dropped.push(names::pack(&p.id));
        }
    }
    let conns = repo.options().connections.max(1);
    let headers: Vec<(PackId, Result<IndexPack>)> = repo.block_on(
        futures::stream::iter(to_read)
            .map(|(id, size)| async move { (id, read_header(repo, id, size).await) })
            .buffer_unordered(conns)
            .collect(),
    );
    for (id, h) in headers {
        match h {
            Ok(p) => {
                let indexed = c
                    .idx
                    .pack_pos
                    .get(&id)
                    .map(|&i| c.idx.packs[i as usize].size);
                if indexed == Some(p.size) {
                    report.packs_kept += 1;
                } else {
                    // Not indexed, or indexed with another size: the header is the truth.
                    report.packs_added.push(names::pack(&id));
                }
                packs.push(p);
            }
            Err(Error::NotFound { .. }) => report.packs_dropped.push(names::pack(&id)),
            Err(e @ Error::Backend { .. }) => return Err(e),
            Err(e) => {
                // What the index knows of the pack is all there is: keep the entries
                // inside the pack as it is, so the blobs there stay reachable.
                if let Some(p) = c.idx.pack_pos.get(&id).map(|&i| &c.idx.packs[i as usize]) {
                    let size = listed[&id];
                    let blobs: Vec<_> = p
                        .blobs
                        .iter()
                        .filter(|b| b.offset + b.length as u64 <= size)
                        .cloned()
                        .collect();
                    if !blobs.is_empty() {
                        report.packs_kept_from_index.push((
                            names::pack(&id),
                            blobs.len(),
                            p.blobs.len(),
                        ));
                        packs.push(IndexPack { id, size, blobs });
                    }
                }
                report
                    .packs_unreadable
                    .push((names::pack(&id), super::check::reason_of(&e)));
            }
        }
    }
    report.packs_kept_from_index.sort();
    report.packs_added.sort();
    report.packs_dropped.sort();
    report.packs_unreadable.sort();
    let old: Vec<IndexId> = {
        let mut v: Vec<IndexId> = c.idx.listed.iter().copied().collect();
        v.sort();
        v
    };
    report.index_files_replaced = old.iter().map(names::index).collect();
    let changed = !c.idx.damaged.is_empty()
        || !report.packs_added.is_empty()
        || !report.packs_dropped.is_empty()
        || !report.packs_kept_from_index.is_empty()
        || opts.read_all_packs;
    if !changed {
        report.index_files_replaced.clear();
        return Ok(report);
    }
    if opts.dry_run {
        return Ok(report);
    }
    packs.sort_by_key(|p| p.id);
    for chunk in packs.chunks(PACKS_PER_FILE) {
        let mut file = IndexFile::new(chunk.to_vec());
        file.supersedes = old.clone();
        report
            .index_files_written
            .push(repo.block_on(repo.save_index(&file))?);
    }
    if packs.is_empty() {
        let mut file = IndexFile::new(Vec::new());
        file.supersedes = old.clone();
        report
            .index_files_written
            .push(repo.block_on(repo.save_index(&file))?);
    }
    for id in &old {
        if !report.index_files_written.contains(id) {
            repo.block_on(repo.backend().delete(&names::index(id)))?;
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshots to repair (empty: every snapshot).
    pub snapshots: Vec<SnapshotId>,
    pub dry_run: bool,
    /// Remove each damaged snapshot once its repaired version is written.
    pub forget: bool,
    /// Also verify pack data first, so damaged blobs are found (see `check --read-data`).
    pub read_data: ReadData,
}

/// One path left out of a repaired snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub path: String,
    pub reason: String,
}

/// A damaged snapshot and its repair.
#[derive(Debug, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The new snapshot (`None` in a dry run).
    pub repaired: Option<SnapshotId>,
    pub removed: Vec<Removed>,
    pub forgotten: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub snapshots_checked: u64,
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshot objects that cannot be read at all: nothing to rebuild from.
    pub unrepairable: Vec<(String, String)>,
}

/// Paths (relative to a tree) left out of its rewrite, with why.
type RemovedBelow = Vec<(Vec<u8>, String)>;

enum Rewrite {
    Same,
    New(BlobId, RemovedBelow),
    Unreadable(String),
}

struct Rewriter<'c, 'r> {
    c: &'c mut Checker<'r>,
    writer: &'c crate::repository::BlobWriter<'c>,
    memo: HashMap<BlobId, (BlobId, RemovedBelow)>,
}

impl Rewriter<'_, '_> {
    fn why(&self, d: usize) -> String {
        let dm = &self.c.damage[d];
        format!("{}: {}", dm.object, dm.message)
    }

    fn tree(&mut self, id: &BlobId) -> Result<Rewrite> {
        if self.c.tree_memo.get(id) == Some(&false) {
            return Ok(Rewrite::Same);
        }
        if let Some((n, r)) = self.memo.get(id) {
            return Ok(Rewrite::New(*n, r.clone()));
        }
        let tree = match self.c.load_tree(id)? {
            Ok(t) => t,
            Err(d) => return Ok(Rewrite::Unreadable(self.why(d))),
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut removed = Vec::new();
        for mut node in tree.nodes {
            match &node.kind {
                NodeKind::File { content } => {
                    let bad = content
                        .iter()
                        .find_map(|b| self.c.find_blob(BlobType::Data, b).err());
                    if let Some(d) = bad {
                        removed.push((node.name.clone(), self.why(d)));
                        continue;
                    }
                }
                NodeKind::Dir { subtree } => match self.tree(subtree)? {
                    Rewrite::Same => {}
                    Rewrite::New(n, below) => {
                        for (p, why) in below {
                            let mut full = node.name.clone();
                            full.push(b'/');
                            full.extend_from_slice(&p);
                            removed.push((full, why));
                        }
                        node.kind = NodeKind::Dir { subtree: n };
                    }
                    Rewrite::Unreadable(why) => {
                        removed.push((node.name.clone(), why));
                        continue;
                    }
                },
                _ => {}
            }
            nodes.push(node);
        }
        if removed.is_empty() {
            return Ok(Rewrite::Same);
        }
        let (new, _) = self
            .writer
            .add(BlobType::Tree, &Tree::new(nodes).encode())?;
        self.memo.insert(*id, (new, removed.clone()));
        Ok(Rewrite::New(new, removed))
    }
}

/// Write repaired copies of damaged snapshots.
pub fn repair_snapshots(
    repo: &IndexedRepository,
    opts: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let progress = CheckProgress::default();
    let mut c = Checker::new(repo, &progress);
    let mut ids = c.prepare(opts.read_data)?;
    if !opts.snapshots.is_empty() {
        for want in &opts.snapshots {
            if !ids.contains(want) {
                return Err(Error::NotFound {
                    what: format!("snapshot {want}"),
                });
            }
        }
        ids.retain(|id| opts.snapshots.contains(id));
    }
    let snaps = c.load_snapshots(ids)?;
    let mut report = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        snapshots_checked: snaps.len() as u64,
        ..Default::default()
    };
    for d in &c.damage {
        if d.kind == super::check::DamageKind::Snapshot {
            report
                .unrepairable
                .push((d.object.clone(), d.message.clone()));
        }
    }
    for (id, s) in &snaps {
        c.check_snapshot(*id, s.tree)?;
    }
    let writer = if opts.dry_run {
        repo.dry_run_writer()
    } else {
        repo.writer()
    };
    let mut planned = Vec::new();
    {
        let mut rw = Rewriter {
            c: &mut c,
            writer: &writer,
            memo: HashMap::new(),
        };
        for (id, s) in &snaps {
            let (root, removed) = match rw.tree(&s.tree)? {
                Rewrite::Same => continue,
                Rewrite::New(root, removed) => (root, removed),
                Rewrite::Unreadable(why) => {
                    let (root, _) = writer.add(BlobType::Tree, &Tree::new(Vec::new()).encode())?;
                    (root, vec![(Vec::new(), why)])
                }
            };
            let removed: Vec<Removed> = removed
                .into_iter()
                .map(|(p, reason)| Removed {
                    path: format!("/{}", String::from_utf8_lossy(&p)),
                    reason,
                })
                .collect();
            planned.push((*id, s.clone(), root, removed));
        }
    }
    // Index files before snapshots (invariant 2).
    writer.finish()?;
    for (id, mut s, root, removed) in planned {
        s.tree = root;
        s.original = Some(id);
        s.complete = false;
        s.problems.extend(removed.iter().map(|r| {
            format!(
                "{}: removed by `cairn repair snapshots`: {}",
                r.path, r.reason
            )
        }));
        if !s.tags.iter().any(|t| t == "repaired") {
            s.tags.push("repaired".into());
        }
        s.program = format!("cairn {}", env!("CARGO_PKG_VERSION"));
        let (new, forgotten) = if opts.dry_run {
            (None, false)
        } else {
            let new = repo.save_snapshot(&s)?;
            if opts.forget {
                repo.block_on(repo.backend().delete(&names::snapshot(&id)))?;
            }
            (Some(new), opts.forget)
        };
        report.repaired.push(RepairedSnapshot {
            original: id,
            repaired: new,
            removed,
            forgotten,
        });
    }
    Ok(report)
}
