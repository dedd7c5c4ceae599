//! forget, prune, protect, unprotect, unlock.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use cairn::format::{LockKind, Snapshot};
use cairn::id::SnapshotId;
use cairn::metrics::Metrics;
use cairn::ops::forget::{self, Candidate, Decision, GroupBy, KeepPolicy, Period};
use cairn::ops::prune::{self, MaxUnused, PruneOptions, PruneReport};
use cairn::repository::{OpState, Repository};
use cairn::util::human_bytes;
use serde::Serialize;

use crate::cli::{
    ForgetArgs, Global, LockArgs, ProtectArgs, PruneArgs, SnapshotFilter, UnlockArgs,
};
use crate::commands::{local_time, open, print_json};
use crate::exit;

fn policy(a: &ForgetArgs) -> Result<KeepPolicy> {
    let mut tags = Vec::new();
    for t in &a.keep_tag {
        let set: Vec<String> = t.split(',').map(|s| s.trim().to_string()).collect();
        // An empty tag (`--keep-tag "$UNSET"`) would keep nothing and remove everything.
        if set.iter().any(String::is_empty) {
            bail!("--keep-tag {t:?} holds an empty tag; give tags like nightly or nexus,db");
        }
        tags.push(set);
    }
    let mut p = KeepPolicy {
        last: a.keep_last,
        within: a.keep_within,
        tags,
        now: Some(chrono::Utc::now()),
        ..Default::default()
    };
    for (period, n) in [
        (Period::Hourly, a.keep_hourly),
        (Period::Daily, a.keep_daily),
        (Period::Weekly, a.keep_weekly),
        (Period::Monthly, a.keep_monthly),
        (Period::Yearly, a.keep_yearly),
    ] {
        if n > 0 {
            p.counts.insert(period, n);
        }
    }
    for (period, d) in [
        (Period::Hourly, a.keep_within_hourly),
        (Period::Daily, a.keep_within_daily),
        (Period::Weekly, a.keep_within_weekly),
        (Period::Monthly, a.keep_within_monthly),
        (Period::Yearly, a.keep_within_yearly),
    ] {
        if let Some(d) = d {
            p.within_periods.insert(period, d);
        }
    }
    Ok(p)
}

/// Does a snapshot pass the --host/--tag/--path filters?
pub(crate) fn selected(a: &SnapshotFilter, s: &Snapshot) -> bool {
    (a.host.is_empty() || a.host.contains(&s.host))
        && (a.tag.is_empty()
            || a.tag
                .iter()
                .any(|set| set.split(',').all(|t| s.tags.iter().any(|x| x == t.trim()))))
        && a.path.iter().all(|p| s.paths.contains(p))
}

pub(crate) fn prune_options(a: &PruneArgs, dry_run: bool) -> Result<PruneOptions> {
    Ok(PruneOptions {
        max_unused: a.max_unused.parse::<MaxUnused>()?,
        max_repack: a
            .max_repack
            .as_deref()
            .map(cairn::util::parse_size)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--max-repack: {e}"))?,
        dry_run,
        stale_after: a.lock.stale_lock_timeout,
        retry_lock: a.lock.retry_lock,
    })
}

#[derive(Serialize)]
struct Entry<'a> {
    id: SnapshotId,
    time: String,
    complete: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    reasons: &'a [String],
}

#[derive(Serialize)]
struct GroupOut<'a> {
    group: &'a forget::GroupKey,
    keep: Vec<Entry<'a>>,
    remove: Vec<Entry<'a>>,
}

pub fn forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let started = Instant::now();
    let done = forget_run(g, &a);
    if let Some(path) = &a.prune_args.metrics_file {
        let (forgot, report) = match &done {
            Ok((n, r)) => (Some(*n), r.as_ref()),
            Err(_) => (None, None),
        };
        write_metrics(g, path, forgot, report, a.prune, started)?;
    }
    done.map(|_| exit::OK)
}

/// Forget, and prune when asked: (snapshots removed, the prune's report).
fn forget_run(g: &Global, a: &ForgetArgs) -> Result<(usize, Option<PruneReport>)> {
    let policy = policy(a)?;
    if !a.snapshots.is_empty() && !policy.is_empty() {
        bail!("give snapshot ids or a keep policy, not both");
    }
    if a.snapshots.is_empty() && policy.is_empty() && !a.keep_none {
        bail!(
            "this policy keeps nothing: give --keep-last/--keep-daily/--keep-within/... or, to \
             remove every unprotected snapshot of the selection, --keep-none"
        );
    }
    let prune_opts = prune_options(&a.prune_args, a.dry_run)?;
    let by: GroupBy = a.group_by.parse()?;
    let repo = open(g)?;

    let mut remove: Vec<SnapshotId> = Vec::new();
    // With --json, one document: the forget decisions, and the prune's report with them.
    let mut forget_json = serde_json::Value::Null;
    if !a.snapshots.is_empty() {
        for spec in &a.snapshots {
            let (id, s) = repo.find_snapshot(spec)?;
            if s.protected {
                bail!(
                    "snapshot {} is protected; `cairn unprotect {}` first",
                    id.short(),
                    id.short()
                );
            }
            remove.push(id);
        }
        if !g.quiet && !g.json {
            for id in &remove {
                println!(
                    "{} {}",
                    if a.dry_run { "would remove" } else { "remove" },
                    id.short()
                );
            }
        }
    } else {
        let snaps: Vec<_> = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| selected(&a.filter, s))
            .collect();
        let groups = forget::group(snaps, by);
        let mut out = Vec::new();
        let mut decided: Vec<(
            forget::GroupKey,
            Vec<Decision>,
            BTreeMap<SnapshotId, Snapshot>,
        )> = Vec::new();
        let soon = chrono::Utc::now() + chrono::Duration::minutes(1);
        for (key, members) in groups {
            for (id, s) in members.iter() {
                if s.time.to_datetime().is_some_and(|t| t > soon) {
                    tracing::warn!(
                        "snapshot {} is dated {}, in the future (a clock running ahead?); \
                         --keep-within windows count back from now",
                        id.short(),
                        local_time(s.time)
                    );
                }
            }
            let cands: Vec<Candidate> = members
                .iter()
                .map(|(id, s)| Candidate::of(*id, s))
                .collect();
            let decisions = if a.utc {
                forget::apply(&cands, &policy, &chrono::Utc)
            } else {
                forget::apply(&cands, &policy, &chrono::Local)
            };
            decided.push((key, decisions, members.into_iter().collect()));
        }
        for (key, decisions, members) in &decided {
            let entry = |d: &'_ Decision| {
                let s = &members[&d.id];
                Entry {
                    id: d.id,
                    time: local_time(s.time),
                    complete: s.complete,
                    reasons: &[],
                }
            };
            let keep: Vec<Entry> = decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| Entry {
                    reasons: &d.reasons,
                    ..entry(d)
                })
                .collect();
            let gone: Vec<Entry> = decisions.iter().filter(|d| !d.keep).map(entry).collect();
            remove.extend(gone.iter().map(|e| e.id));
            out.push(GroupOut {
                group: key,
                keep,
                remove: gone,
            });
        }
        if g.json {
            forget_json = serde_json::to_value(&out)?;
        } else if !g.quiet {
            for grp in &out {
                println!(
                    "{}: keep {}, {} {}",
                    grp.group,
                    grp.keep.len(),
                    if a.dry_run { "would remove" } else { "remove" },
                    grp.remove.len()
                );
                for e in &grp.keep {
                    println!(
                        "  keep    {}  {}{}  {}",
                        e.id.short(),
                        e.time,
                        if e.complete { "" } else { " (incomplete)" },
                        e.reasons.join(", ")
                    );
                }
                for e in &grp.remove {
                    println!(
                        "  remove  {}  {}{}",
                        e.id.short(),
                        e.time,
                        if e.complete { "" } else { " (incomplete)" }
                    );
                }
            }
        }
    }
    if !a.dry_run {
        for id in &remove {
            repo.delete_snapshot(id)?;
        }
        if !g.quiet && !g.json && !remove.is_empty() {
            println!("removed {} snapshots", remove.len());
        }
    }
    let removed = if a.dry_run { 0 } else { remove.len() };
    if a.prune {
        let report = prune::prune(repo, &prune_opts)?;
        if g.json {
            print_json(&serde_json::json!({"forget": forget_json, "prune": report}))?;
        } else {
            print_prune(g, &report)?;
        }
        return Ok((removed, Some(report)));
    }
    if g.json && !forget_json.is_null() {
        print_json(&forget_json)?;
    }
    Ok((removed, None))
}

pub fn prune_cmd(g: &Global, dry_run: bool, a: &PruneArgs) -> Result<u8> {
    let started = Instant::now();
    let done = prune_options(a, dry_run).and_then(|opts| Ok(prune::prune(open(g)?, &opts)?));
    if let Some(path) = &a.metrics_file {
        write_metrics(g, path, None, done.as_ref().ok(), true, started)?;
    }
    print_prune(g, &done?)?;
    Ok(exit::OK)
}

/// The metrics file of a forget (`forgot`: snapshots removed, `None` when it failed)
/// and of a prune (`pruned`: whether one was asked for; `report`: its result).
fn write_metrics(
    g: &Global,
    path: &std::path::Path,
    forgot: Option<usize>,
    report: Option<&PruneReport>,
    pruned: bool,
    started: Instant,
) -> Result<()> {
    let repo_name = g.repo.clone().unwrap_or_default();
    let l = [("repository", repo_name.as_str())];
    let now = chrono::Utc::now().timestamp();
    let mut m = Metrics::new();
    let job = if forgot.is_some() || !pruned {
        "forget"
    } else {
        "prune"
    };
    m.gauge(
        &format!("cairn_{job}_last_run_timestamp_seconds"),
        "When the job ended (Unix seconds).",
        &l,
        now as f64,
    );
    let ok = if pruned {
        report.is_some()
    } else {
        forgot.is_some()
    };
    m.gauge(
        &format!("cairn_{job}_success"),
        "1 when the job succeeded.",
        &l,
        ok as u8 as f64,
    );
    m.gauge(
        &format!("cairn_{job}_duration_seconds"),
        "Duration of the job.",
        &l,
        started.elapsed().as_secs_f64(),
    );
    if let Some(n) = forgot {
        m.gauge(
            "cairn_forget_snapshots_removed",
            "Snapshots the last forget removed.",
            &l,
            n as f64,
        );
    }
    if let Some(r) = report {
        for (name, help, v) in [
            (
                "cairn_prune_packs_removed",
                "Packs the last prune removed.",
                r.packs_removed as f64,
            ),
            (
                "cairn_prune_bytes_freed",
                "Bytes the last prune freed.",
                r.bytes_freed as f64,
            ),
            (
                "cairn_prune_packs_repacked",
                "Packs the last prune repacked.",
                r.repack_packs.len() as f64,
            ),
            (
                "cairn_prune_repack_bytes_downloaded",
                "Bytes the last prune read to repack.",
                r.repack_download_bytes as f64,
            ),
            (
                "cairn_prune_repack_bytes_uploaded",
                "Bytes the last prune wrote when repacking.",
                r.repack_upload_bytes as f64,
            ),
            (
                "cairn_prune_pack_bytes",
                "Bytes of indexed packs before the last prune.",
                r.pack_bytes as f64,
            ),
            (
                "cairn_prune_unused_bytes_after",
                "Unused bytes left in packs after the last prune.",
                r.unused_bytes_after as f64,
            ),
            (
                "cairn_prune_deletions_waiting",
                "Deletion records waiting for running backups.",
                r.waiting.len() as f64,
            ),
            (
                "cairn_prune_stale_locks",
                "Stale locks the last prune ignored.",
                r.stale_locks.len() as f64,
            ),
        ] {
            m.gauge(name, help, &l, v);
        }
    }
    // Snapshot counts and ages, as after the job; best effort when the job failed.
    if let Ok(repo) = open(g) {
        if let Ok(snaps) = repo.snapshots() {
            m.snapshots(&repo_name, &snaps, now);
        }
    }
    m.write_file(path)?;
    Ok(())
}

fn print_prune(g: &Global, r: &PruneReport) -> Result<()> {
    if g.json {
        return print_json(r);
    }
    for s in &r.stale_locks {
        eprintln!("warning: ignored stale lock: {s}");
    }
    if g.quiet {
        return Ok(());
    }
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "{} snapshots use {} blobs: {} used, {} unused in {} packs ({})",
        r.snapshots,
        r.used_blobs,
        human_bytes(r.used_bytes),
        human_bytes(r.unused_bytes),
        r.packs,
        human_bytes(r.pack_bytes)
    );
    println!(
        "{would}delete {} unused packs ({}), {would}repack {} packs (download {}, upload {}), \
         {} packs in no index ({})",
        r.delete_packs.len(),
        human_bytes(r.delete_bytes),
        r.repack_packs.len(),
        human_bytes(r.repack_download_bytes),
        human_bytes(r.repack_upload_bytes),
        r.unindexed_packs.len(),
        human_bytes(r.unindexed_bytes),
    );
    println!(
        "unused space left: {}; index files {} -> {}",
        human_bytes(r.unused_bytes_after),
        r.index_files_before,
        r.index_files_after
    );
    if !r.dry_run {
        println!(
            "removed {} packs, freed {}{}{}{}",
            r.packs_removed,
            human_bytes(r.bytes_freed),
            if r.packs_restored > 0 {
                format!(", put {} packs back into the index", r.packs_restored)
            } else {
                String::new()
            },
            if r.lock_objects_removed > 0 {
                format!(", removed {} old lock objects", r.lock_objects_removed)
            } else {
                String::new()
            },
            if r.tmp_files_removed > 0 {
                format!(
                    ", removed {} temporary packs of killed backups",
                    r.tmp_files_removed
                )
            } else {
                String::new()
            }
        );
    }
    for w in &r.waiting {
        println!("waiting: {w}");
    }
    for p in &r.unreadable_packs {
        eprintln!("warning: {p} is in no index and its header cannot be read; run `cairn check`");
    }
    Ok(())
}

pub fn protect(g: &Global, a: ProtectArgs, on: bool) -> Result<u8> {
    let repo = open(g)?;
    // Replacing a snapshot writes the new object and removes the old one: a prune that
    // listed snapshots before and reads them after would see neither, and remove the
    // snapshot's data. So it takes the prune lock, as repairs do.
    let (lock, _) = repo.lock_exclusive(a.lock.stale_lock_timeout, a.lock.retry_lock)?;
    let result = protect_each(g, &repo, &a, on);
    lock.release();
    result
}

fn protect_each(g: &Global, repo: &Repository, a: &ProtectArgs, on: bool) -> Result<u8> {
    for spec in &a.snapshots {
        let (id, mut s) = repo.find_snapshot(spec)?;
        if s.protected == on {
            if !g.quiet {
                println!(
                    "snapshot {} is already {}",
                    id.short(),
                    if on { "protected" } else { "unprotected" }
                );
            }
            continue;
        }
        s.protected = on;
        let new = repo.replace_snapshot(&id, s)?;
        if g.json {
            println!(
                "{}",
                serde_json::json!({"old": id, "new": new, "protected": on})
            );
        } else if !g.quiet {
            println!(
                "snapshot {} is now {} {}",
                id.short(),
                new.short(),
                if on { "(protected)" } else { "(unprotected)" }
            );
        }
    }
    Ok(exit::OK)
}

pub fn unlock(g: &Global, a: UnlockArgs) -> Result<u8> {
    let repo: Repository = open(g)?;
    let LockArgs {
        stale_lock_timeout, ..
    } = a.lock;
    let locks = repo.locks(stale_lock_timeout, None)?;
    let mut names = locks.unreadable.clone();
    let mut left = Vec::new();
    for o in locks.ops.values() {
        // A process id missing here is only a hint: a container with process ids of
        // its own may share the host name, and its backup runs on.
        let remove = a.remove_all || o.is_done();
        if remove {
            names.extend(o.objects.iter().cloned());
            if !g.quiet && o.state != OpState::Finished {
                let why = match &o.state {
                    OpState::Stale(r) => r.clone(),
                    _ => "--remove-all".into(),
                };
                println!("removing lock of {} ({why})", o.describe());
            }
        } else {
            left.push(o);
        }
    }
    for n in &names {
        repo.block_on(repo.backend().delete(n))?;
    }
    if !g.quiet {
        println!("removed {} lock objects", names.len());
        for o in left {
            let kind = if o.kind == LockKind::Prune {
                "prune"
            } else {
                "backup"
            };
            println!(
                "left the lock of a running {kind}: {} (last refreshed {})",
                o.describe(),
                o.last_seen.format("%Y-%m-%d %H:%M:%S UTC")
            );
            if o.process_gone {
                println!(
                    "  no process {} runs on this host; if no container shares the host \
                     name, `cairn unlock --remove-all` removes it (else it goes stale in \
                     {})",
                    o.pid,
                    humantime::format_duration(stale_lock_timeout)
                );
            }
        }
    }
    Ok(exit::OK)
}
