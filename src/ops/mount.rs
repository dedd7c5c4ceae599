//! `mount`: the repository as a read-only FUSE filesystem.
//!
//! ```text
//! MOUNTPOINT/
//!   snapshots/<YYYY-MM-DDTHH:MM:SS>/   each snapshot's root tree (sources under their
//!                                      absolute paths); `-<short id>` where two share a second
//!   latest -> snapshots/<newest>
//!   ids/<short id> -> ../snapshots/<name>
//!   tags/<tag>/<name>/, tags/<tag>/latest -> <newest with the tag>
//!   hosts/<host>/<name>/, hosts/<host>/latest
//! ```
//!
//! Inodes are handed out as entries are first looked up and are never reused, so a
//! kernel that caches one can never see another file under it; an inode is the pair
//! (parent inode, name). What a snapshot holds never changes, so its entries are cached
//! by the kernel for an hour; the directories above are cached for a second and rebuilt
//! from the snapshot list once it is older than the refresh interval (with the index
//! read again, so new snapshots' blobs are found).
//!
//! Reads touch only the blobs under the requested range: opening a file sums its blobs'
//! lengths from the index, a read finds its blobs by binary search, and blobs come
//! through a cache bounded in bytes ([`cache::BlobCache`]). A sequential reader has the
//! next blobs fetched ahead while it consumes the current one. A blob that cannot be
//! read fails that read with EIO and is logged by name; nothing here panics on bad data.

mod cache;
mod layout;
mod session;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeKind, Timestamp, Tree};
use crate::id::BlobId;
use crate::repository::IndexedRepository;
use cache::{BlobCache, Lru};
use layout::{Layout, Snap};
pub use session::{Mounted, check_fuse, mount};

/// How the filesystem behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users see the mount (FUSE `allow_other`; the kernel then checks
    /// permissions against the stored modes and owners).
    pub allow_other: bool,
    /// Rebuild the snapshot directories when they are older than this.
    pub refresh: Duration,
    /// Bytes of decoded blobs kept in memory.
    pub cache_bytes: usize,
    /// Blobs fetched ahead of a sequential reader.
    pub readahead: usize,
    /// Threads answering the kernel.
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            refresh: Duration::from_secs(30),
            cache_bytes: 64 << 20,
            readahead: 16,
            threads: 4,
        }
    }
}

/// Kernel cache time of the directories above the snapshots (they change).
const TTL_TOP: Duration = Duration::from_secs(1);
/// Kernel cache time of what is inside a snapshot (it never changes).
const TTL_SNAPSHOT: Duration = Duration::from_secs(3600);

/// A directory above the snapshots' trees.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Top {
    Root,
    Snapshots,
    Ids,
    Tags,
    Tag(String),
    Hosts,
    Host(String),
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Top(Top),
    Link(Vec<u8>),
    Snapshot(Snap),
    Node(Node),
}

impl Entry {
    fn is_top(&self) -> bool {
        matches!(self, Entry::Top(_) | Entry::Link(_))
    }

    fn file_type(&self) -> FileType {
        match self {
            Entry::Top(_) | Entry::Snapshot(_) => FileType::Directory,
            Entry::Link(_) => FileType::Symlink,
            Entry::Node(n) => match n.kind {
                NodeKind::File { .. } => FileType::RegularFile,
                NodeKind::Dir { .. } => FileType::Directory,
                NodeKind::Symlink { .. } => FileType::Symlink,
                NodeKind::Fifo => FileType::NamedPipe,
                NodeKind::Socket => FileType::Socket,
                NodeKind::CharDevice { .. } => FileType::CharDevice,
                NodeKind::BlockDevice { .. } => FileType::BlockDevice,
            },
        }
    }

    fn ttl(&self) -> Duration {
        if self.is_top() { TTL_TOP } else { TTL_SNAPSHOT }
    }
}

struct Inode {
    parent: u64,
    entry: Arc<Entry>,
}

/// Every inode handed out, and the (parent, name) each one stands for.
#[derive(Default)]
struct Inodes {
    list: Vec<Inode>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
}

/// An open file: its blobs and where each ends in the file.
struct OpenFile {
    /// The file's name, for messages.
    name: String,
    content: Vec<BlobId>,
    ends: Vec<u64>,
    /// Where the previous read ended (a read starting there is sequential).
    next: AtomicU64,
}

/// One directory listing, taken at opendir so that readdir offsets stay meaningful.
type Listing = Vec<(u64, FileType, Vec<u8>)>;

/// The filesystem.
pub struct CairnFs {
    repo: Arc<IndexedRepository>,
    opts: MountOptions,
    inodes: RwLock<Inodes>,
    layout: Mutex<(Arc<Layout>, Instant)>,
    refreshing: Mutex<()>,
    trees: Mutex<Lru<BlobId, Arc<Tree>>>,
    blobs: Arc<BlobCache>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
    started: SystemTime,
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(t.nanos.min(999_999_999) as u64);
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

/// A device number in the FUSE attribute's 32-bit encoding (the kernel's
/// `new_encode_dev`).
fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (
        libc::major(rdev as libc::dev_t),
        libc::minor(rdev as libc::dev_t),
    );
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound { .. } => Errno::ENOENT,
        _ => Errno::EIO,
    }
}

impl CairnFs {
    /// The filesystem over `repo`, with the snapshot list read now.
    pub fn new(repo: Arc<IndexedRepository>, opts: MountOptions) -> Result<Self> {
        let layout = Layout::new(&repo.snapshots()?);
        let mut inodes = Inodes::default();
        inodes.list.push(Inode {
            parent: 1,
            entry: Arc::new(Entry::Top(Top::Root)),
        });
        Ok(CairnFs {
            blobs: BlobCache::new(Arc::clone(&repo), opts.cache_bytes),
            repo,
            trees: Mutex::new(Lru::new(16 << 20)),
            opts,
            inodes: RwLock::new(inodes),
            layout: Mutex::new((Arc::new(layout), Instant::now())),
            refreshing: Mutex::new(()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owner: (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
            started: SystemTime::now(),
        })
    }

    /// The current layout; rebuilt first when older than the refresh interval (by one
    /// thread; the others go on with the old one meanwhile).
    fn layout(&self) -> Arc<Layout> {
        let (current, at) = self.layout.lock().expect("layout").clone();
        if at.elapsed() < self.opts.refresh {
            return current;
        }
        let Ok(_one) = self.refreshing.try_lock() else {
            return current;
        };
        let fresh = self
            .repo
            .block_on(self.repo.resync_index())
            .and_then(|()| self.repo.snapshots());
        let mut slot = self.layout.lock().expect("layout");
        match fresh {
            Ok(list) => *slot = (Arc::new(Layout::new(&list)), Instant::now()),
            Err(e) => {
                // Keep showing what was there; try again after another interval.
                tracing::warn!("cannot refresh the snapshot list: {e}");
                slot.1 = Instant::now();
            }
        }
        slot.0.clone()
    }

    fn entry(&self, ino: u64) -> Option<Arc<Entry>> {
        let inodes = self.inodes.read().expect("inodes");
        inodes
            .list
            .get(ino.checked_sub(1)? as usize)
            .map(|i| Arc::clone(&i.entry))
    }

    /// The inode of `name` in `parent`, given (or updated to) `entry`.
    fn intern(&self, parent: u64, name: &[u8], entry: Entry) -> (u64, Arc<Entry>) {
        let key = (parent, name.to_vec());
        {
            let inodes = self.inodes.read().expect("inodes");
            if let Some(&ino) = inodes.by_name.get(&key) {
                let e = &inodes.list[ino as usize - 1].entry;
                if **e == entry {
                    return (ino, Arc::clone(e));
                }
            }
        }
        let mut inodes = self.inodes.write().expect("inodes");
        let entry = Arc::new(entry);
        if let Some(&ino) = inodes.by_name.get(&key) {
            // A top-level name now stands for something else (`latest` moved on).
            inodes.list[ino as usize - 1].entry = Arc::clone(&entry);
            return (ino, entry);
        }
        inodes.list.push(Inode {
            parent,
            entry: Arc::clone(&entry),
        });
        let ino = inodes.list.len() as u64;
        inodes.by_name.insert(key, ino);
        (ino, entry)
    }

    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().expect("trees").get(id) {
            return Ok(t);
        }
        let tree = Arc::new(self.repo.load_tree(id)?);
        let weight = tree
            .nodes
            .iter()
            .map(|n| 160 + n.name.len() + 32 * content_len(n))
            .sum();
        self.trees
            .lock()
            .expect("trees")
            .insert(*id, Arc::clone(&tree), weight);
        Ok(tree)
    }

    fn top_children(&self, top: &Top) -> Vec<(Vec<u8>, Entry)> {
        let l = self.layout();
        let snapshot = |name: &String| {
            l.snapshots
                .get(name)
                .map(|s| (name.as_bytes().to_vec(), Entry::Snapshot(s.clone())))
        };
        let group = |names: Option<&Vec<String>>| {
            let Some(names) = names else {
                return Vec::new();
            };
            let mut v: Vec<_> = names.iter().filter_map(snapshot).collect();
            if let Some(last) = names.last() {
                v.push((b"latest".to_vec(), Entry::Link(last.as_bytes().to_vec())));
            }
            v
        };
        let dir = |name: &str, top: Top| (name.as_bytes().to_vec(), Entry::Top(top));
        match top {
            Top::Root => {
                let mut v = vec![dir("snapshots", Top::Snapshots)];
                if let Some(latest) = &l.latest {
                    let target = format!("snapshots/{latest}").into_bytes();
                    v.push((b"latest".to_vec(), Entry::Link(target)));
                }
                v.extend([
                    dir("ids", Top::Ids),
                    dir("tags", Top::Tags),
                    dir("hosts", Top::Hosts),
                ]);
                v
            }
            Top::Snapshots => l.snapshots.keys().filter_map(snapshot).collect(),
            Top::Ids => l
                .ids
                .iter()
                .map(|(short, name)| {
                    let target = format!("../snapshots/{name}").into_bytes();
                    (short.as_bytes().to_vec(), Entry::Link(target))
                })
                .collect(),
            Top::Tags => l.tags.keys().map(|t| dir(t, Top::Tag(t.clone()))).collect(),
            Top::Hosts => l
                .hosts
                .keys()
                .map(|h| dir(h, Top::Host(h.clone())))
                .collect(),
            Top::Tag(t) => group(l.tags.get(t)),
            Top::Host(h) => group(l.hosts.get(h)),
        }
    }

    /// The tree a directory entry lists, if it is a snapshot or a stored directory.
    fn subtree(entry: &Entry) -> Option<BlobId> {
        match entry {
            Entry::Snapshot(s) => Some(s.tree),
            Entry::Node(Node {
                kind: NodeKind::Dir { subtree },
                ..
            }) => Some(*subtree),
            _ => None,
        }
    }

    fn children(&self, entry: &Entry) -> Result<Vec<(Vec<u8>, Entry)>, Errno> {
        if let Entry::Top(top) = entry {
            return Ok(self.top_children(top));
        }
        let id = Self::subtree(entry).ok_or(Errno::ENOTDIR)?;
        let tree = self.tree(&id).map_err(|e| self.log_error("listing", &e))?;
        Ok(tree
            .nodes
            .iter()
            .map(|n| (n.name.clone(), Entry::Node(n.clone())))
            .collect())
    }

    fn child(&self, entry: &Entry, name: &[u8]) -> Result<Entry, Errno> {
        if let Entry::Top(top) = entry {
            return self
                .top_children(top)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e)
                .ok_or(Errno::ENOENT);
        }
        let id = Self::subtree(entry).ok_or(Errno::ENOTDIR)?;
        let tree = self.tree(&id).map_err(|e| self.log_error("lookup", &e))?;
        tree.get(name)
            .map(|n| Entry::Node(n.clone()))
            .ok_or(Errno::ENOENT)
    }

    fn log_error(&self, what: &str, e: &Error) -> Errno {
        tracing::error!("{what}: {e}");
        errno(e)
    }

    fn attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        let (uid, gid) = self.owner;
        let mut a = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: entry.file_type(),
            perm: 0o555,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match entry {
            Entry::Top(_) => {}
            Entry::Link(target) => {
                a.perm = 0o777;
                a.nlink = 1;
                a.size = target.len() as u64;
            }
            Entry::Snapshot(s) => {
                let t = system_time(s.time);
                (a.atime, a.mtime, a.ctime) = (t, t, t);
                (a.uid, a.gid, a.perm) = (s.uid, s.gid, 0o755);
            }
            Entry::Node(n) => {
                let t = system_time(n.mtime);
                (a.atime, a.mtime, a.ctime) = (t, t, system_time(n.ctime));
                (a.uid, a.gid, a.perm) = (n.uid, n.gid, (n.mode & 0o7777) as u16);
                a.nlink = if n.is_dir() { 2 } else { 1 };
                a.size = match &n.kind {
                    NodeKind::File { .. } => n.size,
                    NodeKind::Symlink { target } => target.len() as u64,
                    _ => 0,
                };
                a.blocks = a.size.div_ceil(512);
                if let NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } = n.kind {
                    a.rdev = fuse_rdev(rdev);
                }
            }
        }
        a
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Where each blob of `content` ends in the file, from the index.
    fn open_file(&self, name: &[u8], content: &[BlobId]) -> Result<OpenFile> {
        let mut ends = Vec::with_capacity(content.len());
        let mut at = 0u64;
        for id in content {
            let loc = match self.repo.locate(BlobType::Data, id) {
                Err(Error::NotFound { .. }) => {
                    // Written since the index was read, or moved by a prune.
                    self.repo.block_on(self.repo.resync_index())?;
                    self.repo.locate(BlobType::Data, id)?
                }
                r => r?,
            };
            at += loc.raw_length as u64;
            ends.push(at);
        }
        Ok(OpenFile {
            name: String::from_utf8_lossy(name).into_owned(),
            content: content.to_vec(),
            ends,
            next: AtomicU64::new(0),
        })
    }

    /// `size` bytes of `file` from `offset` (fewer at its end).
    fn read_at(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>> {
        let total = file.ends.last().copied().unwrap_or(0);
        let end = offset.saturating_add(size as u64).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut i = file.ends.partition_point(|&e| e <= offset);
        let sequential = file.next.swap(end, Ordering::Relaxed) == offset;
        if sequential && i < file.content.len() {
            let ahead = (i + 1 + self.opts.readahead).min(file.content.len());
            self.blobs.prefetch(&file.content[i + 1..ahead]);
        }
        let mut at = offset;
        while at < end {
            let start = if i == 0 { 0 } else { file.ends[i - 1] };
            let blob = self.blobs.get(&file.content[i]).map_err(unshare)?;
            let (from, to) = (
                (at - start) as usize,
                (end.min(file.ends[i]) - start) as usize,
            );
            let part = blob.get(from..to).ok_or_else(|| {
                Error::integrity(
                    format!("data blob {}", file.content[i]),
                    "shorter than the index says",
                )
            })?;
            out.extend_from_slice(part);
            at = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}

/// An error shared between the readers that waited on one fetch, as one of them.
fn unshare(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| match &*e {
        Error::NotFound { what } => Error::NotFound { what: what.clone() },
        Error::Integrity { object, reason } => Error::integrity(object.clone(), reason.clone()),
        other => Error::Io {
            path: PathBuf::from("<mount>"),
            error: std::io::Error::other(other.to_string()),
        },
    })
}

fn content_len(n: &Node) -> usize {
    match &n.kind {
        NodeKind::File { content } => content.len(),
        _ => 0,
    }
}

impl Filesystem for CairnFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.entry(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.child(&dir, name.as_bytes()) {
            Ok(e) => {
                let (ino, e) = self.intern(parent.0, name.as_bytes(), e);
                reply.entry(&e.ttl(), &self.attr(ino, &e), Generation(0));
            }
            Err(err) => reply.error(err),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino.0) {
            Some(e) => reply.attr(&e.ttl(), &self.attr(ino.0, &e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.entry(ino.0).as_deref() {
            Some(Entry::Link(target))
            | Some(Entry::Node(Node {
                kind: NodeKind::Symlink { target },
                ..
            })) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let Some(entry) = self.entry(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Entry::Node(Node {
            kind: NodeKind::File { content },
            name,
            ..
        }) = &*entry
        else {
            return reply.error(Errno::EINVAL);
        };
        match self.open_file(name, content) {
            Ok(f) => {
                let fh = self.new_fh();
                self.files.lock().expect("files").insert(fh, Arc::new(f));
                // The content behind an inode never changes: keep the page cache.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => {
                let name = String::from_utf8_lossy(name);
                reply.error(self.log_error(&format!("opening {name}"), &e));
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.lock().expect("files").get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self.read_at(&file, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                let what = format!("reading {} (inode {})", file.name, ino.0);
                reply.error(self.log_error(&what, &e))
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().expect("files").remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(dir) = self.entry(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let children = match self.children(&dir) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let parent = self.inodes.read().expect("inodes").list[ino.0 as usize - 1].parent;
        let mut listing: Listing = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ];
        for (name, e) in children {
            let kind = e.file_type();
            let (child, _) = self.intern(ino.0, &name, e);
            listing.push((child, kind, name));
        }
        let fh = self.new_fh();
        self.dirs
            .lock()
            .expect("dirs")
            .insert(fh, Arc::new(listing));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = self.dirs.lock().expect("dirs").get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().expect("dirs").remove(&fh.0);
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if self.entry(ino.0).is_none() {
            reply.error(Errno::ENOENT)
        } else if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match self.entry(ino.0).as_deref() {
            Some(Entry::Node(n)) => n
                .xattrs
                .iter()
                .find(|x| x.name == name.as_bytes())
                .map(|x| x.value.clone()),
            Some(_) => None,
            None => return reply.error(Errno::ENOENT),
        };
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some(v) => xattr_reply(reply, &v, size),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: Vec<u8> = match self.entry(ino.0).as_deref() {
            Some(Entry::Node(n)) => n
                .xattrs
                .iter()
                .flat_map(|x| x.name.iter().copied().chain([0]))
                .collect(),
            Some(_) => Vec::new(),
            None => return reply.error(Errno::ENOENT),
        };
        xattr_reply(reply, &names, size)
    }
}

/// Answer an xattr request: the length when asked with size 0, else the bytes if
/// they fit.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() <= size as usize {
        reply.data(value)
    } else {
        reply.error(Errno::ERANGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        let dev = libc::makedev(8, 1);
        assert_eq!(fuse_rdev(dev), 0x801);
        let dev = libc::makedev(259, 0x12345);
        assert_eq!(fuse_rdev(dev), 0x45 | (259 << 8) | (0x12300 << 12));
    }

    #[test]
    fn times_before_1970_stay_before_it() {
        let t = system_time(Timestamp {
            secs: -2,
            nanos: 500_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
