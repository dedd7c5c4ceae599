//! `--stdin-from-command`: back up a producer's standard output (`pg_dump`, `etcdctl
//! snapshot save /dev/stdout`) and hold the snapshot to the producer's exit status.
//!
//! The producer's stderr passes through to ours and its last lines are kept for the
//! snapshot. A producer that exits non-zero or is killed fails the backup with its
//! status in the message, and no snapshot is written: a truncated dump must never be
//! the `latest` one can restore. What was uploaded stays indexed, so a rerun reuses it.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::backup::{Ctx, backup_stream};
use crate::error::{Error, Result};
use crate::format::StreamInfo;
use crate::id::BlobId;

/// Lines of the producer's stderr kept in the snapshot.
const TAIL_LINES: usize = 20;
/// How long the end of the producer's stderr is waited for once it has exited.
const STDERR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn backup_command(
    ctx: &Ctx,
    name: &str,
    argv: &[String],
) -> Result<(BlobId, Vec<String>, StreamInfo)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Config("--stdin-from-command needs a command after --".into()))?;
    let shown = argv.join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::util::unblock_signals_in_child(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run `{shown}`: {e}")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let kept = tail.clone();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = std::io::stderr().write_all(&line);
            let mut tail = kept.lock().expect("stderr tail");
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
        drop(done);
    });
    let info = StreamInfo {
        command: argv.to_vec(),
        ..Default::default()
    };
    let stored = backup_stream(ctx, name, Box::new(stdout), info);
    if stored.is_err() {
        // The repository failed: stop the producer rather than leave it blocked on a
        // full pipe.
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::Source(format!("waiting for `{shown}`: {e}")))?;
    // The producer's stderr ends when every process holding it has closed it; one it
    // left running in the background (`cmd &` in a wrapper script) may hold it for
    // hours. The tail is informational: wait a moment for its last lines, not for that.
    let _ = ended.recv_timeout(STDERR_GRACE);
    let stderr_tail = tail
        .lock()
        .expect("stderr tail")
        .iter()
        .map(String::as_str)
        .collect::<String>();
    let (tree, paths, mut info) = stored?;
    info.exit_code = status.code();
    info.stderr_tail = stderr_tail;
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".to_string(),
        };
        let last = info
            .stderr_tail
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(Error::Source(format!(
            "`{shown}` {how} after {} bytes; no snapshot was written{}",
            info.bytes,
            if last.is_empty() {
                String::new()
            } else {
                format!(" (its last error line: {last})")
            }
        )));
    }
    Ok((tree, paths, info))
}
