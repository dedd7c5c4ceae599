//! The data check: download packs and verify each one completely.
//!
//! For each selected pack: its bytes must hash to its name (BLAKE3, no key needed), its
//! trailer and sealed header must open and list the same blobs as the index, and every
//! blob the index places in it must authenticate, decompress to its indexed length and
//! hash to its id.
//!
//! Packs are read in ranged pieces of at most 4 MiB (cut at blob boundaries), in order
//! within a pack so its hash is computed as the pieces arrive; `connections` packs are
//! read at a time. Pieces go over a channel of `connections` places to rayon, which
//! opens their blobs in parallel. Memory is bounded by about
//! `(2 × connections + threads) × 4 MiB`, whatever the size of packs or repository.

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

/// Largest ranged read of a pack: memory holds a few of these, not whole packs.
const MAX_PIECE: u64 = 4 << 20;

/// What verifying one pack found.
#[derive(Default)]
struct Verdict {
    pos: u32,
    len: u64,
    hash_ok: bool,
    /// Why the header could not be read, or how it disagrees with the index.
    header: Option<String>,
    /// Blobs (positions in the pack's index list) that failed, with why.
    bad: Vec<(u32, String)>,
}

/// One ranged read of a pack, with the blobs (positions in its index list) inside it.
struct Piece {
    pos: u32,
    start: u64,
    bytes: Bytes,
    blobs: Vec<u32>,
}

/// Split `0..size` into consecutive ranges of at most [`MAX_PIECE`] bytes (or one
/// blob), cut at blob starts. Returns the ranges and the blobs that cannot be read
/// from them (past the end, or overlapping the blob before).
/// `(start, end, blobs)` of each piece.
type Pieces = Vec<(u64, u64, Vec<u32>)>;

fn plan(pack: &PackEntry, size: u64) -> (Pieces, Vec<(u32, String)>) {
    let mut order: Vec<u32> = (0..pack.blobs.len() as u32).collect();
    order.sort_by_key(|&i| pack.blobs[i as usize].offset);
    let mut ranges = Vec::new();
    let mut bad = Vec::new();
    let (mut start, mut last_end, mut cur) = (0u64, 0u64, Vec::new());
    for i in order {
        let e = &pack.blobs[i as usize];
        let end = e.offset.saturating_add(e.length as u64);
        if end > size {
            bad.push((i, "lies past the end of the pack".to_string()));
            continue;
        }
        if e.offset < last_end {
            bad.push((i, "overlaps the blob before it in the index".to_string()));
            continue;
        }
        if !cur.is_empty() && end - start > MAX_PIECE {
            ranges.push((start, e.offset, std::mem::take(&mut cur)));
            start = e.offset;
        }
        cur.push(i);
        last_end = end;
    }
    ranges.push((start, size, cur));
    (ranges, bad)
}

/// Open the header from the last piece of a pack (`bytes` = `start..size`); `Ok(None)`
/// when the header begins before the piece.
fn header_in(
    key: &MasterKey,
    pack: &PackEntry,
    bytes: &[u8],
    start: u64,
    size: u64,
) -> Result<Option<PackHeader>> {
    let tail = &bytes[bytes.len().saturating_sub(PACK_TRAILER_LEN)..];
    let hlen = pack_header_len(&pack.id, size, tail)? as u64;
    let hstart = size - PACK_TRAILER_LEN as u64 - hlen;
    if hstart < start {
        return Ok(None);
    }
    let sealed = &bytes[(hstart - start) as usize..bytes.len() - PACK_TRAILER_LEN];
    PackHeader::open(key, &pack.id, sealed, hstart).map(Some)
}

fn compare_header(pack: &PackEntry, h: &PackHeader) -> Option<String> {
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

/// Read a pack piece by piece, in order: hash it, open its header, and hand each piece
/// to the verifiers. Runs on the thread that drives the downloads (inside `block_on`,
/// not on a runtime worker), so hashing here blocks no other task.
async fn stream_pack(
    backend: &dyn crate::backend::Backend,
    key: &MasterKey,
    pos: u32,
    pack: &PackEntry,
    size: u64,
    tx: &tokio::sync::mpsc::Sender<Piece>,
) -> Result<Verdict> {
    let name = names::pack(&pack.id);
    let (ranges, bad) = plan(pack, size);
    let mut hasher = blake3::Hasher::new();
    let mut header = None;
    let last = ranges.len() - 1;
    for (i, (start, end, blobs)) in ranges.into_iter().enumerate() {
        let bytes = if end > start {
            backend.get_range(&name, start..end).await?
        } else {
            Bytes::new()
        };
        hasher.update(&bytes);
        if i == last {
            header = match header_in(key, pack, &bytes, start, size) {
                Ok(Some(h)) => compare_header(pack, &h),
                Ok(None) => {
                    // A header larger than the last piece: read it on its own.
                    let tail = backend
                        .get_range(&name, size - PACK_TRAILER_LEN as u64..size)
                        .await?;
                    let hlen = pack_header_len(&pack.id, size, &tail)? as u64;
                    let hstart = size - PACK_TRAILER_LEN as u64 - hlen;
                    let sealed = backend
                        .get_range(&name, hstart..size - PACK_TRAILER_LEN as u64)
                        .await?;
                    match PackHeader::open(key, &pack.id, &sealed, hstart) {
                        Ok(h) => compare_header(pack, &h),
                        Err(e) => Some(format!("header unreadable: {}", reason(&e))),
                    }
                }
                Err(e) => Some(format!("header unreadable: {}", reason(&e))),
            };
        }
        let piece = Piece {
            pos,
            start,
            bytes,
            blobs,
        };
        if tx.send(piece).await.is_err() {
            break; // the verifiers stopped (a panic there is reported by the join)
        }
    }
    Ok(Verdict {
        pos,
        len: size,
        hash_ok: *hasher.finalize().as_bytes() == pack.id.0.0,
        header,
        bad,
    })
}

/// Verify the blobs of one piece; returns the failures.
fn verify_piece(key: &MasterKey, pack: &PackEntry, piece: &Piece) -> Vec<(u32, String)> {
    piece
        .blobs
        .par_iter()
        .with_min_len(4)
        .filter_map(|&i| {
            let e = &pack.blobs[i as usize];
            let from = (e.offset - piece.start) as usize;
            let sealed = &piece.bytes[from..from + e.length as usize];
            format::open_blob(key, e.ty, &e.id, sealed, Some(e.raw_length))
                .err()
                .map(|err| (i, reason(&err)))
        })
        .collect()
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
        let size_of = |p: u32| match self.idx.packs[p as usize].state {
            PackState::WrongSize(actual) => actual,
            _ => self.idx.packs[p as usize].size,
        };
        let total: u64 = chosen.iter().map(|&p| size_of(p)).sum();
        let sizes: Vec<u64> = chosen.iter().map(|&p| size_of(p)).collect();
        self.progress
            .packs_total
            .store(chosen.len() as u64, Ordering::Relaxed);
        self.progress.bytes_total.store(total, Ordering::Relaxed);

        let conns = self.connections();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(conns);
        let repo = self.repo;
        let key = repo.key().clone();
        let packs = &self.idx.packs;
        let progress = self.progress;
        let key = &key;
        let (verdicts, vanished) = std::thread::scope(|s| {
            let downloads = s.spawn(move || {
                // The sender is dropped with this thread: the verifiers then stop.
                let tx = &tx;
                repo.block_on(async move {
                    futures::stream::iter(chosen.into_iter().zip(sizes))
                        .map(|(p, size)| async move {
                            let backend = repo.backend().as_ref();
                            let r =
                                stream_pack(backend, key, p, &packs[p as usize], size, tx).await;
                            progress.packs_done.fetch_add(1, Ordering::Relaxed);
                            r.map_err(|e| (p, e))
                        })
                        .buffer_unordered(conns)
                        .collect::<Vec<_>>()
                        .await
                })
            });
            let bad: Vec<(u32, Vec<(u32, String)>)> = std::iter::from_fn(|| rx.blocking_recv())
                .par_bridge()
                .filter_map(|piece| {
                    let bad = verify_piece(key, &packs[piece.pos as usize], &piece);
                    progress
                        .bytes_done
                        .fetch_add(piece.bytes.len() as u64, Ordering::Relaxed);
                    (!bad.is_empty()).then_some((piece.pos, bad))
                })
                .collect();
            let results = downloads.join().expect("download thread");
            let mut verdicts: std::collections::HashMap<u32, Verdict> = Default::default();
            let mut vanished = Vec::new();
            for r in results {
                match r {
                    Ok(v) => {
                        verdicts.insert(v.pos, v);
                    }
                    Err((p, Error::NotFound { .. })) => vanished.push(p),
                    Err((_, e)) => return Err(e),
                }
            }
            for (p, b) in bad {
                if let Some(v) = verdicts.get_mut(&p) {
                    v.bad.extend(b);
                }
            }
            Ok((verdicts, vanished))
        })?;
        if !vanished.is_empty() {
            self.refresh_index()?;
            self.settle_absent(&vanished);
        }
        let mut verdicts: Vec<Verdict> = verdicts.into_values().collect();
        verdicts.sort_by_key(|v| v.pos);
        for mut v in verdicts {
            v.bad.sort();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobType, PackBlob};
    use crate::id::{BlobId, IndexId, PackId};
    use proptest::prelude::*;

    proptest! {
        /// Pieces are consecutive, cover the whole pack, and every blob inside the pack
        /// lies wholly in exactly one piece.
        #[test]
        fn pieces_cover_the_pack(lens in proptest::collection::vec(1u32..3_000_000, 0..40), tail in 12u64..5000, cut in any::<bool>()) {
            let mut off = 0u64;
            let blobs: Vec<PackBlob> = lens.iter().map(|&l| {
                let b = PackBlob { ty: BlobType::Data, id: BlobId::default(), offset: off, length: l, raw_length: l };
                off += l as u64;
                b
            }).collect();
            let full = off + tail;
            let size = if cut { full / 2 } else { full };
            let pack = PackEntry { id: PackId::default(), size: full, blobs, state: PackState::Present, index: IndexId::default() };
            let (ranges, bad) = plan(&pack, size);
            prop_assert_eq!(ranges.first().map(|r| r.0), Some(0));
            prop_assert_eq!(ranges.last().map(|r| r.1), Some(size));
            for w in ranges.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0);
            }
            let mut seen = vec![0; pack.blobs.len()];
            for (s, e, bl) in &ranges {
                // Several blobs share a piece only within the size limit.
                let blob_end = bl.iter().map(|&i| pack.blobs[i as usize].offset + pack.blobs[i as usize].length as u64).max().unwrap_or(*s);
                prop_assert!(bl.len() <= 1 || blob_end - s <= MAX_PIECE);
                for &i in bl {
                    let b = &pack.blobs[i as usize];
                    prop_assert!(b.offset >= *s && b.offset + b.length as u64 <= *e);
                    seen[i as usize] += 1;
                }
            }
            for (i, _) in &bad {
                seen[*i as usize] += 1;
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
            for (i, _) in &bad {
                let b = &pack.blobs[*i as usize];
                prop_assert!(b.offset + b.length as u64 > size);
            }
        }
    }
}
