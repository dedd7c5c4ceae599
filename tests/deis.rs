//! The Deis recipe (docs/guides/deis-store.md): the store volume's tree, whose logs grow
//! while cairn reads them, and the mirrored `db_wal` and `registry` buckets.
//!
//! A log that grows under the backup must be named, the snapshot marked incomplete and
//! the exit code be 3, while everything else restores byte for byte. The test makes the
//! growth happen during the read without depending on timing: it waits until the
//! backup has the log open, stops the process (SIGSTOP), checks in `/proc` that the
//! read has not reached the end of the file, appends, and lets it go on (SIGCONT).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{Repo, data, last_json_line, run_ok, tree_state};

const GROWING: &str = "logs/deis-registry.log";

/// Write `root/p`, leaving an existing file alone (as a mirror does with objects it
/// already has).
fn write(root: &Path, p: &str, c: &[u8]) {
    let p = root.join(p);
    if p.exists() {
        return;
    }
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, c).unwrap();
}

/// Log lines, `n` bytes or a little more.
fn log_lines(component: &str, n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 200);
    let mut i = seed;
    while out.len() < n {
        i += 1;
        writeln!(
            out,
            "2026-11-21T01:{:02}:{:02}Z {component}[{}]: 10.2.{}.{} - - \"GET /v1/images/{:016x}/layer HTTP/1.1\" {} {}",
            (i / 60) % 60,
            i % 60,
            i % 7,
            i % 250,
            i % 199,
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            [200, 200, 200, 304, 404][(i % 5) as usize],
            (i * 7919) % 100_000
        )
        .unwrap();
    }
    out
}

/// `/var/lib/deis/store` as the controller and logger use it: one log per component
/// and per application. The registry's log is large, so the backup reads it for a while.
fn store_volume(root: &Path) {
    write(root, GROWING, &log_lines("deis-registry", 24 << 20, 0));
    for c in [
        "deis-controller",
        "deis-builder",
        "deis-router",
        "deis-database",
    ] {
        write(root, &format!("logs/{c}.log"), &log_lines(c, 300_000, 1));
    }
    for a in 0..30 {
        let app = format!("app-{a:02}");
        write(
            root,
            &format!("logs/{app}.log"),
            &log_lines(&app, 5_000 + a * 997, a as u64),
        );
    }
}

/// The `db_wal` bucket as WAL-E lays it out, and the `registry` bucket (Docker registry
/// v1), mirrored to files with `s3cmd sync` or `mc mirror`.
fn bucket_views(root: &Path, segments: std::ops::Range<u64>) {
    let base = "db_wal/basebackups_005/base_000000010000000000000002_00000040";
    write(root, &format!("{base}/extended_version.txt"), b"15.5\n");
    write(
        root,
        &format!("{base}/tar_partitions/part_00000000.tar.lzo"),
        &data(2 << 20, 1),
    );
    write(
        root,
        &format!("{base}_backup_stop_sentinel.json"),
        br#"{"wal_segment_backup_stop": "000000010000000000000002", "expanded_size_bytes": 41943040}"#,
    );
    for s in segments {
        write(
            root,
            &format!("db_wal/wal_005/{s:024X}.lzo"),
            &data(150_000 + (s as usize % 5) * 10_000, 100 + s),
        );
    }
    for i in 0..20u64 {
        let id: String = data(32, 500 + i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write(
            root,
            &format!("registry/images/{id}/layer"),
            &data(40_000 + i as usize * 3000, 600 + i),
        );
        write(
            root,
            &format!("registry/images/{id}/json"),
            b"{\"os\":\"linux\"}",
        );
        write(root, &format!("registry/images/{id}/ancestry"), b"[]");
        write(
            root,
            &format!("registry/repositories/library/app-{:02}/tag_latest", i % 10),
            id.as_bytes(),
        );
    }
}

/// Every file below `root`, by path relative to it.
fn files(root: &Path) -> BTreeMap<String, blake3::Hash> {
    let prefix = root.display().to_string();
    tree_state(root)
        .into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect()
}

/// The read offset of `pid`'s descriptor on `file`, if it has one open.
fn read_offset(pid: u32, file: &Path) -> Option<u64> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(e.path()).ok().as_deref() == Some(file) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_str()?))
                    .ok()?;
            let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
            return pos.trim().parse().ok();
        }
    }
    None
}

/// Run `backup --json SRC` and `change` the `log` while the backup is reading it.
/// `None` when the backup finished reading the log before it could be caught.
fn backup_while_changing(
    repo: &Repo,
    src: &Path,
    log: &Path,
    change: &dyn Fn(&Path),
) -> Option<std::process::Output> {
    let size = std::fs::metadata(log).unwrap().len();
    let child = repo
        .cmd_std()
        .args(["backup", "--json", "--tag", "deis-store"])
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    let mut caught = false;
    while started.elapsed() < Duration::from_secs(60) {
        if read_offset(pid, log).is_some() {
            kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
            // Stopped: the offset cannot move now. Past the start and short of the end
            // means the backup has read some of the log and reads on after the change,
            // seeing the size it noted change. At the start (open, not read yet: the
            // backup checks what it opened first) it is let go on and caught later.
            let pos = read_offset(pid, log);
            if pos.is_some_and(|pos| pos > 0 && pos < size) {
                change(log);
                caught = true;
            }
            kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
            if pos != Some(0) {
                break;
            }
        }
        if std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
        {
            break; // exited
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let out = child.wait_with_output().unwrap();
    caught.then_some(out)
}

/// A fresh repository and store volume, backed up while `change` alters the big log.
fn caught_backup(change: &dyn Fn(&Path)) -> (Repo, PathBuf, std::process::Output) {
    for _ in 0..5 {
        let repo = Repo::new();
        let src = repo.tmp.path().join("var/lib/deis/store");
        store_volume(&src);
        if let Some(out) = backup_while_changing(&repo, &src, &src.join(GROWING), change) {
            return (repo, src, out);
        }
        eprintln!("the backup read the log before it was caught; again with a new repository");
    }
    panic!("the backup never had the log open mid-read");
}

/// The stored log, restored and dumped: both must give the same bytes.
fn stored_log(repo: &Repo, src: &Path) -> (PathBuf, Vec<u8>) {
    let restored = repo.restore_latest(src);
    let log = std::fs::read(restored.join(GROWING)).unwrap();
    let from = format!("latest:{}", src.join(GROWING).display());
    let dumped = run_ok(repo.cmd().args(["dump", &from])).stdout;
    assert!(dumped == log, "restore and dump of the log differ");
    (restored, log)
}

/// Exit 3, the snapshot incomplete, naming the log and only it; its problem message.
fn assert_only_the_log_named(repo: &Repo, src: &Path, out: &std::process::Output) -> String {
    crate::common::assert_incomplete(out, "");
    let s = last_json_line(&out.stdout);
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s:#}");
    assert_eq!(problems[0]["path"], src.join(GROWING).to_str().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deis-registry.log") && err.contains("incomplete"),
        "{err}"
    );
    let snaps = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps[0]["snapshot"]["complete"], false);
    let recorded = snaps[0]["snapshot"]["problems"][0].as_str().unwrap();
    assert!(recorded.contains("deis-registry.log"), "{recorded}");
    problems[0]["message"].as_str().unwrap().to_string()
}

#[test]
fn a_log_growing_under_the_backup_is_named_and_the_rest_restores() {
    let extra = log_lines("deis-registry", 20_000, 99);
    let append = |log: &Path| {
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        f.write_all(&extra).unwrap();
    };
    let (repo, src, out) = caught_backup(&append);
    let message = assert_only_the_log_named(&repo, &src, &out);
    assert!(message.contains("changed while being read"), "{message}");

    // Everything else restores byte for byte. The log was read to its end, so it holds
    // what it had at the start and what was appended; restore and dump agree on it.
    let (restored, log_got) = stored_log(&repo, &src);
    let log_now = std::fs::read(src.join(GROWING)).unwrap();
    assert!(
        log_now.starts_with(&log_got),
        "the stored log is a prefix of the log"
    );
    assert!(
        log_got.len() > log_now.len() - extra.len(),
        "the appended part was read"
    );
    let key = format!("/{GROWING}");
    let mut want = files(&src);
    let mut got = files(&restored);
    want.remove(&key);
    got.remove(&key);
    assert_eq!(got, want);
    assert_eq!(want.len(), 34);

    // The guide's wrapper, which turns exit 3 into 0 when only logs were named, accepts
    // this run and would not accept a problem elsewhere.
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/deis-store.md"),
    )
    .unwrap();
    let filter = guide
        .split("jq -e '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a jq filter in the guide");
    let filter = filter.replace("/var/lib/deis/store/", &format!("{}/", src.display()));
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let other = summary.replace("/logs/deis-registry.log", "/data/other");
    for (json, ok) in [(summary, true), (other, false)] {
        let Ok(mut jq) = std::process::Command::new("jq")
            .args(["-e", &filter])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
        else {
            eprintln!("skipped the jq filter: jq not installed");
            break;
        };
        jq.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
        assert_eq!(jq.wait().unwrap().success(), ok, "{filter} on {json}");
    }
}

#[test]
fn a_log_rotated_by_truncation_under_the_backup_keeps_what_was_read() {
    let original = log_lines("deis-registry", 24 << 20, 0);
    let rotate = |log: &Path| std::fs::write(log, b"rotated\n").unwrap();
    let (repo, src, out) = caught_backup(&rotate);
    let message = assert_only_the_log_named(&repo, &src, &out);
    assert!(message.contains("changed while being read"), "{message}");
    // What was read before the rotation, without padding after it.
    let (_, log_got) = stored_log(&repo, &src);
    assert!(!log_got.is_empty() && log_got.len() < original.len());
    assert!(
        original.starts_with(&log_got),
        "the stored log is what was read"
    );
}

#[test]
fn mirrored_wal_buckets_back_up_incrementally_and_restore() {
    let repo = Repo::new();
    let views = repo.tmp.path().join("var/lib/cairn-views/deis");
    let tag: &[&std::ffi::OsStr] = &["--tag".as_ref(), "deis-buckets".as_ref()];
    bucket_views(&views, 2..40);
    let first = repo.backup_json(&[tag, &[views.as_os_str()]].concat());
    assert_eq!(first["complete"], true);
    // A day later: new WAL segments and a new image; the mirror leaves the rest alone.
    bucket_views(&views, 40..52);
    let second = repo.backup_json(&[tag, &[views.as_os_str()]].concat());
    let s = &second["summary"];
    assert_eq!(s["files_new"], 12, "{second:#}");
    assert_eq!(s["files_changed"], 0, "{second:#}");
    let added: u64 = (40..52u64).map(|s| 150_000 + (s % 5) * 10_000).sum();
    assert_eq!(s["bytes_read"], added, "only the new segments were read");

    // The store volume's snapshot comes later, so `latest` is not the buckets': the
    // guide picks the newest of a tag with `snapshots --tag TAG --json`.
    let store = repo.tmp.path().join("var/lib/deis/store");
    write(&store, "logs/app-00.log", &log_lines("app-00", 10_000, 1));
    repo.backup_json(&["--tag".as_ref(), "deis-store".as_ref(), store.as_os_str()]);
    let out = run_ok(
        repo.cmd()
            .args(["snapshots", "--tag", "deis-buckets", "--json"]),
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], second["snapshot_id"]);
    let target = repo.tmp.path().join("restored");
    let from = format!("{}:{}", list[1]["id"].as_str().unwrap(), views.display());
    run_ok(repo.cmd().args(["restore", &from, "--target"]).arg(&target));
    let want = files(&views);
    assert_eq!(files(&target), want);
    assert!(
        want.keys()
            .any(|k| k.ends_with("_backup_stop_sentinel.json"))
    );
    assert_eq!(want.keys().filter(|k| k.contains("/wal_005/")).count(), 50);
}
