//! Key material and the two primitives every stored byte goes through: keyed BLAKE3 for
//! blob ids and AES-256-GCM for sealing.
//!
//! A sealed message is `nonce (12) || ciphertext || tag (16)` with a fresh random nonce
//! per message; the associated data names what the message is (see `docs/format.md`), so
//! an object moved to another name or kind fails to open.

pub mod kdf;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::BlobId;

/// Bytes added by sealing: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Sealing failed to authenticate: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// The repository's master key. Random at `init`, stored only sealed in `keys/<id>`.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    /// AES-256-GCM key for every sealed object.
    data: [u8; 32],
    /// BLAKE3 key for blob ids.
    id: [u8; 32],
    /// Seed of the chunker's gear table (keeps chunk boundaries private).
    chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random key from the OS generator.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut k = MasterKey {
            data: [0; 32],
            id: [0; 32],
            chunker_seed: 0,
        };
        rand::rngs::OsRng.fill_bytes(&mut k.data);
        rand::rngs::OsRng.fill_bytes(&mut k.id);
        // A zero seed would leave fastcdc's gear table unseeded.
        while k.chunker_seed == 0 {
            k.chunker_seed = rand::rngs::OsRng.next_u64();
        }
        k
    }

    /// A key from fixed bytes, for golden tests and fuzzing only.
    #[doc(hidden)]
    pub fn from_parts(data: [u8; 32], id: [u8; 32], chunker_seed: u64) -> Self {
        MasterKey {
            data,
            id,
            chunker_seed,
        }
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(crate::id::Id(
            *blake3::keyed_hash(&self.id, plaintext).as_bytes(),
        ))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.data, aad, plaintext)
    }

    /// Seal `buf[SEAL_PREFIX..]` where it lies: the nonce is written over the first
    /// [`SEAL_PREFIX`] bytes and the tag appended, giving what [`MasterKey::seal`] gives
    /// for that plaintext. Reserve the tag's 16 bytes to spare a reallocation.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) {
        seal_in_place_with(&self.data, aad, buf)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(&self.data, aad, sealed)
    }
}

/// The bytes in front of the ciphertext of a sealed message (its nonce).
pub const SEAL_PREFIX: usize = NONCE_LEN;

/// Seal `plaintext` under `key` with a fresh random nonce.
pub fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&[0; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    seal_in_place_with(key, aad, &mut out);
    out
}

fn seal_in_place_with(key: &[u8; 32], aad: &[u8], buf: &mut Vec<u8>) {
    use rand::RngCore;
    assert!(buf.len() >= NONCE_LEN, "no room for the nonce in front");
    let cipher = Aes256Gcm::new(key.into());
    // A nonce needs to be unique, not secret: it comes from the thread's CSPRNG (ChaCha,
    // seeded and reseeded from the OS), not from a system call per message.
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    buf[..NONCE_LEN].copy_from_slice(&nonce);
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut buf[NONCE_LEN..]).into())
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    buf.extend_from_slice(&tag);
}

/// Open a message made by [`seal_with`]; fails on any change to it or to `aad`.
pub fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError);
    }
    let cipher = Aes256Gcm::new(key.into());
    let (nonce, rest) = sealed.split_first_chunk::<NONCE_LEN>().ok_or(OpenError)?;
    let (body, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(OpenError)?;
    let mut buf = body.to_vec();
    cipher
        .decrypt_inout_detached(
            &Nonce::from(*nonce),
            aad,
            buf.as_mut_slice().into(),
            &Tag::from(*tag),
        )
        .map_err(|_| OpenError)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey::random();
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
        assert_ne!(k.chunker_seed(), 0);
    }

    /// Every message gets its own nonce, in every thread: a repeated nonce under one
    /// key would give away the XOR of two plaintexts and GCM's authentication key.
    #[test]
    fn nonces_do_not_repeat() {
        let k = MasterKey::random();
        let nonces: Vec<Vec<[u8; NONCE_LEN]>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..10_000)
                            .map(|_| k.seal(b"", b"same")[..NONCE_LEN].try_into().unwrap())
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<_> = nonces.iter().flatten().collect();
        assert_eq!(all.len(), 40_000);
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                aad in proptest::collection::vec(any::<u8>(), 0..64),
                                flip in any::<prop::sample::Index>()) {
            let k = MasterKey::random();
            let sealed = k.seal(&aad, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(k.open(&aad, &sealed).unwrap(), &data[..]);
            // Any flipped bit is detected.
            let mut bad = sealed.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x01;
            prop_assert!(k.open(&aad, &bad).is_err());
            // Other associated data is detected.
            let mut aad2 = aad.clone();
            aad2.push(0);
            prop_assert!(k.open(&aad2, &sealed).is_err());
            // Another key cannot open it.
            prop_assert!(MasterKey::random().open(&aad, &sealed).is_err());
            // Sealed where it lies, whatever was in the nonce's place: the same format.
            let mut buf = vec![0xaa; SEAL_PREFIX];
            buf.extend_from_slice(&data);
            k.seal_in_place(&aad, &mut buf);
            prop_assert_eq!(buf.len(), sealed.len());
            prop_assert_eq!(k.open(&aad, &buf).unwrap(), data);
        }
    }
}
