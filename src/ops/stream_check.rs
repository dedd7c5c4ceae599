//! Streams that prove themselves: checks of well-known dump formats made while the
//! stream is stored, so a truncated dump is not recorded as a complete snapshot.
//!
//! * `pg-dump`: plain `pg_dump` output ends with a "dump complete" comment. A dump cut
//!   short (a killed `pg_dump`, a broken pipe under a shell without `pipefail`) lacks it.
//!   `pg_dumpall` output (a "cluster dump") must end with its "cluster dump complete".
//! * `pg-custom`: a custom-format dump (`pg_dump -Fc`, starting with `PGDMP`) is fed, as
//!   it is stored, through a pipe to `pg_restore -f /dev/null`, which reads every data
//!   block and fails at a cut. (`pg_restore --list` reads only the table of contents at
//!   the start, so it accepts a dump cut anywhere after it.) Memory stays bounded: the
//!   pipe is the only buffer, and a slow `pg_restore` slows the backup down.
//! * `etcd-snapshot`: `etcdctl snapshot save` appends the SHA-256 of the database to the
//!   file; the last 32 bytes must be the hash of everything before them.
//! * `auto` (the default) recognises plain `pg_dump` and `pg_dumpall` output by its
//!   first lines and a custom-format dump by its magic, and checks them; where `pg_restore` is not
//!   installed the custom-format check is skipped, and the snapshot says so. Other
//!   streams are taken as they come.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which check a stream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamCheck {
    #[default]
    Auto,
    None,
    PgDump,
    PgCustom,
    EtcdSnapshot,
}

impl std::str::FromStr for StreamCheck {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => StreamCheck::Auto,
            "none" => StreamCheck::None,
            "pg-dump" => StreamCheck::PgDump,
            "pg-custom" => StreamCheck::PgCustom,
            "etcd-snapshot" => StreamCheck::EtcdSnapshot,
            other => {
                return Err(Error::Config(format!(
                    "--stdin-check {other}: use auto, none, pg-dump, pg-custom or etcd-snapshot"
                )));
            }
        })
    }
}

const PG_HEAD: &[u8] = b"--\n-- PostgreSQL database dump";
const PG_TRAILER: &[u8] = b"-- PostgreSQL database dump complete";
const PG_CLUSTER_HEAD: &[u8] = b"--\n-- PostgreSQL database cluster dump";
const PG_CLUSTER_TRAILER: &[u8] = b"-- PostgreSQL database cluster dump complete";
/// Bytes of the stream's start kept to recognise it.
const HEAD: usize = PG_CLUSTER_HEAD.len();
/// The first bytes of a custom-format archive (PostgreSQL's `pg_backup_archiver.c`).
const PG_CUSTOM_MAGIC: &[u8] = b"PGDMP";
/// Bytes of the stream's end kept for the trailer check.
const TAIL: usize = 4096;
const SHA_LEN: usize = 32;
/// Bytes of `pg_restore`'s stderr kept for the message.
const STDERR_TAIL: usize = 4096;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing was checked: the stream was not recognised, or no check was asked for.
    Unchecked,
    Passed(&'static str),
    /// The check ran and found this problem.
    Failed(&'static str, String),
    /// The stream was recognised (with `auto`), but the tool that checks it is missing.
    Skipped(&'static str, String),
}

impl Verdict {
    /// The snapshot's `stream_check` entry: `pg-dump: ok`, `etcd-snapshot: failed`,
    /// `pg-custom: skipped (pg_restore is not installed)`.
    pub fn recorded(&self) -> Option<String> {
        match self {
            Verdict::Unchecked => None,
            Verdict::Passed(k) => Some(format!("{k}: ok")),
            Verdict::Failed(k, _) => Some(format!("{k}: failed")),
            Verdict::Skipped(k, why) => Some(format!("{k}: skipped ({why})")),
        }
    }

    /// The problem that leaves the snapshot incomplete.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Verdict::Failed(_, p) => Some(p),
            _ => None,
        }
    }
}

/// The running state of a check.
#[derive(Default)]
pub(crate) struct Checker {
    kind: StreamCheck,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    sha: Sha256,
    /// The last bytes seen, not hashed yet: they may be the appended hash.
    held: Vec<u8>,
    total: u64,
    /// The command line of the custom-format check (`pg_restore -f /dev/null`).
    pg_restore_argv: Vec<String>,
    /// `pg_restore` reading the stream: from the start with `pg-custom`, from the magic
    /// on with `auto`.
    pg_restore: Option<PgRestore>,
    /// Why the custom-format check could not run (`auto` only).
    pg_restore_missing: Option<String>,
}

impl Checker {
    /// A checker of `kind`. `pg-custom` starts `pg_restore` at once, so a missing tool
    /// fails the backup before anything is read.
    pub fn start(kind: StreamCheck) -> Result<Self> {
        Self::with_pg_restore(kind, &["pg_restore", "-f", "/dev/null"])
    }

    fn with_pg_restore(kind: StreamCheck, argv: &[&str]) -> Result<Self> {
        let mut c = Checker {
            kind,
            tail: VecDeque::with_capacity(TAIL),
            pg_restore_argv: argv.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        if kind == StreamCheck::PgCustom {
            let pg = PgRestore::spawn(&c.pg_restore_argv).map_err(|e| {
                Error::Config(format!(
                    "--stdin-check pg-custom runs `{}` on the stream, and it cannot be run: {e} \
                     (it comes with PostgreSQL's client tools: Debian's postgresql-client)",
                    c.pg_restore_argv.join(" ")
                ))
            })?;
            c.pg_restore = Some(pg);
        }
        Ok(c)
    }

    pub fn update(&mut self, data: &[u8]) {
        let before = self.total;
        self.total += data.len() as u64;
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        for &b in data.iter().skip(data.len().saturating_sub(TAIL)) {
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(b);
        }
        if self.kind == StreamCheck::EtcdSnapshot {
            self.held.extend_from_slice(data);
            if self.held.len() > SHA_LEN {
                let cut = self.held.len() - SHA_LEN;
                self.sha.update(&self.held[..cut]);
                self.held.drain(..cut);
            }
        }
        let magic = PG_CUSTOM_MAGIC.len();
        if self.kind == StreamCheck::Auto
            && before < magic as u64
            && self.head.len() >= magic
            && self.head.starts_with(PG_CUSTOM_MAGIC)
        {
            // The magic completed in this piece: the earlier pieces are all in `head`.
            match PgRestore::spawn(&self.pg_restore_argv) {
                Ok(mut pg) => {
                    pg.write(&self.head[..before as usize]);
                    self.pg_restore = Some(pg);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.pg_restore_missing = Some("pg_restore is not installed".into());
                }
                Err(e) => self.pg_restore_missing = Some(format!("cannot run pg_restore: {e}")),
            }
        }
        if let Some(pg) = &mut self.pg_restore {
            pg.write(data);
        }
    }

    /// What was checked, and what it found.
    pub fn verdict(mut self) -> Verdict {
        let kind = match self.kind {
            StreamCheck::Auto
                if self.head.starts_with(PG_HEAD) || self.head.starts_with(PG_CLUSTER_HEAD) =>
            {
                StreamCheck::PgDump
            }
            StreamCheck::Auto if self.head.starts_with(PG_CUSTOM_MAGIC) => StreamCheck::PgCustom,
            k => k,
        };
        match kind {
            StreamCheck::Auto | StreamCheck::None => Verdict::Unchecked,
            StreamCheck::PgDump => {
                let (trailer, tool) = if self.head.starts_with(PG_CLUSTER_HEAD) {
                    (PG_CLUSTER_TRAILER, "pg_dumpall")
                } else {
                    (PG_TRAILER, "pg_dump")
                };
                let tail: Vec<u8> = self.tail.into_iter().collect();
                if tail.windows(trailer.len()).any(|w| w == trailer) {
                    Verdict::Passed("pg-dump")
                } else {
                    Verdict::Failed(
                        "pg-dump",
                        format!(
                            "{tool} output does not end with its \"{}\" line: the dump is \
                             truncated (was {tool} killed, or the pipe cut?)",
                            String::from_utf8_lossy(&trailer[3..])
                        ),
                    )
                }
            }
            StreamCheck::PgCustom => {
                let pg = self.pg_restore.take();
                if let Some(why) = self.pg_restore_missing.take() {
                    return Verdict::Skipped("pg-custom", why);
                }
                if !self.head.starts_with(PG_CUSTOM_MAGIC) {
                    return Verdict::Failed(
                        "pg-custom",
                        format!(
                            "the stream ({} bytes) does not start with PGDMP: it is not a \
                             custom-format dump (pg_dump -Fc)",
                            self.total
                        ),
                    );
                }
                match pg
                    .expect("pg_restore runs for a custom-format dump")
                    .finish()
                {
                    Ok(()) => Verdict::Passed("pg-custom"),
                    Err(e) => Verdict::Failed("pg-custom", e),
                }
            }
            StreamCheck::EtcdSnapshot => {
                let problem = if self.held.len() < SHA_LEN {
                    Some(format!(
                        "only {} bytes: too short for an etcd snapshot",
                        self.total
                    ))
                } else if self.sha.finalize().as_slice() != self.held.as_slice() {
                    Some(
                        "the etcd snapshot's SHA-256 (its last 32 bytes) does not match its \
                         content: truncated, damaged, or not made by `etcdctl snapshot save`"
                            .to_string(),
                    )
                } else {
                    None
                };
                match problem {
                    None => Verdict::Passed("etcd-snapshot"),
                    Some(p) => Verdict::Failed("etcd-snapshot", p),
                }
            }
        }
    }
}

/// `pg_restore -f /dev/null` reading the stream from a pipe: it reads every data block,
/// so a cut or damaged archive makes it fail. It is stopped if the backup ends first.
struct PgRestore {
    argv: Vec<String>,
    child: Child,
    /// `None` once closed, or once `pg_restore` stopped reading (it exited; its status
    /// says why).
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    waited: bool,
}

impl PgRestore {
    fn spawn(argv: &[String]) -> std::io::Result<Self> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        crate::util::unblock_signals_in_child(&mut cmd);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
            kept
        });
        Ok(PgRestore {
            argv: argv.to_vec(),
            child,
            stdin,
            stderr: Some(stderr),
            waited: false,
        })
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(w) = &mut self.stdin {
            if w.write_all(data).is_err() {
                self.stdin = None;
            }
        }
    }

    /// Close the pipe and wait: `Err` with `pg_restore`'s last error line when it failed.
    fn finish(mut self) -> std::result::Result<(), String> {
        drop(self.stdin.take());
        let status = self.child.wait();
        self.waited = true;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let shown = self.argv.join(" ");
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => {
                let how = match (s.code(), s.signal()) {
                    (Some(c), _) => format!("exited {c}"),
                    (None, Some(sig)) => format!("was killed by signal {sig}"),
                    _ => "failed".into(),
                };
                let text = String::from_utf8_lossy(&stderr);
                let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                Err(format!(
                    "the custom-format dump does not restore (truncated or damaged?): \
                     `{shown}` {how}: {}",
                    if last.is_empty() {
                        "no message"
                    } else {
                        last.trim()
                    }
                ))
            }
            Err(e) => Err(format!("waiting for `{shown}`: {e}")),
        }
    }
}

impl Drop for PgRestore {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A reader that feeds what it reads to a [`Checker`].
pub(crate) struct Checking<R> {
    pub inner: R,
    pub checker: Arc<Mutex<Checker>>,
}

impl<R: Read> Read for Checking<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.checker.lock().expect("checker").update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(mut c: Checker, data: &[u8], piece: usize) -> Verdict {
        for p in data.chunks(piece.max(1)) {
            c.update(p);
        }
        c.verdict()
    }

    fn run(kind: StreamCheck, data: &[u8], piece: usize) -> Verdict {
        feed(Checker::start(kind).unwrap(), data, piece)
    }

    /// A checker whose `pg_restore` is the shell command `sh`.
    fn with_sh(kind: StreamCheck, sh: &str) -> Checker {
        Checker::with_pg_restore(kind, &["sh", "-c", sh]).unwrap()
    }

    fn etcd_file(db: &[u8]) -> Vec<u8> {
        let mut f = db.to_vec();
        f.extend_from_slice(&Sha256::digest(db));
        f
    }

    #[test]
    fn pg_dump_is_recognised_and_its_trailer_required() {
        let good = b"--\n-- PostgreSQL database dump\n--\nCOPY t FROM stdin;\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        assert_eq!(run(StreamCheck::Auto, good, 7), Verdict::Passed("pg-dump"));
        let cut = &good[..good.len() - 30];
        let v = run(StreamCheck::Auto, cut, 7);
        assert!(v.problem().unwrap().contains("truncated"), "{v:?}");
        assert_eq!(v.recorded().unwrap(), "pg-dump: failed");
        assert_eq!(run(StreamCheck::Auto, b"not a dump", 3), Verdict::Unchecked);
        assert_eq!(run(StreamCheck::None, cut, 3), Verdict::Unchecked);
    }

    #[test]
    fn pg_dumpall_needs_the_cluster_trailer_not_only_a_database_one() {
        let all = b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\n--\n-- PostgreSQL database dump\n--\n\n--\n-- PostgreSQL database dump complete\n--\n\n--\n-- PostgreSQL database cluster dump complete\n--\n\n";
        assert_eq!(run(StreamCheck::Auto, all, 5), Verdict::Passed("pg-dump"));
        assert_eq!(run(StreamCheck::PgDump, all, 5), Verdict::Passed("pg-dump"));
        // Cut after the last database's trailer, before the cluster's.
        let cut = &all[..all.len() - 52];
        assert!(cut.ends_with(b"dump complete\n--\n\n"));
        let v = run(StreamCheck::Auto, cut, 5);
        let p = v.problem().expect("cut");
        assert!(
            p.contains("pg_dumpall") && p.contains("cluster dump complete"),
            "{p}"
        );
    }

    #[test]
    fn without_pg_restore_auto_skips_and_an_explicit_check_refuses_to_start() {
        let missing = ["/nonexistent/pg_restore", "-f", "/dev/null"];
        let c = Checker::with_pg_restore(StreamCheck::Auto, &missing).unwrap();
        let v = feed(c, b"PGDMP\x01\x0e\x00 archive", 2);
        assert_eq!(
            v,
            Verdict::Skipped("pg-custom", "pg_restore is not installed".into())
        );
        assert_eq!(
            v.recorded().unwrap(),
            "pg-custom: skipped (pg_restore is not installed)"
        );
        assert_eq!(v.problem(), None);
        let e = Checker::with_pg_restore(StreamCheck::PgCustom, &missing)
            .err()
            .expect("an error")
            .to_string();
        assert!(
            e.contains("/nonexistent/pg_restore") && e.contains("postgresql-client"),
            "{e}"
        );
    }

    #[test]
    fn a_pg_restore_that_stops_reading_fails_the_check_without_blocking_the_stream() {
        // More than a pipe holds: the writes after pg_restore exits must not block.
        let mut dump = b"PGDMP".to_vec();
        dump.extend(crate::util::seeded_bytes(4 << 20, 1));
        let c = with_sh(
            StreamCheck::Auto,
            "head -c 100 >/dev/null; echo 'pg_restore: error: could not read from input file: end of file' >&2; exit 1",
        );
        let v = feed(c, &dump, 65536);
        let p = v.problem().expect("a problem");
        assert!(
            p.contains("exited 1") && p.contains("end of file") && p.contains("truncated"),
            "{p}"
        );
    }

    #[test]
    fn an_explicit_custom_check_names_a_stream_without_the_magic() {
        let v = feed(
            with_sh(StreamCheck::PgCustom, "cat >/dev/null"),
            b"-- plain SQL",
            4,
        );
        assert!(
            v.problem().unwrap().contains("does not start with PGDMP"),
            "{v:?}"
        );
        let v = feed(with_sh(StreamCheck::PgCustom, "cat >/dev/null"), b"", 4);
        assert!(v.problem().unwrap().contains("(0 bytes)"), "{v:?}");
    }

    #[test]
    fn real_pg_restore_rejects_an_archive_that_is_only_a_magic() {
        if Command::new("pg_restore")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: pg_restore not installed");
            return;
        }
        let v = run(StreamCheck::Auto, b"PGDMP", 5);
        assert_eq!(v.recorded().unwrap(), "pg-custom: failed", "{v:?}");
        assert!(v.problem().unwrap().contains("pg_restore"), "{v:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// `auto` decides on the magic after the first pieces went by; pg_restore must
        /// still get every byte, in order, whatever the piece size.
        #[test]
        fn pg_restore_gets_the_whole_stream(body in proptest::collection::vec(any::<u8>(), 0..200_000),
                                            piece in prop_oneof![1usize..8, 1usize..70_000], explicit: bool) {
            let dir = tempfile::tempdir().unwrap();
            let seen = dir.path().join("seen");
            let kind = if explicit { StreamCheck::PgCustom } else { StreamCheck::Auto };
            let c = with_sh(kind, &format!("cat > {}", seen.display()));
            let mut dump = PG_CUSTOM_MAGIC.to_vec();
            dump.extend(&body);
            prop_assert_eq!(feed(c, &dump, piece), Verdict::Passed("pg-custom"));
            prop_assert!(std::fs::read(&seen).unwrap() == dump);
        }

        #[test]
        fn etcd_hash_matches_only_the_whole_file(db in proptest::collection::vec(any::<u8>(), 0..5000),
                                                 piece in 1usize..700, cut in 1usize..40) {
            let f = etcd_file(&db);
            prop_assert_eq!(run(StreamCheck::EtcdSnapshot, &f, piece), Verdict::Passed("etcd-snapshot"));
            let short = &f[..f.len().saturating_sub(cut)];
            prop_assert!(run(StreamCheck::EtcdSnapshot, short, piece).problem().is_some());
        }
    }
}
