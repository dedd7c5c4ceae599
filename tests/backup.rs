//! Backup behaviour: parent detection, streams from commands, selection, dry runs, and
//! inputs that fail while being read.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Repo, data, last_json_line};

#[test]
fn touching_one_file_in_20k_reads_one_file() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    let first = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(first["summary"]["files_new"], 20_000);
    let unchanged = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(
        unchanged["summary"]["files_unmodified"], 20_000,
        "{unchanged}"
    );
    assert_eq!(unchanged["summary"]["bytes_read"], 0);
    // Unchanged trees keep their ids; only the chain of ancestors above the source
    // (`/`, `/tmp`, whose times other processes change) may get new trees.
    let depth = src.components().count() as u64 - 1;
    assert!(
        unchanged["summary"]["tree_blobs_added"].as_u64().unwrap() <= depth,
        "{unchanged}"
    );
    assert_eq!(unchanged["parent"], first["snapshot_id"]);

    std::fs::write(src.join("d042/f042"), "changed content").unwrap();
    let s = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(s["summary"]["files_changed"], 1, "{s}");
    assert_eq!(s["summary"]["files_new"], 0);
    assert_eq!(s["summary"]["files_unmodified"], 19_999);
    assert_eq!(s["summary"]["bytes_read"], "changed content".len());

    // --force reads everything again.
    let forced = repo
        .cmd()
        .args(["backup", "--json", "--force"])
        .arg(&src)
        .output()
        .unwrap();
    let forced = last_json_line(&forced.stdout);
    assert_eq!(forced["summary"]["files_unmodified"], 0);
    assert_eq!(forced["summary"]["data_blobs_added"], 0);
}

#[test]
fn failing_command_writes_no_complete_snapshot_and_exits_1() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "db/x.sql",
            "--",
            "sh",
            "-c",
            "echo partial; echo oops >&2; exit 2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("status 2") && err.contains("oops"), "{err}");
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|s| s["snapshot"]["complete"] == false),
        "{v}"
    );

    // Killed by a signal: also no snapshot.
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo x; kill -9 $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signal 9"));
}

#[test]
fn command_output_is_stored_with_its_provenance() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .args([
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-name",
            "harbor/registry.sql",
            "--",
        ])
        .args(["sh", "-c", "seq 1 100000; echo done >&2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let stream = &v[0]["snapshot"]["stream"];
    assert_eq!(stream["exit_code"], 0);
    assert_eq!(stream["command"][0], "sh");
    assert_eq!(stream["stderr_tail"], "done\n");
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(stream["bytes"], expected.len());
    let target = repo.tmp.path().join("out");
    repo.cmd()
        .args(["restore", "latest:/harbor/registry.sql", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(target.join("registry.sql")).unwrap(),
        expected
    );
}

#[test]
fn excludes_and_files_from() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    for p in ["logs", "cache", "keep", "skipme", "Upper"] {
        std::fs::create_dir_all(src.join(p)).unwrap();
    }
    for (p, c) in [
        ("logs/a.tmp", "tmp"),
        ("logs/a.log", "log"),
        ("cache/x", "cached"),
        ("keep/k", "kept"),
        ("skipme/.nobackup", ""),
        ("skipme/data", "skipped"),
        ("Upper/FILE.BAK", "bak"),
    ] {
        std::fs::write(src.join(p), c).unwrap();
    }
    let pats = repo.tmp.path().join("patterns");
    std::fs::write(&pats, "# comment\n\ncache\n").unwrap();
    let list = repo.tmp.path().join("list");
    std::fs::write(&list, format!("{}\n", src.display())).unwrap();
    crate::common::run_ok(
        repo.cmd()
            .args([
                "backup",
                "--json",
                "--exclude",
                "logs/*.tmp",
                "--iexclude",
                "*.bak",
                "--exclude-if-present",
                ".nobackup",
            ])
            .arg("--exclude-file")
            .arg(&pats)
            .arg("--files-from")
            .arg(&list),
    );
    let ls = repo
        .cmd()
        .args(["ls", "--recursive", "latest"])
        .arg(&src)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    let names: Vec<&str> = ls
        .lines()
        .map(|l| l.strip_prefix(src.to_str().unwrap()).unwrap_or(l))
        .collect();
    assert_eq!(
        names,
        ["", "/Upper", "/keep", "/keep/k", "/logs", "/logs/a.log"],
        "{ls}"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(1 << 20, 3)).unwrap();
    let before = repo.stored_bytes("");
    let out = repo
        .cmd()
        .args(["backup", "--json", "--dry-run"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = last_json_line(&out.stdout);
    assert_eq!(s["dry_run"], true);
    assert!(s["snapshot_id"].is_null());
    assert!(s["summary"]["bytes_added"].as_u64().unwrap() > 1 << 20);
    assert_eq!(repo.stored_bytes(""), before);
}

#[test]
fn missing_source_is_named_and_exits_3() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok"), "fine").unwrap();
    let gone = repo.tmp.path().join("vanished");
    let out = repo
        .cmd()
        .arg("backup")
        .arg(&src)
        .arg(&gone)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vanished"));
    // Not a terminal (cron mail, `kubectl logs`): no colour codes around the warning.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let v: serde_json::Value = serde_json::from_slice(
        &repo
            .cmd()
            .args(["snapshots", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v[0]["snapshot"]["complete"], false);
    assert!(
        v[0]["snapshot"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("vanished")
    );
}

/// Runs cairn as `nobody` so that a mode-000 file is really unreadable.
#[test]
fn unreadable_file_is_named_exit_3_rest_restorable() {
    if !crate::common::is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable"), "yes").unwrap();
    std::fs::write(src.join("secret"), "no").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Let `nobody` reach the repository, cache and sources.
    let chmod = |p: &std::path::Path| {
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(p)
            .status()
            .unwrap()
    };
    chmod(repo.tmp.path());
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_cairn"),
            "backup",
        ])
        .arg(&src)
        .env("CAIRN_REPOSITORY", &repo.path)
        .env("CAIRN_PASSWORD", crate::common::PASSWORD)
        .env("CAIRN_CACHE_DIR", repo.tmp.path().join("cache-nobody"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
    let restored = repo.restore_latest(&src);
    assert_eq!(
        std::fs::read_to_string(restored.join("readable")).unwrap(),
        "yes"
    );
    assert!(!restored.join("secret").exists());
}

#[test]
fn files_changing_during_backup_are_named_and_the_rest_restores() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("static-{i:02}")), data(200_000, i)).unwrap();
    }
    for i in 0..200 {
        std::fs::write(src.join(format!("del-{i:03}")), data(10_000, 1000 + i)).unwrap();
    }
    std::fs::write(src.join("growing.log"), data(64 << 20, 7)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (src, stop) = (src.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(src.join("growing.log"))
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'x'; 4096]).unwrap();
                let _ = std::fs::remove_file(src.join(format!("del-{:03}", i % 200)));
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = repo
        .cmd()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = last_json_line(&out.stdout);
    let problems: Vec<String> = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.ends_with("growing.log")),
        "{problems:?}"
    );
    let restored = repo.restore_latest(&src);
    for i in 0..40 {
        assert_eq!(
            std::fs::read(restored.join(format!("static-{i:02}"))).unwrap(),
            data(200_000, i)
        );
    }
    // Every deletable file that was stored and not named is intact.
    for i in 0..200 {
        let p = restored.join(format!("del-{i:03}"));
        if p.exists() && !problems.iter().any(|q| q.ends_with(&format!("del-{i:03}"))) {
            assert_eq!(std::fs::read(&p).unwrap(), data(10_000, 1000 + i));
        }
    }
    let _ = OsStr::new("");
}
