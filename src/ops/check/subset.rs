//! Which packs a data check reads: all, a deterministic part (`n/m`), or a random
//! sample by share (`5%`) or by size (`500MiB`).
//!
//! A part is chosen by pack id alone: the pack's first 8 bytes, read as a big-endian
//! integer, modulo `m`, equal `n - 1`. Pack ids are hashes, so parts come out about the
//! same size, and `1/m` to `m/m` (a cron entry per weekday, say) read every pack exactly
//! once whatever the order the packs are listed in. Packs written between two runs fall
//! into whichever part their id gives them.

use std::str::FromStr;

use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::id::PackId;

/// How much pack data `check` reads and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// Structure only: no pack is downloaded (tree packs are, to walk snapshots).
    #[default]
    None,
    /// Every pack.
    All,
    /// Part `n` of `m` (1-based), deterministic by pack id.
    Part { n: u32, m: u32 },
    /// A random share of the packs, in `(0, 1]`.
    Fraction(f64),
    /// Random packs until at least this many bytes are chosen.
    Bytes(u64),
}

impl std::fmt::Display for ReadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadData::None => f.write_str("none"),
            ReadData::All => f.write_str("all"),
            ReadData::Part { n, m } => write!(f, "{n}/{m}"),
            ReadData::Fraction(x) => write!(f, "{}%", x * 100.0),
            ReadData::Bytes(b) => write!(f, "{b}B"),
        }
    }
}

fn bad(spec: &str) -> Error {
    Error::Config(format!(
        "--read-data-subset '{spec}': use n/m (e.g. 3/7), a percentage (5%) or a size (500MiB, 2G)"
    ))
}

impl FromStr for ReadData {
    type Err = Error;

    /// `n/m`, `x%` or a size with a unit (`B`, `K`/`KiB`, `KB`, `M`/`MiB`, `MB`, ...).
    fn from_str(spec: &str) -> Result<Self> {
        let s = spec.trim();
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (
                n.trim().parse().map_err(|_| bad(spec))?,
                m.trim().parse().map_err(|_| bad(spec))?,
            );
            if m == 0 || n == 0 || n > m {
                return Err(Error::Config(format!(
                    "--read-data-subset '{spec}': need 1 <= n <= m"
                )));
            }
            return Ok(ReadData::Part { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad(spec))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(Error::Config(format!(
                    "--read-data-subset '{spec}': the percentage must be above 0 and at most 100"
                )));
            }
            return Ok(ReadData::Fraction(p / 100.0));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad(spec))?;
        let (num, unit) = s.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad(spec))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "b" => 1,
            "k" | "kib" => 1 << 10,
            "kb" => 1_000,
            "m" | "mib" => 1 << 20,
            "mb" => 1_000_000,
            "g" | "gib" => 1 << 30,
            "gb" => 1_000_000_000,
            "t" | "tib" => 1 << 40,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad(spec)),
        };
        let bytes = num * mult as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(bad(spec));
        }
        Ok(ReadData::Bytes(bytes as u64))
    }
}

/// Is `pack` in part `n` of `m` (1-based)?
pub fn in_part(pack: &PackId, n: u32, m: u32) -> bool {
    let head = u64::from_be_bytes(pack.as_bytes()[..8].try_into().expect("8 bytes"));
    m > 0 && head % m as u64 == (n as u64).wrapping_sub(1)
}

/// The positions in `packs` (id, size) that `mode` selects. Random modes use `rng`.
pub fn select(packs: &[(PackId, u64)], mode: ReadData, rng: &mut impl rand::Rng) -> Vec<usize> {
    match mode {
        ReadData::None => Vec::new(),
        ReadData::All => (0..packs.len()).collect(),
        ReadData::Part { n, m } => (0..packs.len())
            .filter(|&i| in_part(&packs[i].0, n, m))
            .collect(),
        ReadData::Fraction(x) => {
            let want = ((packs.len() as f64 * x).ceil() as usize).min(packs.len());
            let mut all: Vec<usize> = (0..packs.len()).collect();
            all.shuffle(rng);
            all.truncate(want);
            all.sort_unstable();
            all
        }
        ReadData::Bytes(limit) => {
            let mut all: Vec<usize> = (0..packs.len()).collect();
            all.shuffle(rng);
            let mut total = 0u64;
            let mut out = Vec::new();
            for i in all {
                if total >= limit {
                    break;
                }
                total += packs[i].1;
                out.push(i);
            }
            out.sort_unstable();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "3/7".parse::<ReadData>().unwrap(),
            ReadData::Part { n: 3, m: 7 }
        );
        assert_eq!("5%".parse::<ReadData>().unwrap(), ReadData::Fraction(0.05));
        assert_eq!(
            "500MiB".parse::<ReadData>().unwrap(),
            ReadData::Bytes(500 << 20)
        );
        assert_eq!("2G".parse::<ReadData>().unwrap(), ReadData::Bytes(2 << 30));
        assert_eq!("1.5KB".parse::<ReadData>().unwrap(), ReadData::Bytes(1500));
        for bad in [
            "0/7",
            "8/7",
            "1/0",
            "x/2",
            "0%",
            "101%",
            "12",
            "5 parsecs",
            "",
            "-1M",
        ] {
            assert!(bad.parse::<ReadData>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fraction_and_bytes_pick_what_they_say() {
        let packs: Vec<(PackId, u64)> = (0..100u8).map(|i| (PackId(Id([i; 32])), 1000)).collect();
        let mut rng = rand::thread_rng();
        assert_eq!(select(&packs, ReadData::Fraction(0.05), &mut rng).len(), 5);
        assert_eq!(select(&packs, ReadData::Fraction(0.001), &mut rng).len(), 1);
        assert_eq!(select(&packs, ReadData::Bytes(2500), &mut rng).len(), 3);
        assert_eq!(
            select(&packs, ReadData::Bytes(1 << 40), &mut rng).len(),
            100
        );
        assert_eq!(select(&packs, ReadData::All, &mut rng).len(), 100);
        assert!(select(&packs, ReadData::None, &mut rng).is_empty());
    }

    proptest! {
        /// Parts 1/m..m/m partition any set of packs: each pack is read exactly once.
        #[test]
        fn parts_partition_the_packs(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..200), m in 1u32..40) {
            let packs: Vec<(PackId, u64)> = ids.iter().map(|b| (PackId(Id(*b)), 1)).collect();
            let mut seen = vec![0u32; packs.len()];
            for n in 1..=m {
                for i in select(&packs, ReadData::Part { n, m }, &mut rand::thread_rng()) {
                    seen[i] += 1;
                }
            }
            prop_assert!(seen.iter().all(|&c| c == 1), "{:?}", seen);
        }

        #[test]
        fn display_of_a_part_parses_back(m in 1u32..1000, n in 1u32..1000) {
            prop_assume!(n <= m);
            let r = ReadData::Part { n, m };
            prop_assert_eq!(r.to_string().parse::<ReadData>().unwrap(), r);
        }
    }
}
