//! Fetching file contents for a restore, pack by pack.
//!
//! Plan first: the blobs the files need are grouped by pack, each blob once however many
//! files (or places in a file) use it, and neighbouring blobs of a pack are merged into
//! one ranged read (gaps up to [`MAX_GAP`], reads up to [`MAX_RANGE`]). Then the reads
//! run concurrently (as many as the backend keeps in flight for `--connections`); as a
//! read's bytes arrive, each blob they complete is opened and checked on rayon and
//! written at its offsets. Files are planned in batches of at most
//! [`BATCH_BLOBS`] blob uses, so memory stays bounded whatever the snapshot's size.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use futures::StreamExt;

use super::super::{Problem, on_rayon};
use crate::backend::ByteStream;
use crate::error::{Error, Result};
use crate::format::{self, BlobType, names};
use crate::id::{BlobId, PackId};
use crate::repository::IndexedRepository;

/// Unneeded bytes between two wanted blobs that are still read in one request.
const MAX_GAP: u64 = 32 << 10;
/// Largest single ranged read.
const MAX_RANGE: u64 = 4 << 20;
/// Bytes of a streamed read collected before its complete blobs are opened and written.
const WRITE_BATCH: u64 = 1 << 20;
/// Blob uses planned at once.
const BATCH_BLOBS: usize = 50_000;

/// One file whose content is to be written.
pub(super) struct ContentJob {
    pub path: PathBuf,
    pub content: Vec<BlobId>,
    pub size: u64,
    /// The file was created empty in this run: zero blobs may be skipped (`--sparse`).
    pub fresh: bool,
    /// Blobs already correct on disk (`--verify`), by position in `content`.
    pub present: Vec<bool>,
}

/// Counters of the content phase.
#[derive(Debug, Default)]
pub(super) struct ContentStats {
    pub bytes_written: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub requests: AtomicU64,
    pub blobs: AtomicU64,
}

struct Want {
    id: BlobId,
    offset: u64,
    length: u32,
    raw_length: u32,
    /// (job index, offset in the file)
    targets: Vec<(usize, u64)>,
}

struct Range {
    pack: PackId,
    start: u64,
    end: u64,
    wants: Vec<Want>,
}

type Report<'a> = &'a (dyn Fn(usize, String) + Sync);

/// Write the content of `jobs`. Problems are reported per file; the rest goes on.
pub(super) fn restore_contents(
    repo: &IndexedRepository,
    jobs: &[ContentJob],
    sparse: bool,
    problems: &Mutex<Vec<Problem>>,
    stats: &ContentStats,
) {
    let report = |job: usize, message: String| {
        problems.lock().expect("problems").push(Problem {
            path: jobs[job].path.clone(),
            message,
        })
    };
    let files: Arc<Vec<(PathBuf, bool)>> = Arc::new(
        jobs.iter()
            .map(|j| (j.path.clone(), j.fresh && sparse))
            .collect(),
    );
    let mut start = 0;
    while start < jobs.len() {
        let mut end = start;
        let mut uses = 0;
        while end < jobs.len() && (end == start || uses + jobs[end].content.len() <= BATCH_BLOBS) {
            uses += jobs[end].content.len();
            end += 1;
        }
        let ranges = plan(repo, &jobs[start..end], start, &report);
        execute(repo, ranges, &files, &report, stats);
        start = end;
    }
}

/// Group the blobs of `jobs` (numbered from `first`) by pack into merged ranged reads.
fn plan(repo: &IndexedRepository, jobs: &[ContentJob], first: usize, report: Report) -> Vec<Range> {
    let mut by_pack: HashMap<PackId, Vec<Want>> = HashMap::new();
    let mut seen: HashMap<BlobId, (PackId, usize)> = HashMap::new();
    for (n, job) in jobs.iter().enumerate() {
        let j = first + n;
        let mut offset = 0u64;
        for (k, id) in job.content.iter().enumerate() {
            // Not found: a prune may have just moved it; read the index again once.
            let located = repo.locate(BlobType::Data, id).or_else(|e| match e {
                Error::NotFound { .. } => repo
                    .block_on(repo.resync_index())
                    .and_then(|()| repo.locate(BlobType::Data, id)),
                e => Err(e),
            });
            let loc = match located {
                Ok(l) => l,
                Err(e) => {
                    report(j, format!("{e}; the file is incomplete from byte {offset}"));
                    break;
                }
            };
            if !job.present.get(k).copied().unwrap_or(false) {
                match seen.get(id) {
                    Some((pack, i)) => by_pack.get_mut(pack).expect("planned pack")[*i]
                        .targets
                        .push((j, offset)),
                    None => {
                        let wants = by_pack.entry(loc.pack).or_default();
                        seen.insert(*id, (loc.pack, wants.len()));
                        wants.push(Want {
                            id: *id,
                            offset: loc.offset,
                            length: loc.length,
                            raw_length: loc.raw_length,
                            targets: vec![(j, offset)],
                        });
                    }
                }
            }
            offset += loc.raw_length as u64;
        }
    }
    let mut ranges = Vec::new();
    for (pack, mut wants) in by_pack {
        wants.sort_by_key(|w| w.offset);
        let mut current: Option<Range> = None;
        for w in wants {
            let (ws, we) = (w.offset, w.offset + w.length as u64);
            match &mut current {
                Some(r) if ws <= r.end + MAX_GAP && we - r.start <= MAX_RANGE => {
                    r.end = r.end.max(we);
                    r.wants.push(w);
                }
                _ => {
                    ranges.extend(current.take());
                    current = Some(Range {
                        pack,
                        start: ws,
                        end: we,
                        wants: vec![w],
                    });
                }
            }
        }
        ranges.extend(current);
    }
    // Read packs in order: friendlier to disks and to servers that prefetch.
    ranges.sort_by_key(|r| (r.pack, r.start));
    ranges
}

fn execute(
    repo: &IndexedRepository,
    ranges: Vec<Range>,
    files: &Arc<Vec<(PathBuf, bool)>>,
    report: Report,
    stats: &ContentStats,
) {
    let backend = repo.backend();
    let in_flight = backend.ranged_reads_in_flight(repo.options().connections.max(1));
    repo.block_on(
        futures::stream::iter(ranges)
            .map(|r| async move {
                let name = names::pack(&r.pack);
                let pieces = match backend.get_range_stream(&name, r.start..r.end).await {
                    Ok(p) => p,
                    // A prune beside us moved these blobs: fetch each where it is now.
                    Err(Error::NotFound { .. }) => {
                        for (j, message) in refetch(repo, r, files, stats).await {
                            report(j, message);
                        }
                        return;
                    }
                    Err(e) => {
                        for w in &r.wants {
                            for (j, _) in &w.targets {
                                report(*j, format!("{e} (blob {})", w.id));
                            }
                        }
                        return;
                    }
                };
                stats.requests.fetch_add(1, Ordering::Relaxed);
                for (j, message) in write_as_it_arrives(repo, &name, r, pieces, files, stats).await
                {
                    report(j, message);
                }
            })
            .buffer_unordered(in_flight)
            .collect::<()>(),
    );
}

/// Write the blobs of range `r` as its bytes arrive: whenever [`WRITE_BATCH`] bytes have
/// come, the blobs they complete are opened and written (on rayon), so a read holds
/// about that much, not the whole range. Returns the problems, per job.
async fn write_as_it_arrives(
    repo: &IndexedRepository,
    name: &str,
    r: Range,
    mut pieces: ByteStream,
    files: &Arc<Vec<(PathBuf, bool)>>,
    stats: &ContentStats,
) -> Vec<(usize, String)> {
    let mut errors = Vec::new();
    let mut wants = r.wants.into_iter().peekable();
    // Bytes received but not yet used; they start at pack offset `at`.
    let mut tail = BytesMut::new();
    let mut at = r.start;
    let mut failure = None;
    let mut ended = false;
    while !ended {
        let mut data = match pieces.next().await {
            Some(Ok(piece)) => {
                stats
                    .bytes_fetched
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
                let have = at + (tail.len() + piece.len()) as u64;
                // Collect a batch before handing it to rayon: one hand-off per blob would
                // cost more in wake-ups than the blob costs to open.
                if have < r.end && have - at < WRITE_BATCH {
                    tail.extend_from_slice(&piece);
                    continue;
                }
                // A whole piece (a local read is one) is used without a copy.
                if tail.is_empty() {
                    piece
                } else {
                    tail.extend_from_slice(&piece);
                    tail.split().freeze()
                }
            }
            // The read stopped, failed or short (a truncated object): the whole blobs
            // it brought are still written.
            end => {
                if let Some(Err(e)) = end {
                    failure = Some(e.to_string());
                }
                ended = true;
                tail.split().freeze()
            }
        };
        let have = at + data.len() as u64;
        let mut ready = Vec::new();
        while let Some(w) = wants.next_if(|w| w.offset + w.length as u64 <= have) {
            ready.push(w);
        }
        let Some(end) = ready.last().map(|w| w.offset + w.length as u64) else {
            tail.extend_from_slice(&data);
            continue;
        };
        let bytes = data.split_to((end - at) as usize);
        tail.extend_from_slice(&data);
        let part = Range {
            pack: r.pack,
            start: at,
            end,
            wants: ready,
        };
        at = end;
        let (key, files, name) = (repo.key().clone(), files.clone(), name.to_string());
        let (errs, written, blobs) =
            on_rayon(move || write_range(&key, &name, part, &bytes, &files)).await;
        stats.bytes_written.fetch_add(written, Ordering::Relaxed);
        stats.blobs.fetch_add(blobs, Ordering::Relaxed);
        errors.extend(errs);
    }
    if wants.peek().is_some() {
        let reason = failure.unwrap_or_else(|| {
            format!(
                "{name} ended at byte {}, before byte {} (object truncated?)",
                at + tail.len() as u64,
                r.end
            )
        });
        for w in wants {
            errors.extend(
                w.targets
                    .iter()
                    .map(|(j, _)| (*j, format!("{reason} (blob {})", w.id))),
            );
        }
    }
    errors
}

/// Fetch the blobs of a range whose pack is gone from where the re-read index places
/// them, one by one, and write them. Returns the problems, per job.
async fn refetch(
    repo: &IndexedRepository,
    r: Range,
    files: &Arc<Vec<(PathBuf, bool)>>,
    stats: &ContentStats,
) -> Vec<(usize, String)> {
    let mut errors = Vec::new();
    if let Err(e) = repo.resync_index().await {
        for w in &r.wants {
            errors.extend(
                w.targets
                    .iter()
                    .map(|(j, _)| (*j, format!("{e} (blob {})", w.id))),
            );
        }
        return errors;
    }
    for mut w in r.wants {
        let fetched = async {
            let loc = repo.locate(BlobType::Data, &w.id)?;
            let name = names::pack(&loc.pack);
            let end = loc.offset + loc.length as u64;
            let bytes = repo.backend().get_range(&name, loc.offset..end).await?;
            Ok::<_, Error>((loc, name, bytes))
        }
        .await;
        let (loc, name, bytes) = match fetched {
            Ok(f) => f,
            Err(e) => {
                errors.extend(
                    w.targets
                        .iter()
                        .map(|(j, _)| (*j, format!("{e} (blob {})", w.id))),
                );
                continue;
            }
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        (w.offset, w.length, w.raw_length) = (loc.offset, loc.length, loc.raw_length);
        let one = Range {
            pack: loc.pack,
            start: loc.offset,
            end: loc.offset + loc.length as u64,
            wants: vec![w],
        };
        let (key, files) = (repo.key().clone(), files.clone());
        let (errs, written, blobs) =
            on_rayon(move || write_range(&key, &name, one, &bytes, &files)).await;
        stats.bytes_written.fetch_add(written, Ordering::Relaxed);
        stats.blobs.fetch_add(blobs, Ordering::Relaxed);
        errors.extend(errs);
    }
    errors
}

/// Open the blobs of one fetched range and write them to their files.
fn write_range(
    key: &crate::crypto::MasterKey,
    name: &str,
    r: Range,
    bytes: &[u8],
    files: &[(PathBuf, bool)],
) -> (Vec<(usize, String)>, u64, u64) {
    let mut errors = Vec::new();
    let (mut written, mut blobs) = (0, 0);
    for w in r.wants {
        let at = (w.offset - r.start) as usize;
        let sealed = &bytes[at..at + w.length as usize];
        let plain = match format::open_blob(key, BlobType::Data, &w.id, sealed, Some(w.raw_length))
        {
            Ok(p) => p,
            Err(e) => {
                for (j, offset) in w.targets {
                    errors.push((
                        j,
                        format!(
                            "{e} in {name}; bytes {offset}..{} are missing",
                            offset + w.raw_length as u64
                        ),
                    ));
                }
                continue;
            }
        };
        blobs += 1;
        for (j, offset) in w.targets {
            let (path, sparse) = &files[j];
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| {
                    if *sparse {
                        write_sparse(&f, &plain, offset)
                    } else {
                        f.write_all_at(&plain, offset)
                    }
                });
            match r {
                Ok(()) => written += plain.len() as u64,
                Err(e) => errors.push((j, format!("writing at byte {offset}: {e}"))),
            }
        }
    }
    (errors, written, blobs)
}

/// Write `data` at `offset` leaving 4 KiB blocks of zeros unwritten (holes in a file
/// created empty in this run).
fn write_sparse(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        // Block boundaries follow file offsets so holes align with file system blocks.
        let block_end = ((offset as usize + i) / BLOCK + 1) * BLOCK - offset as usize;
        let end = block_end.min(data.len());
        if data[i..end].iter().all(|b| *b == 0) {
            i = end;
            continue;
        }
        // Extend over following non-zero blocks to write them in one call.
        let mut run_end = end;
        while run_end < data.len() {
            let next = (run_end + BLOCK).min(data.len());
            if data[run_end..next].iter().all(|b| *b == 0) {
                break;
            }
            run_end = next;
        }
        f.write_all_at(&data[i..run_end], offset + i as u64)?;
        i = run_end;
    }
    Ok(())
}

/// Which blobs of `content` are already on disk in `path` (`--verify`): each range is
/// read and its keyed hash compared with the blob id.
pub(super) fn present_blobs(
    repo: &IndexedRepository,
    path: &std::path::Path,
    content: &[BlobId],
) -> Result<Vec<bool>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut out = Vec::with_capacity(content.len());
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in content {
        let Some(loc) = repo.index().find(BlobType::Data, id)? else {
            out.push(false);
            continue;
        };
        let n = loc.raw_length as u64;
        let ok = offset + n <= len && {
            buf.resize(n as usize, 0);
            f.read_exact_at(&mut buf, offset).is_ok() && repo.key().blob_id(&buf) == *id
        };
        out.push(ok);
        offset += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writes_skip_zero_blocks_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        let mut data = vec![0u8; 5 * 4096];
        data[4096 + 7] = 1;
        data[4 * 4096 + 4095] = 2;
        write_sparse(&f, &data, 100).unwrap();
        f.set_len(100 + data.len() as u64).unwrap();
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[100..], &data[..]);
    }
}
