//! Trees: one directory's entries, stored as a tree blob.

use serde::{Deserialize, Serialize};

use super::{VERSION, decode, encode};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// A point in time with nanoseconds; covers any date a filesystem can hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        let n = chrono::Utc::now();
        Timestamp {
            secs: n.timestamp(),
            nanos: n.timestamp_subsec_nanos(),
        }
    }

    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp(self.secs, self.nanos)
    }
}

/// An extended attribute; names and values are raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// What a directory entry is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Content as an ordered list of data blobs. A file with `links > 1` is a hardlink:
    /// restore links entries that share `(device, inode)` within one snapshot.
    File {
        content: Vec<BlobId>,
    },
    Dir {
        subtree: BlobId,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    Fifo,
    Socket,
    CharDevice {
        rdev: u64,
    },
    BlockDevice {
        rdev: u64,
    },
}

impl NodeKind {
    pub fn letter(&self) -> char {
        match self {
            NodeKind::File { .. } => '-',
            NodeKind::Dir { .. } => 'd',
            NodeKind::Symlink { .. } => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => 's',
            NodeKind::CharDevice { .. } => 'c',
            NodeKind::BlockDevice { .. } => 'b',
        }
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as raw bytes: non-UTF-8 names survive.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// `st_mode` permission and special bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: Timestamp,
    /// Change time: change detection only (restore cannot set it). Access time is not
    /// recorded: it changes on every read and would give unchanged trees new ids.
    pub ctime: Timestamp,
    /// Logical size in bytes (files), 0 otherwise.
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
}

/// A directory's entries, sorted by name bytes, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub version: u8,
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree {
            version: VERSION,
            nodes,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode and check the sort order and name rules that restore relies on.
    pub fn decode(object: &str, bytes: &[u8]) -> Result<Self> {
        let tree: Tree = decode(object, bytes)?;
        for w in tree.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(Error::format(object, "entries not sorted or not unique"));
            }
        }
        for n in &tree.nodes {
            if n.name.is_empty()
                || n.name == b"."
                || n.name == b".."
                || n.name.contains(&b'/')
                || n.name.contains(&0)
            {
                return Err(Error::format(
                    object,
                    format!("invalid entry name {:?}", n.name_lossy()),
                ));
            }
        }
        Ok(tree)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_node() -> impl Strategy<Value = Node> {
        let name = proptest::collection::vec(1u8..=255, 1..20)
            .prop_filter("no slash, not . or ..", |n| {
                !n.contains(&b'/') && n != b"." && n != b".."
            });
        let kind = prop_oneof![
            proptest::collection::vec(any::<[u8; 32]>(), 0..4).prop_map(|v| NodeKind::File {
                content: v.into_iter().map(|b| BlobId(crate::id::Id(b))).collect()
            }),
            any::<[u8; 32]>().prop_map(|b| NodeKind::Dir {
                subtree: BlobId(crate::id::Id(b))
            }),
            proptest::collection::vec(any::<u8>(), 0..30)
                .prop_map(|t| NodeKind::Symlink { target: t }),
            Just(NodeKind::Fifo),
            any::<u64>().prop_map(|r| NodeKind::CharDevice { rdev: r }),
        ];
        (
            name,
            kind,
            any::<(u32, u32, u32, i64, u32, u64, u64)>(),
            ".{0,8}",
        )
            .prop_map(
                |(name, kind, (mode, uid, gid, secs, nanos, size, inode), user)| Node {
                    name,
                    kind,
                    mode: mode & 0o7777,
                    uid,
                    gid,
                    user: user.clone(),
                    group: user,
                    mtime: Timestamp {
                        secs,
                        nanos: nanos % 1_000_000_000,
                    },
                    ctime: Timestamp {
                        secs: secs / 2,
                        nanos: 0,
                    },
                    size,
                    inode,
                    device: 7,
                    links: 1,
                    xattrs: vec![Xattr {
                        name: b"user.x".to_vec(),
                        value: vec![0, 255],
                    }],
                },
            )
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..10)) {
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree::new(nodes);
            let bytes = t.encode();
            prop_assert_eq!(Tree::decode("t", &bytes).unwrap(), t);
            for cut in 0..bytes.len().min(64) {
                prop_assert!(Tree::decode("t", &bytes[..cut]).is_err());
            }
        }
    }
}
