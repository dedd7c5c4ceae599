//! Retention and prune through the binary: keep policies and their explanations,
//! protection, coverage after failed backups, space reclaimed, locks (stale, waiting,
//! a prune never beside another), a prune killed at every step and rerun, and backups,
//! prunes and restores running at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::backend::{self, Backend, S3Options};
use cairn::ops::prune::{MaxUnused, PruneOptions, prune};
use cairn::repository::{RepoOptions, Repository};

use crate::common::{PASSWORD, Repo, assert_same_tree, data, run_ok, tree_state};

fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A repository with one backup of `files`, and the directory they are in.
fn backed_up(files: &[(&str, Vec<u8>)]) -> (Repo, PathBuf) {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    write_files(&src, files);
    run_ok(repo.cmd().arg("backup").arg(&src));
    (repo, src)
}

/// Back up `src` as at `time`. On one worker thread: the tests here count which packs a
/// prune deletes and which it repacks, and threads filling data packs side by side
/// would make that layout a matter of timing (a backup's shared and own blobs could land
/// in separate packs, leaving nothing to repack).
fn backup_at(repo: &Repo, src: &Path, time: &str, extra: &[&str]) -> String {
    let out = run_ok(
        repo.cmd()
            .env("RAYON_NUM_THREADS", "1")
            .args(["backup", "--json", "--time", time])
            .args(extra)
            .arg(src),
    );
    let v = crate::common::last_json_line(&out.stdout);
    v["snapshot_id"].as_str().unwrap().to_string()
}

fn snapshot_ids(repo: &Repo) -> Vec<String> {
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn forget_json(repo: &Repo, args: &[&str]) -> serde_json::Value {
    let out = run_ok(repo.cmd().args(["forget", "--json"]).args(args));
    let text = String::from_utf8_lossy(&out.stdout);
    // The plan is the first JSON document; a prune report may follow.
    let mut de = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    de.next().unwrap().unwrap()
}

fn restore(repo: &Repo, id: &str) -> PathBuf {
    let target = tempfile::tempdir_in(repo.tmp.path()).unwrap().keep();
    run_ok(repo.cmd().args(["restore", id, "--target"]).arg(&target));
    target
}

#[test]
fn forget_explains_each_decision_and_removes_what_no_rule_keeps() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    let mut ids = Vec::new();
    for day in 1..=6 {
        write_files(&src, &[("f", data(1000, day))]);
        ids.push(backup_at(
            &repo,
            &src,
            &format!("2026-11-0{day}T03:00:00Z"),
            &[],
        ));
    }
    // A policy that keeps nothing is refused.
    let out = repo.cmd().args(["forget", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep-none"));

    let plan = forget_json(
        &repo,
        &[
            "--dry-run",
            "--utc",
            "--keep-last",
            "1",
            "--keep-daily",
            "3",
        ],
    );
    let g = &plan.as_array().unwrap()[0];
    let keep = g["keep"].as_array().unwrap();
    let remove = g["remove"].as_array().unwrap();
    assert_eq!(keep.len(), 3);
    assert_eq!(remove.len(), 3);
    assert_eq!(keep[0]["id"], ids[5].as_str());
    assert_eq!(
        keep[0]["reasons"],
        serde_json::json!(["last", "daily 2026-11-06"])
    );
    assert_eq!(keep[2]["reasons"], serde_json::json!(["daily 2026-11-04"]));
    assert_eq!(snapshot_ids(&repo).len(), 6, "--dry-run removed something");

    // Protect the oldest: no rule, not even --keep-none, removes it.
    let out = run_ok(repo.cmd().args(["protect", &ids[0], "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let protected = v["new"].as_str().unwrap().to_string();
    assert!(!snapshot_ids(&repo).contains(&ids[0]));
    let out = repo.cmd().args(["forget", &protected]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("protected"));

    forget_json(&repo, &["--utc", "--keep-daily", "2"]);
    let left = snapshot_ids(&repo);
    assert_eq!(left.len(), 3);
    assert!(left.contains(&protected) && left.contains(&ids[5]) && left.contains(&ids[4]));

    run_ok(repo.cmd().args(["forget", "--keep-none"]));
    assert_eq!(snapshot_ids(&repo), vec![protected.clone()]);
    // Unprotected, an explicit id removes it.
    let out = run_ok(repo.cmd().args(["unprotect", &protected, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plain = v["new"].as_str().unwrap().to_string();
    run_ok(repo.cmd().args(["forget", &plain[..8]]));
    assert!(snapshot_ids(&repo).is_empty());
}

#[test]
fn days_are_local_days_across_a_dst_change_and_groups_are_separate() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    write_files(&src, &[("f", data(100, 1))]);
    // Europe/Berlin falls back on 2025-10-26; 22:30Z on the 25th is already the 26th
    // there, and 23:30Z on the 26th is the 27th.
    let times = [
        "2025-10-25T12:00:00Z",
        "2025-10-25T22:30:00Z",
        "2025-10-26T12:00:00Z",
        "2025-10-26T23:30:00Z",
    ];
    for t in times {
        backup_at(&repo, &src, t, &[]);
    }
    backup_at(&repo, &src, "2025-10-26T12:00:00Z", &["--host", "other"]);
    let mut cmd = repo.cmd();
    cmd.env("TZ", "Europe/Berlin");
    let out = run_ok(cmd.args(["forget", "--json", "--dry-run", "--keep-daily", "10"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = plan.as_array().unwrap();
    assert_eq!(groups.len(), 2, "one group per host");
    let mine = groups
        .iter()
        .find(|g| g["group"]["host"] != "other")
        .unwrap();
    let reasons: Vec<String> = mine["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["reasons"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        ["daily 2025-10-27", "daily 2025-10-26", "daily 2025-10-25"]
    );
    assert_eq!(mine["remove"].as_array().unwrap().len(), 1);
    // In UTC the same snapshots fall on two days.
    let plan = forget_json(
        &repo,
        &[
            "--dry-run",
            "--utc",
            "--keep-daily",
            "10",
            "--host",
            "vm-none",
        ],
    );
    assert!(plan.as_array().unwrap().is_empty(), "host filter");
    let out = run_ok(repo.cmd().args([
        "forget",
        "--json",
        "--dry-run",
        "--utc",
        "--keep-daily",
        "10",
        "--group-by",
        "",
    ]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.as_array().unwrap().len(), 1);
    assert_eq!(plan[0]["keep"].as_array().unwrap().len(), 2);
}

#[test]
fn a_week_of_failed_backups_still_leaves_the_last_complete_snapshot() {
    // Nightly dumps streamed in; a plain pg_dump must end with its trailer. Nine good
    // nights, then a week of dumps cut short: incomplete snapshots (exit 3). Streams,
    // so the failure is staged the same way as root and as any user.
    let repo = Repo::new();
    let dump = |day: u64, complete: bool| {
        let mut d = b"--\n-- PostgreSQL database dump\n--\n".to_vec();
        d.extend(data(50_000, day));
        if complete {
            d.extend_from_slice(b"\n--\n-- PostgreSQL database dump complete\n--\n");
        }
        d
    };
    let night = |day: u64, complete: bool| {
        let out = repo
            .cmd()
            .args([
                "backup",
                "--json",
                "--stdin",
                "--stdin-name",
                "db.sql",
                "--time",
            ])
            .arg(format!("2026-10-{day:02}T02:00:00Z"))
            .write_stdin(dump(day, complete))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(if complete { 0 } else { 3 }),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for day in 1..=9 {
        night(day, true);
    }
    for day in 10..=16 {
        night(day, false);
    }
    run_ok(
        repo.cmd()
            .args(["forget", "--keep-within", "7d", "--prune"]),
    );
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    let complete: Vec<_> = snaps
        .iter()
        .filter(|s| s["snapshot"]["complete"] == true)
        .collect();
    // The seven incomplete ones inside the window, and the last good night before it.
    assert_eq!(snaps.len(), 8, "{snaps:#?}");
    assert_eq!(complete.len(), 1, "{snaps:#?}");
    let id = complete[0]["id"].as_str().unwrap();
    let out = run_ok(repo.cmd().args(["dump", &format!("{id}:/db.sql")]));
    assert!(
        out.stdout == dump(9, true),
        "the last complete night restores"
    );
}

/// Size of everything in a repository except lock objects.
fn repo_bytes(p: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name() != "locks")
                    .map(|e| {
                        let m = e.metadata().unwrap();
                        if m.is_dir() { walk(&e.path()) } else { m.len() }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(p)
}

#[test]
fn prune_with_max_unused_0_leaves_about_what_a_fresh_backup_stores() {
    let repo = Repo::with_small_packs();
    let src = repo.tmp.path().join("src");
    // Five days; each day changes half of the files, so old packs are partly used.
    for day in 0..5u64 {
        let files: Vec<(String, Vec<u8>)> = (0..20u64)
            .map(|i| {
                let seed = if i % 2 == 0 { i } else { i * 100 + day };
                (format!("f{i:02}"), data(150_000, seed))
            })
            .collect();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        write_files(&src, &refs);
        backup_at(&repo, &src, &format!("2026-11-0{}T03:00:00Z", day + 1), &[]);
    }
    let before = repo_bytes(&repo.path);
    let metrics = repo.tmp.path().join("forget.prom");
    let out = run_ok(
        repo.cmd()
            .args([
                "forget",
                "--keep-last",
                "1",
                "--prune",
                "--max-unused",
                "0%",
                "--json",
            ])
            .arg("--metrics-file")
            .arg(&metrics),
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let label = format!("{{repository=\"{}\"}}", repo.path.display());
    for line in [
        format!("cairn_forget_success{label} 1"),
        format!("cairn_forget_snapshots_removed{label} 4"),
        format!("cairn_snapshots{label} 1"),
        format!("cairn_prune_unused_bytes_after{label} 0"),
    ] {
        assert!(prom.lines().any(|l| l == line), "no `{line}` in\n{prom}");
    }
    assert!(prom.contains("cairn_prune_bytes_freed"));
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &both["prune"];
    assert!(
        !report["repack_packs"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        !report["delete_packs"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(report["unused_bytes_after"], 0);
    let after = repo_bytes(&repo.path);

    let fresh = Repo::with_small_packs();
    run_ok(fresh.cmd().arg("backup").arg(&src));
    let single = repo_bytes(&fresh.path);
    assert!(after < before);
    assert!(
        after as f64 <= single as f64 * 1.05,
        "after prune {after} bytes, a fresh backup {single}"
    );
    assert_same_tree(
        &src,
        &restore(&repo, "latest").join(src.strip_prefix("/").unwrap()),
    );
    // Nothing left to do, and nothing waiting; the index is not rewritten for nothing
    // (every client would rebuild its cache).
    let index_before = objects(&repo.path, "index");
    let out = run_ok(repo.cmd().args(["prune", "--max-unused", "0%", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_removed"], 0);
    assert_eq!(objects(&repo.path, "index"), index_before);
    assert!(
        !repo.path.join("deletions").exists()
            || std::fs::read_dir(repo.path.join("deletions"))
                .unwrap()
                .next()
                .is_none()
    );
}

fn library_repo(path: &Path, cache: &Path, backend: Option<Arc<dyn Backend>>) -> Repository {
    let store = backend.unwrap_or_else(|| {
        backend::open(path.to_str().unwrap(), false, &S3Options::with_defaults()).unwrap()
    });
    Repository::open(
        store,
        PASSWORD.as_bytes(),
        RepoOptions {
            cache_dir: Some(cache.to_path_buf()),
            connections: 2,
        },
    )
    .unwrap()
}

#[test]
fn a_second_prune_waits_for_the_first_or_gives_up_with_exit_11() {
    let (repo, _) = backed_up(&[("f", data(10_000, 1))]);
    // A prune holds the lock (this test process), and then dies without a word.
    let held = library_repo(&repo.path, &repo.tmp.path().join("c2"), None);
    let lock = held.announce(cairn::format::LockKind::Prune).unwrap();
    let metrics = repo.tmp.path().join("prune.prom");
    let out = repo
        .cmd()
        .arg("prune")
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is pruning") && err.contains("pid"), "{err}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines()
            .any(|l| l.starts_with("cairn_prune_success{") && l.ends_with("} 0")),
        "{prom}"
    );

    // Released while the second one waits: it goes ahead.
    let waiter = std::thread::spawn({
        let mut c = repo.cmd();
        c.args(["prune", "--retry-lock", "20s"]);
        move || c.output().unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    lock.release();
    let out = waiter.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A lock never released goes stale: reported, then ignored. A timeout shorter
    // than a backup's own is refused.
    let out = repo
        .cmd()
        .args(["prune", "--stale-lock-timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 30m"));
    let dead = held.announce(cairn::format::LockKind::Prune).unwrap();
    drop(dead); // stops refreshing, as a killed process would
    age_locks(&repo);
    let out = repo.cmd().arg("prune").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale lock"));
    // That prune removed the stale lock objects.
    let out = run_ok(repo.cmd().arg("prune"));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_backup_holds_back_deletion_until_its_lock_is_stale() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    write_files(&src, &[("a", data(300_000, 1))]);
    let first = backup_at(&repo, &src, "2026-11-01T00:00:00Z", &[]);
    write_files(&src, &[("b", data(300_000, 2))]);
    backup_at(&repo, &src, "2026-11-02T00:00:00Z", &[]);
    // A backup that is killed while it runs.
    let before = repo.lock_objects();
    let mut child = repo
        .cmd_std()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "slow",
            "--",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if repo.lock_objects() > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The first snapshot's data is unused now, but the killed backup might use it.
    run_ok(repo.cmd().args(["forget", &first[..8]]));
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_removed"], 0, "{r:#}");
    let waiting = r["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{r:#}");
    assert!(waiting[0].as_str().unwrap().contains("backup by"));
    let pack_bytes = repo.stored_bytes("data");
    // Packs awaiting deletion are neither damage nor unreferenced for `check`, and
    // `repair index` leaves them out of the index.
    let out = run_ok(repo.cmd().args(["check", "--read-data", "--json"]));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(c["damage"].as_array().unwrap().is_empty(), "{c:#}");
    assert!(
        c["unreferenced_packs"].as_array().unwrap().is_empty(),
        "{c:#}"
    );
    let out = run_ok(repo.cmd().args(["repair", "index", "--dry-run", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["packs_added"].as_array().unwrap().is_empty(), "{r:#}");

    // A second prune before the lock is stale still waits.
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_removed"], 0);
    // A new backup of the forgotten data does not lean on the packs awaiting deletion:
    // it stores the data again.
    write_files(&src, &[("a", data(300_000, 1)), ("b", data(300_000, 2))]);
    let out = run_ok(repo.cmd().args(["backup", "--json", "--force"]).arg(&src));
    let s = crate::common::last_json_line(&out.stdout);
    assert!(
        s["summary"]["data_blobs_added"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    // `unlock` leaves the lock of a process missing here (a container sharing the
    // host name may run it) and says how to remove it; `--remove-all` does.
    let out = run_ok(repo.cmd().arg("unlock"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left the lock of a running backup"), "{text}");
    assert!(
        text.contains("no process") && text.contains("--remove-all"),
        "{text}"
    );
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_removed"], 0, "{r:#}");
    run_ok(repo.cmd().args(["unlock", "--remove-all"]));

    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["finished_deletions"], 1, "{r:#}");
    assert!(r["packs_removed"].as_u64().unwrap() > 0);
    assert!(repo.stored_bytes("data") < pack_bytes + 300_000);
    let back = restore(&repo, "latest");
    assert_same_tree(&src, &back.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn a_killed_backup_stops_holding_back_deletion_after_the_timeout() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    write_files(&src, &[("a", data(300_000, 1))]);
    let first = backup_at(&repo, &src, "2026-11-01T00:00:00Z", &[]);
    write_files(&src, &[("b", data(300_000, 2))]);
    backup_at(&repo, &src, "2026-11-02T00:00:00Z", &[]);
    // A backup on another machine that died: its lock is never refreshed again.
    let other = library_repo(&repo.path, &repo.tmp.path().join("c2"), None);
    drop(other.announce(cairn::format::LockKind::Backup).unwrap());
    run_ok(repo.cmd().args(["forget", &first[..8]]));
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_removed"], 0, "{r:#}");
    age_locks(&repo);
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stale_locks"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["finished_deletions"], 1, "{r:#}");
    assert!(r["packs_removed"].as_u64().unwrap() > 0);
}

/// Make every lock object an hour old, as if its operation stopped refreshing then
/// (staleness is judged by the store's modification times).
fn age_locks(repo: &Repo) {
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    for e in std::fs::read_dir(repo.path.join("locks")).unwrap() {
        crate::common::set_times(&e.unwrap().path(), hour_ago, 0);
    }
}

/// A backend that refuses deletes and overwrites, as a backup host's S3 key with no
/// DeleteObject permission and a bucket that keeps objects would.
#[derive(Debug)]
struct NoDelete(Arc<dyn Backend>);

#[async_trait::async_trait]
impl Backend for NoDelete {
    fn location(&self) -> &str {
        self.0.location()
    }
    async fn create(&self, name: &str, data: bytes::Bytes) -> cairn::Result<()> {
        if self.0.head(name).await?.is_some() {
            panic!("overwrite of {name}");
        }
        self.0.create(name, data).await
    }
    async fn get(&self, name: &str) -> cairn::Result<bytes::Bytes> {
        self.0.get(name).await
    }
    async fn get_range(&self, name: &str, r: std::ops::Range<u64>) -> cairn::Result<bytes::Bytes> {
        self.0.get_range(name, r).await
    }
    async fn head(&self, name: &str) -> cairn::Result<Option<u64>> {
        self.0.head(name).await
    }
    async fn list(&self, prefix: &str) -> cairn::Result<Vec<backend::ObjectInfo>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, name: &str) -> cairn::Result<()> {
        panic!("delete of {name}")
    }
}

#[test]
fn a_backup_never_deletes_or_overwrites() {
    use cairn::ops::backup::{BackupOptions, Progress, Source, backup};
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    write_files(&src, &[("a", data(2_000_000, 1)), ("b", data(10, 2))]);
    let local = backend::open(
        repo.path.to_str().unwrap(),
        false,
        &S3Options::with_defaults(),
    )
    .unwrap();
    for round in 0..3 {
        if round == 2 {
            write_files(&src, &[("a", data(2_000_000, 3))]);
        }
        let r = library_repo(
            &repo.path,
            &repo.tmp.path().join("cache"),
            Some(Arc::new(NoDelete(local.clone()))),
        );
        let r = r
            .into_indexed_announced(cairn::format::LockKind::Backup)
            .unwrap();
        let done = backup(
            &r,
            Source::Paths(vec![src.clone()]),
            &BackupOptions::default(),
            &Progress::default(),
        )
        .unwrap();
        assert!(done.id.is_some());
    }
    assert_eq!(snapshot_ids(&repo).len(), 3);
}

/// Fails every write and delete from the `n`th on, as if the process died there.
#[derive(Debug)]
struct DiesAfter {
    inner: Arc<dyn Backend>,
    left: std::sync::atomic::AtomicI64,
}

impl DiesAfter {
    fn step(&self, what: &str) -> cairn::Result<()> {
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            return Err(cairn::Error::Backend {
                location: "test".into(),
                message: format!("killed before {what}"),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for DiesAfter {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn create(&self, name: &str, data: bytes::Bytes) -> cairn::Result<()> {
        self.step(name)?;
        self.inner.create(name, data).await
    }
    async fn get(&self, name: &str) -> cairn::Result<bytes::Bytes> {
        self.inner.get(name).await
    }
    async fn get_range(&self, name: &str, r: std::ops::Range<u64>) -> cairn::Result<bytes::Bytes> {
        self.inner.get_range(name, r).await
    }
    async fn head(&self, name: &str) -> cairn::Result<Option<u64>> {
        self.inner.head(name).await
    }
    async fn list(&self, prefix: &str) -> cairn::Result<Vec<backend::ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> cairn::Result<()> {
        self.step(name)?;
        self.inner.delete(name).await
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Relative paths of every object under `folder`.
fn objects(root: &Path, folder: &str) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(root, &root.join(folder), &mut out);
    out.sort();
    out
}

#[test]
fn a_prune_killed_at_any_step_and_rerun_ends_where_an_uninterrupted_one_does() {
    let repo = Repo::with_small_packs();
    let src = repo.tmp.path().join("src");
    let mut ids = Vec::new();
    for day in 0..4u64 {
        let files: Vec<(String, Vec<u8>)> = (0..8u64)
            .map(|i| {
                (
                    format!("f{i}"),
                    data(200_000, if i < 4 { i } else { i * 10 + day }),
                )
            })
            .collect();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        write_files(&src, &refs);
        ids.push(backup_at(
            &repo,
            &src,
            &format!("2026-11-0{}T03:00:00Z", day + 1),
            &[],
        ));
    }
    run_ok(repo.cmd().args(["forget", &ids[0][..8], &ids[2][..8]]));
    let expected: Vec<(String, PathBuf)> = [&ids[1], &ids[3]]
        .iter()
        .map(|id| (id.to_string(), restore(&repo, id)))
        .collect();
    let pristine = repo.tmp.path().join("pristine");
    copy_dir(&repo.path, &pristine);
    let opts = PruneOptions {
        max_unused: MaxUnused::Percent(0.0),
        ..Default::default()
    };

    // The uninterrupted run, for reference.
    let reference = repo.tmp.path().join("reference");
    copy_dir(&pristine, &reference);
    let r = prune(
        library_repo(&reference, &repo.tmp.path().join("cr"), None),
        &opts,
    )
    .unwrap();
    assert!(
        !r.repack_packs.is_empty() && !r.delete_packs.is_empty(),
        "{r:?}"
    );
    let ref_packs = objects(&reference, "data").len();
    let ref_bytes = repo_bytes(&reference);

    let rerun = PruneOptions {
        stale_after: Duration::ZERO, // the killed run's lock is left behind
        ..opts.clone()
    };
    let mut steps = 0;
    for n in 0.. {
        let dir = repo.tmp.path().join(format!("killed-{n}"));
        copy_dir(&pristine, &dir);
        let store =
            backend::open(dir.to_str().unwrap(), false, &S3Options::with_defaults()).unwrap();
        let dying = Arc::new(DiesAfter {
            inner: store,
            left: std::sync::atomic::AtomicI64::new(n),
        });
        let cache = repo.tmp.path().join(format!("cache-{n}"));
        if prune(library_repo(&dir, &cache, Some(dying)), &opts).is_ok() {
            std::fs::remove_dir_all(&dir).unwrap();
            break;
        }
        steps += 1;
        prune(library_repo(&dir, &cache, None), &rerun)
            .unwrap_or_else(|e| panic!("rerun after a kill at step {n}: {e}"));
        // Same snapshots, each restoring the same; no garbage, nothing waiting.
        assert_eq!(objects(&dir, "snapshots"), objects(&reference, "snapshots"));
        assert_eq!(objects(&dir, "data").len(), ref_packs, "kill at step {n}");
        assert!(objects(&dir, "deletions").is_empty(), "kill at step {n}");
        let bytes = repo_bytes(&dir) as f64;
        assert!(
            (bytes - ref_bytes as f64).abs() / (ref_bytes as f64) < 0.01,
            "kill at step {n}"
        );
        for (id, want) in &expected {
            let target = tempfile::tempdir_in(repo.tmp.path()).unwrap();
            run_ok(
                repo.cmd()
                    .env("CAIRN_REPOSITORY", &dir)
                    .env("CAIRN_CACHE_DIR", &cache)
                    .args(["restore", id, "--target"])
                    .arg(target.path()),
            );
            assert_same_tree(want, target.path());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(steps >= 5, "only {steps} kill points");
}

#[test]
fn prune_dry_run_plans_without_changing_anything_and_max_repack_limits() {
    let repo = Repo::with_small_packs();
    let src = repo.tmp.path().join("src");
    for day in 0..3u64 {
        let files: Vec<(String, Vec<u8>)> = (0..10u64)
            .map(|i| {
                (
                    format!("f{i}"),
                    data(150_000, if i % 2 == 0 { i } else { i * 10 + day }),
                )
            })
            .collect();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        write_files(&src, &refs);
        backup_at(&repo, &src, &format!("2026-11-0{}T03:00:00Z", day + 1), &[]);
    }
    run_ok(repo.cmd().args(["forget", "--keep-last", "1"]));
    let before = tree_state(&repo.path.join("data"));
    let index_before = objects(&repo.path, "index");
    let out = run_ok(
        repo.cmd()
            .args(["prune", "--dry-run", "--json", "--max-unused", "0%"]),
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert!(
        !plan["delete_packs"].as_array().unwrap().is_empty(),
        "{plan:#}"
    );
    assert!(
        !plan["repack_packs"].as_array().unwrap().is_empty(),
        "{plan:#}"
    );
    assert!(
        plan["repack_upload_bytes"].as_u64().unwrap() > 0,
        "{plan:#}"
    );
    assert!(plan["delete_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        tree_state(&repo.path.join("data")),
        before,
        "dry run changed packs"
    );
    assert_eq!(objects(&repo.path, "index"), index_before);
    // The text plan says what it would do.
    let out = run_ok(
        repo.cmd()
            .args(["prune", "--dry-run", "--max-unused", "0%"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would delete"));

    // A repack budget smaller than any pack repacks nothing, but unused packs still go.
    let out = run_ok(repo.cmd().args([
        "prune",
        "--json",
        "--max-unused",
        "0%",
        "--max-repack",
        "1K",
    ]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["repack_packs"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(r["packs_removed"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["unused_bytes_after"].as_u64().unwrap() > 0);
    assert_same_tree(
        &src,
        &restore(&repo, "latest").join(src.strip_prefix("/").unwrap()),
    );
}

#[test]
fn unlock_leaves_running_operations_unless_told_to_remove_all() {
    let repo = Repo::new();
    let other = library_repo(&repo.path, &repo.tmp.path().join("c2"), None);
    let running = other.announce(cairn::format::LockKind::Backup).unwrap();
    let out = run_ok(repo.cmd().arg("unlock"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left the lock of a running backup"), "{text}");
    assert_eq!(
        std::fs::read_dir(repo.path.join("locks")).unwrap().count(),
        1
    );
    let out = run_ok(repo.cmd().args(["unlock", "--remove-all"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1 lock objects"));
    // (the local store removes the emptied folder)
    let left = std::fs::read_dir(repo.path.join("locks")).map_or(0, |d| d.count());
    assert_eq!(left, 0);
    drop(running);
}

/// A lock object prune cannot read may be a running backup's: prune stops (a dry run
/// only warns) until `unlock` removes it.
#[test]
fn an_unreadable_lock_stops_prune_until_unlock_removes_it() {
    let (repo, _) = backed_up(&[("a", data(300_000, 1))]);
    let bad = repo.path.join("locks").join("ab".repeat(32));
    std::fs::write(&bad, b"cut short by a full disk").unwrap();
    let out = repo.cmd().arg("prune").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&"ab".repeat(32)) && err.contains("cairn unlock"),
        "{err}"
    );
    run_ok(repo.cmd().args(["prune", "--dry-run"]));
    run_ok(repo.cmd().arg("unlock"));
    assert!(!bad.exists());
    run_ok(repo.cmd().arg("prune"));
}

/// `protect` replaces the snapshot object (new one written, old one removed), which a
/// running prune must not see half done: it waits for the prune lock like a repair.
#[test]
fn protect_does_not_run_beside_a_prune() {
    let (repo, _) = backed_up(&[("f", data(10_000, 1))]);
    let held = library_repo(&repo.path, &repo.tmp.path().join("c2"), None);
    let lock = held.announce(cairn::format::LockKind::Prune).unwrap();
    let out = repo.cmd().args(["protect", "latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is pruning"));
    lock.release();
    run_ok(repo.cmd().args(["protect", "latest"]));
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["snapshot"]["protected"], true, "{v}");
    run_ok(repo.cmd().args(["unprotect", "latest"]));
    // The protect and unprotect locks are released: a prune runs at once.
    run_ok(repo.cmd().arg("prune"));
}

/// `--keep-tag ""` (an unset variable in a cron line) is refused: it would keep nothing.
#[test]
fn an_empty_keep_tag_is_refused() {
    let (repo, _) = backed_up(&[("f", data(1_000, 1))]);
    for tag in ["", "nightly,"] {
        let out = repo
            .cmd()
            .args(["forget", "--dry-run", "--keep-tag", tag])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{tag:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty tag"));
    }
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

/// `forget --prune --json` prints one JSON document: the decisions and the prune's report.
#[test]
fn forget_with_prune_prints_one_json_document() {
    let (repo, src) = backed_up(&[("f", data(100_000, 1))]);
    write_files(&src, &[("f", data(100_000, 2))]);
    run_ok(repo.cmd().arg("backup").arg(&src));
    let out = run_ok(
        repo.cmd()
            .args(["forget", "--json", "--keep-last", "1", "--prune"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["forget"][0]["remove"].as_array().unwrap().len(),
        1,
        "{v:#}"
    );
    assert!(v["prune"]["packs_removed"].as_u64().unwrap() > 0, "{v:#}");
}

/// Prune removes the temporary packs a killed backup left in a local repository's
/// `tmp/` once they are older than the stale timeout, and leaves younger ones.
#[test]
fn prune_removes_temporary_packs_killed_backups_left() {
    let repo = Repo::new();
    let tmp = repo.path.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let (old, young) = (tmp.join("pack-killed"), tmp.join("pack-running"));
    std::fs::write(&old, data(10_000, 1)).unwrap();
    std::fs::write(&young, data(10_000, 2)).unwrap();
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    crate::common::set_times(&old, hour_ago, 0);
    // Not while a backup runs: a live one may leave a pack untouched that long.
    let other = library_repo(&repo.path, &repo.tmp.path().join("c2"), None);
    let running = other.announce(cairn::format::LockKind::Backup).unwrap();
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tmp_files_removed"], 0, "{r:#}");
    assert!(old.exists());
    running.finish();
    let out = run_ok(repo.cmd().args(["prune", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tmp_files_removed"], 1, "{r:#}");
    assert!(!old.exists() && young.exists());
}

/// Two hosts that backed up the same new data at once leave every blob in two packs:
/// prune keeps one copy of each, both snapshots restore, and prune's working directory
/// is gone from the cache afterwards.
#[test]
fn a_blob_stored_twice_is_kept_once() {
    let repo = Repo::with_small_packs();
    let src = repo.tmp.path().join("src");
    let files: Vec<(String, Vec<u8>)> = (0..6u64)
        .map(|i| (format!("f{i}"), data(400_000, i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    write_files(&src, &refs);
    // A copy of the empty repository takes the same data on its own: the same blobs,
    // in packs of other names.
    let twin = repo.tmp.path().join("twin");
    copy_dir(&repo.path, &twin);
    let first = backup_at(&repo, &src, "2026-11-01T03:00:00Z", &[]);
    let out = run_ok(
        repo.cmd()
            .env("CAIRN_REPOSITORY", &twin)
            .env("CAIRN_CACHE_DIR", repo.tmp.path().join("twin-cache"))
            .args(["backup", "--json", "--time", "2026-11-02T03:00:00Z"])
            .arg(&src),
    );
    let second = crate::common::last_json_line(&out.stdout)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let once = repo.stored_bytes("data");
    for folder in ["data", "index", "snapshots"] {
        copy_dir(&twin.join(folder), &repo.path.join(folder));
    }
    assert!(
        repo.stored_bytes("data") > once * 19 / 10,
        "not stored twice"
    );

    let out = run_ok(repo.cmd().args(["prune", "--json", "--max-unused", "0%"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every data blob twice; only the trees above `src` differ (their directories
    // changed between the backups).
    let (used, unused) = (
        r["used_bytes"].as_u64().unwrap(),
        r["unused_bytes"].as_u64().unwrap(),
    );
    assert!(unused <= used && unused > used * 99 / 100, "{r:#}");
    assert_eq!(r["unused_bytes_after"], 0, "{r:#}");
    let after = repo.stored_bytes("data");
    assert!(
        after <= once * 11 / 10,
        "{after} bytes left of {once} stored once"
    );
    run_ok(repo.cmd().args(["check", "--read-data"]));
    for id in [&first, &second] {
        assert_same_tree(
            &src,
            &restore(&repo, id).join(src.strip_prefix("/").unwrap()),
        );
    }
    let cache = repo.tmp.path().join("cache");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("prune-"))
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}
