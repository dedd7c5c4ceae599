//! The cairn binary against a real S3 server (in-process s3s-fs on 127.0.0.1), with
//! faults: throttling, connection resets, a server that stops mid-backup, bad
//! credentials, a missing bucket, read-only and no-delete keys.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use assert_cmd::Command;

use crate::common::s3::{S3Server, SECRET};
use crate::common::{PASSWORD, assert_same_tree, data, last_json_line};

fn cmd(server: &S3Server, url: &str, key: &str, tmp: &Path) -> Command {
    Command::from_std(std_cmd(server, url, key, tmp))
}

fn std_cmd(server: &S3Server, url: &str, key: &str, tmp: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_REPOSITORY", url)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("CAIRN_CACHE_DIR", tmp.join("cache"))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        // Injected resets close one connection in three: ten retries make a run of
        // failures that exhausts them vanishingly rare.
        .args([
            "--retries",
            "10",
            "--retry-timeout",
            "5s",
            "--timeout",
            "20s",
        ]);
    let _ = server;
    c
}

fn tree(root: &Path, files: u64, size: usize) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..files {
        std::fs::write(
            root.join(format!("sub/f{i:03}")),
            data(size + i as usize, i),
        )
        .unwrap();
    }
}

/// Restore the latest snapshot into `tmp/out` and compare it with `src`.
fn restore_latest_matches(server: &S3Server, url: &str, tmp: &Path, src: &Path) {
    let target = tmp.join("out");
    cmd(server, url, "cairn-full", tmp)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(src, &target.join(src.strip_prefix("/").unwrap()));
}

fn init(server: &S3Server, url: &str, tmp: &Path) {
    cmd(server, url, "cairn-full", tmp)
        .args(["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"])
        .assert()
        .success();
}

#[test]
fn round_trip_with_created_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = format!("s3:{}/fresh-bucket/nexus", server.endpoint());
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["init", "--create-bucket", "--kdf-memory-kib", "1024"])
        .assert()
        .success();
    let src = tmp.path().join("src");
    tree(&src, 30, 100_000);
    cmd(&server, &url, "cairn-full", tmp.path())
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    crate::common::run_ok(
        cmd(&server, &url, "cairn-full", tmp.path())
            .args(["backup", "--stdin", "--stdin-name", "harbor/registry.sql"])
            .write_stdin(data(3 << 20, 5)),
    );
    let target = tmp.path().join("out");
    let snaps = cmd(&server, &url, "cairn-full", tmp.path())
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let first = v[0]["id"].as_str().unwrap();
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["restore", first, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["restore", "latest:/harbor/registry.sql", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert!(std::fs::read(target.join("registry.sql")).unwrap() == data(3 << 20, 5));
}

#[test]
fn wrong_credentials_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    let out = cmd(&server, &url, "cairn-full", tmp.path())
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args(["init", "--kdf-memory-kib", "1024"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied")
            || err.contains("403")
            || err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"));
    assert!(server.files("repo", "").is_empty(), "something was written");
}

#[test]
fn missing_bucket_exits_10() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = format!("s3:{}/no-such-bucket/repo", server.endpoint());
    let out = cmd(&server, &url, "cairn-full", tmp.path())
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn read_only_key_fails_before_reading_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    init(&server, &url, tmp.path());
    // Stdin stays open: a backup that started reading would block until the timeout.
    let mut child = std_cmd(&server, &url, "cairn-readonly", tmp.path())
        .args(["backup", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "backup with a read-only key did not fail"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
    assert!(server.files("repo", "data").is_empty());
    assert!(server.files("repo", "snapshots").is_empty());
}

#[test]
fn backup_works_with_a_key_that_may_not_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    init(&server, &url, tmp.path());
    let src = tmp.path().join("src");
    tree(&src, 10, 50_000);
    for _ in 0..2 {
        cmd(&server, &url, "cairn-nodelete", tmp.path())
            .arg("backup")
            .arg(&src)
            .assert()
            .success();
    }
}

#[test]
fn throttling_and_resets_are_retried_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    init(&server, &url, tmp.path());
    let src = tmp.path().join("src");
    tree(&src, 40, 200_000);
    server.faults.fail_every.store(4, Ordering::Relaxed);
    server.faults.reset_every.store(3, Ordering::Relaxed);
    let out = crate::common::run_ok(
        cmd(&server, &url, "cairn-full", tmp.path())
            .args(["backup", "--json"])
            .arg(&src),
    );
    let s = last_json_line(&out.stdout);
    assert!(server.faults.injected.load(Ordering::Relaxed) > 0);
    assert!(
        s["requests"]["failed_attempts"].as_u64().unwrap() > 0,
        "{s}"
    );
    server.faults.fail_every.store(0, Ordering::Relaxed);
    server.faults.reset_every.store(0, Ordering::Relaxed);
    restore_latest_matches(&server, &url, tmp.path(), &src);
}

#[test]
fn server_stopped_mid_backup_then_rerun_reuses_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    init(&server, &url, tmp.path());
    let src = tmp.path().join("src");
    // 120 MiB of incompressible data in 1 MiB packs.
    tree(&src, 60, 2 << 20);
    let child = std_cmd(&server, &url, "cairn-full", tmp.path())
        .args(["backup"])
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it upload about a third, then stop the server.
    let started = Instant::now();
    while server.files("repo", "data").len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "backup made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{}", server.port)),
        "endpoint not named: {err}"
    );
    let uploaded: u64 = server
        .files("repo", "data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    server.restart();
    let out = crate::common::run_ok(
        cmd(&server, &url, "cairn-full", tmp.path())
            .args(["backup", "--json"])
            .arg(&src),
    );
    let s = last_json_line(&out.stdout);
    let total_stored: u64 = server
        .files("repo", "data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let again = s["summary"]["bytes_added"].as_u64().unwrap();
    let redone = again.saturating_sub(total_stored - uploaded);
    assert!(
        redone * 10 <= uploaded,
        "rerun stored {again} bytes; {redone} of the {uploaded} already uploaded were uploaded again"
    );
    restore_latest_matches(&server, &url, tmp.path(), &src);
}

/// Packs larger than twice the part size go up as multipart uploads; the repository
/// reads back whole and checks clean.
#[test]
fn large_packs_go_up_in_parts_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("repo");
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "12"])
        .assert()
        .success();
    let src = tmp.path().join("src");
    tree(&src, 3, 9_000_000);
    let out = crate::common::run_ok(
        cmd(&server, &url, "cairn-full", tmp.path())
            .args(["--s3-part-size", "5MiB", "backup", "--json"])
            .arg(&src),
    );
    let s = last_json_line(&out.stdout);
    // At least one 12 MiB pack: three parts and two POSTs, against one PUT for a
    // small object.
    let packs = s["summary"]["packs_added"].as_u64().unwrap();
    let puts = s["requests"]["puts"].as_u64().unwrap();
    assert!(packs >= 2, "{s}");
    assert!(puts >= packs + 4, "{s}");
    restore_latest_matches(&server, &url, tmp.path(), &src);
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["check", "--read-data"])
        .assert()
        .success();
    // S3 wants parts of at least 5 MiB.
    cmd(&server, &url, "cairn-full", tmp.path())
        .args(["--s3-part-size", "1MiB", "snapshots"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("5 MiB"));
}

/// The pack files of a repository on the test server, by path on its disk.
fn server_packs(server: &S3Server, prefix: &str) -> std::collections::BTreeSet<std::path::PathBuf> {
    let dir = server
        .root
        .join(crate::common::s3::BUCKET)
        .join(prefix)
        .join("data");
    let mut out = std::collections::BTreeSet::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.insert(f.path());
        }
    }
    out
}

#[test]
fn restore_names_a_truncated_pack_and_restores_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let url = server.url("cut");
    init(&server, &url, tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("victim"), data(3 << 20, 7)).unwrap();
    let backup = || {
        cmd(&server, &url, "cairn-full", tmp.path())
            .arg("backup")
            .arg(&src)
            .assert()
            .success();
    };
    backup();
    let first = server_packs(&server, "cut");
    std::fs::write(src.join("bystander"), data(2 << 20, 8)).unwrap();
    backup();
    // The restore streams each range: cut the first backup's packs short on the server.
    for p in &first {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(f.metadata().unwrap().len() / 3).unwrap();
    }
    let target = tmp.path().join("out");
    let out = cmd(&server, &url, "cairn-full", tmp.path())
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("victim") && err.contains("data/"), "{err}");
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert!(std::fs::read(restored.join("bystander")).unwrap() == data(2 << 20, 8));
}
