//! `copy`: snapshots from one repository into another (another MinIO, a local disk).
//!
//! The repositories have different keys, so blob ids (keyed hashes) and chunk
//! boundaries (seeded) differ: every file is read from the source (each blob
//! authenticated and checked against its id) and chunked, sealed and deduplicated anew
//! in the target, and every tree is rebuilt with the target's ids. Nodes keep all their
//! metadata; the snapshot keeps its time, host, paths, tags and completeness, and
//! records the source snapshot in `extra["copied_from"]`, so a rerun skips what was
//! copied. An interrupted copy loses nothing: what it uploaded is indexed, and the rerun
//! stores only what is missing.

use crate::chunker;
use crate::error::{Error, Result};
use crate::format::{BlobType, NodeKind, Snapshot, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{BlobWriter, IndexedRepository, REFRESH, STALE_AFTER, WriteStats};
use std::collections::{HashMap, HashSet};

/// What a copy did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// (source id, new id in the target)
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Source snapshots the target already had a copy of (of them, or of the snapshot
    /// they replace: a `protect` or a repair writes a new object).
    pub skipped: Vec<SnapshotId>,
    /// Source snapshots that could not be read whole, with why: not copied; the others
    /// are.
    pub failed: Vec<(SnapshotId, String)>,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub blobs_added: u64,
}

/// The key under which a copy names its source.
pub const COPIED_FROM: &str = "copied_from";

struct Copier<'a> {
    src: &'a IndexedRepository,
    dst: &'a IndexedRepository,
    w: &'a BlobWriter<'a>,
    trees: HashMap<BlobId, BlobId>,
    bytes_read: u64,
}

impl Copier<'_> {
    fn tree(&mut self, id: &BlobId) -> Result<BlobId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let t = self.src.load_tree(id)?;
        let mut nodes = Vec::with_capacity(t.nodes.len());
        for mut n in t.nodes {
            n.kind = match n.kind {
                NodeKind::Dir { subtree } => NodeKind::Dir {
                    subtree: self.tree(&subtree)?,
                },
                NodeKind::File { content } => NodeKind::File {
                    content: self.content(&content)?,
                },
                other => other,
            };
            nodes.push(n);
        }
        let new = self.w.add(BlobType::Tree, &Tree::new(nodes).encode())?.0;
        self.trees.insert(*id, new);
        Ok(new)
    }

    /// A file's data, read from the source and chunked with the target's chunker.
    fn content(&mut self, blobs: &[BlobId]) -> Result<Vec<BlobId>> {
        let params = self.dst.config().chunker;
        let seed = self.dst.key().chunker_seed();
        let reader = super::dump::BlobReader::new(self.src, blobs);
        let mut ids = Vec::new();
        for chunk in chunker::chunk_stream(&params, seed, reader) {
            let chunk = chunk.map_err(|e| {
                super::dump::carried(e, |e| {
                    Error::Source(format!("reading the source repository failed: {e}"))
                })
            })?;
            self.bytes_read += chunk.len() as u64;
            ids.push(self.w.add(BlobType::Data, &chunk)?.0);
        }
        Ok(ids)
    }
}

/// Copy `snapshots` of `src` into `dst` (opened with
/// `into_indexed_announced(LockKind::Backup)`: a copy writes like a backup).
pub fn copy(
    src: &IndexedRepository,
    dst: &IndexedRepository,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<CopyReport> {
    let announcement = dst.take_announcement().ok_or_else(|| {
        Error::Config("copy needs a target opened with `into_indexed_announced`".into())
    })?;
    let have: HashSet<String> = dst
        .snapshots()?
        .into_iter()
        .filter_map(|(_, s)| s.extra.get(COPIED_FROM).cloned())
        .collect();
    let mut report = CopyReport::default();
    let todo: Vec<&(SnapshotId, Snapshot)> = snapshots
        .iter()
        .filter(|(id, s)| {
            let done = have.contains(&id.to_string())
                || s.original.is_some_and(|o| have.contains(&o.to_string()));
            if done {
                report.skipped.push(*id);
            }
            !done
        })
        .collect();
    let writer = dst.writer();
    let mut c = Copier {
        src,
        dst,
        w: &writer,
        trees: HashMap::new(),
        bytes_read: 0,
    };
    let mut roots = Vec::new();
    let walked = todo.iter().try_for_each(|(id, s)| {
        match c.tree(&s.tree) {
            Ok(root) => roots.push((*id, s, root)),
            // The target failing stops the copy; a damaged source snapshot is named and
            // the others are copied.
            Err(e @ Error::Backend { .. }) => return Err(e),
            // The target's writer stopped (a failed upload): every snapshot would fail.
            Err(e) if c.w.broken().is_some() => return Err(e),
            Err(e) => {
                tracing::warn!("snapshot {} not copied: {e}", id.short());
                report.failed.push((*id, e.to_string()));
            }
        }
        Ok::<_, Error>(())
    });
    report.bytes_read = c.bytes_read;
    // Index what was uploaded even when reading failed, so a rerun reuses it.
    let finished: Result<WriteStats> = writer.finish();
    let stats = match (walked, finished) {
        (Err(e), _) | (Ok(()), Err(e)) => {
            announcement.finish();
            return Err(e);
        }
        (Ok(()), Ok(s)) => s,
    };
    report.bytes_added = stats.bytes_added;
    report.blobs_added = stats.data_blobs + stats.tree_blobs;
    let saved = (|| {
        announcement.check_fresh(STALE_AFTER - REFRESH)?;
        for (id, s, root) in roots {
            let mut copy = (*s).clone();
            copy.tree = root;
            copy.parent = None;
            copy.extra.insert(COPIED_FROM.into(), id.to_string());
            let new = dst.save_snapshot(&copy)?;
            report.copied.push((id, new));
        }
        Ok::<_, Error>(())
    })();
    announcement.finish();
    saved.map(|()| report)
}
