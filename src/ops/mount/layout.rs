//! What the top of the mount shows: snapshots by time, by tag and by host, built from
//! the list of snapshots. Pure, so the naming rules are tested without FUSE.

use std::collections::BTreeMap;

use crate::format::{Snapshot, Timestamp};
use crate::id::{BlobId, SnapshotId};

/// A snapshot as the mount shows it: a directory holding its root tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snap {
    pub id: SnapshotId,
    pub tree: BlobId,
    pub time: Timestamp,
    pub uid: u32,
    pub gid: u32,
}

/// The directories above the snapshots' own trees.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// `snapshots/<name>`: local time, with `-<short id>` where two share a second.
    pub snapshots: BTreeMap<String, Snap>,
    /// The newest snapshot's name (`latest` points at it).
    pub latest: Option<String>,
    /// `ids/<short id>` -> name.
    pub ids: BTreeMap<String, String>,
    /// `tags/<tag>/<name>`: the names, oldest first.
    pub tags: BTreeMap<String, Vec<String>>,
    /// `hosts/<host>/<name>`.
    pub hosts: BTreeMap<String, Vec<String>>,
}

/// A tag or host name as a directory name: `/` and NUL cannot be in one.
fn dir_name(s: &str) -> Option<String> {
    let n = s.replace(['/', '\0'], "_");
    (!n.is_empty() && n != "." && n != "..").then_some(n)
}

fn local_name(t: Timestamp) -> String {
    t.to_datetime()
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| format!("@{}", t.secs))
}

impl Layout {
    /// The layout of `list`, sorted oldest first (as `Repository::snapshots` returns it).
    pub(crate) fn new(list: &[(SnapshotId, Snapshot)]) -> Self {
        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (_, s)) in list.iter().enumerate() {
            by_name.entry(local_name(s.time)).or_default().push(i);
        }
        let mut names = vec![String::new(); list.len()];
        for (name, idx) in by_name {
            for &i in &idx {
                names[i] = if idx.len() == 1 {
                    name.clone()
                } else {
                    format!("{name}-{}", list[i].0.short())
                };
            }
        }
        let mut l = Layout::default();
        for ((id, s), name) in list.iter().zip(names) {
            let snap = Snap {
                id: *id,
                tree: s.tree,
                time: s.time,
                uid: s.uid,
                gid: s.gid,
            };
            l.snapshots.insert(name.clone(), snap);
            l.ids.insert(id.short(), name.clone());
            for t in s.tags.iter().filter_map(|t| dir_name(t)) {
                l.tags.entry(t).or_default().push(name.clone());
            }
            if let Some(h) = dir_name(&s.host) {
                l.hosts.entry(h).or_default().push(name.clone());
            }
            l.latest = Some(name);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(secs: i64, host: &str, tags: &[&str]) -> Snapshot {
        let mut s = Snapshot::new(BlobId::default(), vec!["/x".into()]);
        s.time = Timestamp { secs, nanos: 5 };
        s.host = host.into();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        s
    }

    #[test]
    fn names_are_local_times_made_unique_by_id() {
        let id = |b: u8| SnapshotId(crate::id::Id([b; 32]));
        let list = vec![
            (id(1), snap(1_700_000_000, "db1", &["nightly"])),
            (id(2), snap(1_700_000_000, "db/2", &["nightly", "", "a/b"])),
            (id(3), snap(1_700_000_100, "db1", &[])),
        ];
        let l = Layout::new(&list);
        let t0 = local_name(list[0].1.time);
        let t2 = local_name(list[2].1.time);
        assert_eq!(t0.len(), "2023-11-14T22:13:20".len());
        let names: Vec<&String> = l.snapshots.keys().collect();
        let a = format!("{t0}-{}", id(1).short());
        let b = format!("{t0}-{}", id(2).short());
        assert_eq!(names, [&a, &b, &t2]);
        assert_eq!(l.latest.as_ref(), Some(&t2));
        assert_eq!(l.tags["nightly"], [a.clone(), b.clone()]);
        assert_eq!(l.tags["a_b"], std::slice::from_ref(&b));
        assert_eq!(l.tags.len(), 2, "the empty tag has no directory");
        assert_eq!(l.hosts["db1"], [a, t2.clone()]);
        assert_eq!(l.hosts["db_2"], [b]);
        assert_eq!(l.ids[&id(3).short()], t2);
    }
}
