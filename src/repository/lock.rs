//! Announcing an operation with lock objects.
//!
//! A backup writes a lock object before it reads anything (so a key that may not write
//! fails before any work), refreshes it by writing a new object every
//! [`REFRESH`], and writes a last one marked finished when it ends. It never deletes or
//! overwrites one: a backup host's key can be denied DeleteObject. The protocol that
//! prune follows with these objects is described in `docs/design.md`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Repository;
use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::Result;
use crate::format::{self, Lock, LockKind, Timestamp, aad, names};
use crate::id::{Id, LockId};

/// How often a running operation writes a fresh lock object.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);

async fn write(backend: &dyn Backend, key: &MasterKey, lock: &Lock) -> Result<LockId> {
    let id = LockId(Id::random());
    let bytes = format::seal_object(key, aad::LOCK, 3, lock);
    backend
        .create(&names::lock(&id), Bytes::from(bytes))
        .await?;
    Ok(id)
}

/// A held announcement; call [`Announcement::finish`] when the operation ends.
pub struct Announcement {
    lock: Lock,
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Repository {
    /// Write the first lock object of an operation and keep it fresh.
    pub fn announce(&self, kind: LockKind) -> Result<Announcement> {
        let lock = Lock::new(kind);
        self.block_on(write(self.backend().as_ref(), self.key(), &lock))?;
        let (backend, key, mut fresh) = (self.backend().clone(), self.key().clone(), lock.clone());
        let refresher = self.runtime().spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                fresh.time = Timestamp::now();
                if let Err(e) = write(backend.as_ref(), &key, &fresh).await {
                    tracing::warn!("could not refresh the lock: {e}");
                }
            }
        });
        Ok(Announcement {
            lock,
            backend: self.backend().clone(),
            key: self.key().clone(),
            refresher: Some(refresher),
            rt: self.runtime().clone(),
        })
    }
}

impl Announcement {
    /// Write the finished marker (best effort: a missing one only means prune waits for
    /// the lock to go stale).
    pub fn finish(mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        let mut done = self.lock.clone();
        done.time = Timestamp::now();
        done.finished = true;
        if let Err(e) = self
            .rt
            .block_on(write(self.backend.as_ref(), &self.key, &done))
        {
            tracing::warn!("could not record the end of the operation in locks/: {e}");
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
    }
}
