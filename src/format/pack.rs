//! Packs: `blob* || sealed header || u32le(header length) || magic`.
//!
//! The header sits at the tail so a packer can stream blobs out before it knows them all;
//! a reader fetches the last [`PACK_TRAILER_LEN`] bytes, then the header.

use serde::{Deserialize, Serialize};

use super::{BlobType, VERSION, aad, decode, encode};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

// WARNING: PLEASE DO NOT MODIFY: part of the on-store format (docs/format.md, "Packs").
pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
/// `u32le(header length) || magic`.
pub const PACK_TRAILER_LEN: usize = 12;

/// One blob's place in a pack (also an index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackBlob {
    pub ty: BlobType,
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// A pack's header, sealed at its tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader {
    pub version: u8,
    pub blobs: Vec<PackBlob>,
}

impl PackHeader {
    pub fn new(blobs: Vec<PackBlob>) -> Self {
        PackHeader {
            version: VERSION,
            blobs,
        }
    }

    /// Sealed header plus trailer, to append after the blobs.
    pub fn seal_with_trailer(&self, key: &MasterKey) -> Vec<u8> {
        let mut out = key.seal(aad::PACK_HEADER, &encode(self));
        let len = out.len() as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(PACK_MAGIC);
        out
    }

    /// Open a sealed header and check that every blob lies inside the pack's blob area
    /// (`blobs_end` = pack size minus header and trailer).
    pub fn open(key: &MasterKey, pack: &PackId, sealed: &[u8], blobs_end: u64) -> Result<Self> {
        let object = format!("pack {pack}");
        let plain = key
            .open(aad::PACK_HEADER, sealed)
            .map_err(|_| Error::integrity(&object, "header authentication failed"))?;
        let header: PackHeader = decode(&object, &plain)?;
        for b in &header.blobs {
            if b.offset
                .checked_add(b.length as u64)
                .is_none_or(|end| end > blobs_end)
            {
                return Err(Error::format(
                    &object,
                    format!("header places blob {} outside the pack", b.id),
                ));
            }
        }
        Ok(header)
    }

    /// Parse a whole pack's bytes, after checking they hash to the pack's id.
    pub fn from_pack_bytes(key: &MasterKey, pack: &PackId, bytes: &[u8]) -> Result<Self> {
        if crate::id::Id::hash_of(bytes) != pack.0 {
            return Err(Error::integrity(
                format!("pack {pack}"),
                "content does not match its id (corrupt or truncated)",
            ));
        }
        let hlen = pack_header_len(pack, bytes.len() as u64, tail(bytes))?;
        let start = bytes.len() - PACK_TRAILER_LEN - hlen as usize;
        Self::open(
            key,
            pack,
            &bytes[start..bytes.len() - PACK_TRAILER_LEN],
            start as u64,
        )
    }
}

fn tail(bytes: &[u8]) -> &[u8] {
    &bytes[bytes.len().saturating_sub(PACK_TRAILER_LEN)..]
}

/// Read the trailer (the last [`PACK_TRAILER_LEN`] bytes of a pack of `pack_size` bytes)
/// and return the sealed header's length.
pub fn pack_header_len(pack: &PackId, pack_size: u64, trailer: &[u8]) -> Result<u32> {
    let object = format!("pack {pack}");
    if trailer.len() != PACK_TRAILER_LEN || &trailer[4..] != PACK_MAGIC {
        return Err(Error::integrity(
            &object,
            "no pack trailer at the end (truncated or not a cairn pack)",
        ));
    }
    let hlen = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if hlen as u64 + PACK_TRAILER_LEN as u64 > pack_size {
        return Err(Error::integrity(
            &object,
            format!("header length {hlen} exceeds pack size {pack_size} (truncated?)"),
        ));
    }
    Ok(hlen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::seal_blob;
    use proptest::prelude::*;

    fn build(key: &MasterKey, blobs: &[Vec<u8>]) -> (PackId, Vec<u8>, PackHeader) {
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for b in blobs {
            let (id, sealed) = seal_blob(key, BlobType::Data, b, 3);
            entries.push(PackBlob {
                ty: BlobType::Data,
                id,
                offset: bytes.len() as u64,
                length: sealed.len() as u32,
                raw_length: b.len() as u32,
            });
            bytes.extend_from_slice(&sealed);
        }
        let h = PackHeader::new(entries);
        bytes.extend_from_slice(&h.seal_with_trailer(key));
        (PackId(crate::id::Id::hash_of(&bytes)), bytes, h)
    }

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..12)) {
            let k = MasterKey::random();
            let (id, bytes, h) = build(&k, &blobs);
            let back = PackHeader::from_pack_bytes(&k, &id, &bytes).unwrap();
            prop_assert_eq!(&back, &h);
            for (e, plain) in back.blobs.iter().zip(&blobs) {
                let s = &bytes[e.offset as usize..(e.offset + e.length as u64) as usize];
                prop_assert_eq!(&crate::format::open_blob(&k, e.ty, &e.id, s, Some(e.raw_length)).unwrap(), plain);
            }
            // Every truncation is an error, never a panic.
            for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                prop_assert!(PackHeader::from_pack_bytes(&k, &id, &bytes[..cut]).is_err());
            }
        }
    }
}
