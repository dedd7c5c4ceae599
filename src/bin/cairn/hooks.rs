//! `backup --pre-command` / `--post-command`: commands run around a backup.
//!
//! The pre command runs first; when it fails the backup does not start. The post
//! command runs whenever the pre command was run: after a good, incomplete or failed
//! backup, and when the backup is interrupted (SIGINT, SIGTERM), with `CAIRN_STATUS`
//! (`ok`, `incomplete`, `failed`, `interrupted`), `CAIRN_EXIT_CODE` and
//! `CAIRN_SNAPSHOT_ID` (empty when none was written) in its environment. This is the
//! "scale the deployment down, back up, scale it up again whatever happened" pattern.

use std::process::Command;

use anyhow::{Result, anyhow, bail};
use cairn::id::SnapshotId;
use nix::sys::signal::{SigSet, Signal};

/// Run `cmd` with `sh -c`, with signals unblocked in the child; its exit code.
fn shell(what: &str, cmd: &str, env: &[(&str, String)]) -> Result<i32> {
    let mut c = Command::new("sh");
    // Not cairn's stdin: that may be the stream being backed up (`--stdin`), and a
    // hook that reads (`ssh` without `-n`) would eat its start.
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    cairn::util::unblock_signals_in_child(&mut c);
    let status = c
        .status()
        .map_err(|e| anyhow!("cannot run {what} `{cmd}`: {e}"))?;
    Ok(status.code().unwrap_or(128 + 9))
}

fn post_env(status: &str, code: u8, snapshot: Option<SnapshotId>) -> Vec<(&'static str, String)> {
    vec![
        ("CAIRN_STATUS", status.to_string()),
        ("CAIRN_EXIT_CODE", code.to_string()),
        (
            "CAIRN_SNAPSHOT_ID",
            snapshot.map(|s| s.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Run `backup` between the hooks. `backup` reports the snapshot it wrote through its
/// argument; `exit_code` maps an error to the process's exit code.
pub fn around(
    pre: Option<&str>,
    post: Option<&str>,
    exit_code: impl Fn(&anyhow::Error) -> u8,
    backup: impl FnOnce(&mut Option<SnapshotId>) -> Result<u8>,
) -> Result<u8> {
    if pre.is_none() && post.is_none() {
        return backup(&mut None);
    }
    // An interruption must still run the post command: SIGINT and SIGTERM are blocked
    // here (and so in every thread started from now on) and taken by one thread, which
    // runs the post command and ends the process.
    if let Some(post) = post {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block()
            .map_err(|e| anyhow!("cannot set up signal handling for --post-command: {e}"))?;
        let post = post.to_string();
        std::thread::spawn(move || {
            let Ok(sig) = set.wait() else { return };
            let code = 128 + sig as i32;
            eprintln!("cairn: {sig} received; running --post-command before exiting");
            let env = post_env("interrupted", code as u8, None);
            if let Err(e) = shell("--post-command", &post, &env) {
                eprintln!("error: {e:#}");
            }
            std::process::exit(code);
        });
    }
    let mut snapshot = None;
    let result = match pre.map(|p| shell("--pre-command", p, &[])) {
        // A panic (a bug) still runs the post command: the message is already printed.
        Some(Ok(0)) | None => {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backup(&mut snapshot)))
                .unwrap_or_else(|_| Err(anyhow!("cairn stopped on an internal error (above)")))
        }
        Some(Ok(code)) => Err(anyhow!(
            "--pre-command exited {code}; the backup did not start"
        )),
        Some(Err(e)) => Err(e),
    };
    let Some(post) = post else { return result };
    let (status, code) = match &result {
        Ok(0) => ("ok", 0),
        Ok(c) => ("incomplete", *c),
        Err(e) => ("failed", exit_code(e)),
    };
    let ran = shell("--post-command", post, &post_env(status, code, snapshot));
    match (result, ran) {
        (r, Ok(0)) => r,
        (Err(e), _) => Err(e.context("--post-command also failed; see its output")),
        (Ok(_), Ok(c)) => bail!("the backup finished ({status}) but --post-command exited {c}"),
        (Ok(_), Err(e)) => Err(e),
    }
}
