//! The repository's `config` object.

use serde::{Deserialize, Serialize};

use super::VERSION;
use crate::error::{Error, Result};
use crate::id::Id;

/// Chunker parameters, fixed at `init`: changing them would stop deduplication against
/// everything already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 32 KiB / 128 KiB / 512 KiB, chosen on the comparison corpus (docs/benchmarks.md,
    /// "Chunk size"): against 1 MiB it stores 18% less after five days of dumps and
    /// page-level database changes at the same backup speed, and a 1 TiB repository
    /// still has only about 8 million data blobs for the local index.
    fn default() -> Self {
        ChunkerParams {
            min: 32 * 1024,
            avg: 128 * 1024,
            max: 512 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Check the limits of FastCDC v2020 and min <= avg <= max.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "chunk sizes min {} avg {} max {} are out of range: need {}..={} <= {}..={} <= {}..={} bytes",
                self.min,
                self.avg,
                self.max,
                f::MINIMUM_MIN,
                f::MINIMUM_MAX,
                f::AVERAGE_MIN,
                f::AVERAGE_MAX,
                f::MAXIMUM_MIN,
                f::MAXIMUM_MAX
            )))
        }
    }
}

/// Stored sealed at `config`; see docs/format.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u8,
    /// Random; names the local cache directory.
    pub id: Id,
    pub chunker: ChunkerParams,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// zstd level for blobs and objects.
    pub compression: i32,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

impl Config {
    pub fn new(chunker: ChunkerParams, pack_size: u32, compression: i32) -> Result<Self> {
        chunker.validate()?;
        if !(1 << 20..=1 << 30).contains(&pack_size) {
            return Err(Error::Config(format!(
                "pack size {pack_size} is out of range 1 MiB..=1 GiB"
            )));
        }
        if !(1..=19).contains(&compression) {
            return Err(Error::Config(format!(
                "compression level {compression} is out of range 1..=19"
            )));
        }
        Ok(Config {
            version: VERSION,
            id: Id::random(),
            chunker,
            pack_size,
            compression,
            created: chrono::Utc::now().timestamp(),
        })
    }

    /// Checks after decoding: a config that authenticates but holds nonsense would make
    /// every later step fail obscurely.
    pub fn validate(&self) -> Result<()> {
        self.chunker
            .validate()
            .map_err(|e| Error::format("config", e.to_string()))
    }
}

/// Cleartext prefix of the `config` object: lets any cairn say "this is a cairn
/// repository of format N" before it has a password.
// WARNING: PLEASE DO NOT MODIFY: part of the on-store format.
pub const CONFIG_MAGIC: &[u8; 8] = b"CAIRNRP\x01";
