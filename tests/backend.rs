//! One conformance suite, run against every backend: the local file system and a real
//! S3 server (s3s-fs in this process, over HTTP on 127.0.0.1).

use std::sync::Arc;

use bytes::Bytes;
use cairn::Error;
use cairn::backend::{self, Backend, S3Options};

use crate::common::s3::S3Server;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn conformance(b: Arc<dyn Backend>) {
    // Create-only: a second create of a name is refused and changes nothing.
    b.create("data/ab/obj1", Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    let again = b
        .create("data/ab/obj1", Bytes::from_static(b"other bytes"))
        .await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(
        b.get("data/ab/obj1").await.unwrap(),
        Bytes::from_static(b"hello world")
    );

    // Absent objects.
    assert!(matches!(
        b.get("data/ab/missing").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.get_range("data/ab/missing", 0..1).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(b.head("data/ab/missing").await.unwrap(), None);
    assert_eq!(b.head("data/ab/obj1").await.unwrap(), Some(11));

    // Ranges, and no short reads past the end.
    assert_eq!(
        b.get_range("data/ab/obj1", 6..11).await.unwrap(),
        Bytes::from_static(b"world")
    );
    assert!(b.get_range("data/ab/obj1", 6..20).await.is_err());

    // Listing is recursive, exact, and pages through more than 1000 objects.
    let n = 1200;
    futures::future::try_join_all((0..n).map(|i| {
        let b = b.clone();
        async move {
            b.create(&format!("index/{i:05}"), Bytes::from(vec![1u8; i % 7]))
                .await
        }
    }))
    .await
    .unwrap();
    let mut listed = b.list("index/").await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.len(), n);
    assert_eq!(listed[3].name, "index/00003");
    assert_eq!(listed[3].size, 3);
    let data = b.list("data/").await.unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].name, "data/ab/obj1");
    assert!(b.list("snapshots/").await.unwrap().is_empty());

    // A file becomes an object whole.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pack");
    std::fs::write(&f, vec![7u8; 300_000]).unwrap();
    b.create_file("data/cd/obj2", &f).await.unwrap();
    assert_eq!(b.get("data/cd/obj2").await.unwrap().len(), 300_000);
    assert!(matches!(
        b.create_file("data/cd/obj2", &f).await,
        Err(Error::AlreadyExists { .. })
    ));

    // Delete is idempotent.
    b.delete("data/ab/obj1").await.unwrap();
    b.delete("data/ab/obj1").await.unwrap();
    assert_eq!(b.head("data/ab/obj1").await.unwrap(), None);
}

#[test]
fn conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend::open(
        dir.path().join("repo").to_str().unwrap(),
        true,
        &S3Options::with_defaults(),
    )
    .unwrap();
    rt().block_on(conformance(b));
}

#[test]
fn conformance_s3() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let b = backend::open(&server.url("conf"), true, &server.options("cairn-full")).unwrap();
    rt().block_on(conformance(b.clone()));
    let stats = b.request_stats().unwrap();
    assert!(stats.puts.load(std::sync::atomic::Ordering::Relaxed) >= 1200);
}

#[test]
fn s3_conditional_writes_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let b = backend::open(&server.url("probe"), true, &server.options("cairn-full")).unwrap();
    // s3s-fs honours If-None-Match on PUT.
    assert!(
        rt().block_on(backend::probe_conditional_writes(b.as_ref()))
            .unwrap()
    );
    // The local backend too.
    let l = backend::open(
        dir.path().join("l").to_str().unwrap(),
        true,
        &S3Options::with_defaults(),
    )
    .unwrap();
    assert!(
        rt().block_on(backend::probe_conditional_writes(l.as_ref()))
            .unwrap()
    );
}

#[test]
fn s3_fallback_without_conditional_writes_stays_create_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let b = backend::open(&server.url("nocond"), true, &server.options("cairn-full")).unwrap();
    b.set_conditional_writes(false);
    let rt = rt();
    rt.block_on(b.create("keys/k", Bytes::from_static(b"first")))
        .unwrap();
    assert!(matches!(
        rt.block_on(b.create("keys/k", Bytes::from_static(b"second"))),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        rt.block_on(b.get("keys/k")).unwrap(),
        Bytes::from_static(b"first")
    );
}

#[test]
fn s3_errors_name_the_endpoint_and_keep_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let mut opts = server.options("cairn-full");
    opts.secret_access_key = Some("wrong-secret-value".into());
    let b = backend::open(&server.url("x"), true, &opts).unwrap();
    let err = rt().block_on(b.get("config")).unwrap_err().to_string();
    assert!(err.contains(&server.endpoint()), "{err}");
    assert!(!err.contains("wrong-secret-value"), "{err}");
    // A read-only key cannot write.
    let ro = backend::open(&server.url("x"), true, &server.options("cairn-readonly")).unwrap();
    let err = rt()
        .block_on(ro.create("locks/x", Bytes::from_static(b"x")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("access denied"), "{err}");
}

/// Lists an object that is gone by the time it is read, as when a prune deletes
/// between a listing and a read.
#[derive(Debug)]
struct Vanishing(Arc<dyn Backend>);

#[async_trait::async_trait]
impl Backend for Vanishing {
    fn location(&self) -> &str {
        self.0.location()
    }
    async fn create(&self, name: &str, data: Bytes) -> cairn::Result<()> {
        self.0.create(name, data).await
    }
    async fn get(&self, name: &str) -> cairn::Result<Bytes> {
        self.0.get(name).await
    }
    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> cairn::Result<Bytes> {
        self.0.get_range(name, range).await
    }
    async fn head(&self, name: &str) -> cairn::Result<Option<u64>> {
        self.0.head(name).await
    }
    async fn list(&self, prefix: &str) -> cairn::Result<Vec<backend::ObjectInfo>> {
        let mut l = self.0.list(prefix).await?;
        l.push(backend::ObjectInfo {
            name: format!("{prefix}{}", "ab".repeat(32)),
            size: 100,
            modified: None,
        });
        Ok(l)
    }
    async fn delete(&self, name: &str) -> cairn::Result<()> {
        self.0.delete(name).await
    }
}

#[test]
fn objects_vanishing_between_listing_and_reading_are_skipped() {
    use cairn::ops::backup::{BackupOptions, Progress, Source, backup};
    use cairn::repository::{InitOptions, RepoOptions, Repository};
    let dir = tempfile::tempdir().unwrap();
    let opts = RepoOptions {
        cache_dir: Some(dir.path().join("cache")),
        connections: 2,
    };
    let init = InitOptions {
        kdf: cairn::crypto::kdf::KdfParams::with_cost(1024, 1, 1),
        ..Default::default()
    };
    let local = backend::open(
        dir.path().join("repo").to_str().unwrap(),
        true,
        &S3Options::with_defaults(),
    )
    .unwrap();
    let repo = Repository::init(local.clone(), b"pw", init, opts.clone())
        .unwrap()
        .into_indexed_announced(cairn::format::LockKind::Backup)
        .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    backup(
        &repo,
        Source::Paths(vec![src]),
        &BackupOptions::default(),
        &Progress::default(),
    )
    .unwrap();
    drop(repo);

    let wrapped: Arc<dyn Backend> = Arc::new(Vanishing(local));
    let repo = Repository::open(wrapped, b"pw", opts).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    let repo = repo.into_indexed().unwrap();
    assert!(repo.sync_stats().damaged.is_empty());
    let (_, snap) = repo.find_snapshot("latest").unwrap();
    assert!(repo.load_tree(&snap.tree).is_ok());
}

/// A file over twice the part size goes up in parts and reads back whole; a second
/// upload of the name is refused like any create.
#[test]
fn s3_large_files_upload_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let opts = S3Options {
        part_size: 5 << 20,
        ..server.options("cairn-full")
    };
    let b = backend::open(&server.url("mp"), true, &opts).unwrap();
    let file = dir.path().join("pack");
    let data: Vec<u8> = (0..(12u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let rt = rt();
    let stats = b.request_stats().unwrap();
    let puts_before = stats.puts.load(std::sync::atomic::Ordering::Relaxed);
    rt.block_on(b.create_file("data/ab/big", &file)).unwrap();
    // Three parts (5, 5 and 2 MiB), each a PUT, and the POSTs creating and completing
    // the upload (writes are counted together).
    assert_eq!(
        stats.puts.load(std::sync::atomic::Ordering::Relaxed) - puts_before,
        5
    );
    assert_eq!(rt.block_on(b.get("data/ab/big")).unwrap(), data);
    assert_eq!(
        rt.block_on(b.head("data/ab/big")).unwrap(),
        Some(data.len() as u64)
    );
    let again = rt.block_on(b.create_file("data/ab/big", &file));
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "{again:?}"
    );
    // Under the threshold: one request.
    let small = dir.path().join("small");
    std::fs::write(&small, &data[..1 << 20]).unwrap();
    let puts_before = stats.puts.load(std::sync::atomic::Ordering::Relaxed);
    rt.block_on(b.create_file("data/ab/small", &small)).unwrap();
    assert_eq!(
        stats.puts.load(std::sync::atomic::Ordering::Relaxed) - puts_before,
        1
    );
    // A part size under S3's minimum is refused up front.
    let tiny = S3Options {
        part_size: 1 << 20,
        ..server.options("cairn-full")
    };
    let err = backend::open(&server.url("mp"), false, &tiny).unwrap_err();
    assert!(err.to_string().contains("5 MiB"), "{err}");
}

/// A part that fails (no retries left) fails the upload, which is aborted: nothing is
/// published under the name, and a later upload of it succeeds.
#[test]
fn s3_failed_multipart_upload_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let opts = S3Options {
        part_size: 5 << 20,
        retries: 0,
        ..server.options("cairn-full")
    };
    let b = backend::open(&server.url("mpfail"), true, &opts).unwrap();
    let file = dir.path().join("pack");
    std::fs::write(&file, vec![7u8; 11 << 20]).unwrap();
    let rt = rt();
    // HEAD, CreateMultipartUpload, then the first part fails.
    server
        .faults
        .fail_every
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let failed = rt.block_on(b.create_file("data/cd/big", &file));
    server
        .faults
        .fail_every
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let err = failed.unwrap_err();
    assert!(err.to_string().contains("data/cd/big"), "{err}");
    assert_eq!(rt.block_on(b.head("data/cd/big")).unwrap(), None);
    // s3s-fs keeps an upload's record and parts beside the buckets until it is
    // completed or aborted.
    let pending: Vec<_> = std::fs::read_dir(dir.path().join("s3"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
        .collect();
    assert!(pending.is_empty(), "parts left behind: {pending:?}");
    rt.block_on(b.create_file("data/cd/big", &file)).unwrap();
    assert_eq!(rt.block_on(b.get("data/cd/big")).unwrap().len(), 11 << 20);
}
