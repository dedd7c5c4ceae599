//! The storage layer: one small trait, implemented over `object_store`.
//!
//! Names are `/`-separated and relative to the repository root (`data/ab/ab12…`). Nothing
//! above this layer knows whether the root is a directory or a bucket prefix.
//!
//! Decorators (retry, fault injection, delete refusal) wrap an `Arc<dyn Backend>` and
//! implement the same trait.

mod object;
pub mod s3;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::error::{Error, Result};

pub use object::{Multipart, ObjectStoreBackend};
pub use s3::{RequestStats, S3Options};

/// The pieces of a ranged read, as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A ranged read that came whole, as a stream of one piece.
fn one_piece(b: Bytes) -> ByteStream {
    futures::stream::once(async { Ok(b) }).boxed()
}

/// An object's name and size as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// When the store says it was written (its clock, not ours), where it says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Storage contract every backend honours.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where this is, for messages (`/srv/backup`, `s3://bucket/prefix`). Never holds
    /// secrets.
    fn location(&self) -> &str;

    /// Write `data` at `name` only if nothing is there. Either the whole object is
    /// written and visible, or nothing is (no partial objects). Returns
    /// [`Error::AlreadyExists`] when the name is taken; never overwrites (invariant 1).
    async fn create(&self, name: &str, data: Bytes) -> Result<()>;

    /// Like [`Backend::create`], with the content read from a local file (a finished
    /// pack). Implementations may link or stream the file instead of loading it.
    async fn create_file(&self, name: &str, file: &std::path::Path) -> Result<()> {
        let data = tokio::fs::read(file)
            .await
            .map_err(|e| Error::io(file, e))?;
        self.create(name, Bytes::from(data)).await
    }

    /// A local directory on the same file system as the objects, where files for
    /// [`Backend::create_file`] are best assembled (`None`: anywhere will do).
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Request counters, where the backend keeps them (S3).
    fn request_stats(&self) -> Option<&RequestStats> {
        None
    }

    /// Turn conditional (create-only) puts on or off, for servers that ignore or reject
    /// them. Without them a create first checks that the name is free.
    fn set_conditional_writes(&self, _on: bool) {}

    /// The whole object; [`Error::NotFound`] when absent.
    async fn get(&self, name: &str) -> Result<Bytes>;

    /// `range` of the object; [`Error::NotFound`] when absent. A range past the end is an
    /// error, not a short read.
    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes>;

    /// `range` of the object in pieces as they arrive, so a reader can work on the first
    /// blobs while the rest comes and need not hold the whole range. The pieces together
    /// are the range unless the object is shorter (the reader checks). The default
    /// reads the range whole, as one piece.
    async fn get_range_stream(&self, name: &str, range: Range<u64>) -> Result<ByteStream> {
        Ok(one_piece(self.get_range(name, range).await?))
    }

    /// How many [`Backend::get_range_stream`] reads a restore keeps open, given
    /// `--connections`.
    fn ranged_reads_in_flight(&self, connections: usize) -> usize {
        connections
    }

    /// Size of the object, `None` when absent.
    async fn head(&self, name: &str) -> Result<Option<u64>>;

    /// Every object whose name starts with `prefix` (a folder such as `index/`), in no
    /// particular order; handles any number of objects.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Remove the object. Idempotent: removing an absent object succeeds.
    async fn delete(&self, name: &str) -> Result<()>;
}

/// The ids of the objects in a folder whose names are ids (`index/`, `snapshots/`,
/// `keys/`, `deletions/`); other names are ignored.
pub async fn list_ids<T: From<crate::id::Id>>(
    backend: &dyn Backend,
    folder: &str,
) -> Result<Vec<T>> {
    Ok(backend
        .list(folder)
        .await?
        .into_iter()
        .filter_map(|o| o.name.rsplit('/').next()?.parse::<crate::id::Id>().ok())
        .map(T::from)
        .collect())
}

/// Every pack in `data/` with its size.
pub async fn list_packs(
    backend: &dyn Backend,
) -> Result<std::collections::HashMap<crate::id::PackId, u64>> {
    Ok(backend
        .list(crate::format::names::DATA)
        .await?
        .into_iter()
        .filter_map(|o| {
            let id: crate::id::Id = o.name.rsplit('/').next()?.parse().ok()?;
            Some((id.into(), o.size))
        })
        .collect())
}

/// Is this repository location an S3 URL?
pub fn is_s3(url: &str) -> bool {
    url.starts_with("s3:")
}

/// Open the backend a repository URL names: a local path (`/srv/backup`,
/// `local:/srv/backup`) or an S3 URL (see [`s3`]). `create` makes the local directory
/// (for `init`).
pub fn open(url: &str, create: bool, s3_opts: &S3Options) -> Result<Arc<dyn Backend>> {
    if is_s3(url) {
        return Ok(Arc::new(s3::open(url, s3_opts)?));
    }
    let path = url.strip_prefix("local:").unwrap_or(url);
    if path.is_empty() {
        return Err(Error::Config("empty repository location".into()));
    }
    let dir = std::path::Path::new(path);
    if create {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    } else if !dir.is_dir() {
        return Err(Error::NoRepository {
            location: path.to_string(),
            hint: "the directory does not exist; check --repo or run `cairn init`".into(),
        });
    }
    Ok(Arc::new(ObjectStoreBackend::local(dir)?))
}

/// Does the store honour create-only writes? Writes a probe object twice with a
/// conditional put, then removes it. `Ok(false)` when the second write succeeded
/// (the condition was ignored, as Garage 2.x does) or the condition was rejected.
pub async fn probe_conditional_writes(backend: &dyn Backend) -> Result<bool> {
    let name = format!("locks/probe-{}", crate::id::Id::random());
    backend.set_conditional_writes(true);
    let first = backend.create(&name, Bytes::from_static(b"probe")).await;
    let honoured = match first {
        Ok(()) => matches!(
            backend.create(&name, Bytes::from_static(b"probe")).await,
            Err(Error::AlreadyExists { .. })
        ),
        // 501 Not Implemented (or a 400 naming the header): no conditional puts.
        Err(Error::Backend { message, .. })
            if message.contains("501")
                || message.contains("NotImplemented")
                || message.contains("If-None-Match") =>
        {
            false
        }
        Err(e) => return Err(e),
    };
    backend.delete(&name).await?;
    Ok(honoured)
}
