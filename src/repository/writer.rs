//! Writing blobs: deduplicate, seal, fill packs, upload them concurrently, then write the
//! index files that name them.
//!
//! Order of writes (invariant 2): a pack is uploaded before any index file names it, and
//! an index file is written before its blobs enter the local index cache. Until then a
//! new blob lives only in this writer's `pending` set, so a crash can leave unreferenced
//! packs (garbage for prune) but never an index entry or cache entry without its pack.
//!
//! Threads: `add` is called from rayon workers (CPU work: hash, compress, seal). Packs are
//! assembled in temporary files (in the backend's staging directory, or the cache), and
//! full packs go through a bounded channel to an upload task on tokio, which keeps at
//! most `connections` uploads in flight. A full channel blocks the producers. No pack is
//! held in memory, so the writer's memory does not depend on the pack size. A pack staged
//! in a local repository is written with `O_DIRECT` on tokio's blocking threads, and its
//! upload (a hard link) waits for those writes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::io::{IoSlice, Write};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Freshness, IndexCache, IndexedRepository, REFRESH, STALE_AFTER, save_index};
use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::blob::seal_blob_into;
use crate::format::{BlobType, IndexFile, IndexPack, PackBlob, PackHeader, names};
use crate::id::{BlobId, Id, IndexId, PackId};

/// Packs per index file: a crash loses at most this many packs' worth of upload to
/// re-do (they stay as unreferenced garbage).
const PACKS_PER_INDEX: usize = 8;
/// Blobs per pack at most. A tree of tiny files (Nexus's `.properties`, a few hundred
/// bytes sealed) would otherwise put hundreds of thousands of blobs in one pack, and
/// the blob lists of the packs being filled, uploaded and indexed (tens of bytes per
/// blob, each also in the pending map) would grow with the number of files: 300,000
/// files of 20 bytes took a first backup to 125 MB, 100,000 to 67 MB.
const MAX_BLOBS_PER_PACK: usize = 32 << 10;
/// An index file is written once its packs hold this many blobs, even before
/// [`PACKS_PER_INDEX`] packs: the same bound for the batch waiting to be indexed.
const BLOBS_PER_INDEX: usize = 64 << 10;
/// Uploaded packs wait at most this long for their index file.
const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

thread_local! {
    /// Each thread seals its blobs into one buffer, used again (no allocation per blob).
    static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A sealing buffer bigger than this (grown by a large tree blob) is not kept.
const SEALED_KEEP: usize = 1 << 20;

/// What a writer added to the repository.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Stored bytes of the new blobs (sealed, compressed).
    pub bytes_added: u64,
    pub packs: u64,
}

/// Blobs this writer stored that are not in the index cache yet, in shards by id, so
/// the threads adding blobs seldom wait for one another.
#[derive(Default)]
struct Pending([Mutex<HashSet<(BlobType, BlobId)>>; 16]);

impl Pending {
    fn shard(&self, id: &BlobId) -> std::sync::MutexGuard<'_, HashSet<(BlobType, BlobId)>> {
        self.0[id.as_bytes()[0] as usize % self.0.len()]
            .lock()
            .expect("pending")
    }
    /// False when it was there already.
    fn insert(&self, ty: BlobType, id: BlobId) -> bool {
        self.shard(&id).insert((ty, id))
    }
    fn contains(&self, ty: BlobType, id: &BlobId) -> bool {
        self.shard(id).contains(&(ty, *id))
    }
    fn remove(&self, ty: BlobType, id: &BlobId) {
        self.shard(id).remove(&(ty, *id));
    }
}

#[derive(Default)]
struct Shared {
    pending: Pending,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    packs: AtomicU64,
    /// Keep the index files written in `index_files` (prune's repacking needs them; a
    /// backup must not, or its memory would grow with its size).
    record_index: bool,
    index_files: Mutex<Vec<(IndexId, IndexFile)>>,
    /// Set when a packer failed (location and message of the error): its blobs, which
    /// other threads may have deduplicated against, will never be stored, so nothing
    /// more is added and `finish` fails (a backup then writes no snapshot).
    /// The first failure is kept; reading it is one atomic load, on every add.
    broken: std::sync::OnceLock<(String, String)>,
    /// The lock of the operation writing, checked before each index file: an index
    /// file naming packs a prune removed while this process was stopped would make
    /// other backups deduplicate against blobs that are gone.
    freshness: Option<Freshness>,
}

struct FinishedPack {
    id: PackId,
    /// The whole pack, in a temporary file (removed when dropped).
    file: tempfile::TempPath,
    size: u64,
    blobs: Vec<PackBlob>,
    /// Direct writes of the file still running: all must succeed before it is published.
    writes: Vec<DirectWrite>,
}

/// Sealed blobs are gathered into writes of at most this size. One write per blob (tens
/// of KiB each) cost the kernel more per byte, and held the packer's lock through a
/// system call for every blob.
const WRITE_SIZE: usize = 512 << 10;

/// A sealed blob this large is written from the buffer it was sealed in, together with
/// what is gathered, instead of being copied after it (most of a backup's bytes are in
/// such blobs; the copy was 2% of a first backup's CPU).
const DIRECT_WRITE: usize = 128 << 10;

/// A data pack file is given its disk space this much at a time, ahead of the writes that
/// fill it, up to the pack size. A write into space the file already has skips the file
/// system's per-page work of reserving space for it (ext4: 0.16 s of system time to write
/// and sync 44 packs of 16 MiB in 512 KiB writes, 0.11 s with 4 MiB steps; 1 MiB steps
/// saved less, 16 MiB no more). A full pack uses all its space; only a pack finished
/// early has space cut off, which, on a file system mounted with `discard`, waits for
/// the device (about 1.5 ms here). (A pack written directly is also cut after its last
/// write, padded to a block: that frees no block, so it does not wait.)
const ALLOCATE_STEP: u64 = 4 << 20;

/// Where packs are assembled: a directory, and for packs that become objects where they
/// are (a local repository), the writer that writes them past the page cache.
struct Staging {
    dir: std::path::PathBuf,
    direct: Option<Arc<DirectWriter>>,
}

/// Offsets, lengths and addresses of direct writes are multiples of this: the largest
/// logical block size of the devices in use (512 or 4096 bytes).
const DIRECT_ALIGN: usize = 4096;

/// Direct writes in flight at most. Each holds a buffer of [`WRITE_SIZE`]; a thread that
/// would start one more waits, so a slow disk holds the backup back, not its memory.
const DIRECT_IN_FLIGHT: usize = 4;

/// A buffer of [`WRITE_SIZE`] bytes at an address aligned for direct writes.
struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let bytes = vec![0; WRITE_SIZE + DIRECT_ALIGN];
        let start = bytes.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { bytes, start }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + WRITE_SIZE]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + WRITE_SIZE]
    }
}

/// Writes pack files opened with `O_DIRECT`, on tokio's blocking threads, while the
/// workers go on sealing. Written this way a pack costs the kernel no page-cache work,
/// no writeback at its fsync, and does not push other data out of the page cache: a
/// first backup spent 6% of its CPU writing and syncing packs through the page cache.
/// Used where a pack file becomes the object as it is; a pack that is read again to be
/// uploaded is better read from the page cache.
struct DirectWriter {
    rt: tokio::runtime::Handle,
    /// A failed write breaks the writer, as a failed write through the page cache does.
    shared: Arc<Shared>,
    state: Mutex<DirectState>,
    written: std::sync::Condvar,
}

#[derive(Default)]
struct DirectState {
    free: Vec<AlignedBuf>,
    in_flight: usize,
}

/// A direct write's place among those in flight, and its buffer.
struct InFlight {
    writer: Arc<DirectWriter>,
    buf: Option<AlignedBuf>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Not `expect`: this also runs while a panic unwinds.
        if let Ok(mut s) = self.writer.state.lock() {
            s.free.extend(self.buf.take());
            s.in_flight -= 1;
        }
        self.writer.written.notify_one();
    }
}

/// Whether `file` takes direct writes of the alignment used here: the file system says
/// so (`statx`, Linux 6.1 and later), and the flag is set. Elsewhere, and on file systems
/// without them (tmpfs, or ext4 with journalled data), packs go through the page cache.
fn direct_writes(file: &std::fs::File) -> bool {
    use rustix::fs::{AtFlags, OFlags, StatxFlags};
    let Ok(st) = rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) else {
        return false;
    };
    let fits = |align: u32| align > 0 && DIRECT_ALIGN % align as usize == 0;
    StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::DIOALIGN)
        && fits(st.stx_dio_mem_align)
        && fits(st.stx_dio_offset_align)
        && rustix::fs::fcntl_getfl(file)
            .and_then(|flags| rustix::fs::fcntl_setfl(file, flags | OFlags::DIRECT))
            .is_ok()
}

/// Write `bytes` at `offset` of a file opened with `O_DIRECT`. Should the file system
/// refuse the direct write after all (`EINVAL`, which it returns before writing
/// anything), the file is switched to the page cache and the write made that way.
fn write_at(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    match file.write_all_at(bytes, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let flags = rustix::fs::fcntl_getfl(file)?;
            rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
            file.write_all_at(bytes, offset)
        }
        r => r,
    }
}

/// A direct write's outcome, awaited before its pack is published.
type DirectWrite = tokio::task::JoinHandle<Result<()>>;

impl DirectWriter {
    fn new(rt: tokio::runtime::Handle, shared: Arc<Shared>) -> Self {
        DirectWriter {
            rt,
            shared,
            state: Mutex::default(),
            written: std::sync::Condvar::new(),
        }
    }

    fn buffer(&self) -> AlignedBuf {
        let free = self.state.lock().expect("direct writes").free.pop();
        free.unwrap_or_else(AlignedBuf::new)
    }

    /// Write the first `len` bytes of `buf` at `offset` (both aligned), then, for a
    /// pack's last write, cut the file to `end`. Waits while [`DIRECT_IN_FLIGHT`]
    /// writes are running.
    fn write(
        self: &Arc<Self>,
        file: &Arc<std::fs::File>,
        path: &std::path::Path,
        buf: AlignedBuf,
        len: usize,
        offset: u64,
        end: Option<u64>,
    ) -> DirectWrite {
        {
            let mut s = self.state.lock().expect("direct writes");
            while s.in_flight >= DIRECT_IN_FLIGHT {
                s = self.written.wait(s).expect("direct writes");
            }
            s.in_flight += 1;
        }
        // Gives the place and the buffer back however the task ends: run, panicked, or
        // dropped unrun (a runtime shutting down, no thread to run it).
        let slot = InFlight {
            writer: self.clone(),
            buf: Some(buf),
        };
        let (me, file, path) = (self.clone(), file.clone(), path.to_path_buf());
        self.rt.spawn_blocking(move || {
            let buf = slot.buf.as_ref().expect("until dropped");
            let mut r = write_at(&file, &buf.get()[..len], offset);
            if let (Ok(()), Some(end)) = (&r, end) {
                // The padding after the pack, and the space allocated past it.
                r = file.metadata().and_then(|m| {
                    if m.len() != end {
                        file.set_len(end)
                    } else {
                        Ok(())
                    }
                });
            }
            let r = r.map_err(|e| staging_error(&path, e));
            if let Err(Error::Backend { location, message }) = &r {
                let _ = me.shared.broken.set((location.clone(), message.clone()));
            }
            drop(slot);
            r
        })
    }
}

/// Fills one pack. Sealed blobs go to a temporary file in writes of up to [`WRITE_SIZE`],
/// hashed as they are written, so a pack never sits in memory: memory does not grow with
/// the pack size or with the number of uploads in flight.
#[derive(Default)]
struct Packer {
    file: Option<(Arc<std::fs::File>, tempfile::TempPath)>,
    /// Sealed bytes not written yet (at most [`WRITE_SIZE`]), for a file written through
    /// the page cache.
    buf: Vec<u8>,
    /// For a file opened with `O_DIRECT`: the buffer being filled, and how much of it is.
    direct: Option<(AlignedBuf, usize)>,
    /// Its direct writes, not awaited yet.
    writes: Vec<DirectWrite>,
    hasher: blake3::Hasher,
    /// Bytes written to the file (the pack so far is these and those gathered).
    written: u64,
    /// The file's size: its written bytes and the space allocated after them, which
    /// [`Packer::take`] cuts off.
    allocated: u64,
    /// Space is allocated ahead up to this size: the pack size for data, none for the
    /// small tree packs.
    allocate_to: u64,
    /// Allocation failed once (a file system without `fallocate`, or too little room for
    /// a step): the rest of this pack is written without it.
    no_allocate: bool,
    blobs: Vec<PackBlob>,
}

impl Packer {
    fn add(
        &mut self,
        staging: &Staging,
        ty: BlobType,
        id: BlobId,
        sealed: &[u8],
        raw_length: usize,
    ) -> Result<()> {
        if self.file.is_none() {
            let dir = &staging.dir;
            std::fs::create_dir_all(dir).map_err(|e| staging_error(dir, e))?;
            let f = tempfile::Builder::new()
                .prefix("pack-")
                .tempfile_in(dir)
                .map_err(|e| staging_error(dir, e))?;
            let (f, path) = f.into_parts();
            if let Some(writer) = &staging.direct {
                if direct_writes(&f) {
                    self.direct = Some((writer.buffer(), 0));
                }
            }
            self.file = Some((Arc::new(f), path));
        }
        let offset = self.len();
        if let Some(direct) = self.direct_writer(staging) {
            self.gather_direct(direct, sealed);
        } else if sealed.len() >= DIRECT_WRITE {
            // Written from where it was sealed, after what is gathered, in one call.
            self.flush(sealed)?;
        } else {
            if self.buf.len() + sealed.len() > WRITE_SIZE {
                self.flush(&[])?;
            }
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_SIZE);
            }
            self.buf.extend_from_slice(sealed);
        }
        self.blobs.push(PackBlob {
            ty,
            id,
            offset,
            length: sealed.len() as u32,
            raw_length: raw_length as u32,
        });
        Ok(())
    }

    /// The writer of this packer's file, when it is written directly.
    fn direct_writer<'s>(&self, staging: &'s Staging) -> Option<&'s Arc<DirectWriter>> {
        staging.direct.as_ref().filter(|_| self.direct.is_some())
    }

    /// Bytes in the pack so far, written or not.
    fn len(&self) -> u64 {
        let gathered = match &self.direct {
            Some((_, filled)) => *filled,
            None => self.buf.len(),
        };
        self.written + gathered as u64
    }

    /// Give the file its space ahead of a write that ends at `end`.
    fn allocate(&mut self, end: u64) {
        if end > self.allocated && self.allocated < self.allocate_to && !self.no_allocate {
            let (f, _) = self.file.as_ref().expect("pack file open");
            let step = ALLOCATE_STEP
                .max(end - self.allocated)
                .min(self.allocate_to - self.allocated);
            // Not fatal when it fails: the writes that follow report a full disk.
            match rustix::fs::fallocate(
                &**f,
                rustix::fs::FallocateFlags::empty(),
                self.allocated,
                step,
            ) {
                Ok(()) => self.allocated += step,
                Err(_) => self.no_allocate = true,
            }
        }
    }

    /// Write what is gathered, then `then`.
    fn flush(&mut self, then: &[u8]) -> Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let written = self.write(&buf, then);
        self.buf = buf;
        self.buf.clear();
        written
    }

    /// Write `first`, then `second`, in one system call when the kernel takes both.
    fn write(&mut self, first: &[u8], second: &[u8]) -> Result<()> {
        let end = self.written + (first.len() + second.len()) as u64;
        self.allocate(end);
        let (f, path) = self.file.as_mut().expect("pack file open");
        let mut slices = [IoSlice::new(first), IoSlice::new(second)];
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match (&**f).write_vectored(rest) {
                Ok(0) => return Err(staging_error(path, std::io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(staging_error(path, e)),
            }
        }
        self.written = end;
        self.hasher.update(first);
        self.hasher.update(second);
        Ok(())
    }

    /// Copy `bytes` into the direct buffer, writing each buffer that fills up.
    fn gather_direct(&mut self, writer: &Arc<DirectWriter>, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (buf, filled) = self.direct.as_mut().expect("direct file");
            let n = bytes.len().min(WRITE_SIZE - *filled);
            buf.get_mut()[*filled..*filled + n].copy_from_slice(&bytes[..n]);
            *filled += n;
            bytes = &bytes[n..];
            if *filled == WRITE_SIZE {
                self.write_direct(writer, false);
            }
        }
    }

    /// Start the write of the direct buffer, and fill a new one from now on. The pack's
    /// `last` write is padded to a whole block, and the file is cut to the pack's end
    /// after it.
    fn write_direct(&mut self, writer: &Arc<DirectWriter>, last: bool) {
        let (mut buf, filled) = self.direct.take().expect("direct file");
        let end = self.written + filled as u64;
        let padded = filled.next_multiple_of(DIRECT_ALIGN);
        buf.get_mut()[filled..padded].fill(0);
        self.allocate(end);
        self.hasher.update(&buf.get()[..filled]);
        let (f, path) = self.file.as_ref().expect("pack file open");
        let write = writer.write(f, path, buf, padded, self.written, last.then_some(end));
        self.writes.push(write);
        self.written = end;
        if !last {
            // Taken after the write started, which may have given one back.
            self.direct = Some((writer.buffer(), 0));
        }
    }

    /// Finish the pack: its header, and the file cut to its end. A pack written
    /// directly is returned with its writes still running.
    fn take(&mut self, key: &MasterKey, staging: &Staging) -> Result<FinishedPack> {
        let blobs = std::mem::take(&mut self.blobs);
        let tail = PackHeader::new(blobs.clone()).seal_with_trailer(key);
        let direct = self.direct_writer(staging);
        if let Some(writer) = direct {
            self.gather_direct(writer, &tail);
            self.write_direct(writer, true);
        } else {
            self.flush(&tail)?;
        }
        let (f, path) = self.file.take().expect("pack has blobs");
        // Cut off the space allocated past the pack's end. A failed allocation can have
        // grown the file too (ext4 allocates, and grows the file, until it runs out), so
        // after one the file's length is looked at.
        let cut = direct.is_none()
            && if self.no_allocate {
                f.metadata().map_err(|e| staging_error(&path, e))?.len() != self.written
            } else {
                self.allocated > self.written
            };
        if cut {
            f.set_len(self.written)
                .map_err(|e| staging_error(&path, e))?;
        }
        let size = self.written;
        (self.written, self.allocated, self.no_allocate) = (0, 0, false);
        let id = PackId(Id(*self.hasher.finalize().as_bytes()));
        self.hasher = blake3::Hasher::new();
        Ok(FinishedPack {
            id,
            file: path,
            size,
            blobs,
            writes: std::mem::take(&mut self.writes),
        })
    }
}

/// A pack that cannot be assembled where packs are staged: the writer stops (it cannot
/// store anything more), naming the place, and saying what to do when it is full. Not
/// an [`Error::Io`], which a backup reads as its input failing.
fn staging_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Backend {
        location: path.display().to_string(),
        message: if Error::is_full(&e) {
            format!("cannot write a pack: {e}; make room there, then run the backup again")
        } else {
            format!("cannot write a pack: {e}")
        },
    }
}

/// Data packers filled side by side, at most this many: each one left partly full at the
/// end of a backup becomes an object of its own, and a backup on many cores should not end
/// with one per core.
const MAX_DATA_PACKERS: usize = 4;

/// The packers of one blob type: a thread takes one to add a blob and puts it back, so
/// threads fill packs side by side instead of queueing for one.
struct PackerPool {
    state: Mutex<PoolState>,
    returned: std::sync::Condvar,
    /// How many packers may exist at once.
    max: usize,
    /// What new packers allocate ahead up to ([`Packer::allocate_to`]).
    allocate_to: u64,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Packer>,
    /// Packers taken and not put back.
    out: usize,
    /// Threads waiting for one to come back. Waking costs a system call even when no
    /// thread waits, and packers are put back once per blob.
    waiting: usize,
}

impl PackerPool {
    fn new(max: usize, allocate_to: u64) -> Self {
        PackerPool {
            state: Mutex::default(),
            returned: std::sync::Condvar::new(),
            max,
            allocate_to,
        }
    }

    /// The packers of a blob type, for packs of `pack_size` bytes. Trees are small and
    /// added once per directory, so one packer keeps up with them, and a backup's trees
    /// end up in as few packs as possible.
    fn for_type(ty: BlobType, pack_size: u64) -> Self {
        match ty {
            BlobType::Data => Self::new(MAX_DATA_PACKERS, pack_size),
            BlobType::Tree => Self::new(1, 0),
        }
    }

    /// An idle packer, a new one while there are fewer than `max`, or the next
    /// one put back (a packer is held only to add a blob or finish its pack).
    fn take(&self) -> Packer {
        let mut s = self.state.lock().expect("packers");
        loop {
            if let Some(p) = s.idle.pop() {
                s.out += 1;
                return p;
            }
            if s.out < self.max {
                s.out += 1;
                return Packer {
                    allocate_to: self.allocate_to,
                    ..Packer::default()
                };
            }
            s.waiting += 1;
            s = self.returned.wait(s).expect("packers");
            s.waiting -= 1;
        }
    }

    /// Put a packer back (`None`: it was dropped).
    fn put(&self, p: Option<Packer>) {
        let mut s = self.state.lock().expect("packers");
        s.out -= 1;
        s.idle.extend(p);
        if s.waiting > 0 {
            self.returned.notify_one();
        }
    }

    /// The idle packers, taken out (when nothing adds any more).
    fn drain(&self) -> Vec<Packer> {
        std::mem::take(&mut self.state.lock().expect("packers").idle)
    }
}

/// A packer taken from its pool. Unless given back, it is dropped with its file when
/// this is (an error, or a panic while it was held), and the pool hands out a new one in
/// its place, so no thread waits for it forever.
struct Lent<'p> {
    pool: &'p PackerPool,
    packer: Option<Packer>,
}

impl<'p> Lent<'p> {
    fn take(pool: &'p PackerPool) -> Self {
        Lent {
            pool,
            packer: Some(pool.take()),
        }
    }

    fn give_back(mut self) {
        self.pool.put(self.packer.take());
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if self.packer.take().is_some() {
            self.pool.put(None);
        }
    }
}

/// Adds blobs to the repository. Create one per backup, call [`BlobWriter::finish`].
pub struct BlobWriter<'r> {
    repo: &'r IndexedRepository,
    shared: Arc<Shared>,
    /// Packs being filled, per blob type.
    packers: [PackerPool; 2],
    tx: Option<mpsc::Sender<FinishedPack>>,
    uploader: Option<tokio::task::JoinHandle<Result<()>>>,
    /// Count what would be stored, store nothing.
    dry_run: bool,
    /// Where packs are assembled before upload.
    staging: Staging,
}

fn slot(ty: BlobType) -> usize {
    match ty {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl<'r> BlobWriter<'r> {
    pub(super) fn new(repo: &'r IndexedRepository, dry_run: bool, record_index: bool) -> Self {
        let shared = Arc::new(Shared {
            record_index,
            freshness: repo.freshness.clone(),
            ..Default::default()
        });
        let (tx, rx) = mpsc::channel(1);
        let uploader = repo.runtime().spawn(upload_loop(
            repo.backend().clone(),
            repo.key().clone(),
            repo.config().compression,
            repo.index().clone(),
            shared.clone(),
            rx,
            repo.options().connections.max(1),
        ));
        // A pack staged where the repository is becomes the object as it is, so it is
        // written directly; one uploaded from the cache is read again, from the page cache.
        let staging = match repo.backend().staging_dir() {
            Some(dir) => Staging {
                dir,
                direct: Some(Arc::new(DirectWriter::new(
                    repo.runtime().handle().clone(),
                    shared.clone(),
                ))),
            },
            None => Staging {
                dir: repo.cache_dir().join("tmp"),
                direct: None,
            },
        };
        BlobWriter {
            repo,
            shared,
            packers: [BlobType::Data, BlobType::Tree]
                .map(|ty| PackerPool::for_type(ty, repo.config().pack_size as u64)),
            tx: Some(tx),
            uploader: Some(uploader),
            dry_run,
            staging,
        }
    }

    /// Is this blob in the index cache (not only pending in this writer)?
    pub fn indexed(&self, ty: BlobType, id: &BlobId) -> Result<bool> {
        self.repo.index().contains(ty, id)
    }

    /// Is this blob waiting in this writer for its index file?
    pub fn pending(&self, ty: BlobType, id: &BlobId) -> bool {
        self.shared.pending.contains(ty, id)
    }

    /// Store a blob unless it is known; returns its id and whether it was new. Blocks
    /// while uploads are behind (backpressure). Call from synchronous code only.
    pub fn add(&self, ty: BlobType, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let key = self.repo.key();
        let id = key.blob_id(plaintext);
        if self.repo.index().contains(ty, &id)? || !self.shared.pending.insert(ty, id) {
            return Ok((id, false));
        }
        match ty {
            BlobType::Data => &self.shared.data_blobs,
            BlobType::Tree => &self.shared.tree_blobs,
        }
        .fetch_add(1, Ordering::Relaxed);
        let level = self.repo.config().compression;
        if self.dry_run {
            let stored =
                crate::format::compress(level, plaintext).len() + crate::crypto::SEAL_OVERHEAD;
            self.shared
                .bytes_added
                .fetch_add(stored as u64, Ordering::Relaxed);
            return Ok((id, true));
        }
        let full = SEALED.with_borrow_mut(|sealed| -> Result<_> {
            seal_blob_into(key, ty, &id, plaintext, level, sealed);
            self.shared
                .bytes_added
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
            let full = self.with_packer(ty, |p| {
                p.add(&self.staging, ty, id, sealed, plaintext.len())
            });
            if sealed.capacity() > SEALED_KEEP {
                *sealed = Vec::new();
            }
            full
        })?;
        if let Some(pack) = full {
            self.send(pack)?;
        }
        Ok((id, true))
    }

    /// Store an already sealed blob as it is (prune's repacking: the sealed bytes do not
    /// depend on where they lie). The caller has opened and checked it. Deduplicates
    /// only against this writer's own blobs, since the blob is indexed in its old pack.
    pub fn add_sealed(
        &self,
        ty: BlobType,
        id: BlobId,
        sealed: &[u8],
        raw_length: usize,
    ) -> Result<()> {
        if !self.shared.pending.insert(ty, id) {
            return Ok(());
        }
        match ty {
            BlobType::Data => &self.shared.data_blobs,
            BlobType::Tree => &self.shared.tree_blobs,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.shared
            .bytes_added
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let full = self.with_packer(ty, |p| p.add(&self.staging, ty, id, sealed, raw_length))?;
        if let Some(pack) = full {
            self.send(pack)?;
        }
        Ok(())
    }

    /// Add to a pack of `ty` no other thread is adding to (one from the pool, or a new
    /// one), and take the pack when it is full.
    fn with_packer(
        &self,
        ty: BlobType,
        add: impl FnOnce(&mut Packer) -> Result<()>,
    ) -> Result<Option<FinishedPack>> {
        if let Some(e) = self.broken() {
            return Err(e);
        }
        let mut lent = Lent::take(&self.packers[slot(ty)]);
        let p = lent.packer.as_mut().expect("just taken");
        let added = add(p).and_then(|()| {
            Ok(
                if p.len() >= self.repo.config().pack_size as u64
                    || p.blobs.len() >= MAX_BLOBS_PER_PACK
                {
                    Some(p.take(self.repo.key(), &self.staging)?)
                } else {
                    None
                },
            )
        });
        // A packer whose file failed to take a write no longer matches its list of blobs
        // (a write can fail halfway, a full disk frees up again): it is dropped with its
        // file, never finished and uploaded, and the writer is broken from then on.
        match &added {
            Ok(_) => lent.give_back(),
            Err(e) => {
                drop(lent);
                let (location, message) = match e {
                    Error::Backend { location, message } => (location.clone(), message.clone()),
                    other => (self.staging.dir.display().to_string(), other.to_string()),
                };
                let _ = self.shared.broken.set((location, message));
            }
        }
        added
    }

    /// The failure of a packer, when one failed.
    pub(crate) fn broken(&self) -> Option<Error> {
        self.shared
            .broken
            .get()
            .map(|(location, message)| Error::Backend {
                location: location.clone(),
                message: message.clone(),
            })
    }

    fn send(&self, pack: FinishedPack) -> Result<()> {
        let tx = self.tx.as_ref().expect("writer not finished");
        tx.blocking_send(pack).map_err(|_| Error::Backend {
            location: self.repo.backend().location().to_string(),
            message: "pack upload stopped (see the error that follows)".into(),
        })
    }

    /// Counts so far.
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            data_blobs: self.shared.data_blobs.load(Ordering::Relaxed),
            tree_blobs: self.shared.tree_blobs.load(Ordering::Relaxed),
            bytes_added: self.shared.bytes_added.load(Ordering::Relaxed),
            packs: self.shared.packs.load(Ordering::Relaxed),
        }
    }

    /// Upload what is left, write the last index file, and wait for all of it. Also call
    /// this after a failed backup: what was uploaded gets indexed, so a rerun reuses it.
    pub fn finish(self) -> Result<WriteStats> {
        self.finish_indexed().map(|(s, _)| s)
    }

    /// Like [`BlobWriter::finish`], also returning the index files written (by a writer
    /// from [`IndexedRepository::repack_writer`]; empty otherwise).
    pub fn finish_indexed(mut self) -> Result<(WriteStats, Vec<(IndexId, IndexFile)>)> {
        let mut send_err = None;
        let partial: Vec<Packer> = self
            .packers
            .iter()
            .flat_map(PackerPool::drain)
            .filter(|p| !p.blobs.is_empty())
            .collect();
        for mut p in partial {
            if let Err(e) = p
                .take(self.repo.key(), &self.staging)
                .and_then(|pack| self.send(pack))
            {
                send_err = Some(e);
            }
        }
        drop(self.tx.take());
        let handle = self.uploader.take().expect("uploader");
        let joined = self.repo.block_on(handle);
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(Error::Backend {
                    location: self.repo.backend().location().to_string(),
                    message: format!("upload task failed: {e}"),
                });
            }
        }
        if let Some(e) = send_err.or_else(|| self.broken()) {
            return Err(e);
        }
        let files = std::mem::take(&mut *self.shared.index_files.lock().expect("index files"));
        Ok((self.stats(), files))
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        // An unfinished writer (a panic or an early return) stops its uploads; what
        // was not indexed stays unreferenced garbage, which is safe.
        drop(self.tx.take());
        if let Some(h) = self.uploader.take() {
            h.abort();
        }
    }
}

async fn upload_loop(
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    level: i32,
    index: Arc<IndexCache>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<FinishedPack>,
    connections: usize,
) -> Result<()> {
    let incoming = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut uploads = incoming
        .map(|pack| {
            let backend = backend.clone();
            async move {
                let name = names::pack(&pack.id);
                let size = pack.size;
                for write in pack.writes {
                    write.await.unwrap_or_else(|e| {
                        Err(staging_error(&pack.file, std::io::Error::other(e)))
                    })?;
                }
                match backend.create_file(&name, &pack.file).await {
                    // Same name means same bytes: the pack is already there.
                    Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                Ok(IndexPack {
                    id: pack.id,
                    size,
                    blobs: pack.blobs,
                })
            }
        })
        .buffer_unordered(connections);
    let mut batch = Vec::new();
    let mut batch_blobs = 0;
    let mut first_err = None;
    // Also index what is uploaded when packs come slowly (a producer that pauses), so a
    // failure later loses little.
    let mut tick = tokio::time::interval(INDEX_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = uploads.next() => match r {
                None => break,
                Some(Ok(p)) => {
                    shared.packs.fetch_add(1, Ordering::Relaxed);
                    batch_blobs += p.blobs.len();
                    batch.push(p);
                    if batch.len() >= PACKS_PER_INDEX || batch_blobs >= BLOBS_PER_INDEX {
                        batch_blobs = 0;
                        flush(&*backend, &key, level, &index, &shared, &mut batch).await?;
                    }
                }
                // Index the uploads that succeeded, then report the failure.
                Some(Err(e)) => {
                    first_err = Some(e);
                    break;
                }
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    batch_blobs = 0;
                    flush(&*backend, &key, level, &index, &shared, &mut batch).await?;
                }
            }
        }
    }
    drop(uploads);
    let flushed = flush(&*backend, &key, level, &index, &shared, &mut batch).await;
    // The upload's error is the cause; a failed index write after it is a consequence.
    match (first_err, flushed) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(()),
    }
}

async fn flush(
    backend: &dyn Backend,
    key: &MasterKey,
    level: i32,
    index: &IndexCache,
    shared: &Shared,
    batch: &mut Vec<IndexPack>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(f) = &shared.freshness {
        f.check(STALE_AFTER - REFRESH, backend.location())?;
    }
    let file = IndexFile::new(std::mem::take(batch));
    let id = save_index(backend, key, level, &file).await?;
    tokio::task::block_in_place(|| index.add_index_file(&id, &file))?;
    for p in &file.packs {
        for b in &p.blobs {
            shared.pending.remove(b.ty, &b.id);
        }
    }
    if shared.record_index {
        shared
            .index_files
            .lock()
            .expect("index files")
            .push((id, file));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_repo(dir: &std::path::Path) -> crate::repository::IndexedRepository {
        crate::repository::test_repository(dir, 1)
            .into_indexed()
            .unwrap()
    }

    /// Tiny blobs fill a pack by count before they fill it by bytes, so the blob lists
    /// held for packs in flight do not grow with the number of files.
    #[test]
    fn a_pack_holds_at_most_max_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        let w = repo.writer();
        let n = MAX_BLOBS_PER_PACK + MAX_BLOBS_PER_PACK / 2;
        for i in 0..n {
            w.add(BlobType::Data, format!("file {i}\n").as_bytes())
                .unwrap();
        }
        let stats = w.finish().unwrap();
        assert_eq!(stats.data_blobs, n as u64);
        let (files, _) = repo.read_index_files().unwrap();
        let counts: Vec<usize> = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.blobs.len()))
            .collect();
        assert!(counts.len() >= 2, "{counts:?}");
        assert!(
            counts.iter().all(|&c| c <= MAX_BLOBS_PER_PACK),
            "{counts:?}"
        );
        assert_eq!(counts.iter().sum::<usize>(), n);
    }

    /// At most `max` packers of a type exist: one more is handed out only when one is
    /// put back (or dropped), however many threads ask.
    #[test]
    fn the_pool_hands_out_at_most_max_packers() {
        let pool = PackerPool::for_type(BlobType::Data, 16 << 20);
        let held: Vec<Packer> = (0..MAX_DATA_PACKERS).map(|_| pool.take()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let p = pool.take();
                tx.send(()).unwrap();
                pool.put(Some(p));
            });
            // Still waiting after a while (a slow machine could only make this pass).
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(200))
                    .is_err()
            );
            let mut held = held.into_iter();
            pool.put(held.next());
            rx.recv().unwrap();
            for p in held {
                pool.put(Some(p));
            }
        });
        assert_eq!(pool.drain().len(), MAX_DATA_PACKERS);
    }

    /// Where `repo` stages packs: written directly or through the page cache.
    fn staging(repo: &IndexedRepository, dir: std::path::PathBuf, direct: bool) -> Staging {
        let rt = repo.runtime().handle().clone();
        Staging {
            dir,
            direct: direct.then(|| Arc::new(DirectWriter::new(rt, Arc::default()))),
        }
    }

    /// A directory for direct writes, which need a file system that takes them: the
    /// temporary directory is tmpfs on some systems, the project's own seldom is.
    fn on_disk() -> tempfile::TempDir {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        tempfile::tempdir_in(target).unwrap()
    }

    /// A finished pack, once its direct writes are done.
    fn written(repo: &IndexedRepository, mut pack: FinishedPack) -> FinishedPack {
        for w in std::mem::take(&mut pack.writes) {
            repo.block_on(w).unwrap().unwrap();
        }
        pack
    }

    /// A pack file given its space ahead of the writes ends at the pack's last byte: its
    /// length is the pack's size and its bytes hash to the pack's id, whether the last
    /// step of space was used up, partly used, or a write needed more than a step, and
    /// whether the allocation stopped at a pack size, before it, or never began; written
    /// through the page cache, or directly (blobs across and up to the ends of the
    /// aligned buffers, a pack that ends on a buffer's end).
    #[test]
    fn a_pack_file_is_cut_to_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        let step = ALLOCATE_STEP as usize;
        // One blob whose pack, header and all, is one buffer: the last direct write is
        // empty, and only cuts.
        let header = |n: usize| {
            let blob = PackBlob {
                ty: BlobType::Data,
                id: BlobId(Id([0; 32])),
                offset: 0,
                length: n as u32,
                raw_length: n as u32,
            };
            PackHeader::new(vec![blob])
                .seal_with_trailer(repo.key())
                .len()
        };
        let mut one_buffer = WRITE_SIZE - 100;
        while one_buffer + header(one_buffer) != WRITE_SIZE {
            one_buffer = WRITE_SIZE - header(one_buffer);
        }
        let blob_sizes: [&[usize]; 8] = [
            &[one_buffer],
            &[100],
            &[WRITE_SIZE - 7, WRITE_SIZE + 1, 3],
            &[
                1000,
                DIRECT_WRITE,
                5,
                DIRECT_WRITE - 1,
                WRITE_SIZE - 2000,
                3000,
            ],
            &[step + 5, 10],
            &[step / 2, step / 2, step / 2, 1],
            &[WRITE_SIZE, 2 * WRITE_SIZE + 1],
            &[DIRECT_ALIGN - 1, 1],
        ];
        let cases = blob_sizes.iter().flat_map(|sizes| {
            [0, step as u64 + 100, 64 << 20].map(|allocate_to| (*sizes, allocate_to))
        });
        let on_disk = on_disk();
        let direct = direct_writes(&tempfile::tempfile_in(on_disk.path()).unwrap());
        if !direct {
            eprintln!(
                "direct writes not tested: {} does not take them",
                on_disk.path().display()
            );
        }
        for (direct, (sizes, allocate_to)) in [false, true]
            .into_iter()
            .filter(|&d| !d || direct)
            .flat_map(|d| cases.clone().map(move |c| (d, c)))
        {
            let dir = if direct { on_disk.path() } else { dir.path() }.join("staging");
            std::fs::create_dir_all(&dir).unwrap();
            // Whether the file system allocates ahead; where it does, the cut is made.
            let probe = tempfile::tempfile_in(&dir).unwrap();
            let allocates =
                rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::empty(), 0, 4096).is_ok();
            let staging = staging(&repo, dir, direct);
            let mut p = Packer {
                allocate_to,
                ..Packer::default()
            };
            let blob = |i: usize, n: usize| -> Vec<u8> {
                (0..n).map(|j| ((i + j) % 251) as u8 + 1).collect()
            };
            for (i, &n) in sizes.iter().enumerate() {
                let id = BlobId(Id([i as u8; 32]));
                p.add(&staging, BlobType::Data, id, &blob(i, n), n).unwrap();
            }
            assert_eq!(p.direct.is_some(), direct);
            if !direct {
                p.flush(&[]).unwrap();
            }
            assert!(p.allocated <= allocate_to);
            if allocates && allocate_to > 0 && p.written > 0 {
                assert!(p.allocated > 0, "blobs of {sizes:?}");
            }
            let pack = written(&repo, p.take(repo.key(), &staging).unwrap());
            let bytes = std::fs::read(&pack.file).unwrap();
            assert_eq!(bytes.len() as u64, pack.size, "blobs of {sizes:?}");
            if sizes == [one_buffer] {
                assert_eq!(pack.size, WRITE_SIZE as u64);
            }
            assert_eq!(PackId(Id(*blake3::hash(&bytes).as_bytes())), pack.id);
            let mut offset = 0;
            for (i, (&n, b)) in sizes.iter().zip(&pack.blobs).enumerate() {
                assert_eq!((b.offset, b.length as usize), (offset as u64, n));
                assert!(
                    bytes[offset..offset + n] == blob(i, n),
                    "blob {i} of {sizes:?}"
                );
                offset += n;
            }
        }
    }

    /// Direct writes that end without running (here: on a runtime shut down) give their
    /// places back: later writes do not wait for them forever.
    #[test]
    fn writes_that_never_run_give_their_place_back() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        rt.shutdown_background();
        let writer = Arc::new(DirectWriter::new(handle, Arc::default()));
        let file = Arc::new(tempfile::tempfile().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let w = writer.clone();
        std::thread::spawn(move || {
            for _ in 0..2 * DIRECT_IN_FLIGHT {
                let buf = w.buffer();
                drop(w.write(&file, std::path::Path::new("pack"), buf, 0, 0, None));
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("a write waited for places never given back");
        assert_eq!(writer.state.lock().unwrap().in_flight, 0);
    }

    /// A direct write the file system refuses (here: not aligned) is made through the
    /// page cache instead.
    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        let on_disk = on_disk();
        let f = tempfile::tempfile_in(on_disk.path()).unwrap();
        if !direct_writes(&f) {
            eprintln!("skipped: the project's file system does not take direct writes");
            return;
        }
        use std::os::unix::fs::FileExt;
        let refused = f.write_all_at(b"misaligned", 3).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::EINVAL));
        write_at(&f, b"misaligned", 3).unwrap();
        let flags = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::DIRECT));
        let mut back = [0; 13];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"\0\0\0misaligned");
    }

    /// A failed allocation can leave the file longer than what was written (ext4 grows
    /// it as far as it got): the finished pack file is cut to the pack all the same.
    #[test]
    fn a_pack_file_grown_by_a_failed_allocation_is_cut_too() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        let staging = staging(&repo, dir.path().join("staging"), false);
        let mut p = Packer::default();
        p.add(
            &staging,
            BlobType::Data,
            BlobId(Id([1; 32])),
            &[7; 1000],
            1000,
        )
        .unwrap();
        p.flush(&[]).unwrap();
        // What a partly failed `fallocate` leaves: a longer file, and no more allocation.
        let (f, _) = p.file.as_ref().unwrap();
        f.set_len(p.written + 12345).unwrap();
        p.no_allocate = true;
        let pack = p.take(repo.key(), &staging).unwrap();
        let bytes = std::fs::read(&pack.file).unwrap();
        assert_eq!(bytes.len() as u64, pack.size);
        assert_eq!(PackId(Id(*blake3::hash(&bytes).as_bytes())), pack.id);
    }

    /// A panic while a thread holds the only tree packer does not leave the others
    /// waiting for it.
    #[test]
    fn a_panic_while_adding_gives_the_packer_up() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        let w = repo.writer();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.with_packer(BlobType::Tree, |_| panic!("while adding"))
        }));
        assert!(panicked.is_err());
        // Counted as given up: the next thread gets a new packer instead of waiting.
        let pool = &w.packers[slot(BlobType::Tree)];
        assert_eq!(pool.state.lock().unwrap().out, 0);
        assert!(w.with_packer(BlobType::Tree, |_| Ok(())).is_ok());
    }

    /// Once a pack cannot be written, the writer adds nothing more and its `finish`
    /// fails, whatever the caller did with the first error: blobs other threads took as
    /// pending in the failed pack are never stored, so no snapshot may refer to them.
    #[test]
    fn a_failed_pack_stops_the_writer_and_fails_finish() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let repo = local_repo(dir.path());
        // Where packs are staged, a file: no pack can be started.
        let _ = std::fs::remove_dir_all(root.join("tmp"));
        std::fs::write(root.join("tmp"), b"in the way").unwrap();
        let w = repo.writer();
        let first = w.add(BlobType::Data, b"one").unwrap_err();
        assert!(first.to_string().contains("cannot write a pack"), "{first}");
        // Another thread's blob, or a retry: refused with the same error.
        let second = w.add(BlobType::Data, b"two").unwrap_err();
        assert_eq!(second.to_string(), first.to_string());
        std::fs::remove_file(root.join("tmp")).unwrap();
        // Room again: still refused, and finish fails.
        assert!(w.add(BlobType::Data, b"three").is_err());
        let finished = w.finish().unwrap_err();
        assert_eq!(finished.to_string(), first.to_string());
        assert!(
            !repo
                .index()
                .contains(BlobType::Data, &repo.key().blob_id(b"one"))
                .unwrap()
        );
    }
}
