//! Key files (`keys/<id>`): the master key sealed under a password-derived key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{VERSION, aad, decode, encode};
use crate::crypto::kdf::KdfParams;
use crate::crypto::{MasterKey, open_with, seal_with};
use crate::error::{Error, Result};

/// Stored in cleartext postcard; only `sealed_master` is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u8,
    /// Seconds since the Unix epoch.
    pub created: i64,
    pub host: String,
    pub user: String,
    pub kdf: KdfParams,
    /// `seal(kek, "cairn/key/v1", postcard(MasterKey))`.
    pub sealed_master: Vec<u8>,
}

impl KeyFile {
    /// Seal `master` under `password` with fresh KDF parameters.
    pub fn create(master: &MasterKey, password: &[u8], kdf: KdfParams) -> Result<Self> {
        let kek = kdf.derive(password)?;
        let plain = Zeroizing::new(postcard::to_stdvec(master).expect("key encodes"));
        Ok(KeyFile {
            version: VERSION,
            created: chrono::Utc::now().timestamp(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            kdf,
            sealed_master: seal_with(&kek, aad::KEY, &plain),
        })
    }

    /// `Ok(None)` when the password does not open this key.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let kek = self.kdf.derive(password)?;
        match open_with(&kek, aad::KEY, &self.sealed_master) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                postcard::from_bytes(&plain)
                    .map(Some)
                    .map_err(|e| Error::format("key file", format!("master key: {e}")))
            }
            Err(_) => Ok(None),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode, and check that the KDF parameters can be used.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let kf: KeyFile = decode(name, bytes)?;
        kf.kdf.params().map_err(|e| Error::format(name, e))?;
        Ok(kf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_wrong_password() {
        let m = MasterKey::random();
        let kf = KeyFile::create(&m, b"pw", KdfParams::with_cost(64, 1, 1)).unwrap();
        let back = KeyFile::from_bytes("k", &kf.to_bytes()).unwrap();
        assert_eq!(back, kf);
        let opened = back.open(b"pw").unwrap().unwrap();
        assert_eq!(opened.blob_id(b"x"), m.blob_id(b"x"));
        assert!(back.open(b"wrong").unwrap().is_none());
    }
}
