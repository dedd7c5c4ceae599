//! Prune: remove what no snapshot needs, beside running backups.
//!
//! One run, holding the prune lock (at most one prune runs):
//!
//! 1. Read the locks. Operations already finished or stale now (`done`) cannot add
//!    snapshots this run does not see.
//! 2. Read every snapshot (refusing when one cannot be read: its blobs would look
//!    unused) and walk their trees: the used blobs.
//! 3. Read every index file from the store and list `data/`.
//! 4. Finish earlier runs: a deletion record whose backups have all ended is carried
//!    out; a pack in it holding a blob that is now used (a waited-for backup came to
//!    use it) and in no other pack goes back into the index instead.
//! 5. Plan: packs with no used blob go; partly used packs are repacked while unused
//!    space is above `--max-unused` and within `--max-repack`; packs in no index (an
//!    interrupted backup's, or one still uploading) are marked too.
//! 6. Repack, write the consolidated index, remove the index files it replaces.
//! 7. Read the locks again: every backup not in `done` may have read the old index,
//!    so a deletion record names them and the packs go only when they have ended. When
//!    there are none, the packs go now.
//!
//! Every step leaves the repository consistent when killed; a rerun picks up where it
//! stopped (`docs/design.md`, "Prune beside backups", has the argument).
//!
//! The working sets (what each pack holds, the used blobs, which copy of each is kept)
//! live in a RocksDB database of their own ([`scratch`]), so that memory does not grow
//! with the repository; what stays in memory is per pack, or what this run removes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{
    self, BlobType, Deletion, IndexFile, IndexPack, LockKind, NodeKind, PackBlob, aad, names,
};
use crate::id::{BlobId, Id, IndexId, PackId, SnapshotId};
use crate::repository::{Announcement, IndexedRepository, Locks, REFRESH, Repository, STALE_AFTER};

mod scratch;
use scratch::{Scratch, Set};

/// How much unused space to tolerate before repacking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// Percent of the repository's size after pruning.
    Percent(f64),
    Bytes(u64),
    Unlimited,
}

impl std::str::FromStr for MaxUnused {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("--max-unused {s}: not a percentage")))?;
            if !(0.0..100.0).contains(&p) {
                return Err(Error::Config(format!(
                    "--max-unused {s}: use 0% up to below 100%"
                )));
            }
            return Ok(MaxUnused::Percent(p));
        }
        crate::util::parse_size(s)
            .map(MaxUnused::Bytes)
            .map_err(|e| Error::Config(format!("--max-unused: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    /// At most this many bytes of packs are repacked in one run.
    pub max_repack: Option<u64>,
    pub dry_run: bool,
    /// Locks not refreshed for this long are ignored.
    pub stale_after: Duration,
    /// Wait this long for another prune to finish.
    pub retry_lock: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Percent(5.0),
            max_repack: None,
            dry_run: false,
            stale_after: crate::repository::STALE_AFTER,
            retry_lock: Duration::ZERO,
        }
    }
}

/// What a run found, planned and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub used_blobs: usize,
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Packs with no used blob.
    pub delete_packs: Vec<PackId>,
    pub delete_bytes: u64,
    /// Partly used packs whose used blobs move to new packs.
    pub repack_packs: Vec<PackId>,
    pub repack_download_bytes: u64,
    pub repack_upload_bytes: u64,
    /// Packs in no index file (an interrupted backup's, or one still uploading).
    pub unindexed_packs: Vec<PackId>,
    pub unindexed_bytes: u64,
    /// Packs in no index whose header cannot be read: left alone, for `check`.
    pub unreadable_packs: Vec<String>,
    /// Unused bytes left in place after this run.
    pub unused_bytes_after: u64,
    pub index_files_before: usize,
    pub index_files_after: usize,
    /// Earlier deletion records carried out in this run, packs removed and put back.
    pub finished_deletions: usize,
    pub packs_removed: usize,
    pub bytes_freed: u64,
    pub packs_restored: usize,
    /// Deletion records still waiting, and for what.
    pub waiting: Vec<String>,
    /// Stale locks seen (ignored), by description.
    pub stale_locks: Vec<String>,
    pub lock_objects_removed: usize,
    /// Temporary packs a killed backup left in a local repository's `tmp/`, removed.
    pub tmp_files_removed: usize,
    pub duration_ms: u64,
}

/// Run a prune with `opts`.
pub fn prune(repo: Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let started = Instant::now();
    let (me, locks) = repo.lock_exclusive(opts.stale_after, opts.retry_lock)?;
    // Snapshots before the index: a backup writes its index files before its snapshot,
    // so every tree of a listed snapshot is in the index read after.
    let result = repo.snapshots_and_damage().and_then(|snaps| {
        let repo = repo.into_indexed()?;
        let mut r = run(&repo, snaps, opts, &me, &locks)?;
        if !opts.dry_run {
            // Who is at work now, read once for both clean-ups.
            if let Ok(now) = repo.locks(opts.stale_after, Some(me.op())) {
                r.lock_objects_removed = clean_locks(&repo, &now, &me);
                r.tmp_files_removed = clean_staging(&repo, &now, opts);
            }
        }
        r.duration_ms = started.elapsed().as_millis() as u64;
        Ok(r)
    });
    me.release();
    result
}

/// Stop before the next step that writes or removes when this prune's lock went
/// unrefreshed long enough for another prune to take it for dead (stopped, or the store
/// unreachable): two prunes at once could each remove what the other keeps.
fn fresh(me: &Announcement) -> Result<()> {
    me.check_fresh(STALE_AFTER - REFRESH)
}

/// Remove what killed backups left in a local repository's `tmp/`: packs not written to
/// for longer than the stale timeout, and only while no backup runs (a live one may
/// leave a pack untouched that long: a `pg_dump` waiting on a table lock).
fn clean_staging(repo: &Repository, locks: &Locks, opts: &PruneOptions) -> usize {
    let Some(dir) = repo.backend().staging_dir() else {
        return 0;
    };
    if locks.running(LockKind::Backup).next().is_some() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > opts.stale_after));
        let ours = e.file_name().as_encoded_bytes().starts_with(b"pack-");
        if ours && old {
            match std::fs::remove_file(e.path()) {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!("{}: cannot remove: {err}", e.path().display()),
            }
        }
    }
    removed
}

/// Remove the lock objects of operations that ended or went stale.
fn clean_locks(repo: &Repository, locks: &Locks, me: &Announcement) -> usize {
    let names: Vec<String> = locks
        .ops
        .values()
        .filter(|o| o.op != me.op() && o.is_done())
        .flat_map(|o| o.objects.clone())
        .collect();
    let n = names.len();
    let removed = repo.block_on(async {
        futures::stream::iter(names)
            .map(|n| async move { repo.backend().delete(&n).await })
            .buffer_unordered(repo.options().connections.max(1))
            .collect::<Vec<_>>()
            .await
    });
    n - removed.iter().filter(|r| r.is_err()).count()
}

/// The packs of the index; what they hold is in the scratch database.
type Packs = BTreeMap<PackId, PackInfo>;

/// What prune keeps in memory of a pack.
#[derive(Debug, Clone, Copy)]
struct PackInfo {
    /// Size on the store.
    size: u64,
    /// Sealed bytes of all its blobs (the rest is its header).
    blob_bytes: u64,
}

impl PackInfo {
    fn of(p: &IndexPack) -> Self {
        PackInfo {
            size: p.size,
            blob_bytes: p.blobs.iter().map(|b| b.length as u64).sum(),
        }
    }
}

/// A record's packs waiting for operations, for the report.
fn waiting_line(del_id: &Id, packs: usize, ops: &[&Id], locks: &Locks) -> String {
    let who: Vec<String> = ops
        .iter()
        .filter_map(|op| locks.ops.get(*op).map(|o| o.describe()))
        .collect();
    format!(
        "{packs} packs of {} wait for {}",
        names::deletion(del_id),
        who.join(", ")
    )
}

#[allow(clippy::type_complexity)]
fn run(
    repo: &IndexedRepository,
    (snapshots, damaged): (Vec<(SnapshotId, format::Snapshot)>, Vec<(String, Error)>),
    opts: &PruneOptions,
    me: &Announcement,
    locks: &Locks,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        stale_locks: locks.stale().map(|o| o.describe()).collect(),
        ..Default::default()
    };
    for s in &report.stale_locks {
        tracing::warn!("ignoring stale lock: {s}");
    }
    // An unreadable lock may be a running backup's: going on could remove its data.
    if let Some(first) = locks.unreadable.first() {
        let msg = format!(
            "{} lock object(s) cannot be read, so prune cannot tell whether the operation \
             behind them still runs; it stops. Once no backup or prune is running, remove \
             them with `cairn unlock`",
            locks.unreadable.len()
        );
        if !opts.dry_run {
            return Err(Error::integrity(first.clone(), msg));
        }
        tracing::warn!("{first}: {msg}");
    }
    let done: HashSet<Id> = locks
        .ops
        .values()
        .filter(|o| o.is_done())
        .map(|o| o.op)
        .collect();
    let ended = |op: &Id| done.contains(op) || !locks.ops.contains_key(op);

    let started = Instant::now();
    let step = |what: &str| tracing::debug!("prune: {what} after {:.1?}", started.elapsed());
    // 2. Snapshots and the blobs they use.
    if let Some((name, e)) = damaged.first() {
        return Err(Error::integrity(
            name.clone(),
            format!(
                "{e}; prune stops, because the blobs of an unreadable snapshot would look unused. \
                 Run `cairn check`, then `cairn repair snapshots` or remove the object ({} damaged)",
                damaged.len()
            ),
        ));
    }
    report.snapshots = snapshots.len();

    // 3. The index as the store has it, and the packs there are. What each pack holds
    // goes to the scratch database as its index file arrives.
    let scratch = Scratch::create(&repo.cache_dir())?;
    let mut packs: Packs = BTreeMap::new();
    // Each index file read, with the number of blobs it names.
    let mut index_files: Vec<(IndexId, usize)> = Vec::new();
    // For a pack two index files name, the entry of the file with the lowest id is
    // taken, whichever arrives first.
    let mut named_by: HashMap<PackId, IndexId> = HashMap::new();
    let bad = repo.for_each_index_file(|id, f| {
        index_files.push((id, f.packs.iter().map(|p| p.blobs.len()).sum()));
        for p in &f.packs {
            match named_by.entry(p.id) {
                Entry::Vacant(e) => {
                    e.insert(id);
                }
                Entry::Occupied(mut e) if id < *e.get() => {
                    e.insert(id);
                    scratch.remove_pack(&p.id)?;
                }
                Entry::Occupied(_) => continue,
            }
            packs.insert(p.id, PackInfo::of(p));
            scratch.add_pack(p)?;
        }
        Ok(())
    })?;
    drop(named_by);
    if let Some((name, e)) = bad.first() {
        return Err(Error::integrity(
            name.clone(),
            format!("{e}; prune stops. Run `cairn check`, then `cairn repair index`"),
        ));
    }
    index_files.sort();
    report.index_files_before = index_files.len();
    let on_store: HashMap<PackId, u64> =
        repo.block_on(crate::backend::list_packs(repo.backend().as_ref()))?;
    let missing: Vec<_> = packs.keys().filter(|p| !on_store.contains_key(p)).collect();
    if let Some(p) = missing.first() {
        return Err(Error::integrity(
            names::pack(p),
            format!(
                "the index names it (and {} more packs) but it is not in the repository; \
                 prune stops. Run `cairn check` to see what is damaged, then `cairn repair \
                 snapshots`",
                missing.len() - 1
            ),
        ));
    }
    if let Some((p, info)) = packs.iter().find(|(p, i)| on_store[p] != i.size) {
        return Err(Error::integrity(
            names::pack(p),
            format!(
                "{} bytes on the store, {} in the index; prune stops. Run `cairn check --read-data`",
                on_store[p], info.size
            ),
        ));
    }

    step("index read");
    used_blobs(repo, &snapshots, &scratch)?;

    step("index and used blobs recorded");
    // 4. Earlier deletion records.
    let mut pending_packs: HashSet<PackId> = HashSet::new();
    let mut rescue_files: Vec<IndexId> = Vec::new();
    // Provisional records of a prune that died: their packs are marked again below.
    let mut provisional: Vec<(Id, Deletion)> = Vec::new();
    for (del_id, del) in read_deletions(repo)? {
        if del.provisional {
            scratch.insert_all(Set::Waiting, blobs_of(&del.packs))?;
            pending_packs.extend(del.packs.iter().map(|p| p.id));
            provisional.push((del_id, del));
            continue;
        }
        let waiting: Vec<_> = del.wait_for.iter().filter(|op| !ended(op)).collect();
        if !waiting.is_empty() {
            let line = waiting_line(&del_id, del.packs.len(), &waiting, locks);
            report.waiting.push(line);
            pending_packs.extend(del.packs.iter().map(|p| p.id));
            // A snapshot of a waited-for backup that ended may use these; they stay
            // until the record is carried out, which puts such packs back.
            scratch.insert_all(Set::Waiting, blobs_of(&del.packs))?;
            continue;
        }
        if opts.dry_run {
            report.finished_deletions += 1;
            continue;
        }
        fresh(me)?;
        let indexed = |p: &PackId| packs.contains_key(p);
        let (restored, removed, freed, rescue) =
            carry_out(repo, &del_id, &del, &scratch, &indexed, &on_store)?;
        if let Some((id, file)) = rescue {
            for p in &file.packs {
                scratch.add_pack(p)?;
                packs.insert(p.id, PackInfo::of(p));
            }
            rescue_files.push(id);
        }
        report.finished_deletions += 1;
        report.packs_restored += restored;
        report.packs_removed += removed;
        report.bytes_freed += freed;
    }

    step("earlier deletion records handled");
    // 5. Plan.
    let mut missing_blobs = 0;
    let mut first_missing = None;
    scratch.for_each_used(|ty, id, _, holders| {
        report.used_blobs += 1;
        if holders.is_empty() && !scratch.contains(Set::Waiting, ty, &id)? {
            missing_blobs += 1;
            first_missing.get_or_insert((ty, id));
        }
        Ok(())
    })?;
    if let Some((ty, id)) = first_missing {
        return Err(Error::integrity(
            format!("{ty} blob {id}"),
            format!(
                "snapshots use it (and {} more blobs) but no index names it; prune stops. Run \
                 `cairn check`: `cairn repair index` finds blobs in packs the index lost, \
                 `cairn repair snapshots` leaves out what is gone",
                missing_blobs - 1
            ),
        ));
    }
    let plan = plan(&packs, &scratch, opts, &mut report)?;
    // Repacking reads only the kept blobs (and short gaps between them).
    let pieces = pieces(&scratch, &plan)?;
    report.repack_download_bytes = pieces.iter().map(|p| p.end - p.start).sum();
    let unindexed: Vec<(PackId, u64)> = on_store
        .iter()
        .filter(|(p, _)| !packs.contains_key(p) && !pending_packs.contains(p))
        .map(|(p, s)| (*p, *s))
        .collect();
    let mut marked: Vec<IndexPack> = Vec::new();
    for (p, size) in &unindexed {
        match repo.block_on(repo.read_pack_header(p, *size)) {
            Ok(h) => {
                report.unindexed_packs.push(*p);
                report.unindexed_bytes += size;
                marked.push(IndexPack {
                    id: *p,
                    size: *size,
                    blobs: h.blobs,
                });
            }
            Err(e @ Error::Backend { .. }) => return Err(e),
            Err(Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!("leaving {}: {e}", names::pack(p));
                report.unreadable_packs.push(names::pack(p));
            }
        }
    }
    report.unindexed_packs.sort();
    if opts.dry_run {
        report.index_files_after = report.index_files_before;
        return Ok(report);
    }

    step("planned");
    // 6. Repack, then one consolidated index in place of all the files read. Rewriting
    // the index makes every client rebuild its cache, so it happens only when packs go
    // or small index files (a backup writes at least one) have piled up.
    fresh(me)?;
    let (new_files, uploaded) = repack(repo, &scratch, pieces)?;
    report.repack_upload_bytes = uploaded;
    let gone: HashSet<PackId> = plan.delete.iter().chain(&plan.repack).copied().collect();
    let small = index_files
        .iter()
        .filter(|(_, blobs)| *blobs < BLOBS_PER_INDEX_FILE / 2)
        .count();
    step("repacked");
    // 7. Mark. A provisional record first, so that readers find the packs leaving
    // the index at every moment; the final one once the backups to wait for are known.
    for id in &gone {
        marked.push(IndexPack {
            id: *id,
            size: packs[id].size,
            blobs: scratch.pack_blobs(id)?,
        });
    }
    for (_, del) in &provisional {
        marked.extend(
            del.packs
                .iter()
                .filter(|p| !packs.contains_key(&p.id))
                .cloned(),
        );
    }
    // A pack in the records of two dead prunes is marked once.
    let mut seen = HashSet::new();
    marked.retain(|p| seen.insert(p.id));
    drop(seen);
    let mut replaced: Vec<Id> = provisional.iter().map(|(id, _)| *id).collect();
    fresh(me)?;
    if !gone.is_empty() {
        let record = Deletion::provisional(marked);
        replaced.push(write_deletion(repo, &record)?);
        marked = record.packs;
    }
    // The new packs join the working set: the consolidated index names them.
    let mut superseded: Vec<IndexId> = index_files.iter().map(|(id, _)| *id).collect();
    superseded.extend(&rescue_files);
    for (id, f) in new_files {
        for p in &f.packs {
            scratch.add_pack(p)?;
            packs.insert(p.id, PackInfo::of(p));
        }
        superseded.push(id);
    }
    if gone.is_empty() && small < SMALL_INDEX_FILES {
        report.index_files_after = index_files.len() + rescue_files.len();
    } else {
        let written = write_consolidated(repo, &scratch, &packs, &gone, &superseded)?;
        report.index_files_after = written.len();
        let written: HashSet<IndexId> = written.into_iter().collect();
        let old = superseded.iter().filter(|id| !written.contains(id));
        delete_all(repo, old.map(names::index).collect())?;
    }
    step("index written");
    if marked.is_empty() {
        return Ok(report);
    }
    // What the index holds now, for packs removed at once.
    let indexed = |p: &PackId| packs.contains_key(p) && !gone.contains(p);
    let now = Marked {
        scratch: &scratch,
        indexed: &indexed,
        on_store: &on_store,
    };
    mark_and_remove(repo, opts, me, &done, marked, &replaced, now, report)
}

/// The blobs of `packs`, as the scratch database's sets take them.
fn blobs_of(packs: &[IndexPack]) -> impl Iterator<Item = (BlobType, &BlobId)> {
    packs
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| (b.ty, &b.id)))
}

/// What removing packs at once checks against.
struct Marked<'a> {
    scratch: &'a Scratch,
    /// Whether the index (after this run's changes) names a pack.
    indexed: &'a dyn Fn(&PackId) -> bool,
    on_store: &'a HashMap<PackId, u64>,
}

fn write_deletion(repo: &IndexedRepository, del: &Deletion) -> Result<Id> {
    let id = Id::random();
    let bytes = format::seal_object(repo.key(), aad::DELETION, 3, del);
    repo.block_on(
        repo.backend()
            .create(&names::deletion(&id), Bytes::from(bytes)),
    )?;
    Ok(id)
}

/// Record `marked` for deletion with the backups that may use them, and remove them at
/// once when there are none.
#[allow(clippy::too_many_arguments)]
fn mark_and_remove(
    repo: &IndexedRepository,
    opts: &PruneOptions,
    me: &Announcement,
    done: &HashSet<Id>,
    marked: Vec<IndexPack>,
    replaced: &[Id],
    state: Marked,
    mut report: PruneReport,
) -> Result<PruneReport> {
    let now = repo.locks(opts.stale_after, Some(me.op()))?;
    let wait_for: Vec<Id> = now
        .ops
        .values()
        .filter(|o| o.kind == LockKind::Backup && !done.contains(&o.op))
        .map(|o| o.op)
        .collect();
    let del = Deletion::new(wait_for.clone(), marked);
    fresh(me)?;
    let del_id = write_deletion(repo, &del)?;
    delete_all(repo, replaced.iter().map(names::deletion).collect())?;
    if wait_for.is_empty() {
        // No backup read the old index; a pack holding a used blob that no kept pack
        // holds (marked again from a dead prune's provisional record) goes back.
        let (restored, removed, freed, _) = carry_out(
            repo,
            &del_id,
            &del,
            state.scratch,
            state.indexed,
            state.on_store,
        )?;
        report.packs_restored += restored;
        report.packs_removed += removed;
        report.bytes_freed += freed;
    } else {
        let ops: Vec<&Id> = wait_for.iter().collect();
        let line = waiting_line(&del_id, del.packs.len(), &ops, &now);
        report.waiting.push(format!(
            "{line}; the next prune after they end removes them"
        ));
    }
    Ok(report)
}

/// Put every blob the snapshots use (their trees, and the data blobs of their files)
/// into the scratch database's used set.
fn used_blobs(
    repo: &IndexedRepository,
    snapshots: &[(SnapshotId, format::Snapshot)],
    scratch: &Scratch,
) -> Result<()> {
    let mut stack: Vec<(BlobId, SnapshotId)> = Vec::new();
    for (sid, s) in snapshots {
        if scratch.insert_new(Set::Used, BlobType::Tree, &s.tree)? {
            stack.push((s.tree, *sid));
        }
    }
    while let Some((tree, sid)) = stack.pop() {
        let t = repo.load_tree(&tree).map_err(|e| match e {
            Error::NotFound { .. } | Error::Integrity { .. } | Error::Format { .. } => {
                Error::integrity(
                    format!("tree {tree} of snapshot {}", sid.short()),
                    format!(
                        "{e}; prune stops, because what this tree references would look unused. \
                         Run `cairn check`"
                    ),
                )
            }
            e => e,
        })?;
        // Data blobs go in one batch per tree, unchecked: writing one again is harmless.
        let mut data = Vec::new();
        for n in &t.nodes {
            match &n.kind {
                NodeKind::Dir { subtree }
                    if scratch.insert_new(Set::Used, BlobType::Tree, subtree)? =>
                {
                    stack.push((*subtree, sid));
                }
                NodeKind::File { content } => {
                    data.extend(content.iter().copied());
                }
                _ => {}
            }
        }
        scratch.insert_all(Set::Used, data.iter().map(|id| (BlobType::Data, id)))?;
    }
    Ok(())
}

/// The packs to delete and to repack. For each used blob, the pack whose copy is kept
/// is recorded in the scratch database.
#[derive(Debug, Default)]
struct Plan {
    delete: Vec<PackId>,
    repack: Vec<PackId>,
}

fn plan(
    packs: &Packs,
    scratch: &Scratch,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<Plan> {
    // Per pack: the bytes of its used blobs.
    let mut used_in: HashMap<PackId, u64> = HashMap::with_capacity(packs.len());
    scratch.for_each_used(|_, _, _, holders| {
        for (p, len) in holders {
            *used_in.entry(*p).or_default() += *len as u64;
        }
        Ok(())
    })?;
    // A blob stored twice (two backups stored it at once) is kept where most of the
    // pack is used.
    let mut order: Vec<(PackId, u64, u64)> = packs
        .iter()
        .map(|(id, i)| (*id, i.size, used_in.get(id).copied().unwrap_or(0)))
        .collect();
    order.sort_by(|a, b| {
        let fa = a.2 as f64 / a.1.max(1) as f64;
        let fb = b.2 as f64 / b.1.max(1) as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    let rank: HashMap<PackId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (id, _, _))| (*id, i))
        .collect();
    drop((order, used_in));
    let mut plan = Plan::default();
    let mut kept_bytes: HashMap<PackId, u64> = HashMap::new();
    let mut keepers = Vec::new();
    scratch.for_each_used(|ty, id, _, holders| {
        let first = holders
            .iter()
            .min_by_key(|(p, _)| rank.get(p).copied().unwrap_or(usize::MAX));
        if let Some((pack, len)) = first {
            *kept_bytes.entry(*pack).or_default() += *len as u64;
            keepers.push((ty, id, *pack));
            if keepers.len() >= 1 << 16 {
                scratch.set_keepers(&keepers)?;
                keepers.clear();
            }
        }
        Ok(())
    })?;
    scratch.set_keepers(&keepers)?;
    drop(keepers);
    let mut partly: Vec<(PackId, u64, u64)> = Vec::new(); // id, size, unused
    for (id, info) in packs {
        report.packs += 1;
        report.pack_bytes += info.size;
        let kept = kept_bytes.get(id).copied().unwrap_or(0);
        let unused = info.blob_bytes.saturating_sub(kept);
        report.used_bytes += kept;
        report.unused_bytes += unused;
        if kept == 0 {
            plan.delete.push(*id);
            report.delete_bytes += info.size;
        } else if unused > 0 {
            partly.push((*id, info.size, unused));
        }
    }
    let mut unused_left: u64 = partly.iter().map(|p| p.2).sum();
    let mut repack_bytes = 0;
    let allowed = match opts.max_unused {
        MaxUnused::Unlimited => u64::MAX,
        MaxUnused::Bytes(b) => b,
        // unused / (used + unused) <= p
        MaxUnused::Percent(p) => (report.used_bytes as f64 * p / (100.0 - p)) as u64,
    };
    partly.sort_by(|a, b| {
        let fa = a.2 as f64 / a.1 as f64;
        let fb = b.2 as f64 / b.1 as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    for (id, size, unused) in partly {
        if unused_left <= allowed {
            break;
        }
        if opts.max_repack.is_some_and(|m| repack_bytes + size > m) {
            continue;
        }
        plan.repack.push(id);
        repack_bytes += size;
        // What moves to new packs (the figure a dry run shows; a run reports what it
        // wrote).
        report.repack_upload_bytes += kept_bytes.get(&id).copied().unwrap_or(0);
        unused_left -= unused;
    }
    report.unused_bytes_after = unused_left;
    report.delete_packs = plan.delete.clone();
    report.repack_packs = plan.repack.clone();
    Ok(plan)
}

/// Copy the kept blobs of the packs to repack into new packs. Returns the index files
/// the writer wrote and the bytes it uploaded.
fn repack(
    repo: &IndexedRepository,
    scratch: &Scratch,
    pieces: Vec<Piece>,
) -> Result<(Vec<(IndexId, IndexFile)>, u64)> {
    if pieces.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let writer = repo.repack_writer();
    let connections = repo.options().connections.max(1);
    // Memory: the pieces in flight, one queued and one being copied, at most
    // MAX_PIECE bytes each.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Piece, Result<Bytes>)>(1);
    let backend = repo.backend().clone();
    let fetcher = repo.runtime().spawn(async move {
        let mut s = futures::stream::iter(pieces)
            .map(|p| {
                let backend = backend.clone();
                async move {
                    let r = backend
                        .get_range(&names::pack(&p.pack), p.start..p.end)
                        .await;
                    (p, r)
                }
            })
            .buffered(connections);
        while let Some(r) = s.next().await {
            let tx = tx.clone();
            if tokio::task::spawn_blocking(move || tx.send(r).is_ok())
                .await
                .map_or(true, |sent| !sent)
            {
                break;
            }
        }
    });
    let key = repo.key().clone();
    let copied = (|| {
        // The kept blobs of the pack being copied, read again from the scratch database.
        let mut current: Option<(PackId, Vec<PackBlob>)> = None;
        for (piece, bytes) in rx.iter() {
            let bytes = bytes?;
            if current.as_ref().is_none_or(|(id, _)| *id != piece.pack) {
                current = Some((piece.pack, kept_blobs(scratch, &piece.pack)?));
            }
            let blobs: Vec<&PackBlob> = current
                .iter()
                .flat_map(|(_, kept)| kept)
                .filter(|b| b.offset >= piece.start && b.offset + b.length as u64 <= piece.end)
                .collect();
            let name = names::pack(&piece.pack);
            let slice = |b: &PackBlob| {
                let (s, e) = (
                    b.offset - piece.start,
                    b.offset - piece.start + b.length as u64,
                );
                bytes.get(s as usize..e as usize).ok_or_else(|| {
                    Error::integrity(
                        &name,
                        format!("short read: blob {} ends past the data", b.id),
                    )
                })
            };
            // Check every kept blob before it moves: repacking must not carry damage on.
            blobs
                .par_iter()
                .map(|b| {
                    format::open_blob(&key, b.ty, &b.id, slice(b)?, Some(b.raw_length))
                        .map(|_| ())
                        .map_err(|e| {
                            Error::integrity(
                                &name,
                                format!("{e}; prune stops before moving it. Run `cairn check --read-data`"),
                            )
                        })
                })
                .collect::<Result<()>>()?;
            for b in blobs {
                writer.add_sealed(b.ty, b.id, slice(b)?, b.raw_length as usize)?;
            }
        }
        Ok::<_, Error>(())
    })();
    fetcher.abort();
    let finished = writer.finish_indexed();
    copied?;
    let (stats, files) = finished?;
    Ok((files, stats.bytes_added))
}

/// One ranged read of a pack being repacked: kept blobs close together. The blobs are
/// not held: the copy finds them again by their offsets.
struct Piece {
    pack: PackId,
    start: u64,
    end: u64,
}

/// Largest ranged read while repacking.
const MAX_PIECE: u64 = 4 << 20;
/// Unused bytes between kept blobs that are read rather than skipped with a new request.
const MAX_GAP: u64 = 256 << 10;

/// The blobs of a pack to repack whose copy is kept, in pack order.
fn kept_blobs(scratch: &Scratch, pack: &PackId) -> Result<Vec<PackBlob>> {
    let blobs = scratch.pack_blobs(pack)?;
    let keepers = scratch.keepers(&blobs)?;
    let mut keep: Vec<PackBlob> = blobs
        .into_iter()
        .zip(keepers)
        .filter(|(_, k)| *k == Some(Some(*pack)))
        .map(|(b, _)| b)
        .collect();
    keep.sort_by_key(|b| b.offset);
    Ok(keep)
}

/// The kept blobs of the packs to repack, as ranged reads in pack order.
fn pieces(scratch: &Scratch, plan: &Plan) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    for id in &plan.repack {
        let mut cur: Option<Piece> = None;
        for b in kept_blobs(scratch, id)? {
            let end = b.offset + b.length as u64;
            match &mut cur {
                Some(p) if b.offset <= p.end + MAX_GAP && end - p.start <= MAX_PIECE => {
                    p.end = p.end.max(end);
                }
                _ => {
                    out.extend(cur.take());
                    cur = Some(Piece {
                        pack: *id,
                        start: b.offset,
                        end,
                    });
                }
            }
        }
        out.extend(cur);
    }
    Ok(out)
}

/// Blobs per consolidated index file.
const BLOBS_PER_INDEX_FILE: usize = 200_000;
/// Index files smaller than half of that which make prune rewrite the index.
const SMALL_INDEX_FILES: usize = 16;

/// Write index files naming every pack of `packs` not `gone`, in pack order, the last
/// of them superseding the files read. Returns the ids written.
fn write_consolidated(
    repo: &IndexedRepository,
    scratch: &Scratch,
    packs: &Packs,
    gone: &HashSet<PackId>,
    superseded: &[IndexId],
) -> Result<Vec<IndexId>> {
    let mut ids = Vec::new();
    let mut cur = IndexFile::new(Vec::new());
    let mut n = 0;
    // A full file is written once another pack follows it, so that the last file
    // written is the one that supersedes.
    let mut full: Option<IndexFile> = None;
    for (id, info) in packs.iter().filter(|(id, _)| !gone.contains(id)) {
        if let Some(f) = full.take() {
            ids.push(repo.block_on(repo.save_index(&f))?);
        }
        let blobs = scratch.pack_blobs(id)?;
        n += blobs.len();
        cur.packs.push(IndexPack {
            id: *id,
            size: info.size,
            blobs,
        });
        if n >= BLOBS_PER_INDEX_FILE {
            full = Some(std::mem::replace(&mut cur, IndexFile::new(Vec::new())));
            n = 0;
        }
    }
    let mut last = match full {
        Some(f) if cur.packs.is_empty() => f,
        Some(f) => {
            ids.push(repo.block_on(repo.save_index(&f))?);
            cur
        }
        None => cur,
    };
    last.supersedes = superseded.to_vec();
    ids.push(repo.block_on(repo.save_index(&last))?);
    Ok(ids)
}

fn delete_all(repo: &IndexedRepository, names: Vec<String>) -> Result<()> {
    let results: Vec<Result<()>> = repo.block_on(
        futures::stream::iter(names)
            .map(|n| async move { repo.backend().delete(&n).await })
            .buffer_unordered(repo.options().connections.max(1) * 2)
            .collect(),
    );
    results.into_iter().collect()
}

fn read_deletions(repo: &IndexedRepository) -> Result<Vec<(Id, Deletion)>> {
    let listed: Vec<Id> = repo.block_on(crate::backend::list_ids(
        repo.backend().as_ref(),
        names::DELETIONS,
    ))?;
    let mut out = Vec::new();
    for id in listed {
        let read = repo.block_on(crate::repository::read_deletion(
            repo.backend().as_ref(),
            repo.key(),
            &id,
        ));
        match read {
            Ok(Some(del)) => out.push((id, del)),
            Ok(None) => {}
            Err(e @ Error::Backend { .. }) => return Err(e),
            Err(e) => {
                return Err(Error::integrity(
                    names::deletion(&id),
                    format!(
                        "{e}; prune stops. If the object is damaged, remove it: its packs then \
                         show as unindexed and the next prune handles them"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Carry out a deletion record whose backups have ended: remove its packs, except those
/// that came back into the index or hold a used blob found nowhere else (those go back
/// into the index). Returns (packs put back, packs removed, bytes freed, the index file
/// written for the packs put back).
#[allow(clippy::type_complexity)]
fn carry_out(
    repo: &IndexedRepository,
    del_id: &Id,
    del: &Deletion,
    scratch: &Scratch,
    indexed: &dyn Fn(&PackId) -> bool,
    on_store: &HashMap<PackId, u64>,
) -> Result<(usize, usize, u64, Option<(IndexId, IndexFile)>)> {
    let mut back = Vec::new();
    let mut remove = Vec::new();
    let mut freed = 0;
    let mut holders = scratch.holders();
    for p in &del.packs {
        if indexed(&p.id) {
            continue; // indexed again (a backup's late index file): it stays
        }
        let mut needed = false;
        for (b, keeper) in p.blobs.iter().zip(scratch.keepers(&p.blobs)?) {
            if keeper.is_some() && !holders.held_by(b.ty, &b.id, indexed)? {
                needed = true;
                break;
            }
        }
        if needed && on_store.contains_key(&p.id) {
            back.push(p.clone());
        } else {
            if needed {
                tracing::error!(
                    "{} held blobs a snapshot uses but is gone; run `cairn check`",
                    names::pack(&p.id)
                );
            }
            if let Some(size) = on_store.get(&p.id) {
                freed += size;
                remove.push(names::pack(&p.id));
            }
        }
    }
    let restored = back.len();
    let rescue = if back.is_empty() {
        None
    } else {
        let file = IndexFile::new(back);
        let id = repo.block_on(repo.save_index(&file))?;
        Some((id, file))
    };
    let removed = remove.len();
    delete_all(repo, remove)?;
    delete_all(repo, vec![names::deletion(del_id)])?;
    Ok((restored, removed, freed, rescue))
}
