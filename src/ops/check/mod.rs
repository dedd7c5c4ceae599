//! `check`: find every kind of damage in a repository and say what it affects.
//!
//! Phases, in this order:
//!
//! 1. list `snapshots/` (before the index: a backup writes its index files before its
//!    snapshot, so every snapshot listed here has its index files listed in phase 3);
//! 2. decode every key file;
//! 3. read every index file from the store into memory (never the local cache:
//!    [`index`]);
//! 4. list `data/`: every indexed pack must be there with its indexed size; packs no
//!    index names are listed as unreferenced (an interrupted or running backup), which
//!    is not damage;
//! 5. with `--read-data` or a subset: download packs and verify each one's hash, header
//!    and every blob ([`data`]);
//! 6. read every snapshot and walk its trees: every tree must open and decode, every
//!    blob must be indexed in a pack that is there ([`trees`]). Each damaged object
//!    collects the snapshots and paths it damages.
//!
//! Check writes nothing and takes no lock, so it never blocks a backup (invariant 3).
//! It runs beside prune without reporting prune's work as damage: an index file that
//! vanishes is replaced by taking the listing again; a pack that is gone is reported
//! only when an index file of a fresh listing (not superseded) still names it; a
//! snapshot that vanished is not damage.

mod data;
mod index;
pub mod subset;
mod trees;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{self, BlobType, KeyFile, Snapshot, aad, names};
use crate::id::{BlobId, Id, KeyId, PackId, SnapshotId};
use crate::repository::Repository;
pub(crate) use index::{MemIndex, PackState};
pub use subset::ReadData;
pub(crate) use trees::{TreeReader, reason as reason_of};

/// At most this many paths are listed per damaged object; the rest are counted.
const MAX_PATHS: usize = 1000;

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct CheckProgress {
    pub packs_total: AtomicU64,
    pub packs_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// Kinds of damage (the `kind` field of the JSON report and the metrics' label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// A key file does not decode.
    Key,
    /// An index file cannot be read, opened or decoded.
    Index,
    /// An indexed pack is not in the repository.
    PackMissing,
    /// A pack's size differs from its index entry (truncated).
    PackSize,
    /// A pack's bytes do not hash to its name, or its header is unreadable or disagrees
    /// with the index.
    Pack,
    /// A blob fails authentication, decompression or its id check.
    Blob,
    /// A blob a snapshot needs is in no index file (or only in packs that are gone).
    BlobMissing,
    /// A tree blob opens but does not decode as a tree.
    Tree,
    /// A snapshot object cannot be read or opened.
    Snapshot,
    /// Two index entries disagree (a blob with two sizes, a pack with two sizes).
    Conflict,
}

impl DamageKind {
    pub const ALL: [DamageKind; 10] = [
        DamageKind::Key,
        DamageKind::Index,
        DamageKind::PackMissing,
        DamageKind::PackSize,
        DamageKind::Pack,
        DamageKind::Blob,
        DamageKind::BlobMissing,
        DamageKind::Tree,
        DamageKind::Snapshot,
        DamageKind::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Key => "key",
            DamageKind::Index => "index",
            DamageKind::PackMissing => "pack_missing",
            DamageKind::PackSize => "pack_size",
            DamageKind::Pack => "pack",
            DamageKind::Blob => "blob",
            DamageKind::BlobMissing => "blob_missing",
            DamageKind::Tree => "tree",
            DamageKind::Snapshot => "snapshot",
            DamageKind::Conflict => "conflict",
        }
    }
}

/// A place in a snapshot that a damaged object makes unrestorable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub snapshot: SnapshotId,
    /// Absolute path in the snapshot (`/` for the whole snapshot).
    pub path: String,
}

/// One damaged object and what it damages.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub kind: DamageKind,
    /// The object on the store: `data/ab/ab12…`, `index/…`, `snapshots/…`, `keys/…`,
    /// or `data blob …` / `tree blob …` for a blob no index locates.
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobId>,
    pub message: String,
    /// Snapshots with at least one path damaged by this object.
    pub snapshots: Vec<SnapshotId>,
    /// Damaged paths (at most 1000; `more_paths` counts the rest).
    pub paths: Vec<Affected>,
    pub more_paths: u64,
}

/// A pack no index file names.
#[derive(Debug, Clone, Serialize)]
pub struct Unreferenced {
    pub name: String,
    pub size: u64,
}

/// Counts of a check.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckStats {
    pub snapshots: u64,
    pub index_files: u64,
    pub packs: u64,
    pub blobs: u64,
    /// Distinct trees opened and walked.
    pub trees: u64,
    pub unreferenced_packs: u64,
    pub unreferenced_bytes: u64,
    /// Packs downloaded and verified by the data check, and their bytes.
    pub packs_verified: u64,
    pub bytes_verified: u64,
    pub read_data: String,
    pub duration_ms: u64,
}

/// The outcome of a check.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub damage: Vec<Damage>,
    pub unreferenced_packs: Vec<Unreferenced>,
    /// Things that are not damage but worth knowing (changes by a concurrent prune).
    pub notes: Vec<String>,
    pub stats: CheckStats,
    /// The snapshots read (for metrics).
    #[serde(skip)]
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// Damaged objects by kind, every kind present (zero when none).
    pub fn counts(&self) -> Vec<(DamageKind, u64)> {
        DamageKind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    self.damage.iter().filter(|d| d.kind == *k).count() as u64,
                )
            })
            .collect()
    }
}

/// State of one check: the in-memory index, what was found so far, and caches.
pub(crate) struct Checker<'r> {
    pub repo: &'r Repository,
    pub idx: MemIndex,
    pub damage: Vec<Damage>,
    /// (pack, blob) places that failed verification -> damage.
    pub(crate) bad_places: HashMap<(u32, u32), usize>,
    /// Missing or truncated packs -> damage.
    pub(crate) pack_damage: HashMap<u32, usize>,
    /// Blobs no index locates -> damage.
    pub(crate) missing: HashMap<(BlobType, BlobId), usize>,
    pub(crate) trees: TreeReader,
    /// Walked trees: true when something below is damaged.
    pub(crate) tree_memo: HashMap<BlobId, bool>,
    pub notes: Vec<String>,
    pub stats: CheckStats,
    pub progress: &'r CheckProgress,
    unreferenced_list: Option<Vec<Unreferenced>>,
    /// Readings of the index taken again for blobs found nowhere.
    rereads: usize,
}

/// At most this many readings of the index again per check (see `find_blob`).
const MAX_REREADS: usize = 3;

/// Where a blob can be read from, as far as the check knows.
pub(crate) enum Place {
    Ok,
    Bad(usize),
    Gone,
}

impl<'r> Checker<'r> {
    pub fn new(repo: &'r Repository, progress: &'r CheckProgress) -> Self {
        Checker {
            repo,
            idx: MemIndex::default(),
            damage: Vec::new(),
            bad_places: HashMap::new(),
            pack_damage: HashMap::new(),
            missing: HashMap::new(),
            trees: TreeReader::new(repo.config().pack_size),
            tree_memo: HashMap::new(),
            notes: Vec::new(),
            stats: CheckStats::default(),
            progress,
            unreferenced_list: None,
            rereads: 0,
        }
    }

    fn connections(&self) -> usize {
        self.repo.options().connections.max(1)
    }

    pub fn add_damage(
        &mut self,
        kind: DamageKind,
        object: String,
        blob: Option<BlobId>,
        message: String,
    ) -> usize {
        self.damage.push(Damage {
            kind,
            object,
            blob,
            message,
            snapshots: Vec::new(),
            paths: Vec::new(),
            more_paths: 0,
        });
        self.damage.len() - 1
    }

    /// Record that damage `d` affects `path` (raw bytes; empty for the root) of `snap`.
    pub fn affect(&mut self, d: usize, snap: SnapshotId, path: &[u8]) {
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            String::from_utf8_lossy(path).into_owned()
        };
        let dm = &mut self.damage[d];
        if dm.snapshots.last() != Some(&snap) && !dm.snapshots.contains(&snap) {
            dm.snapshots.push(snap);
        }
        let a = Affected {
            snapshot: snap,
            path,
        };
        if dm.paths.last() == Some(&a) {
            return;
        }
        if dm.paths.len() < MAX_PATHS {
            dm.paths.push(a);
        } else {
            dm.more_paths += 1;
        }
    }

    /// Every key file decodes (the one in use opened already).
    fn check_keys(&mut self) -> Result<()> {
        let backend = self.repo.backend().clone();
        let ids: Vec<KeyId> = self
            .repo
            .block_on(crate::backend::list_ids(backend.as_ref(), names::KEYS))?;
        for id in ids {
            let name = names::key(&id);
            match self
                .repo
                .block_on(backend.get(&name))
                .and_then(|b| KeyFile::from_bytes(&name, &b))
            {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => {
                    self.add_damage(
                        DamageKind::Key,
                        name,
                        None,
                        format!("{e}; remove it with `cairn key remove` if no password needs it"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Compare packs added by a later reading of the index with `data/`.
    fn reclassify(&mut self) {
        if self.idx.packs.iter().any(|p| p.state == PackState::Unknown) {
            if let Ok(listed) = self.list_packs() {
                let absent = self.classify(&listed);
                if !absent.is_empty() {
                    let _ = self.refresh_index();
                    self.settle_absent(&absent);
                }
                self.record_wrong_sizes();
            }
        }
    }

    /// Read `index/` (again) from the store.
    pub fn refresh_index(&mut self) -> Result<()> {
        let (backend, key) = (self.repo.backend().clone(), self.repo.key().clone());
        let conns = self.connections();
        self.repo.block_on(self.idx.refresh(&backend, &key, conns))
    }

    pub(crate) fn list_packs(&self) -> Result<HashMap<PackId, u64>> {
        self.repo
            .block_on(crate::backend::list_packs(self.repo.backend().as_ref()))
    }

    /// Compare the indexed packs with `data/`; returns the unreferenced packs.
    fn check_packs(&mut self) -> Result<Vec<Unreferenced>> {
        let mut listed = self.list_packs()?;
        let absent: Vec<u32> = self.classify(&listed);
        if !absent.is_empty() {
            // Prune may have replaced index files and removed packs since the index was
            // read: look again before calling anything missing. Packs named by index
            // files read now were written before those files, so list data/ after.
            self.refresh_index()?;
            listed = self.list_packs()?;
            // Packs still absent are still `Unknown`, so they come back here.
            let absent = self.classify(&listed);
            self.settle_absent(&absent);
        }
        self.record_wrong_sizes();
        let mut unreferenced: Vec<Unreferenced> = listed
            .iter()
            .filter(|(id, _)| !self.idx.pack_pos.contains_key(id))
            .map(|(id, size)| Unreferenced {
                name: names::pack(id),
                size: *size,
            })
            .collect();
        unreferenced.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(unreferenced)
    }

    /// A damage for each pack of the wrong size not reported yet (also those a later
    /// reading of the index added), which [`Self::place`] names for its blobs.
    fn record_wrong_sizes(&mut self) {
        let wrong: Vec<(u32, String, String)> = self
            .idx
            .packs
            .iter()
            .enumerate()
            .filter(|(pos, _)| !self.pack_damage.contains_key(&(*pos as u32)))
            .filter_map(|(pos, p)| match p.state {
                PackState::WrongSize(actual) => {
                    let what = if actual < p.size { " (truncated)" } else { "" };
                    let msg = format!(
                        "is {actual} bytes, index/{} says {}{what}; blobs past the end are lost",
                        p.index, p.size
                    );
                    Some((pos as u32, names::pack(&p.id), msg))
                }
                _ => None,
            })
            .collect();
        for (pos, name, msg) in wrong {
            let d = self.add_damage(DamageKind::PackSize, name, None, msg);
            self.pack_damage.insert(pos, d);
        }
    }

    /// Set the state of packs not compared yet; returns those not listed.
    fn classify(&mut self, listed: &HashMap<PackId, u64>) -> Vec<u32> {
        let mut absent = Vec::new();
        for (pos, p) in self.idx.packs.iter_mut().enumerate() {
            if p.state != PackState::Unknown {
                continue;
            }
            p.state = match listed.get(&p.id) {
                None => {
                    absent.push(pos as u32);
                    continue;
                }
                Some(&s) if s != p.size => PackState::WrongSize(s),
                Some(_) => PackState::Present,
            };
        }
        absent
    }

    /// After a fresh listing of `index/`: absent packs a current index file names are
    /// missing (damage); the others were removed by a prune (not damage).
    pub fn settle_absent(&mut self, absent: &[u32]) {
        let named = self.idx.named_by_current();
        for &pos in absent {
            let p = &mut self.idx.packs[pos as usize];
            if named.contains(&pos) {
                p.state = PackState::Missing;
                let msg = format!(
                    "not in the repository, but index/{} names it ({} blobs)",
                    p.index,
                    p.blobs.len()
                );
                let name = names::pack(&p.id);
                let d = self.add_damage(DamageKind::PackMissing, name, None, msg);
                self.pack_damage.insert(pos, d);
            } else {
                p.state = PackState::Gone;
                self.notes.push(format!(
                    "{} was removed during the check, with the index files naming it (a concurrent prune)",
                    names::pack(&p.id)
                ));
            }
        }
    }

    pub(crate) fn report_index(&mut self) {
        let mut damaged: Vec<(String, String)> = self
            .idx
            .damaged
            .iter()
            .map(|(id, e)| (names::index(id), e.to_string()))
            .collect();
        damaged.sort();
        for (name, e) in damaged {
            self.add_damage(
                DamageKind::Index,
                name,
                None,
                format!("{e}; its blobs look absent until `cairn repair index` rebuilds the index from the packs"),
            );
        }
        for c in std::mem::take(&mut self.idx.conflicts) {
            self.add_damage(DamageKind::Conflict, c.object, c.blob, c.message);
        }
    }

    /// How a place of a blob stands.
    pub fn place(&self, p: u32, b: u32) -> Place {
        if let Some(&d) = self.bad_places.get(&(p, b)) {
            return Place::Bad(d);
        }
        let pack = &self.idx.packs[p as usize];
        match pack.state {
            PackState::Gone => Place::Gone,
            PackState::Missing => Place::Bad(self.pack_damage[&p]),
            PackState::WrongSize(actual) => {
                let e = &pack.blobs[b as usize];
                if e.offset + e.length as u64 <= actual {
                    Place::Ok
                } else {
                    Place::Bad(self.pack_damage[&p])
                }
            }
            PackState::Present | PackState::Unknown => Place::Ok,
        }
    }

    /// A readable place of a blob, or the damage that makes it unreadable.
    pub fn find_blob(
        &mut self,
        ty: BlobType,
        id: &BlobId,
    ) -> std::result::Result<(u32, u32), usize> {
        let mut bad = None;
        let mut gone = false;
        for (p, b) in self.idx.places(ty, id) {
            match self.place(p, b) {
                Place::Ok => return Ok((p, b)),
                Place::Bad(d) => {
                    bad.get_or_insert(d);
                }
                Place::Gone => gone = true,
            }
        }
        if let Some(d) = bad {
            return Err(d);
        }
        if let Some(&d) = self.missing.get(&(ty, *id)) {
            return Err(d);
        }
        // A prune may have moved it between our readings of `deletions/` and `index/`
        // (a record carried out, its pack put back into a new index file): read both
        // again, a few times per check, before calling it missing.
        if !gone && self.rereads < MAX_REREADS {
            self.rereads += 1;
            if self.refresh_index().is_ok() {
                self.reclassify();
                if !self.idx.places(ty, id).is_empty() {
                    return self.find_blob(ty, id);
                }
            }
        }
        let msg = if gone {
            "its pack was removed during the check and no other pack holds it".to_string()
        } else {
            "no index file names it; if index files were lost or damaged, run `cairn repair index`"
                .to_string()
        };
        let d = self.add_damage(
            DamageKind::BlobMissing,
            format!("{ty} blob {id}"),
            Some(*id),
            msg,
        );
        self.missing.insert((ty, *id), d);
        Err(d)
    }

    /// Mark a place as failing verification.
    pub fn mark_bad(&mut self, p: u32, b: u32, reason: String) -> usize {
        let pack = &self.idx.packs[p as usize];
        let e = pack.blobs[b as usize];
        let d = self.add_damage(
            DamageKind::Blob,
            names::pack(&pack.id),
            Some(e.id),
            format!("{} blob {}: {reason}", e.ty, e.id),
        );
        self.bad_places.insert((p, b), d);
        d
    }

    /// Read every snapshot listed; damaged ones are reported, vanished ones skipped.
    pub fn load_snapshots(&mut self, ids: Vec<SnapshotId>) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let repo = self.repo;
        let key = repo.key().clone();
        let results: Vec<(SnapshotId, Result<Snapshot>)> = repo.block_on(
            futures::stream::iter(ids)
                .map(|id| {
                    let (backend, key) = (repo.backend().clone(), key.clone());
                    async move {
                        let name = names::snapshot(&id);
                        let r = match backend.get(&name).await {
                            Ok(bytes) => {
                                if Id::hash_of(&bytes) != id.0 {
                                    Err(Error::integrity(&name, "content does not match its name"))
                                } else {
                                    format::open_object(&key, aad::SNAPSHOT, &name, &bytes)
                                }
                            }
                            Err(e) => Err(e),
                        };
                        (id, r)
                    }
                })
                .buffer_unordered(self.connections() * 2)
                .collect(),
        );
        let mut out = Vec::new();
        for (id, r) in results {
            match r {
                Ok(s) => out.push((id, s)),
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => {
                    let d = self.add_damage(
                        DamageKind::Snapshot,
                        names::snapshot(&id),
                        None,
                        format!("{e}; the snapshot cannot be restored, remove it with `cairn forget {id}`"),
                    );
                    self.damage[d].snapshots.push(id);
                }
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Drop what only concerns snapshots removed while the check ran (a concurrent
    /// forget): their paths are not damage.
    fn forget_vanished(&mut self, checked: &[(SnapshotId, Snapshot)]) -> Result<()> {
        let backend = self.repo.backend().clone();
        let now: HashSet<SnapshotId> = self
            .repo
            .block_on(crate::backend::list_ids(backend.as_ref(), names::SNAPSHOTS))?
            .into_iter()
            .collect();
        let vanished: HashSet<SnapshotId> = checked
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !now.contains(id))
            .collect();
        if vanished.is_empty() {
            return Ok(());
        }
        self.notes.push(format!(
            "{} snapshot(s) were removed while the check ran; damage only they had is not reported",
            vanished.len()
        ));
        self.damage.retain_mut(|d| {
            let had = !d.snapshots.is_empty();
            d.snapshots.retain(|s| !vanished.contains(s));
            d.paths.retain(|a| !vanished.contains(&a.snapshot));
            !(had && d.snapshots.is_empty() && d.kind == DamageKind::BlobMissing)
        });
        Ok(())
    }
}

/// Run a check. Damage is in the report, not an error: `Err` means the check itself
/// could not run (the store unreachable, the repository not opening).
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckReport> {
    let started = Instant::now();
    let mut c = Checker::new(repo, progress);
    let snapshot_ids = c.prepare(opts.read_data)?;
    let snapshots = c.load_snapshots(snapshot_ids)?;
    for (id, s) in &snapshots {
        c.check_snapshot(*id, s.tree)?;
    }
    c.forget_vanished(&snapshots)?;
    c.stats.snapshots = snapshots.len() as u64;
    c.stats.duration_ms = started.elapsed().as_millis() as u64;
    let mut damage = c.damage;
    for d in &mut damage {
        d.snapshots.sort();
        d.snapshots.dedup();
    }
    Ok(CheckReport {
        damage,
        unreferenced_packs: c.unreferenced_list.take().unwrap_or_default(),
        notes: c.notes,
        stats: c.stats,
        snapshots,
    })
}

impl Checker<'_> {
    /// Phases 1 to 5; returns the snapshots listed before the index was read.
    pub fn prepare(&mut self, read_data: ReadData) -> Result<Vec<SnapshotId>> {
        let backend = self.repo.backend().clone();
        let snapshot_ids: Vec<SnapshotId> = self
            .repo
            .block_on(crate::backend::list_ids(backend.as_ref(), names::SNAPSHOTS))?;
        self.check_keys()?;
        self.refresh_index()?;
        let unreferenced = self.check_packs()?;
        self.report_index();
        self.stats.index_files = self.idx.index_files() as u64;
        self.stats.packs = self.idx.packs.len() as u64;
        self.stats.blobs = self.idx.blob_count() as u64;
        self.stats.unreferenced_packs = unreferenced.len() as u64;
        self.stats.unreferenced_bytes = unreferenced.iter().map(|u| u.size).sum();
        self.stats.read_data = read_data.to_string();
        self.unreferenced_list = Some(unreferenced);
        if read_data != ReadData::None {
            self.read_data(read_data)?;
        }
        Ok(snapshot_ids)
    }
}

/// The index files in the repository now (for [`verify_new_packs`]).
pub fn list_index_files(repo: &Repository) -> Result<HashSet<crate::id::IndexId>> {
    let backend = repo.backend().clone();
    Ok(repo
        .block_on(crate::backend::list_ids(backend.as_ref(), names::INDEX))?
        .into_iter()
        .collect())
}

/// What [`verify_new_packs`] read and found.
#[derive(Debug, Default)]
pub struct Verified {
    pub packs: u64,
    pub bytes: u64,
    pub damage: Vec<Damage>,
}

/// Download and verify every pack named by an index file not in `before` (the listing
/// taken when a backup started): `backup --verify-new` reads back what it wrote before
/// it writes its snapshot. Packs of other backups that ran meanwhile are read too.
pub fn verify_new_packs(
    repo: &Repository,
    before: HashSet<crate::id::IndexId>,
) -> Result<Verified> {
    let progress = CheckProgress::default();
    let mut c = Checker::new(repo, &progress);
    c.idx.skip = before;
    c.refresh_index()?;
    for p in &mut c.idx.packs {
        p.state = PackState::Present;
    }
    c.report_index();
    c.read_data(ReadData::All)?;
    Ok(Verified {
        packs: c.stats.packs_verified,
        bytes: c.stats.bytes_verified,
        damage: c.damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Node, NodeKind, Snapshot, Timestamp, Tree};

    /// A truncated pack that only a later reading of the index names (its index file
    /// appeared during the check) is damage like any other: it was classified without
    /// a damage entry, and looking up its blobs then panicked.
    #[test]
    fn a_truncated_pack_a_later_index_reading_adds_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path(), 1)
            .into_indexed()
            .unwrap();
        let w = repo.writer();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let (blob, _) = w.add(BlobType::Data, &content).unwrap();
        let file = Node {
            name: b"f".to_vec(),
            kind: NodeKind::File {
                content: vec![blob],
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            size: content.len() as u64,
            inode: 1,
            device: 1,
            links: 1,
            xattrs: Vec::new(),
        };
        let (tree, _) = w
            .add(BlobType::Tree, &Tree::new(vec![file]).encode())
            .unwrap();
        w.finish().unwrap();
        let snap = repo
            .save_snapshot(&Snapshot::new(tree, vec!["/x".into()]))
            .unwrap();

        let root = dir.path().join("repo");
        let index_dir = root.join("index");
        let aside = dir.path().join("aside");
        std::fs::rename(&index_dir, &aside).unwrap();
        std::fs::create_dir(&index_dir).unwrap();
        let progress = CheckProgress::default();
        let mut c = Checker::new(&repo, &progress);
        c.prepare(ReadData::None).unwrap();
        // The index comes back with its data pack truncated, before the tree walk.
        std::fs::remove_dir(&index_dir).unwrap();
        std::fs::rename(&aside, &index_dir).unwrap();
        let loc = repo.locate(BlobType::Data, &blob).unwrap();
        let hex = loc.pack.to_hex();
        let pack = root.join("data").join(&hex[..2]).join(&hex);
        let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
        f.set_len(loc.offset + 10).unwrap();

        c.check_snapshot(snap, tree).unwrap();
        let d = c
            .damage
            .iter()
            .find(|d| d.kind == DamageKind::PackSize)
            .unwrap_or_else(|| panic!("no pack size damage: {:?}", c.damage));
        assert!(d.object.ends_with(&hex), "{d:?}");
    }
}
