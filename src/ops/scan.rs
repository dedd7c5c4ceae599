//! Reading directories for a backup relative to open descriptors: a directory is opened
//! by its name in its parent and its entries are statted by name in it, so each is one
//! path lookup (not one per component of a full path), and a listing is one buffer (not
//! an allocation per entry, nor the C library's 32 KiB stream per directory).

use std::cell::RefCell;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::format::{Timestamp, Xattr};

/// What a backup records of an entry's `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
}

/// A timestamp from seconds and nanoseconds as `stat` gives them.
pub(super) fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

impl Meta {
    /// The `lstat` of `rel` under `at` (a directory, or [`nix::fcntl::AT_FDCWD`] with an
    /// absolute path).
    pub fn at(at: BorrowedFd<'_>, rel: &CStr) -> io::Result<Self> {
        let st = nix::sys::stat::fstatat(at, rel, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        Ok(Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: ts(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: ts(st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        })
    }

    /// The `lstat` of a path.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        Ok(Self::of(&std::fs::symlink_metadata(path)?))
    }

    /// The `stat` of `path`, following a symlink: for the directories leading to a
    /// source, which the source's path goes through whatever they are.
    pub fn of_path_followed(path: &Path) -> io::Result<Self> {
        Ok(Self::of(&std::fs::metadata(path)?))
    }

    /// The `fstat` of an open file.
    pub fn of_file(f: &std::fs::File) -> io::Result<Self> {
        Ok(Self::of(&f.metadata()?))
    }

    fn of(m: &std::fs::Metadata) -> Self {
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    pub fn is_fifo(&self) -> bool {
        self.kind() == libc::S_IFIFO
    }
    pub fn is_socket(&self) -> bool {
        self.kind() == libc::S_IFSOCK
    }
    pub fn is_char_device(&self) -> bool {
        self.kind() == libc::S_IFCHR
    }
    pub fn is_block_device(&self) -> bool {
        self.kind() == libc::S_IFBLK
    }
}

/// An open directory.
pub(super) struct Dir {
    fd: OwnedFd,
}

/// The entries of a directory (without `.` and `..`), sorted by name bytes.
pub(super) struct Names {
    /// The names, each followed by its NUL.
    bytes: Vec<u8>,
    /// Start and length (without the NUL) of each name in `bytes`, and whether the
    /// listing said it is a regular file.
    spans: Vec<(usize, usize, bool)>,
}

impl Names {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The `i`th name, as a path component and as the C string the system calls take.
    pub fn get(&self, i: usize) -> (&OsStr, &CStr) {
        let (start, len, _) = self.spans[i];
        let name = &self.bytes[start..start + len];
        let c = CStr::from_bytes_with_nul(&self.bytes[start..=start + len])
            .expect("names are stored with their NUL and contain none");
        (OsStr::from_bytes(name), c)
    }

    /// Whether the listing gave the `i`th entry as a regular file (`d_type`; file
    /// systems that do not fill it in give no type, and so no files).
    pub fn listed_as_file(&self, i: usize) -> bool {
        self.spans[i].2
    }
}

thread_local! {
    /// The buffer `getdents64` fills, one per thread (a listing is read whole before
    /// anything below it is).
    static DENTS: RefCell<Vec<std::mem::MaybeUninit<u8>>> =
        RefCell::new(vec![std::mem::MaybeUninit::uninit(); 32 << 10]);
}

impl Dir {
    /// Open `rel` under `at` (a directory, or [`nix::fcntl::AT_FDCWD`] with an absolute
    /// path). A symlink is not followed: what was statted as a directory and is a link by
    /// now fails to open rather than leading elsewhere.
    pub fn open(at: BorrowedFd<'_>, rel: &CStr) -> io::Result<Self> {
        let fd = nix::fcntl::openat(
            at,
            rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// List the directory. Names that `getdents64` returned before an error are kept;
    /// the error is returned beside them.
    pub fn names(&self) -> (Names, Option<io::Error>) {
        let mut names = Names {
            bytes: Vec::new(),
            spans: Vec::new(),
        };
        let err = DENTS.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut dir = rustix::fs::RawDir::new(self.fd.as_fd(), &mut buf[..]);
            while let Some(entry) = dir.next() {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => return Some(io::Error::from(e)),
                };
                let name = entry.file_name().to_bytes_with_nul();
                if name != b".\0" && name != b"..\0" && name.len() > 1 {
                    let file = entry.file_type() == rustix::fs::FileType::RegularFile;
                    names.spans.push((names.bytes.len(), name.len() - 1, file));
                    names.bytes.extend_from_slice(name);
                }
            }
            None
        });
        let Names { bytes, spans } = &mut names;
        spans.sort_unstable_by(|&(a, al, _), &(b, bl, _)| bytes[a..a + al].cmp(&bytes[b..b + bl]));
        (names, err)
    }

    /// The directory's extended attributes, sorted by name, as [`file_xattrs`].
    pub fn xattrs(&self) -> (Vec<Xattr>, Option<io::Error>) {
        match self.fd.try_clone() {
            Ok(fd) => file_xattrs(&std::fs::File::from(fd)),
            Err(e) => (Vec::new(), Some(e)),
        }
    }
}

/// Open the regular file `rel` under `at` for reading. A symlink is not followed: what
/// was listed or statted as a file and is a link by now fails to open. Nor does a FIFO
/// put there since block the backup (`O_NONBLOCK`, which regular files ignore), nor a
/// terminal become the process's controlling terminal (`O_NOCTTY`): the caller finds it
/// is no regular file. A file under another process's write lease (Samba's oplocks)
/// fails a non-blocking open with `EWOULDBLOCK`; it is opened again, waiting for the
/// lease to be given up, as a plain open would.
pub(super) fn open_file(at: BorrowedFd<'_>, rel: &CStr) -> io::Result<std::fs::File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(at, rel, flags | OFlag::O_NONBLOCK, Mode::empty()) {
        Err(nix::errno::Errno::EWOULDBLOCK) => nix::fcntl::openat(at, rel, flags, Mode::empty()),
        other => other,
    }?;
    Ok(std::fs::File::from(fd))
}

/// An open file's extended attributes, sorted by name, and the error that kept some
/// from being read (none where the file system has no attributes).
pub(super) fn file_xattrs(f: &std::fs::File) -> (Vec<Xattr>, Option<io::Error>) {
    use xattr::FileExt;
    match f.list_xattr() {
        Ok(names) => collect_xattrs(names, |n| f.get_xattr(n)),
        Err(e) => (Vec::new(), not_unsupported(e)),
    }
}

/// An error reading extended attributes, unless it says the file system has none.
pub(super) fn not_unsupported(e: io::Error) -> Option<io::Error> {
    (e.kind() != io::ErrorKind::Unsupported).then_some(e)
}

/// The attributes `names` lists with the values `get` reads, sorted by name, and the
/// first error that kept one from being read. One that vanished in between is left out
/// without an error.
pub(super) fn collect_xattrs(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> (Vec<Xattr>, Option<io::Error>) {
    let mut error = None;
    let mut out: Vec<Xattr> = names
        .filter_map(|n| match get(&n) {
            Ok(value) => Some(Xattr {
                name: n.as_bytes().to_vec(),
                value: value?,
            }),
            Err(e) => {
                error.get_or_insert(e);
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute that vanished between listing and reading is left out quietly; one
    /// that could not be read is left out with the error, which the backup reports; a
    /// file system without attributes is no error.
    #[test]
    fn an_attribute_that_cannot_be_read_is_an_error_one_that_vanished_is_not() {
        let names = || ["user.b", "user.gone", "user.a"].map(std::ffi::OsString::from);
        let (list, err) = collect_xattrs(names().into_iter(), |n| match n.to_str() {
            Some("user.gone") => Ok(None),
            _ => Ok(Some(b"v".to_vec())),
        });
        let got: Vec<&[u8]> = list.iter().map(|x| x.name.as_slice()).collect();
        assert_eq!(got, [b"user.a".as_slice(), b"user.b"]);
        assert!(err.is_none());
        let (list, err) = collect_xattrs(names().into_iter(), |n| match n.to_str() {
            Some("user.b") => Err(io::Error::from_raw_os_error(libc::EACCES)),
            _ => Ok(Some(b"v".to_vec())),
        });
        assert_eq!(list.len(), 2);
        assert_eq!(err.unwrap().raw_os_error(), Some(libc::EACCES));
        assert!(not_unsupported(io::Error::from_raw_os_error(libc::EOPNOTSUPP)).is_none());
        assert!(not_unsupported(io::Error::from_raw_os_error(libc::EIO)).is_some());
    }

    #[test]
    fn lists_sorted_names_and_stats_them_like_std() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..300)
            .map(|i| format!("entry-{:03}-{}", (i * 7) % 300, "x".repeat(i % 40)))
            .collect();
        for n in &names {
            std::fs::write(t.path().join(n), n.as_bytes()).unwrap();
        }
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("entry-000-", t.path().join("link")).unwrap();
        let root = std::ffi::CString::new(t.path().as_os_str().as_bytes()).unwrap();
        let d = Dir::open(nix::fcntl::AT_FDCWD, &root).unwrap();
        let (listed, err) = d.names();
        assert!(err.is_none());
        let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        want.push(b"sub".to_vec());
        want.push(b"link".to_vec());
        want.sort();
        let got: Vec<Vec<u8>> = (0..listed.len())
            .map(|i| listed.get(i).0.as_bytes().to_vec())
            .collect();
        assert_eq!(got, want);
        let typed = (0..listed.len()).any(|i| listed.listed_as_file(i));
        for i in 0..listed.len() {
            let (name, c) = listed.get(i);
            let ours = Meta::at(d.fd(), c).unwrap();
            assert_eq!(ours, Meta::of_path(&t.path().join(name)).unwrap());
            // A file system that gives no types (`DT_UNKNOWN`) lists nothing as a file.
            if typed {
                assert_eq!(listed.listed_as_file(i), ours.is_file(), "{name:?}");
            }
            if ours.is_file() {
                assert_eq!(Meta::of_file(&open_file(d.fd(), c).unwrap()).unwrap(), ours);
            }
        }
        let (_, c) = (0..listed.len())
            .map(|i| listed.get(i))
            .find(|(n, _)| n.as_bytes() == b"link")
            .unwrap();
        assert!(Meta::at(d.fd(), c).unwrap().is_symlink());
        // A symlink is not opened as a directory, nor as a file.
        assert!(Dir::open(d.fd(), c).is_err());
        assert!(open_file(d.fd(), c).is_err());
    }

    #[test]
    fn a_file_is_read_through_its_directory_and_a_fifo_does_not_block() {
        use std::io::Read;
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"content").unwrap();
        nix::unistd::mkfifo(&t.path().join("p"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let root = std::ffi::CString::new(t.path().as_os_str().as_bytes()).unwrap();
        let d = Dir::open(nix::fcntl::AT_FDCWD, &root).unwrap();
        let mut got = String::new();
        open_file(d.fd(), c"f")
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "content");
        // Put where a file was statted, a FIFO without a writer opens at once and reads
        // as empty (the backup then finds it is no regular file) instead of waiting.
        let mut fifo = open_file(d.fd(), c"p").unwrap();
        assert_eq!(fifo.read(&mut [0u8; 16]).unwrap(), 0);
    }
}
