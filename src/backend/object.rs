//! [`Backend`] over any `object_store::ObjectStore`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{Backend, ByteStream, ObjectInfo};
use crate::error::{Error, Result};

/// A repository in an object store (a local directory or a bucket prefix).
#[derive(Debug)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// The directory, for a local repository: finished packs are hard-linked into place.
    local_root: Option<std::path::PathBuf>,
    /// Request counters (S3).
    pub(super) requests: Option<Arc<super::s3::RequestStats>>,
    /// Send create-only writes as conditional puts. Off for servers found to ignore
    /// or reject them: then a create checks for the name first (see `create`).
    conditional: AtomicBool,
    /// Files larger than this are uploaded in parts (S3); `None`: always one request.
    pub(super) multipart: Option<Multipart>,
}

/// How large files go up to an object store that takes uploads in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart {
    /// Files over this many bytes are uploaded in parts.
    pub threshold: u64,
    /// Bytes a part (the last may be shorter). S3 wants at least 5 MiB.
    pub part_size: u64,
}

/// Parts of one upload in flight at once: memory is at most this many parts per upload.
const PARTS_IN_FLIGHT: usize = 2;

/// Streamed ranged reads kept in flight per `--connections` on a remote store. A reader
/// holds about 1 MiB of each, not the whole range, so more of them cost little
/// memory; and servers that read an object in small pieces (s3s-fs reads 4 KiB at a
/// time) serve each request at a capped rate, so a restore goes as fast as it has
/// requests open.
const REMOTE_READS_PER_CONNECTION: usize = 4;

impl ObjectStoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, location: String) -> Self {
        ObjectStoreBackend {
            store,
            location,
            local_root: None,
            requests: None,
            conditional: AtomicBool::new(true),
            multipart: None,
        }
    }

    /// A local directory, with fsync on every write: a backup reported as done survives a
    /// power cut.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        let abs = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| Error::Backend {
                location: abs.display().to_string(),
                message: e.to_string(),
            })?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let mut b = Self::new(Arc::new(store), abs.display().to_string());
        b.local_root = Some(abs);
        Ok(b)
    }

    /// Upload a large file in parts, [`PARTS_IN_FLIGHT`] at a time, read from the file
    /// as they go. Object stores take no condition on completing an upload (and
    /// `object_store` sends none), so create-only rests on a HEAD first: this is only
    /// used for packs, whose names are the hash of their bytes, so an object that
    /// appears between the HEAD and the completion holds the same bytes. A failed upload
    /// is aborted, so no parts are left behind to be billed.
    async fn create_multipart(
        &self,
        name: &str,
        file: &std::path::Path,
        m: Multipart,
    ) -> Result<()> {
        if self.head(name).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("{name} in {}", self.location),
            });
        }
        let mut upload = self
            .store
            .put_multipart(&Path::from(name))
            .await
            .map_err(|e| self.err(name, e))?;
        match self.send_parts(upload.as_mut(), name, file, m).await {
            Ok(()) => upload
                .complete()
                .await
                .map(|_| ())
                .map_err(|e| self.err(name, e)),
            Err(e) => {
                if let Err(a) = upload.abort().await {
                    tracing::warn!("aborting the upload of {name} failed: {a}");
                }
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        upload: &mut dyn object_store::MultipartUpload,
        name: &str,
        file: &std::path::Path,
        m: Multipart,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| Error::io(file, e))?;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            let mut part = Vec::with_capacity(m.part_size as usize);
            (&mut f)
                .take(m.part_size)
                .read_to_end(&mut part)
                .await
                .map_err(|e| Error::io(file, e))?;
            if part.is_empty() {
                break;
            }
            let last = (part.len() as u64) < m.part_size;
            in_flight.push(upload.put_part(PutPayload::from(part)));
            while in_flight.len() >= PARTS_IN_FLIGHT {
                in_flight.try_next().await.map_err(|e| self.err(name, e))?;
            }
            if last {
                break;
            }
        }
        while in_flight
            .try_next()
            .await
            .map_err(|e| self.err(name, e))?
            .is_some()
        {}
        Ok(())
    }

    fn err(&self, name: &str, e: object_store::Error) -> Error {
        store_error(&self.location, name, e)
    }
}

/// An object_store error on `name` as cairn's error, naming the object and the store.
fn store_error(location: &str, name: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what: format!("{name} in {location}"),
        },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::AlreadyExists {
                what: format!("{name} in {location}"),
            }
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::Backend {
            location: location.to_string(),
            message: format!(
                "{name}: access denied: check the credentials and that the key may read, list and write this bucket ({e_short})",
                e_short = short(&e)
            ),
        },
        other => Error::Backend {
            location: location.to_string(),
            message: if Error::is_full(&other) {
                format!(
                    "{name}: {other}; make room there (`cairn forget --prune` removes the data \
                     only old snapshots use), then run the command again"
                )
            } else {
                format!("{name}: {other}")
            },
        },
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn create(&self, name: &str, data: Bytes) -> Result<()> {
        let conditional = self.conditional.load(Ordering::Relaxed);
        if !conditional && self.head(name).await?.is_some() {
            // Names are content hashes or random: what is there already has these bytes.
            return Err(Error::AlreadyExists {
                what: format!("{name} in {}", self.location),
            });
        }
        let opts = PutOptions {
            mode: if conditional {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..Default::default()
        };
        self.store
            .put_opts(&Path::from(name), PutPayload::from_bytes(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.err(name, e))
    }

    async fn create_file(&self, name: &str, file: &std::path::Path) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            let len = tokio::fs::metadata(file)
                .await
                .map_err(|e| Error::io(file, e))?
                .len();
            if let Some(m) = self.multipart.filter(|m| len > m.threshold) {
                return self.create_multipart(name, file, m).await;
            }
            let data = tokio::fs::read(file)
                .await
                .map_err(|e| Error::io(file, e))?;
            return self.create(name, Bytes::from(data)).await;
        };
        // LocalFileSystem is not used for this write: a hard link publishes the finished
        // file without copying it.
        let (owned, file) = (name.to_string(), file.to_path_buf());
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || link_into_place(&root, &owned, &file, &location))
            .await
            .map_err(|e| Error::Backend {
                location: self.location.clone(),
                message: format!("{name}: {e}"),
            })?
    }

    fn request_stats(&self) -> Option<&super::s3::RequestStats> {
        self.requests.as_deref()
    }

    fn set_conditional_writes(&self, on: bool) {
        self.conditional.store(on, Ordering::Relaxed);
    }

    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|r| r.join("tmp"))
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let r = self
            .store
            .get(&Path::from(name))
            .await
            .map_err(|e| self.err(name, e))?;
        r.bytes().await.map_err(|e| self.err(name, e))
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(&Path::from(name), range.clone())
            .await
            .map_err(|e| self.err(name, e))?;
        if b.len() as u64 != want {
            return Err(Error::integrity(
                name,
                format!(
                    "read {} bytes at {}..{}, expected {want} (object truncated?)",
                    b.len(),
                    range.start,
                    range.end
                ),
            ));
        }
        Ok(b)
    }

    async fn get_range_stream(&self, name: &str, range: Range<u64>) -> Result<ByteStream> {
        if self.local_root.is_some() {
            // A local read is one pread; pieces would only add calls.
            return match self.get_range(name, range.clone()).await {
                Ok(b) => Ok(super::one_piece(b)),
                Err(e @ Error::NotFound { .. }) => Err(e),
                // A truncated file gives what it has of the range, as a remote store
                // does: the reader uses the blobs that arrived and names the rest.
                Err(e) => match self.head(name).await? {
                    Some(size) if size < range.end => {
                        let have = if size > range.start {
                            self.get_range(name, range.start..size).await?
                        } else {
                            Bytes::new()
                        };
                        Ok(super::one_piece(have))
                    }
                    _ => Err(e),
                },
            };
        }
        let opts = GetOptions {
            range: Some(range.into()),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&Path::from(name), opts)
            .await
            .map_err(|e| self.err(name, e))?;
        // object_store resumes a body cut off mid-way by itself (within its retry
        // settings); what still fails arrives here as an error piece.
        let (location, name) = (self.location.clone(), name.to_string());
        Ok(r.into_stream()
            .map_err(move |e| store_error(&location, &name, e))
            .boxed())
    }

    fn ranged_reads_in_flight(&self, connections: usize) -> usize {
        match self.local_root {
            Some(_) => connections,
            None => connections * REMOTE_READS_PER_CONNECTION,
        }
    }

    async fn head(&self, name: &str) -> Result<Option<u64>> {
        match self.store.head(&Path::from(name)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix.trim_end_matches('/'));
        let metas: Vec<_> = match self.store.list(Some(&p)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.err(prefix, e)),
        };
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                name: m.location.to_string(),
                size: m.size,
                modified: Some(m.last_modified),
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&Path::from(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(name, e)),
        }
    }
}

/// Publish a finished local file as `root/name`, create-only and durable: fsync the file,
/// hard-link it (which fails if the name exists), fsync the directory.
fn link_into_place(
    root: &std::path::Path,
    name: &str,
    file: &std::path::Path,
    location: &str,
) -> Result<()> {
    let dest = root.join(name);
    let dir = dest.parent().expect("object names have a folder");
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(file, e))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match std::fs::hard_link(file, &dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists {
                what: format!("{name} in {location}"),
            });
        }
        Err(e) => return Err(Error::io(&dest, e)),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The first line of an object_store error, without the request dump that follows.
fn short(e: &object_store::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
