//! Argon2id: password -> key-encryption key. Parameters live in each key file so they
//! can be raised for new keys without touching old ones.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Argon2id parameters as stored in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Defaults for new keys: 19 MiB, 2 passes, 1 lane: the first of the equivalent
    /// Argon2id settings the OWASP Password Storage Cheat Sheet recommends. Its memory
    /// is what every cairn process peaks at while opening the repository.
    pub fn new_random() -> Self {
        Self::with_cost(Self::DEFAULT_MEMORY_KIB, Self::DEFAULT_ITERATIONS, 1)
    }

    pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
    pub const DEFAULT_ITERATIONS: u32 = 2;

    pub fn with_cost(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        KdfParams {
            memory_kib,
            iterations,
            parallelism,
            salt,
        }
    }

    /// Derive the 32-byte key-encryption key.
    pub fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| Error::format("key file", format!("bad Argon2id parameters: {e}")))?;
        // Refuse absurd memory from a damaged or hostile key file instead of aborting.
        if self.memory_kib > 4 * 1024 * 1024 {
            return Err(Error::format(
                "key file",
                format!("Argon2id memory {} KiB is over 4 GiB", self.memory_kib),
            ));
        }
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, &self.salt, out.as_mut())
            .map_err(|e| Error::format("key file", format!("Argon2id failed: {e}")))?;
        Ok(out)
    }
}
