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

    proptest::proptest! {
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..300_000, seed in 1u64..u64::MAX) {
            let data = seeded(len, seed);
            let chunks: Vec<Vec<u8>> = chunk_stream(&small(), seed, &data[..]).map(|c| c.unwrap()).collect();
            proptest::prop_assert!(chunks.iter().all(|c| c.len() <= small().max as usize));
            proptest::prop_assert_eq!(chunks.concat(), data);
        }
    }
}
