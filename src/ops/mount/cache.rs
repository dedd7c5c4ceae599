//! The mount's memory: a least-recently-used map bounded by a weight (bytes), and the
//! cache of decoded data blobs built on it, which also runs readahead.
//!
//! A blob is fetched at most once at a time: a reader that wants a blob already being
//! fetched (by readahead or another reader) waits for that fetch instead of starting a
//! second one. Fetches run as tasks on the repository's runtime, so readahead proceeds
//! while the FUSE thread that started it answers the kernel.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::error::Error;
use crate::format::BlobType;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// A map that forgets its least recently used entries once their total weight passes
/// `capacity`. The entry just inserted stays even when it alone is heavier.
pub(crate) struct Lru<K, V> {
    map: HashMap<K, (V, u64, usize)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            capacity,
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let (v, stamp, _) = self.map.get_mut(k)?;
        self.order.remove(stamp);
        *stamp = self.tick;
        self.order.insert(self.tick, k.clone());
        Some(v.clone())
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V, weight: usize) {
        self.tick += 1;
        if let Some((_, stamp, w)) = self.map.insert(k.clone(), (v, self.tick, weight)) {
            self.order.remove(&stamp);
            self.weight -= w;
        }
        self.order.insert(self.tick, k);
        self.weight += weight;
        while self.weight > self.capacity && self.order.len() > 1 {
            let (_, old) = self.order.pop_first().expect("not empty");
            if let Some((_, _, w)) = self.map.remove(&old) {
                self.weight -= w;
            }
        }
    }

    /// Total weight held.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }
}

/// A blob's bytes, or why it could not be read (shared by every reader waiting on it).
pub(crate) type BlobResult = Result<Arc<Vec<u8>>, Arc<Error>>;
type Fetch = Shared<BoxFuture<'static, BlobResult>>;

struct State {
    blobs: Lru<BlobId, Arc<Vec<u8>>>,
    inflight: HashMap<BlobId, Fetch>,
}

/// Decoded data blobs, at most `capacity` bytes of them, fetched through
/// [`IndexedRepository::read_blob_async`] (authenticated, checked against their id).
pub(crate) struct BlobCache {
    repo: Arc<IndexedRepository>,
    state: Mutex<State>,
}

impl BlobCache {
    pub(crate) fn new(repo: Arc<IndexedRepository>, capacity: usize) -> Arc<Self> {
        Arc::new(BlobCache {
            repo,
            state: Mutex::new(State {
                blobs: Lru::new(capacity),
                inflight: HashMap::new(),
            }),
        })
    }

    /// The blob's bytes, from the cache or fetched now (waiting for a fetch under way).
    /// Call from a plain thread, never from the runtime.
    pub(crate) fn get(self: &Arc<Self>, id: &BlobId) -> BlobResult {
        let fetch = {
            let mut s = self.state.lock().expect("blob cache");
            if let Some(b) = s.blobs.get(id) {
                return Ok(b);
            }
            self.start(&mut s, id)
        };
        futures::executor::block_on(fetch)
    }

    /// Start fetching blobs that are neither cached nor on their way (readahead).
    pub(crate) fn prefetch(self: &Arc<Self>, ids: &[BlobId]) {
        let mut s = self.state.lock().expect("blob cache");
        for id in ids {
            if !s.blobs.contains(id) {
                // The fetch runs as its own task; nobody needs to wait for it here.
                drop(self.start(&mut s, id));
            }
        }
    }

    fn start(self: &Arc<Self>, s: &mut State, id: &BlobId) -> Fetch {
        if let Some(f) = s.inflight.get(id) {
            return f.clone();
        }
        let (this, id) = (Arc::clone(self), *id);
        let task = self.repo.runtime().spawn(async move {
            let r: BlobResult = this
                .repo
                .read_blob_async(BlobType::Data, &id)
                .await
                .map(Arc::new)
                .map_err(Arc::new);
            let mut s = this.state.lock().expect("blob cache");
            s.inflight.remove(&id);
            if let Ok(b) = &r {
                s.blobs.insert(id, Arc::clone(b), b.len());
            }
            r
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(Error::Io {
                    path: format!("<fetch of data blob {id}>").into(),
                    error: std::io::Error::other(e.to_string()),
                }))
            })
        }
        .boxed()
        .shared();
        s.inflight.insert(id, fetch.clone());
        fetch
    }

    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.state.lock().expect("blob cache").blobs.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_keeps_the_recently_used_within_its_weight() {
        let mut l = Lru::new(10);
        l.insert(1, "a", 4);
        l.insert(2, "b", 4);
        assert_eq!(l.get(&1), Some("a")); // 2 is now the oldest
        l.insert(3, "c", 4);
        assert_eq!(l.get(&2), None);
        assert_eq!(l.get(&1), Some("a"));
        assert_eq!(l.get(&3), Some("c"));
        assert_eq!(l.weight(), 8);
        // Replacing an entry counts its weight once.
        l.insert(3, "C", 5);
        assert_eq!(l.weight(), 9);
        // An entry heavier than the capacity stays alone.
        l.insert(4, "big", 50);
        assert_eq!(l.weight(), 50);
        assert_eq!(l.get(&4), Some("big"));
        assert!(!l.contains(&1));
    }

    #[test]
    fn blob_cache_is_bounded_and_serves_verified_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path(), 2)
            .into_indexed()
            .unwrap();
        let blobs: Vec<Vec<u8>> = (0..6).map(|i| crate::util::seeded_bytes(1000, i)).collect();
        let w = repo.writer();
        let ids: Vec<BlobId> = blobs
            .iter()
            .map(|b| w.add(BlobType::Data, b).unwrap().0)
            .collect();
        w.finish().unwrap();
        let cache = BlobCache::new(Arc::new(repo), 2500);
        cache.prefetch(&ids[3..]);
        for (id, b) in ids.iter().zip(&blobs) {
            assert_eq!(*cache.get(id).unwrap(), *b);
            assert!(cache.cached_bytes() <= 2500);
        }
    }
}
