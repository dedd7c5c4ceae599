//! On-store types and their encodings. `docs/format.md` is the normative description;
//! this module is its implementation and must not drift from it.
//!
//! Every structured object is `postcard` with a leading `version: u8`, then the codec
//! envelope (`codec byte || payload`, zstd or raw), then sealed with AES-256-GCM under the
//! master key with associated data naming the object kind. Decoders check the version
//! byte before decoding the rest, so a newer repository gives "upgrade cairn", not garbage.

pub(crate) mod blob;
mod config;
mod deletion;
mod key;
mod lock;
mod pack;
mod snapshot;
mod tree;

pub use blob::{BlobType, open_blob, seal_blob};
pub use config::{CONFIG_MAGIC, ChunkerParams, Config};
pub use deletion::Deletion;
pub use key::KeyFile;
pub use lock::{Lock, LockKind};
pub use pack::{PACK_MAGIC, PACK_TRAILER_LEN, PackBlob, PackHeader, pack_header_len};
pub use snapshot::{Snapshot, StreamInfo, Summary};
pub use tree::{Node, NodeKind, Timestamp, Tree, Xattr};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{IndexId, PackId};

/// The version every top-level structure of this build writes and reads.
// WARNING: a change here is a change of the on-store format; see docs/format.md.
pub const VERSION: u8 = 1;

/// Associated data binding each sealed object to its kind (docs/format.md, "Sealing").
// WARNING: PLEASE DO NOT MODIFY THESE VALUES: every existing repository depends on them.
pub mod aad {
    pub const CONFIG: &[u8] = b"cairn/config/v1";
    pub const KEY: &[u8] = b"cairn/key/v1";
    pub const PACK_HEADER: &[u8] = b"cairn/pack-header/v1";
    pub const INDEX: &[u8] = b"cairn/index/v1";
    pub const SNAPSHOT: &[u8] = b"cairn/snapshot/v1";
    pub const LOCK: &[u8] = b"cairn/lock/v1";
    pub const BLOB: &[u8] = b"cairn/blob/v1";
    pub const DELETION: &[u8] = b"cairn/deletion/v1";
}

/// Codec byte in front of every compressed-or-not payload.
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Upper bound on a decompressed object, so a hostile object cannot exhaust memory.
const MAX_OBJECT_LEN: u64 = 4 << 30;

thread_local! {
    // zstd contexts are worth reusing: creating one per blob showed up in profiles.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Where zstd writes when it appends to a `Vec`: the vector's spare capacity after
/// `start`. (zstd's own `Vec` target writes from the vector's beginning.)
struct Append<'v> {
    vec: &'v mut Vec<u8>,
    start: usize,
}

// SAFETY: the pointer and capacity describe memory `vec` owns from `start` to the end of
// its allocation, and `filled_until` marks as initialized only the `n` bytes zstd reports
// having written there (zstd-safe checks `n` against the capacity).
unsafe impl zstd::zstd_safe::WriteBuf for Append<'_> {
    fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..]
    }
    fn capacity(&self) -> usize {
        self.vec.capacity() - self.start
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr().wrapping_add(self.start)
    }
    unsafe fn filled_until(&mut self, n: usize) {
        // SAFETY: see the impl.
        unsafe { self.vec.set_len(self.start + n) }
    }
}

/// zstd at `level` of `data`, appended to `out` (which the caller has made `len()` long);
/// the compressed length.
fn zstd_compress_into(level: i32, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let start = out.len();
        c.as_mut()
            .expect("set above")
            .1
            .compress_to_buffer(data, &mut Append { vec: out, start })
    })
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(data, capacity)
    })
}

/// `codec || payload`: zstd at `level`, or raw when compression does not make it smaller.
pub fn compress(level: i32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compress_into(level, data, &mut out);
    out
}

/// [`compress`], appended to `out`. Compressed data is written there by zstd directly.
pub fn compress_into(level: i32, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(CODEC_ZSTD);
    match zstd_compress_into(level, data, out) {
        Ok(n) if n < data.len() => {}
        _ => {
            out.truncate(start);
            out.reserve(1 + data.len());
            out.push(CODEC_RAW);
            out.extend_from_slice(data);
        }
    }
}

/// Inverse of [`compress`]. `expected_len`, when known, bounds and checks the output.
pub fn decompress(object: &str, buf: &[u8], expected_len: Option<usize>) -> Result<Vec<u8>> {
    let (&codec, payload) = buf
        .split_first()
        .ok_or_else(|| Error::format(object, "empty payload"))?;
    let out = match codec {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => match expected_len {
            Some(n) => zstd_decompress(payload, n)
                .map_err(|e| Error::format(object, format!("zstd: {e}")))?,
            None => {
                use std::io::Read;
                let mut out = Vec::new();
                zstd::stream::read::Decoder::new(payload)
                    .and_then(|d| d.take(MAX_OBJECT_LEN).read_to_end(&mut out))
                    .map_err(|e| Error::format(object, format!("zstd: {e}")))?;
                out
            }
        },
        other => return Err(Error::format(object, format!("unknown codec {other}"))),
    };
    if let Some(n) = expected_len {
        if out.len() != n {
            return Err(Error::format(
                object,
                format!("decompressed to {} bytes, expected {n}", out.len()),
            ));
        }
    }
    Ok(out)
}

/// Encode a versioned structure (its first field must be `version: u8`).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard encodes every in-memory value")
}

/// Decode a versioned structure, checking the version byte first.
pub fn decode<T: DeserializeOwned>(object: &str, bytes: &[u8]) -> Result<T> {
    match bytes.first() {
        None => return Err(Error::format(object, "empty")),
        Some(&v) if v != VERSION => {
            return Err(Error::format(
                object,
                format!(
                    "format version {v}, this cairn reads version {VERSION}{}",
                    if v > VERSION { ": upgrade cairn" } else { "" }
                ),
            ));
        }
        _ => {}
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| Error::format(object, e))?;
    if !rest.is_empty() {
        return Err(Error::format(
            object,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// Encode, compress and seal a structure as a stored object.
pub fn seal_object<T: Serialize>(key: &MasterKey, aad: &[u8], level: i32, value: &T) -> Vec<u8> {
    key.seal(aad, &compress(level, &encode(value)))
}

/// Open, decompress and decode a stored object named `object` (for messages).
pub fn open_object<T: DeserializeOwned>(
    key: &MasterKey,
    aad: &[u8],
    object: &str,
    bytes: &[u8],
) -> Result<T> {
    let plain = key.open(aad, bytes).map_err(|_| {
        Error::integrity(
            object,
            "authentication failed (corrupt, truncated or not of this repository)",
        )
    })?;
    decode(object, &decompress(object, &plain, None)?)
}

/// An index file: which blobs live in which packs. Written after the packs it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IndexFile {
    pub version: u8,
    /// Index files this one replaces (prune's consolidation); they may be deleted once
    /// this one is written.
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexPack>,
}

/// One pack's entry in an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    /// Size of the whole pack object in bytes.
    pub size: u64,
    pub blobs: Vec<PackBlob>,
}

impl IndexFile {
    pub fn new(packs: Vec<IndexPack>) -> Self {
        IndexFile {
            version: VERSION,
            supersedes: Vec::new(),
            packs,
        }
    }
}

/// Object names in the repository (docs/format.md, "Layout").
pub mod names {
    use crate::id::{IndexId, KeyId, LockId, PackId, SnapshotId};

    pub const CONFIG: &str = "config";
    pub const KEYS: &str = "keys/";
    pub const DATA: &str = "data/";
    pub const INDEX: &str = "index/";
    pub const SNAPSHOTS: &str = "snapshots/";
    pub const LOCKS: &str = "locks/";
    pub const DELETIONS: &str = "deletions/";

    pub fn pack(id: &PackId) -> String {
        let h = id.to_hex();
        format!("data/{}/{}", &h[..2], h)
    }
    pub fn index(id: &IndexId) -> String {
        format!("index/{id}")
    }
    pub fn snapshot(id: &SnapshotId) -> String {
        format!("snapshots/{id}")
    }
    pub fn key(id: &KeyId) -> String {
        format!("keys/{id}")
    }
    pub fn lock(id: &LockId) -> String {
        format!("locks/{id}")
    }
    pub fn deletion(id: &crate::id::Id) -> String {
        format!("deletions/{}", id.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn compress_round_trip(data in proptest::collection::vec(any::<u8>(), 0..8192), level in 1..5i32) {
            let c = compress(level, &data);
            prop_assert!(c.len() <= data.len() + 1);
            prop_assert_eq!(decompress("t", &c, Some(data.len())).unwrap(), data.clone());
            prop_assert_eq!(decompress("t", &c, None).unwrap(), data);
        }

        #[test]
        fn compress_into_appends_what_compress_gives(
            data in proptest::collection::vec(any::<u8>(), 0..8192),
            text in 0..4096usize,
            prefix in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Compressible and incompressible input, after whatever is in the buffer.
            let mut data = data;
            data.extend(b"row,".iter().cycle().take(text));
            let mut out = prefix.clone();
            compress_into(3, &data, &mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&out[prefix.len()..], &compress(3, &data)[..]);
            prop_assert_eq!(decompress("t", &out[prefix.len()..], None).unwrap(), data);
        }

        #[test]
        fn index_round_trip(n in 0..20usize, seed in any::<u8>()) {
            let packs = (0..n).map(|i| IndexPack {
                id: PackId(crate::id::Id([seed.wrapping_add(i as u8); 32])),
                size: i as u64 * 1000,
                blobs: vec![PackBlob { ty: BlobType::Data, id: crate::id::BlobId(crate::id::Id([i as u8; 32])), offset: 0, length: 40, raw_length: 12 }],
            }).collect();
            let idx = IndexFile::new(packs);
            let k = MasterKey::random();
            let sealed = seal_object(&k, aad::INDEX, 3, &idx);
            let back: IndexFile = open_object(&k, aad::INDEX, "index/x", &sealed).unwrap();
            prop_assert_eq!(back, idx);
            prop_assert!(open_object::<IndexFile>(&k, aad::SNAPSHOT, "index/x", &sealed).is_err());
        }
    }

    #[test]
    fn newer_version_is_named() {
        let err = decode::<IndexFile>("index/x", &[2, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("upgrade cairn"), "{err}");
    }
}
