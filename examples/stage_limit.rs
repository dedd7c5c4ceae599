//! The per-core limit a first backup of a directory can reach: its files read into
//! memory first, then chunked, hashed, compressed and sealed on one thread, the way a
//! backup does it (a chunk seen before is only hashed). Times each stage and prints the
//! throughput of all four together, and that times the cores: the bound the pipeline
//! efficiency of a backup is measured against.
//!
//!   cargo run --release --example stage_limit -- DIR [CORES]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cairn::chunker;
use cairn::crypto::MasterKey;
use cairn::format::{self, ChunkerParams};

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        if m.is_dir() {
            files(&p, out);
        } else if m.is_file() {
            out.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: stage_limit DIR [CORES]");
        std::process::exit(2);
    };
    let cores: f64 = args.get(1).map_or(2.0, |c| c.parse().expect("CORES"));
    let mut data = Vec::new();
    files(std::path::Path::new(dir), &mut data);
    let total: usize = data.iter().map(Vec::len).sum();
    let key = MasterKey::from_parts([1; 32], [2; 32], 0x5eed);
    let params = ChunkerParams::default();
    let level = 3;

    let mut runs = Vec::new();
    for _ in 0..3 {
        let (mut chunk, mut hash, mut compress, mut seal) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut seen = HashSet::new();
        let mut stored = 0usize;
        for file in &data {
            let t = Instant::now();
            let cuts = chunker::chunk_slice(&params, key.chunker_seed(), file);
            chunk += t.elapsed();
            let mut at = 0;
            for len in cuts {
                let piece = &file[at..at + len];
                at += len;
                let t = Instant::now();
                let id = key.blob_id(piece);
                hash += t.elapsed();
                if !seen.insert(id) {
                    continue;
                }
                let t = Instant::now();
                let z = format::compress(level, piece);
                compress += t.elapsed();
                let t = Instant::now();
                let sealed = key.seal(id.as_bytes(), &z);
                seal += t.elapsed();
                stored += sealed.len();
                std::hint::black_box(sealed);
            }
        }
        runs.push((
            chunk + hash + compress + seal,
            chunk,
            hash,
            compress,
            seal,
            stored,
        ));
    }
    runs.sort_by_key(|r| r.0);
    let (all, chunk, hash, compress, seal, stored) = runs[1];
    let mb = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    println!(
        "{} files, {:.1} MB, {:.1} MB sealed; median of 3 runs on one thread:",
        data.len(),
        total as f64 / 1e6,
        stored as f64 / 1e6
    );
    for (name, d) in [
        ("chunk", chunk),
        ("hash", hash),
        ("compress", compress),
        ("seal", seal),
    ] {
        println!("  {name:9} {:7.3} s  {:8.0} MB/s", d.as_secs_f64(), mb(d));
    }
    println!(
        "  all four  {:7.3} s  {:8.0} MB/s per core",
        all.as_secs_f64(),
        mb(all)
    );
    println!("limit on {cores} cores: {:.0} MB/s", mb(all) * cores);
}
