//! The blob codec: plaintext -> id (keyed BLAKE3) -> compress -> seal, and back.

use serde::{Deserialize, Serialize};

use super::{aad, compress_into, decompress};
use crate::crypto::{MasterKey, SEAL_PREFIX};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// One directory's entries (an encoded [`super::Tree`]).
    Tree,
}

impl BlobType {
    fn byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
}

impl std::fmt::Display for BlobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        })
    }
}

fn blob_aad(ty: BlobType, id: &BlobId) -> [u8; 46] {
    let mut a = [0u8; 46];
    a[..13].copy_from_slice(aad::BLOB);
    a[13] = ty.byte();
    a[14..].copy_from_slice(id.as_bytes());
    a
}

/// Seal a blob; returns its id and the stored bytes.
pub fn seal_blob(key: &MasterKey, ty: BlobType, plaintext: &[u8], level: i32) -> (BlobId, Vec<u8>) {
    let id = key.blob_id(plaintext);
    (id, seal_blob_with_id(key, ty, &id, plaintext, level))
}

pub(crate) fn seal_blob_with_id(
    key: &MasterKey,
    ty: BlobType,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    let mut out = Vec::new();
    seal_blob_into(key, ty, id, plaintext, level, &mut out);
    out
}

/// [`seal_blob_with_id`] into `out` (cleared first): compressed and sealed where it lies,
/// so a buffer used again costs no allocation and the blob no copy.
pub(crate) fn seal_blob_into(
    key: &MasterKey,
    ty: BlobType,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(SEAL_PREFIX, 0);
    compress_into(level, plaintext, out);
    key.seal_in_place(&blob_aad(ty, id), out);
}

/// Open a stored blob: authenticate (binding id and type), decompress, and check that the
/// plaintext hashes to `id`. `raw_length`, when known from an index, bounds the output.
pub fn open_blob(
    key: &MasterKey,
    ty: BlobType,
    id: &BlobId,
    sealed: &[u8],
    raw_length: Option<u32>,
) -> Result<Vec<u8>> {
    let object = || format!("{ty} blob {id}");
    let plain = key
        .open(&blob_aad(ty, id), sealed)
        .map_err(|_| Error::integrity(object(), "authentication failed"))?;
    let data = decompress(&object(), &plain, raw_length.map(|n| n as usize))?;
    if key.blob_id(&data) != *id {
        return Err(Error::integrity(object(), "content does not match its id"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn blob_round_trip(data in proptest::collection::vec(any::<u8>(), 0..10_000), zeros in any::<bool>()) {
            let data = if zeros { vec![0u8; data.len()] } else { data };
            let k = MasterKey::random();
            let (id, sealed) = seal_blob(&k, BlobType::Data, &data, 3);
            prop_assert_eq!(open_blob(&k, BlobType::Data, &id, &sealed, Some(data.len() as u32)).unwrap(), data.clone());
            prop_assert_eq!(open_blob(&k, BlobType::Data, &id, &sealed, None).unwrap(), data);
            // Swapping the type or the id is detected.
            prop_assert!(open_blob(&k, BlobType::Tree, &id, &sealed, None).is_err());
            let other = k.blob_id(b"other");
            prop_assert!(open_blob(&k, BlobType::Data, &other, &sealed, None).is_err());
        }
    }

    #[test]
    fn zeros_compress_and_random_does_not() {
        let k = MasterKey::random();
        let (_, z) = seal_blob(&k, BlobType::Data, &vec![0u8; 1 << 20], 3);
        assert!(z.len() < 4096);
        let mut r = vec![0u8; 1 << 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut r);
        let (_, s) = seal_blob(&k, BlobType::Data, &r, 3);
        assert_eq!(s.len(), r.len() + 1 + crate::crypto::SEAL_OVERHEAD);
    }
}
