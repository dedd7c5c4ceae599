//! [`Backend`] over any `object_store::ObjectStore`.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{Backend, ObjectInfo};
use crate::error::{Error, Result};

/// A repository in an object store (a local directory or a bucket prefix).
#[derive(Debug)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    location: String,
}

impl ObjectStoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, location: String) -> Self {
        ObjectStoreBackend { store, location }
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
        Ok(Self::new(Arc::new(store), abs.display().to_string()))
    }

    fn err(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                what: format!("{name} in {}", self.location),
            },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                what: format!("{name} in {}", self.location),
            },
            other => Error::Backend {
                location: self.location.clone(),
                message: format!("{name}: {other}"),
            },
        }
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn create(&self, name: &str, data: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&Path::from(name), PutPayload::from_bytes(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.err(name, e))
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
