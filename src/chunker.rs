//! Content-defined chunking: FastCDC v2020 with the gear table seeded from the master key,
//! so chunk boundaries (and so chunk sizes) reveal nothing a reader of the store could
//! match against known files.
//!
//! Pure: no I/O beyond `Read`. Small inputs are chunked from a slice, large ones as a
//! stream with a buffer of `max` bytes; both cut at the same places.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

use crate::format::ChunkerParams;

/// Normalization level 1, as recommended by the FastCDC paper for dedup ratio.
const LEVEL: Normalization = Normalization::Level1;

/// Cut points of `data`: the lengths of consecutive chunks.
pub fn chunk_slice(params: &ChunkerParams, seed: u64, data: &[u8]) -> Vec<usize> {
    if data.is_empty() {
        return Vec::new();
    }
    FastCDC::with_level_and_seed(data, params.min, params.avg, params.max, LEVEL, seed)
        .map(|c| c.length)
        .collect()
}

/// Chunks of a stream, each with its bytes; errors are the reader's.
pub fn chunk_stream<R: Read>(
    params: &ChunkerParams,
    seed: u64,
    reader: R,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamCDC::with_level_and_seed(reader, params.min, params.avg, params.max, LEVEL, seed).map(
        |r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        },
    )
}

/// A stream cut into batches of whole chunks, for storing one batch while the next is
/// read. A batch is one buffer and the lengths of the chunks that fill it: no chunk is
/// copied out of it. A chunk is cut only once `max` bytes past its start (or the end of
/// the stream) are in the buffer, so the cut points are [`chunk_slice`]'s over the whole
/// stream; the bytes after the last cut move to the front of the next batch.
pub struct Batches<R> {
    reader: R,
    params: ChunkerParams,
    seed: u64,
    /// Bytes a batch is read up to (at least twice `max`, so each batch holds a chunk).
    fill: usize,
    /// Bytes read after the last cut (fewer than `max`).
    carry: Vec<u8>,
    done: bool,
}

/// Whole chunks of a stream, in order: `data` is their concatenation.
pub struct Batch {
    pub data: Vec<u8>,
    /// Length of each chunk in `data`.
    pub cuts: Vec<usize>,
}

impl Batch {
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        self.cuts.iter().map(move |&n| {
            at += n;
            &self.data[at - n..at]
        })
    }
}

impl<R: Read> Batches<R> {
    /// Batches of about `size` bytes.
    pub fn new(params: &ChunkerParams, seed: u64, reader: R, size: usize) -> Self {
        Batches {
            reader,
            params: *params,
            seed,
            fill: size.max(2 * params.max as usize),
            carry: Vec::new(),
            done: false,
        }
    }

    /// The next batch, read into `buf` (pass the buffer of a batch that is done with, to
    /// use its memory again; its bytes are dropped). `None` after the last, and after a
    /// read error, which is returned as it is.
    pub fn next_batch(&mut self, mut buf: Vec<u8>) -> std::io::Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        buf.clear();
        buf.reserve(self.fill);
        buf.append(&mut self.carry);
        let want = (self.fill - buf.len()) as u64;
        let got = match self.reader.by_ref().take(want).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        let end_of_stream = (got as u64) < want;
        let max = self.params.max as usize;
        let mut cuts = Vec::new();
        let mut end = 0;
        if !buf.is_empty() {
            let p = &self.params;
            for c in FastCDC::with_level_and_seed(&buf, p.min, p.avg, p.max, LEVEL, self.seed) {
                if !end_of_stream && c.offset + max > buf.len() {
                    break;
                }
                cuts.push(c.length);
                end = c.offset + c.length;
            }
        }
        self.carry.extend_from_slice(&buf[end..]);
        buf.truncate(end);
        if end_of_stream {
            self.done = true;
            if buf.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(Batch { data: buf, cuts }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn seeded(n: usize, seed: u64) -> Vec<u8> {
        crate::util::seeded_bytes(n, seed)
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    /// Golden test: these boundaries are part of the format. If they change, every
    /// existing repository stops deduplicating against new backups.
    #[test]
    fn golden_boundaries() {
        let data = seeded(256 * 1024, 42);
        let cuts = chunk_slice(&small(), 0x5eed_cafe_f00d_0001, &data);
        assert_eq!(cuts.iter().sum::<usize>(), data.len());
        let head: Vec<usize> = cuts.iter().copied().take(8).collect();
        assert_eq!(head, GOLDEN, "chunk boundaries changed: {head:?}");
    }
    const GOLDEN: [usize; 8] = [20918, 11678, 42487, 19800, 21840, 23592, 7497, 16079];

    #[test]
    fn stream_and_slice_agree_and_concatenate() {
        let data = seeded(1 << 20, 7);
        for seed in [1u64, 99] {
            let cuts = chunk_slice(&small(), seed, &data);
            let chunks: Vec<Vec<u8>> = chunk_stream(&small(), seed, &data[..])
                .map(|c| c.unwrap())
                .collect();
            assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), cuts);
            assert_eq!(chunks.concat(), data);
        }
        // Different seeds cut differently.
        assert_ne!(
            chunk_slice(&small(), 1, &data),
            chunk_slice(&small(), 2, &data)
        );
    }

    /// Every batch's chunks, with a reader that returns at most `step` bytes a call.
    fn batched(data: &[u8], seed: u64, size: usize, step: usize) -> Vec<Vec<u8>> {
        struct Dribble<'d>(&'d [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut b = Batches::new(&small(), seed, Dribble(data, step), size);
        let mut out = Vec::new();
        let mut spare = Vec::new();
        while let Some(batch) = b.next_batch(spare).unwrap() {
            assert!(!batch.cuts.is_empty(), "a batch without a chunk");
            assert_eq!(batch.cuts.iter().sum::<usize>(), batch.data.len());
            out.extend(batch.chunks().map(<[u8]>::to_vec));
            spare = batch.data;
        }
        out
    }

    #[test]
    fn batches_cut_where_the_slice_is_cut() {
        let data = seeded(1 << 20, 3);
        let cuts = chunk_slice(&small(), 5, &data);
        for (size, step) in [(0, 1 << 20), (100_000, 7_000), (1 << 20, 1 << 16)] {
            let chunks = batched(&data, 5, size, step);
            assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), cuts);
        }
        assert!(batched(&[], 5, 0, 10).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn batches_agree_with_the_slice(
            len in 0usize..400_000,
            seed in 1u64..u64::MAX,
            size in 0usize..300_000,
            step in 1usize..100_000,
        ) {
            let data = seeded(len, seed);
            let chunks = batched(&data, seed, size, step);
            let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
            proptest::prop_assert_eq!(lens, chunk_slice(&small(), seed, &data));
            proptest::prop_assert_eq!(chunks.concat(), data);
        }

        #[test]
        fn chunks_concatenate_to_input(len in 0usize..300_000, seed in 1u64..u64::MAX) {
            let data = seeded(len, seed);
            let chunks: Vec<Vec<u8>> = chunk_stream(&small(), seed, &data[..]).map(|c| c.unwrap()).collect();
            proptest::prop_assert!(chunks.iter().all(|c| c.len() <= small().max as usize));
            proptest::prop_assert_eq!(chunks.concat(), data);
        }
    }
}
