//! Key files: several passwords per repository, each sealing the same master key.

use bytes::Bytes;
use futures::StreamExt;

use super::Repository;
use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::crypto::kdf::KdfParams;
use crate::error::{Error, Result};
use crate::format::{KeyFile, names};
use crate::id::KeyId;

/// A key file as `key list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created: i64,
    pub host: String,
    pub user: String,
    /// The key this process opened the repository with.
    pub current: bool,
    /// Why the key file cannot be read, when it cannot (`key remove` still removes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

async fn load_all(backend: &dyn Backend) -> Result<Vec<(KeyId, Result<KeyFile>)>> {
    let ids: Vec<KeyId> = crate::backend::list_ids(backend, names::KEYS).await?;
    Ok(futures::stream::iter(ids)
        .map(|id| async move {
            let name = names::key(&id);
            let kf = backend
                .get(&name)
                .await
                .and_then(|b| KeyFile::from_bytes(&name, &b));
            (id, kf)
        })
        .buffer_unordered(8)
        .collect()
        .await)
}

/// Try every key file with `password`.
pub(super) fn find_key(
    rt: &tokio::runtime::Runtime,
    backend: &dyn Backend,
    password: &[u8],
) -> Result<(KeyId, MasterKey)> {
    let keys = rt.block_on(load_all(backend))?;
    let n = keys.len();
    for (id, kf) in keys {
        match kf {
            Ok(kf) => match kf.open(password) {
                Ok(Some(m)) => return Ok((id, m)),
                Ok(None) => {}
                // A key file that cannot be used is skipped like an undecodable one; a
                // failure of this machine (no threads to derive with) is no wrong password.
                Err(e @ Error::Format { .. }) => {
                    tracing::warn!("skipping key file {}: {e}", names::key(&id))
                }
                Err(e) => return Err(e),
            },
            // A damaged key file is skipped (another may open); a store that cannot be
            // read is an error, never a wrong password.
            Err(e @ (Error::Format { .. } | Error::Integrity { .. })) => {
                tracing::warn!("skipping unreadable key file: {e}")
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::WrongPassword {
        repo: backend.location().to_string(),
        keys: n,
    })
}

impl Repository {
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for (id, kf) in self.block_on(load_all(self.backend().as_ref()))? {
            let info = match kf {
                Ok(kf) => KeyInfo {
                    id,
                    created: kf.created,
                    host: kf.host,
                    user: kf.user,
                    current: id == self.key_id(),
                    damage: None,
                },
                Err(Error::NotFound { .. }) => continue,
                Err(e @ Error::Backend { .. }) => return Err(e),
                // Listed, so that `key remove` can remove it.
                Err(e) => KeyInfo {
                    id,
                    created: 0,
                    host: String::new(),
                    user: String::new(),
                    current: false,
                    damage: Some(e.to_string()),
                },
            };
            out.push(info);
        }
        out.sort_by_key(|k| (k.created, k.id));
        Ok(out)
    }

    /// Add a key file for another password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let kf = KeyFile::create(self.key(), password, kdf)?;
        let id = KeyId(crate::id::Id::random());
        self.block_on(
            self.backend()
                .create(&names::key(&id), Bytes::from(kf.to_bytes())),
        )?;
        Ok(id)
    }

    /// Remove a key file. Refuses the key in use (use `key passwd`) and the last key.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id() {
            return Err(Error::Config(format!(
                "key {id} is the one opening the repository now; use `cairn key passwd` or open with another password"
            )));
        }
        let keys = self.list_keys()?;
        if !keys.iter().any(|k| k.id == *id) {
            return Err(Error::NotFound {
                what: format!("key {id}"),
            });
        }
        self.block_on(self.backend().delete(&names::key(id)))
    }

    /// Replace the current password: the new key file is written before the old one is
    /// removed, so an interruption never leaves the repository without a key.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let old = self.key_id();
        let new = self.add_key(new_password, kdf)?;
        self.key_id = new;
        self.block_on(self.backend().delete(&names::key(&old)))?;
        Ok(new)
    }
}
