//! Throughput of each stage of the blob codec, beside the raw speed of the crate it
//! wraps (the limit that stage can reach). Inputs are seeded, so runs compare.
//!
//! cargo bench --bench codec

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use cairn::chunker;
use cairn::crypto::MasterKey;
use cairn::format::{self, BlobType, ChunkerParams, PackBlob, PackHeader};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 16 << 20;

fn random(n: usize, seed: u64) -> Vec<u8> {
    cairn::util::seeded_bytes(n, seed)
}

/// SQL-dump-like text: compressible, with varying numbers.
fn sql_text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 200);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "INSERT INTO artifact (id, repo, path, size, sha1) VALUES ({i}, 'maven-releases', 'org/acme/lib/{}/lib-{}.jar', {}, '{:016x}');\n",
                i % 97,
                i % 13,
                i * 7919 % 100_000,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

fn stages(c: &mut Criterion) {
    let key = MasterKey::from_parts([1; 32], [2; 32], 0x5eed);
    let params = ChunkerParams::default();
    let rnd = random(LEN, 1);
    let text = sql_text(LEN);
    let chunk = &rnd[..1 << 20];
    let text_chunk = &text[..1 << 20];

    let mut g = c.benchmark_group("codec");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("chunk/fastcdc-seeded", |b| {
        b.iter(|| black_box(chunker::chunk_slice(&params, key.chunker_seed(), &rnd)))
    });
    g.bench_function("hash/blake3-keyed (cairn blob id)", |b| {
        b.iter(|| black_box(key.blob_id(&rnd)))
    });
    g.bench_function("hash/blake3 raw", |b| {
        b.iter(|| black_box(blake3::hash(&rnd)))
    });

    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("compress/cairn text 1MiB", |b| {
        b.iter(|| black_box(format::compress(3, text_chunk)))
    });
    g.bench_function("compress/zstd-3 raw text 1MiB", |b| {
        b.iter(|| black_box(zstd::bulk::compress(text_chunk, 3).unwrap()))
    });
    g.bench_function("compress/cairn random 1MiB", |b| {
        b.iter(|| black_box(format::compress(3, chunk)))
    });
    g.bench_function("seal/cairn 1MiB", |b| {
        b.iter(|| black_box(key.seal(b"ad", chunk)))
    });
    g.bench_function("seal/aes-256-gcm raw 1MiB", |b| {
        let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
        let mut buf = chunk.to_vec();
        b.iter(|| {
            black_box(
                cipher
                    .encrypt_inout_detached(&[0u8; 12].into(), b"ad", buf.as_mut_slice().into())
                    .unwrap(),
            )
        })
    });
    g.bench_function("blob/seal_blob text 1MiB (hash+compress+seal)", |b| {
        b.iter(|| black_box(format::seal_blob(&key, BlobType::Data, text_chunk, 3)))
    });

    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("pack/16MiB of text chunks", |b| {
        b.iter(|| {
            let mut pack = Vec::with_capacity(LEN);
            let mut blobs = Vec::new();
            let mut at = 0;
            for len in chunker::chunk_slice(&params, key.chunker_seed(), &text) {
                let (id, sealed) = format::seal_blob(&key, BlobType::Data, &text[at..at + len], 3);
                blobs.push(PackBlob {
                    ty: BlobType::Data,
                    id,
                    offset: pack.len() as u64,
                    length: sealed.len() as u32,
                    raw_length: len as u32,
                });
                pack.extend_from_slice(&sealed);
                at += len;
            }
            pack.extend(PackHeader::new(blobs).seal_with_trailer(&key));
            black_box(blake3::hash(&pack))
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
