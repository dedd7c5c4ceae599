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
    /// Defaults for new keys: 19 MiB and 2 passes, the memory and time of the first of the
    /// equivalent Argon2id settings the OWASP Password Storage Cheat Sheet recommends, in
    /// 2 lanes, which two cores fill side by side: a guess costs an attacker the same
    /// memory and passes, and `cairn snapshots` of an empty repository took 13.4 ms here
    /// instead of 19.2 (medians of 40). Its memory is what every cairn process peaks at
    /// while opening the repository.
    pub fn new_random() -> Self {
        Self::with_cost(
            Self::DEFAULT_MEMORY_KIB,
            Self::DEFAULT_ITERATIONS,
            Self::DEFAULT_PARALLELISM,
        )
    }

    pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
    pub const DEFAULT_ITERATIONS: u32 = 2;
    pub const DEFAULT_PARALLELISM: u32 = 2;

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

    /// The Argon2id parameters, or why they cannot be used (a damaged or hostile key
    /// file: absurd memory is refused instead of aborting).
    pub fn params(&self) -> std::result::Result<argon2::Params, String> {
        if self.memory_kib > 4 * 1024 * 1024 {
            return Err(format!(
                "Argon2id memory {} KiB is over 4 GiB",
                self.memory_kib
            ));
        }
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| format!("bad Argon2id parameters: {e}"))
    }

    /// Derive the 32-byte key-encryption key.
    pub fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = self.params().map_err(|e| Error::format("key file", e))?;
        let count = params.block_count();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        // The lanes are filled by a pool of their own, one thread per lane up to the
        // cores (a key file cannot make it start more): rayon's global pool, which
        // argon2 would use otherwise, panics where threads cannot be started.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (self.parallelism as usize).clamp(1, cores);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cairn-kdf-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start threads to derive the key: {e}")))?;
        let hashed = pool.install(|| match HugeBlocks::map(count) {
            Some(mut blocks) => argon.hash_password_into_with_memory(
                password,
                &self.salt,
                out.as_mut(),
                &mut *blocks,
            ),
            None => argon.hash_password_into(password, &self.salt, out.as_mut()),
        });
        hashed.map_err(|e| Error::format("key file", format!("Argon2id failed: {e}")))?;
        Ok(out)
    }
}

/// Argon2id's working memory in its own mapping, asking for transparent huge pages.
/// Every process derives a key once, in fresh memory: faulting in 19 MiB as 4 KiB pages
/// cost as much time as the hashing (about 8 ms of 20 here), as 2 MiB pages it costs
/// about 1 ms. Same memory, same result. When the kernel has no huge page to hand out it
/// uses small ones. Unmapped when dropped, so the password-derived blocks go back to
/// the kernel rather than to the allocator.
struct HugeBlocks {
    map: *mut libc::c_void,
    map_len: usize,
    blocks: *mut argon2::Block,
    count: usize,
}

impl HugeBlocks {
    const HUGE: usize = 2 << 20;

    fn map(count: usize) -> Option<Self> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let len = count.checked_mul(std::mem::size_of::<argon2::Block>())?;
        // Room to start at a 2 MiB boundary, where huge pages can back the whole range.
        let map_len = len.checked_add(Self::HUGE)?;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let start = (map as usize).next_multiple_of(Self::HUGE);
        // Huge pages for the whole 2 MiB pieces only, so the memory touched stays what
        // Argon2id uses (a huge page over the tail would add up to 2 MiB to it).
        // SAFETY: `start..start + len` lies inside the mapping (it has HUGE spare bytes).
        // madvise is a hint; when it fails the pages are small.
        #[cfg(target_os = "linux")]
        unsafe {
            let whole = len / Self::HUGE * Self::HUGE;
            libc::madvise(start as *mut libc::c_void, whole, libc::MADV_HUGEPAGE);
        }
        Some(HugeBlocks {
            map,
            map_len,
            blocks: start as *mut argon2::Block,
            count,
        })
    }
}

impl std::ops::Deref for HugeBlocks {
    type Target = [argon2::Block];
    fn deref(&self) -> &[argon2::Block] {
        // SAFETY: `blocks` points at `count` zeroed (anonymous memory), page-aligned
        // blocks inside the live mapping; all-zero bytes are a valid `Block`.
        unsafe { std::slice::from_raw_parts(self.blocks, self.count) }
    }
}

impl std::ops::DerefMut for HugeBlocks {
    fn deref_mut(&mut self) -> &mut [argon2::Block] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks, self.count) }
    }
}

impl Drop for HugeBlocks {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_in_its_own_mapping_gives_what_argon2_gives() {
        // 5 MiB: two whole 2 MiB pieces and a tail of small pages; one lane and two.
        for lanes in [1, 2] {
            let k = KdfParams::with_cost(5 * 1024, 2, lanes);
            let ours = k.derive(b"pw").unwrap();
            let params = argon2::Params::new(5 * 1024, 2, lanes, Some(32)).unwrap();
            let mut theirs = [0u8; 32];
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(b"pw", &k.salt, &mut theirs)
                .unwrap();
            assert_eq!(*ours, theirs, "{lanes} lanes");
        }
    }

    /// Key files written by every earlier cairn must still open: the derivation of fixed
    /// parameters gives the same key whatever the Argon2 implementation or its version
    /// (these values come from argon2 0.5.3, computing lanes one after the other; 0.6
    /// computes them in parallel).
    #[test]
    fn derived_keys_do_not_change() {
        for (parallelism, want) in [
            (
                1,
                "6048187c2b1c047e047aab8f4cc072104bf3ef4c0b038eb10ad0936d3be11337",
            ),
            (
                2,
                "de62aa69c21d422d5f0f6125a6da239380013d5d3a10c90257ac5d7fc0db8a66",
            ),
        ] {
            let k = KdfParams {
                memory_kib: 256,
                iterations: 2,
                parallelism,
                salt: [7; 16],
            };
            let got: String = k
                .derive(b"correct horse")
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "{parallelism} lanes");
        }
    }
}
