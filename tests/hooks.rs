//! `backup --pre-command/--post-command`: the post command runs whatever happens, with
//! the outcome in its environment; a failing pre command stops the backup.

use std::path::Path;
use std::time::Duration;

use crate::common::{Repo, data};

/// A post command that writes its environment to `file`.
fn recorder(file: &Path) -> String {
    format!(
        "echo \"$CAIRN_STATUS $CAIRN_EXIT_CODE $CAIRN_SNAPSHOT_ID\" > {}",
        file.display()
    )
}

fn recorded(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("post command did not run ({}): {e}", file.display()))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn post_command_gets_the_snapshot_of_a_good_backup_after_the_pre_command() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), data(1000, 1)).unwrap();
    let order = repo.tmp.path().join("order");
    let post = repo.tmp.path().join("post");
    let out = repo
        .cmd()
        .args(["backup", "--json", "--pre-command"])
        .arg(format!("echo pre >> {}", order.display()))
        .arg("--post-command")
        .arg(format!(
            "{}; echo post >> {}",
            recorder(&post),
            order.display()
        ))
        .arg(&src)
        .output()
        .unwrap();
    let id = crate::common::snapshot_id(&out);
    assert_eq!(recorded(&post), ["ok", "0", id.as_str()]);
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "pre\npost\n");
}

#[test]
fn a_failing_pre_command_stops_the_backup_and_post_still_runs() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let post = repo.tmp.path().join("post");
    let out = repo
        .cmd()
        .args(["backup", "--pre-command", "exit 4", "--post-command"])
        .arg(recorder(&post))
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pre-command exited 4"));
    assert_eq!(recorded(&post), ["failed", "1"]);
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&snaps.stdout).trim(), "[]");
}

#[test]
fn post_command_runs_after_a_failed_backup_and_reports_it() {
    let repo = Repo::new();
    let post = repo.tmp.path().join("post");
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "db.sql",
            "--post-command",
        ])
        .arg(recorder(&post))
        .args(["--", "sh", "-c", "echo partial; exit 2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(recorded(&post), ["failed", "1"]);
}

#[test]
fn a_failing_post_command_fails_the_run_but_keeps_the_snapshot() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let out = repo
        .cmd()
        .args(["backup", "--post-command", "exit 5"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--post-command exited 5"));
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn post_command_runs_when_the_backup_is_interrupted() {
    let repo = Repo::new();
    let post = repo.tmp.path().join("post");
    let mut child = repo
        .cmd_std()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "slow",
            "--post-command",
        ])
        .arg(recorder(&post))
        .args(["--", "sleep", "30"])
        .spawn()
        .unwrap();
    // Wait until the backup runs (its lock object is written), then stop it.
    for _ in 0..100 {
        if repo.lock_objects() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(recorded(&post), ["interrupted", "143"]);
}

/// A hook does not read cairn's standard input: with `--stdin` that is the stream.
#[test]
fn a_hook_that_reads_stdin_does_not_eat_the_stream() {
    let repo = Repo::new();
    let dump = data(100_000, 7);
    let mut child = repo
        .cmd_std()
        .args([
            "backup",
            "--stdin",
            "--stdin-name",
            "h/r.bin",
            "--pre-command",
        ])
        .arg("head -c 40 > /dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &dump).unwrap();
    assert!(child.wait().unwrap().success());
    let out = repo
        .cmd()
        .args(["dump", "latest:/h/r.bin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == dump, "{} bytes stored", out.stdout.len());
}

/// A reader of the summary that went away does not fail a backup whose snapshot is
/// written, and the post command runs.
#[test]
fn a_closed_stdout_still_runs_the_post_command() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), data(1000, 1)).unwrap();
    let post = repo.tmp.path().join("post");
    let mut child = repo
        .cmd_std()
        .args(["backup", "--post-command"])
        .arg(recorder(&post))
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rec = recorded(&post);
    assert_eq!(rec[..2], ["ok", "0"]);
}
