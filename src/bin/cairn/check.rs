//! `check` and `repair`, and the metrics files of scheduled jobs.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn::metrics::Metrics;
use cairn::ops::check::{self, CheckOptions, CheckProgress, CheckReport, ReadData};
use cairn::ops::repair::{self, RepairIndexOptions, RepairSnapshotsOptions};
use cairn::util::human_bytes;

use crate::cli::{CheckArgs, Global, RepairCommand};
use crate::commands::{open, print_json};
use crate::exit;

/// A progress bar of the data check on a terminal (stderr), nothing otherwise.
struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    fn start(p: Arc<CheckProgress>, g: &Global) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let show = std::io::stderr().is_terminal() && !g.quiet && !g.json;
        let thread = show.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let pb = indicatif::ProgressBar::hidden();
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                while !stop.load(Ordering::Relaxed) {
                    let total = p.bytes_total.load(Ordering::Relaxed);
                    if total > 0 && pb.is_hidden() {
                        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    }
                    pb.set_length(total);
                    pb.set_position(p.bytes_done.load(Ordering::Relaxed));
                    pb.set_message(format!(
                        "{}/{} packs",
                        p.packs_done.load(Ordering::Relaxed),
                        p.packs_total.load(Ordering::Relaxed)
                    ));
                    std::thread::sleep(Duration::from_millis(100));
                }
                pb.finish_and_clear();
            })
        });
        Bar { stop, thread }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn check(g: &Global, a: CheckArgs) -> Result<u8> {
    let read_data = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => s,
        (false, None) => ReadData::None,
    };
    let started = std::time::Instant::now();
    let location = g.repo.clone().unwrap_or_default();
    let result = open(g).and_then(|repo| {
        let progress = Arc::new(CheckProgress::default());
        let bar = Bar::start(progress.clone(), g);
        let r = check::check(&repo, &CheckOptions { read_data }, &progress);
        bar.finish();
        Ok(r?)
    });
    if let Some(path) = &a.metrics_file {
        let m = check_metrics(&location, result.as_ref().ok(), started.elapsed());
        m.write_file(path)
            .with_context(|| format!("writing --metrics-file {}", path.display()))?;
    }
    let report = result?;
    if g.json {
        print_json(&report)?;
    } else {
        print_report(g, &report);
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::FATAL
    })
}

fn print_report(g: &Global, r: &CheckReport) {
    let s = &r.stats;
    if !g.quiet {
        println!(
            "checked {} snapshots, {} index files, {} packs, {} blobs, {} trees",
            s.snapshots, s.index_files, s.packs, s.blobs, s.trees
        );
        if s.read_data != "none" {
            println!(
                "read and verified {} packs ({}), subset {}",
                s.packs_verified,
                human_bytes(s.bytes_verified),
                s.read_data
            );
        }
        for u in &r.unreferenced_packs {
            println!(
                "unreferenced pack {} ({}): no index names it (an interrupted or running backup; not damage)",
                u.name,
                human_bytes(u.size)
            );
        }
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    for d in &r.damage {
        println!("damage [{}] {}: {}", d.kind.as_str(), d.object, d.message);
        for p in &d.paths {
            println!("    snapshot {}: {}", p.snapshot.short(), p.path);
        }
        if d.more_paths > 0 {
            println!("    ... and {} more paths", d.more_paths);
        }
        if d.paths.is_empty() && !d.snapshots.is_empty() {
            let ids: Vec<String> = d.snapshots.iter().map(|s| s.short()).collect();
            println!("    snapshots: {}", ids.join(" "));
        }
    }
    if r.is_clean() {
        if !g.quiet {
            println!("no damage found");
        }
    } else {
        let snaps: std::collections::BTreeSet<_> =
            r.damage.iter().flat_map(|d| d.snapshots.iter()).collect();
        println!(
            "{} damaged object(s), {} snapshot(s) affected; `cairn repair index` rebuilds a lost or \
             damaged index, `cairn repair snapshots` writes snapshots without the unreadable parts",
            r.damage.len(),
            snaps.len()
        );
    }
}

fn check_metrics(repo: &str, r: Option<&CheckReport>, elapsed: Duration) -> Metrics {
    let mut m = Metrics::new();
    let l = [("repository", repo)];
    m.gauge(
        "cairn_check_last_run_timestamp_seconds",
        "When the last check ended (Unix seconds).",
        &l,
        now() as f64,
    );
    m.gauge(
        "cairn_check_completed",
        "1 when the last check ran to the end, 0 when it could not run.",
        &l,
        r.is_some() as u8 as f64,
    );
    m.gauge(
        "cairn_check_success",
        "1 when the last check ran and found no damage.",
        &l,
        r.is_some_and(|r| r.is_clean()) as u8 as f64,
    );
    m.gauge(
        "cairn_check_duration_seconds",
        "Duration of the last check.",
        &l,
        elapsed.as_secs_f64(),
    );
    let Some(r) = r else { return m };
    let s = &r.stats;
    for (name, help, v) in [
        (
            "cairn_check_verified_bytes",
            "Pack bytes downloaded and verified by the last check.",
            s.bytes_verified,
        ),
        (
            "cairn_check_verified_packs",
            "Packs downloaded and verified by the last check.",
            s.packs_verified,
        ),
        ("cairn_check_packs", "Packs in the index.", s.packs),
        ("cairn_check_blobs", "Blobs in the index.", s.blobs),
        (
            "cairn_check_unreferenced_packs",
            "Packs no index file names (not damage).",
            s.unreferenced_packs,
        ),
    ] {
        m.gauge(name, help, &l, v as f64);
    }
    for (kind, n) in r.counts() {
        m.gauge(
            "cairn_check_errors",
            "Damaged objects found by the last check, by kind.",
            &[("repository", repo), ("kind", kind.as_str())],
            n as f64,
        );
    }
    m.snapshots(repo, &r.snapshots, now());
    m
}

/// The metrics file of a backup.
pub fn backup_metrics(
    path: &Path,
    repo: &str,
    done: Option<&cairn::ops::backup::BackupResult>,
    elapsed: Duration,
) -> Result<()> {
    let mut m = Metrics::new();
    let l = [("repository", repo)];
    m.gauge(
        "cairn_backup_last_run_timestamp_seconds",
        "When the last backup ended (Unix seconds).",
        &l,
        now() as f64,
    );
    m.gauge(
        "cairn_backup_success",
        "1 when the last backup wrote a complete snapshot.",
        &l,
        done.is_some_and(|d| d.snapshot.complete) as u8 as f64,
    );
    m.gauge(
        "cairn_backup_snapshot_written",
        "1 when the last backup wrote a snapshot (complete or not).",
        &l,
        done.is_some_and(|d| d.id.is_some()) as u8 as f64,
    );
    m.gauge(
        "cairn_backup_duration_seconds",
        "Duration of the last backup.",
        &l,
        elapsed.as_secs_f64(),
    );
    if let Some(d) = done {
        let s = &d.snapshot.summary;
        for (name, help, v) in [
            (
                "cairn_backup_files_new",
                "Files new in the last backup.",
                s.files_new,
            ),
            (
                "cairn_backup_files_changed",
                "Files changed since the parent snapshot.",
                s.files_changed,
            ),
            (
                "cairn_backup_files_unmodified",
                "Files unchanged since the parent snapshot.",
                s.files_unmodified,
            ),
            (
                "cairn_backup_bytes_read",
                "Bytes read from the sources.",
                s.bytes_read,
            ),
            (
                "cairn_backup_total_bytes",
                "Logical size of the snapshot.",
                s.total_bytes,
            ),
            (
                "cairn_backup_added_bytes",
                "Stored bytes the backup added to the repository.",
                s.bytes_added,
            ),
            (
                "cairn_backup_added_packs",
                "Packs the backup added.",
                s.packs_added,
            ),
            (
                "cairn_backup_problems",
                "Inputs that could not be read.",
                d.problems.len() as u64,
            ),
        ] {
            m.gauge(name, help, &l, v as f64);
        }
        let host = d.snapshot.host.as_str();
        m.gauge(
            "cairn_backup_snapshot_timestamp_seconds",
            "Time of the snapshot the last backup wrote (Unix seconds).",
            &[("repository", repo), ("host", host)],
            d.snapshot.time.secs as f64,
        );
    }
    m.write_file(path)
        .with_context(|| format!("writing --metrics-file {}", path.display()))
}

pub fn repair(g: &Global, r: RepairCommand) -> Result<u8> {
    match r {
        RepairCommand::Index(a) => {
            let repo = open(g)?;
            // Not beside a prune: both replace index files.
            let lock = exclusive(&repo, &a.lock, a.dry_run)?;
            let rep = repair::repair_index(
                &repo,
                &RepairIndexOptions {
                    dry_run: a.dry_run,
                    read_all_packs: a.read_all_packs,
                },
            );
            if let Some(l) = lock {
                l.release();
            }
            let rep = rep?;
            if g.json {
                print_json(&rep)?;
                return Ok(exit::OK);
            }
            let verb = if a.dry_run { "would be " } else { "" };
            for p in &rep.packs_added {
                println!("indexed from its header: {p}");
            }
            for p in &rep.packs_dropped {
                println!("dropped (not in the repository): {p}");
            }
            for (p, why) in &rep.packs_unreadable {
                match rep.packs_kept_from_index.iter().find(|k| &k.0 == p) {
                    Some((_, kept, of)) => println!(
                        "header unreadable, {kept} of {of} index entries kept (those inside the pack): {p}: {why}"
                    ),
                    None => println!("not indexed, header unreadable: {p}: {why}"),
                }
            }
            if rep.index_files_replaced.is_empty() {
                println!("the index describes every pack; nothing to do");
            } else {
                println!(
                    "{} packs kept, {} indexed from headers, {} dropped; {} index file(s) {verb}replaced by {}",
                    rep.packs_kept,
                    rep.packs_added.len(),
                    rep.packs_dropped.len(),
                    rep.index_files_replaced.len(),
                    if a.dry_run {
                        "new ones".to_string()
                    } else {
                        format!("{}", rep.index_files_written.len())
                    }
                );
            }
            Ok(exit::OK)
        }
        RepairCommand::Snapshots(a) => {
            let repo = open(g)?;
            // Not beside a prune: a repaired snapshot uses blobs that the prune may be
            // about to remove with the original.
            let lock = exclusive(&repo, &a.lock, a.dry_run)?;
            let repo = crate::commands::announced(repo, None)?;
            let mut ids = Vec::new();
            for s in &a.snapshots {
                ids.push(repo.find_snapshot(s)?.0);
            }
            let rep = repair::repair_snapshots(
                &repo,
                &RepairSnapshotsOptions {
                    snapshots: ids,
                    dry_run: a.dry_run,
                    forget: a.forget,
                    read_data: if a.read_data {
                        ReadData::All
                    } else {
                        ReadData::None
                    },
                },
            );
            if let Some(l) = lock {
                l.release();
            }
            let rep = rep?;
            if g.json {
                print_json(&rep)?;
            } else {
                for s in &rep.repaired {
                    match s.repaired {
                        Some(n) => println!(
                            "snapshot {} repaired as {}{}:",
                            s.original.short(),
                            n.short(),
                            if s.forgotten {
                                " (original removed)"
                            } else {
                                ""
                            }
                        ),
                        None => println!("snapshot {} would be repaired:", s.original.short()),
                    }
                    for r in &s.removed {
                        println!("    removed {}: {}", r.path, r.reason);
                    }
                }
                for (name, why) in &rep.unrepairable {
                    println!("cannot repair {name}: {why}");
                }
                if rep.repaired.is_empty() && rep.unrepairable.is_empty() {
                    println!(
                        "{} snapshot(s) checked, nothing to repair",
                        rep.snapshots_checked
                    );
                }
            }
            if !rep.unrepairable.is_empty() {
                bail!(
                    "{} snapshot object(s) cannot be read; remove them with `cairn forget`",
                    rep.unrepairable.len()
                );
            }
            Ok(exit::OK)
        }
    }
}

/// The prune lock, for repairs that change the index or snapshots (none for a dry run).
fn exclusive(
    repo: &cairn::Repository,
    a: &crate::cli::LockArgs,
    dry_run: bool,
) -> Result<Option<cairn::repository::Announcement>> {
    if dry_run {
        return Ok(None);
    }
    let (lock, _) = repo.lock_exclusive(a.stale_lock_timeout, a.retry_lock)?;
    Ok(Some(lock))
}
