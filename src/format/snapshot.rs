//! Snapshot objects (`snapshots/<id>`): the last thing a backup writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Timestamp, VERSION};
use crate::id::{BlobId, SnapshotId};

/// Counts a backup reports and records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Logical size of everything in the snapshot.
    pub total_bytes: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    /// Stored (compressed, sealed) bytes this backup added to the repository.
    pub bytes_added: u64,
    pub packs_added: u64,
    pub duration_ms: u64,
}

/// Where a stream snapshot came from (`--stdin`, `--stdin-from-command`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The path the stream is stored under, e.g. `harbor/registry.sql`.
    pub name: String,
    /// The producer's argv, when cairn ran it.
    pub command: Vec<String>,
    /// The producer's exit code, when cairn ran it.
    pub exit_code: Option<i32>,
    pub bytes: u64,
    /// Last lines of the producer's stderr.
    pub stderr_tail: String,
}

/// A snapshot. A snapshot is never changed: tagging or protecting writes a new one that
/// names the old in `original`, then removes the old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u8,
    pub time: Timestamp,
    pub host: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Absolute source paths as given (stream name for streams).
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    pub parent: Option<SnapshotId>,
    pub original: Option<SnapshotId>,
    /// No retention rule removes a protected snapshot.
    pub protected: bool,
    /// False when some input could not be read; `problems` says which.
    pub complete: bool,
    pub problems: Vec<String>,
    pub stream: Option<StreamInfo>,
    pub summary: Summary,
    /// The cairn version that wrote it.
    pub program: String,
    /// Forward-compatible extension fields.
    pub extra: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn new(tree: BlobId, paths: Vec<String>) -> Self {
        Snapshot {
            version: VERSION,
            time: Timestamp::now(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            paths,
            tags: Vec::new(),
            tree,
            parent: None,
            original: None,
            protected: false,
            complete: true,
            problems: Vec::new(),
            stream: None,
            summary: Summary::default(),
            program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            extra: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::format::{aad, open_object, seal_object};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trip(host in ".{0,20}", tags in proptest::collection::vec("[a-z]{1,8}", 0..4),
                               complete in any::<bool>(), secs in any::<i64>()) {
            let mut s = Snapshot::new(BlobId::default(), vec!["/etc".into()]);
            s.host = host;
            s.tags = tags;
            s.complete = complete;
            s.time.secs = secs;
            s.stream = Some(StreamInfo { name: "a/b.sql".into(), exit_code: Some(0), ..Default::default() });
            let k = MasterKey::random();
            let bytes = seal_object(&k, aad::SNAPSHOT, 3, &s);
            let back: Snapshot = open_object(&k, aad::SNAPSHOT, "snapshots/x", &bytes).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
