//! Index scale: a repository whose index names N blobs (default 10 million), then
//! lookups per second in the local index cache, and the peak RSS of `cairn backup`
//! processes against it (the first one syncs the cache, the second is a normal backup).
//!
//! cargo bench --bench index_scale [-- ENTRIES]
//!
//! The index entries point at packs that do not exist: nothing here reads them.

use std::time::Instant;

use cairn::format::{BlobType, IndexFile, IndexPack, PackBlob};
use cairn::id::{BlobId, Id, PackId};
use cairn::repository::{InitOptions, RepoOptions, Repository};

const PER_FILE: usize = 20_000;
const PER_PACK: usize = 100;

fn id(n: u64, salt: u8) -> Id {
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    h.update(&[salt]);
    Id(*h.finalize().as_bytes())
}

fn peak_rss_mib(status: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() {
    let entries: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let work = tempfile::Builder::new()
        .prefix("cairn-index-scale")
        .tempdir_in("/var/tmp")
        .unwrap();
    let repo_dir = work.path().join("repo");
    let cache = work.path().join("cache");
    let store = cairn::backend::open(
        repo_dir.to_str().unwrap(),
        true,
        &cairn::backend::S3Options::with_defaults(),
    )
    .unwrap();
    let init = InitOptions {
        kdf: cairn::crypto::kdf::KdfParams::with_cost(1024, 1, 1),
        ..Default::default()
    };
    let opts = RepoOptions {
        cache_dir: Some(cache.clone()),
        connections: 4,
    };
    let repo = Repository::init(store, b"pw", init, opts).unwrap();

    let t = Instant::now();
    let mut n = 0u64;
    while n < entries {
        let mut packs = Vec::new();
        let file_end = (n + PER_FILE as u64).min(entries);
        while n < file_end {
            let pack = PackId(id(n, 1));
            let blobs = (0..PER_PACK as u64)
                .take_while(|i| n + i < file_end)
                .map(|i| PackBlob {
                    ty: BlobType::Data,
                    id: BlobId(id(n + i, 0)),
                    offset: i * 500_000,
                    length: 500_000,
                    raw_length: 1_000_000,
                })
                .collect::<Vec<_>>();
            n += blobs.len() as u64;
            packs.push(IndexPack {
                id: pack,
                size: 50_000_000,
                blobs,
            });
        }
        repo.block_on(repo.save_index(&IndexFile::new(packs)))
            .unwrap();
    }
    println!(
        "wrote index files for {entries} blobs in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let repo = repo.into_indexed().unwrap();
    println!(
        "first sync of the local cache: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let lookups = 1_000_000u64;
    let mut found = 0;
    for i in 0..lookups {
        // Half hits, half misses, spread over the whole key space.
        let key = if i % 2 == 0 {
            id((i * 7919) % entries, 0)
        } else {
            id(i, 9)
        };
        if repo.index().contains(BlobType::Data, &BlobId(key)).unwrap() {
            found += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(found, lookups / 2);
    println!(
        "lookups: {:.0}/s ({lookups} lookups, half hits)",
        lookups as f64 / secs
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    println!(
        "this process (sync + lookups): peak RSS {} MiB",
        peak_rss_mib(&status)
    );
    drop(repo);

    // A real backup process against this index.
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/cairn");
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..2000u64 {
        std::fs::write(
            src.join(format!("f{i}")),
            id(i, 3).0.repeat(1 + (i as usize % 3000)),
        )
        .unwrap();
    }
    for run in ["backup (cache in step)", "backup (unchanged)"] {
        let out = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%M %e"])
            .arg(&bin)
            .args(["-q", "backup", "--repo"])
            .arg(&repo_dir)
            .arg("--cache-dir")
            .arg(&cache)
            .arg(&src)
            .env("CAIRN_PASSWORD", "pw")
            .output()
            .expect("run target/release/cairn (cargo build --release first)");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        let mut it = last.split_whitespace();
        let rss: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        println!(
            "cairn {run} against {entries} indexed blobs: peak RSS {} MiB, {}s",
            rss / 1024,
            it.next().unwrap_or("?")
        );
        assert!(out.status.success(), "{err}");
    }
}
