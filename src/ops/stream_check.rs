//! Streams that prove themselves: checks of well-known dump formats made while the
//! stream is stored, so a truncated dump is not recorded as a complete snapshot.
//!
//! * `pg-dump`: plain `pg_dump` output ends with a "dump complete" comment. A dump cut
//!   short (a killed `pg_dump`, a broken pipe under a shell without `pipefail`) lacks it.
//! * `etcd-snapshot`: `etcdctl snapshot save` appends the SHA-256 of the database to the
//!   file; the last 32 bytes must be the hash of everything before them.
//! * `auto` (the default) recognises plain `pg_dump` output by its first line and
//!   checks it; other streams are taken as they come.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which check a stream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamCheck {
    #[default]
    Auto,
    None,
    PgDump,
    EtcdSnapshot,
}

impl std::str::FromStr for StreamCheck {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => StreamCheck::Auto,
            "none" => StreamCheck::None,
            "pg-dump" => StreamCheck::PgDump,
            "etcd-snapshot" => StreamCheck::EtcdSnapshot,
            other => {
                return Err(Error::Config(format!(
                    "--stdin-check {other}: use auto, none, pg-dump or etcd-snapshot"
                )));
            }
        })
    }
}

const PG_HEAD: &[u8] = b"--\n-- PostgreSQL database dump";
const PG_TRAILER: &[u8] = b"-- PostgreSQL database dump complete";
/// Bytes of the stream's end kept for the trailer check.
const TAIL: usize = 4096;
const SHA_LEN: usize = 32;

/// The running state of a check.
pub(crate) struct Checker {
    kind: StreamCheck,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    sha: Sha256,
    /// The last bytes seen, not hashed yet: they may be the appended hash.
    held: Vec<u8>,
    total: u64,
}

impl Checker {
    pub fn new(kind: StreamCheck) -> Self {
        Checker {
            kind,
            head: Vec::new(),
            tail: VecDeque::with_capacity(TAIL),
            sha: Sha256::new(),
            held: Vec::new(),
            total: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < PG_HEAD.len() {
            let take = (PG_HEAD.len() - self.head.len()).min(data.len());
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
    }

    /// What was checked (`None` when nothing was), and the problem found, if any.
    pub fn verdict(self) -> (Option<&'static str>, Option<String>) {
        let kind = match self.kind {
            StreamCheck::Auto if self.head == PG_HEAD => StreamCheck::PgDump,
            k => k,
        };
        match kind {
            StreamCheck::Auto | StreamCheck::None => (None, None),
            StreamCheck::PgDump => {
                let tail: Vec<u8> = self.tail.into_iter().collect();
                let ok = tail.windows(PG_TRAILER.len()).any(|w| w == PG_TRAILER);
                let problem = (!ok).then(|| {
                    "pg_dump output does not end with its \"dump complete\" line: the dump is \
                     truncated (was pg_dump killed, or the pipe cut?)"
                        .to_string()
                });
                (Some("pg-dump"), problem)
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
                (Some("etcd-snapshot"), problem)
            }
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

    fn run(kind: StreamCheck, data: &[u8], piece: usize) -> (Option<&'static str>, Option<String>) {
        let mut c = Checker::new(kind);
        for p in data.chunks(piece.max(1)) {
            c.update(p);
        }
        c.verdict()
    }

    fn etcd_file(db: &[u8]) -> Vec<u8> {
        let mut f = db.to_vec();
        f.extend_from_slice(&Sha256::digest(db));
        f
    }

    #[test]
    fn pg_dump_is_recognised_and_its_trailer_required() {
        let good = b"--\n-- PostgreSQL database dump\n--\nCOPY t FROM stdin;\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        assert_eq!(run(StreamCheck::Auto, good, 7), (Some("pg-dump"), None));
        let cut = &good[..good.len() - 30];
        let (k, p) = run(StreamCheck::Auto, cut, 7);
        assert_eq!(k, Some("pg-dump"));
        assert!(p.unwrap().contains("truncated"));
        assert_eq!(run(StreamCheck::Auto, b"not a dump", 3), (None, None));
        assert_eq!(run(StreamCheck::None, cut, 3), (None, None));
    }

    proptest! {
        #[test]
        fn etcd_hash_matches_only_the_whole_file(db in proptest::collection::vec(any::<u8>(), 0..5000),
                                                 piece in 1usize..700, cut in 1usize..40) {
            let f = etcd_file(&db);
            prop_assert_eq!(run(StreamCheck::EtcdSnapshot, &f, piece), (Some("etcd-snapshot"), None));
            let short = &f[..f.len().saturating_sub(cut)];
            prop_assert!(run(StreamCheck::EtcdSnapshot, short, piece).1.is_some());
        }
    }
}
