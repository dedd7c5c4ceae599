//! The data check: download packs and verify each one completely.
//!
//! For each selected pack: its bytes must hash to its name (BLAKE3, no key needed), its
//! trailer and sealed header must open and list the same blobs as the index, and every
//! blob the index places in it must authenticate, decompress to its indexed length and
//! hash to its id.
//!
//! Downloads run `connections` at a time on the I/O runtime and hand whole packs over a
//! channel of the same capacity to rayon, which verifies packs (and the blobs inside a
//! pack) in parallel. Memory is bounded by about `(2 × connections + threads) × pack
//! size`, whatever the repository's size.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use rayon::prelude::*;

use super::index::PackEntry;
use super::subset::{self, ReadData};
use super::trees::reason;
use super::{Checker, DamageKind, PackState};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::{self, PACK_TRAILER_LEN, PackHeader, names, pack_header_len};
use crate::id::Id;

/// What verifying one pack found.
struct Verdict {
    pos: u32,
    len: u64,
    hash_ok: bool,
    /// Why the header could not be read, or how it disagrees with the index.
    header: Option<String>,
    /// Blobs (positions in the pack's index list) that failed, with why.
    bad: Vec<(u32, String)>,
}

fn verify(key: &MasterKey, pos: u32, pack: &PackEntry, bytes: &[u8]) -> Verdict {
    let hash_ok = Id::hash_of(bytes) == pack.id.0;
    let header = match read_header(key, pack, bytes) {
        Err(e) => Some(format!("header unreadable: {}", reason(&e))),
        Ok(h) => {
            let mut a = h.blobs.clone();
            let mut b = pack.blobs.clone();
            a.sort_by_key(|e| e.offset);
            b.sort_by_key(|e| e.offset);
            (a != b).then(|| {
                format!(
                    "header lists {} blobs that differ from the {} the index lists",
                    a.len(),
                    b.len()
                )
            })
        }
    };
    let bad = pack
        .blobs
        .par_iter()
        .enumerate()
        .with_min_len(8)
        .filter_map(|(i, e)| {
            let end = e.offset + e.length as u64;
            if end > bytes.len() as u64 {
                return Some((i as u32, "lies past the end of the pack".to_string()));
            }
            let sealed = &bytes[e.offset as usize..end as usize];
            format::open_blob(key, e.ty, &e.id, sealed, Some(e.raw_length))
                .err()
                .map(|err| (i as u32, reason(&err)))
        })
        .collect();
    Verdict {
        pos,
        len: bytes.len() as u64,
        hash_ok,
        header,
        bad,
    }
}

fn read_header(key: &MasterKey, pack: &PackEntry, bytes: &[u8]) -> Result<PackHeader> {
    let n = bytes.len();
    let tail = &bytes[n.saturating_sub(PACK_TRAILER_LEN)..];
    let hlen = pack_header_len(&pack.id, n as u64, tail)? as usize;
    let start = n - PACK_TRAILER_LEN - hlen;
    PackHeader::open(
        key,
        &pack.id,
        &bytes[start..n - PACK_TRAILER_LEN],
        start as u64,
    )
}

impl Checker<'_> {
    /// Download and verify the packs `mode` selects.
    pub fn read_data(&mut self, mode: ReadData) -> Result<()> {
        let candidates: Vec<u32> = (0..self.idx.packs.len() as u32)
            .filter(|&p| {
                matches!(
                    self.idx.packs[p as usize].state,
                    PackState::Present | PackState::WrongSize(_)
                )
            })
            .collect();
        let ids: Vec<_> = candidates
            .iter()
            .map(|&p| {
                (
                    self.idx.packs[p as usize].id,
                    self.idx.packs[p as usize].size,
                )
            })
            .collect();
        let chosen: Vec<u32> = subset::select(&ids, mode, &mut rand::thread_rng())
            .into_iter()
            .map(|i| candidates[i])
            .collect();
        let total: u64 = chosen
            .iter()
            .map(|&p| self.idx.packs[p as usize].size)
            .sum();
        self.progress
            .packs_total
            .store(chosen.len() as u64, Ordering::Relaxed);
        self.progress.bytes_total.store(total, Ordering::Relaxed);

        let conns = self.connections();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u32, Result<Bytes>)>(conns);
        let repo = self.repo;
        let key = repo.key().clone();
        let packs = &self.idx.packs;
        let progress = self.progress;
        let (verdicts, vanished) = std::thread::scope(|s| {
            let downloads = s.spawn(move || {
                repo.block_on(async {
                    let mut gets = futures::stream::iter(chosen.iter().copied())
                        .map(|p| async move {
                            let name = names::pack(&packs[p as usize].id);
                            (p, repo.backend().get(&name).await)
                        })
                        .buffer_unordered(conns);
                    while let Some(r) = gets.next().await {
                        if tx.send(r).await.is_err() {
                            break;
                        }
                    }
                })
            });
            let results: Vec<std::result::Result<Verdict, (u32, Error)>> =
                std::iter::from_fn(|| rx.blocking_recv())
                    .par_bridge()
                    .map(|(p, got)| match got {
                        Ok(bytes) => {
                            let v = verify(&key, p, &packs[p as usize], &bytes);
                            progress.packs_done.fetch_add(1, Ordering::Relaxed);
                            progress.bytes_done.fetch_add(v.len, Ordering::Relaxed);
                            Ok(v)
                        }
                        Err(e) => Err((p, e)),
                    })
                    .collect();
            downloads.join().expect("download thread");
            let mut verdicts = Vec::new();
            let mut vanished = Vec::new();
            for r in results {
                match r {
                    Ok(v) => verdicts.push(v),
                    Err((p, Error::NotFound { .. })) => vanished.push(p),
                    Err((_, e)) => return Err(e),
                }
            }
            Ok((verdicts, vanished))
        })?;
        if !vanished.is_empty() {
            self.refresh_index()?;
            self.settle_absent(&vanished);
        }
        for v in verdicts {
            self.record(v);
        }
        Ok(())
    }

    fn record(&mut self, v: Verdict) {
        self.stats.packs_verified += 1;
        self.stats.bytes_verified += v.len;
        let pack = &self.idx.packs[v.pos as usize];
        let name = names::pack(&pack.id);
        let truncated = matches!(pack.state, PackState::WrongSize(_));
        let mut problems = Vec::new();
        if !v.hash_ok {
            problems.push("content does not match its name".to_string());
        }
        if let Some(h) = &v.header {
            problems.push(h.clone());
        }
        if !v.bad.is_empty() {
            problems.push(format!(
                "{} of {} blobs fail verification (listed separately)",
                v.bad.len(),
                pack.blobs.len()
            ));
        }
        // A truncated pack is already reported with its size; its blobs still are.
        if !problems.is_empty() && !truncated {
            self.add_damage(DamageKind::Pack, name, None, problems.join("; "));
        }
        for (b, why) in v.bad {
            let e = self.idx.packs[v.pos as usize].blobs[b as usize];
            let past_end = e.offset + e.length as u64 > v.len;
            if !(truncated && past_end) {
                self.mark_bad(v.pos, b, why);
            }
        }
    }
}
