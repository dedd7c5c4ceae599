//! Small helpers about the local system.

use std::collections::HashMap;
use std::sync::RwLock;

/// This machine's host name (snapshots and key files record it).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The current user's name, or the uid as text.
pub fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Caches uid -> user name and gid -> group name lookups during a backup. Read-mostly:
/// the rayon workers of a backup share it, and a miss is rare.
#[derive(Default)]
pub struct NameCache {
    users: RwLock<HashMap<u32, String>>,
    groups: RwLock<HashMap<u32, String>>,
}

impl NameCache {
    pub fn user(&self, uid: u32) -> String {
        let mut s = String::new();
        self.set_user(&mut s, uid);
        s
    }

    pub fn group(&self, gid: u32) -> String {
        let mut s = String::new();
        self.set_group(&mut s, gid);
        s
    }

    /// Make `name` the name of `uid`; no allocation when it already is. `true` when it
    /// already was.
    pub fn set_user(&self, name: &mut String, uid: u32) -> bool {
        cached(&self.users, uid, name, |uid| {
            nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
    }

    /// Make `name` the name of `gid`; no allocation when it already is. `true` when it
    /// already was.
    pub fn set_group(&self, name: &mut String, gid: u32) -> bool {
        cached(&self.groups, gid, name, |gid| {
            nix::unistd::Group::from_gid(gid.into())
                .ok()
                .flatten()
                .map(|g| g.name)
        })
    }
}

fn cached(
    map: &RwLock<HashMap<u32, String>>,
    id: u32,
    out: &mut String,
    lookup: impl FnOnce(u32) -> Option<String>,
) -> bool {
    let set = |out: &mut String, name: &str| {
        let same = out == name;
        if !same {
            out.clear();
            out.push_str(name);
        }
        same
    };
    if let Some(name) = map.read().expect("name cache").get(&id) {
        return set(out, name);
    }
    let mut m = map.write().expect("name cache");
    let name = m
        .entry(id)
        .or_insert_with(|| lookup(id).unwrap_or_default());
    set(out, name)
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Deterministic pseudo-random bytes (SplitMix64) for golden tests, benchmarks and test
/// fixtures: fixed here, so they never change with a dependency's version.
#[doc(hidden)]
pub fn seeded_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Start `cmd`'s child with no signals blocked, whatever this process blocks (the
/// backup hooks block SIGINT and SIGTERM to handle them in one thread).
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigprocmask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
}

/// `500MiB`, `2G`, `1048576`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("'{s}': unknown unit '{other}' (use K, M, G, T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}
