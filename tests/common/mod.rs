//! Fixtures: a repository in a temp dir, the cairn binary with its environment, a
//! generator of awkward trees, and a comparison of trees by content and metadata.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

pub mod pg;
pub mod s3;

pub const PASSWORD: &str = "correct horse battery staple";

/// A fresh repository in a temporary directory.
pub struct Repo {
    pub tmp: TempDir,
    pub path: PathBuf,
}

impl Repo {
    pub fn new() -> Self {
        let r = Self::uninitialized();
        r.cmd()
            .args(["init", "--kdf-memory-kib", "1024"])
            .assert()
            .success();
        r
    }

    /// A fresh repository with 1 MiB packs (many packs from little data).
    pub fn with_small_packs() -> Self {
        let r = Self::uninitialized();
        r.cmd()
            .args(["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"])
            .assert()
            .success();
        r
    }

    pub fn uninitialized() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        Repo { tmp, path }
    }

    /// `cairn` with `--repo`, password and a private cache.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_REPOSITORY", &self.path)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", self.tmp.path().join("cache"));
        c
    }

    /// `cmd()` as a `std::process::Command`, for pipes.
    pub fn cmd_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_REPOSITORY", &self.path)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", self.tmp.path().join("cache"));
        c
    }

    /// Run `restore SNAPSHOT --target TARGET`, whatever its outcome.
    pub fn restore_output(&self, snapshot: &str, target: &Path) -> std::process::Output {
        self.cmd()
            .args(["restore", snapshot, "--target"])
            .arg(target)
            .output()
            .unwrap()
    }

    /// Restore `latest` into a fresh directory; returns where `src` landed in it.
    pub fn restore_latest(&self, src: &Path) -> PathBuf {
        let target = tempfile::tempdir_in(self.tmp.path()).unwrap().keep();
        self.cmd()
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .assert()
            .success();
        target.join(src.strip_prefix("/").unwrap())
    }

    /// Run `backup --json ARGS`, whatever its exit code.
    pub fn backup_output(&self, args: &[&OsStr]) -> std::process::Output {
        self.cmd()
            .arg("backup")
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    }

    /// Run `backup --json ARGS` and return the parsed summary (the last line: a backup
    /// longer than a second prints status lines before it).
    pub fn backup_json(&self, args: &[&OsStr]) -> serde_json::Value {
        let out = self.backup_output(args);
        assert!(
            out.status.success(),
            "backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json_line(&out.stdout)
    }

    /// Sum of the sizes of every object under `folder` of the repository.
    pub fn stored_bytes(&self, folder: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let m = e.metadata().unwrap();
                            if m.is_dir() { walk(&e.path()) } else { m.len() }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.path.join(folder))
    }

    /// How many lock objects are in `locks/`, not counting one still being written (the
    /// local store writes `NAME#N` first, then links it to `NAME`).
    pub fn lock_objects(&self) -> usize {
        std::fs::read_dir(self.path.join("locks"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().contains('#'))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every index file, as `cairn cat index` prints it. A backup may write several
    /// (one every few seconds while packs arrive slowly).
    pub fn index_files_json(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.path.join("index"))
            .unwrap()
            .map(|e| {
                let out = run_ok(
                    self.cmd()
                        .args(["cat", "index"])
                        .arg(e.unwrap().file_name()),
                );
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect()
    }

    /// Every pack file in the repository.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.path.join("data")).unwrap().flatten() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }
}

/// Run a command that must succeed; its stderr is shown when it does not.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    succeeded(cmd.output().unwrap())
}

/// `out` of a command that must have succeeded; its stderr is shown when it did not.
pub fn succeeded(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The last line of JSON-lines output (the summary).
pub fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .expect("no JSON output");
    serde_json::from_str(line).unwrap()
}

/// Deterministic test data.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    cairn::util::seeded_bytes(n, seed)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Set atime and mtime without following symlinks.
pub fn set_times(p: &Path, secs: i64, nanos: i64) {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [ts, ts];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Can a test mount file systems in a mount namespace of its own (`unshare -m`)? Says
/// why not on stderr. Root in a container without CAP_SYS_ADMIN cannot.
pub fn can_mount() -> bool {
    if !is_root() {
        eprintln!("skipped: mounting a file system needs root");
        return false;
    }
    let namespaces = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !namespaces {
        eprintln!("skipped: `unshare -m` is not allowed here");
    }
    namespaces
}

/// Build the awkward tree of the foundation acceptance test under `root`. `big` is the
/// size of the one large file.
pub fn awkward_tree(root: &Path, big: usize) {
    let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    let f = |p: &str, c: &[u8]| std::fs::write(root.join(p), c).unwrap();
    d("a/b/c/d/e");
    d("empty-dir");
    f("empty-file", b"");
    f("a/b/c/d/e/deep.txt", b"deep\n");
    f("big.bin", &data(big, 1));
    f("zeros.bin", &vec![0u8; 3 << 20]);
    for i in 0..50 {
        f(
            &format!("a/small-{i:03}.txt"),
            format!("file {i}\n").repeat(i + 1).as_bytes(),
        );
    }
    // Non-UTF-8 name and a name with a newline.
    std::fs::write(
        root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9.txt")),
        b"non-utf8 name",
    )
    .unwrap();
    f("new\nline", b"newline in name");
    // Symlinks, one dangling.
    std::os::unix::fs::symlink("a/small-001.txt", root.join("link-ok")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    // Hardlinks.
    f("hard-1", b"shared inode");
    std::fs::hard_link(root.join("hard-1"), root.join("a/hard-2")).unwrap();
    // A fifo.
    assert_eq!(
        unsafe { libc::mkfifo(cpath(&root.join("fifo")).as_ptr(), 0o640) },
        0
    );
    // An xattr, where the filesystem has them.
    let _ = xattr::set(root.join("a/small-002.txt"), "user.cairn", b"xattr value");
    // Modes 000 to 7777 on files, and restrictive modes on directories with contents.
    d("modes");
    for mode in [
        0o000, 0o400, 0o644, 0o755, 0o777, 0o1777, 0o2755, 0o4755, 0o7777,
    ] {
        let p = root.join(format!("modes/m{mode:04o}"));
        std::fs::write(&p, format!("{mode:o}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    d("locked-dir");
    f("locked-dir/inside", b"inside a 0500 dir");
    // Old and future times.
    set_times(&root.join("a/small-003.txt"), -2_208_988_800, 0); // 1900-01-01
    set_times(&root.join("a/small-004.txt"), 4_102_444_800, 123_456_789); // 2100-01-01
    set_times(&root.join("link-ok"), 1_000_000_000, 5);
    std::fs::set_permissions(
        root.join("locked-dir"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    std::fs::set_permissions(root.join("modes"), std::fs::Permissions::from_mode(0o751)).unwrap();
    // Directory times last: creating entries changes them.
    set_times(&root.join("a/b"), 946_684_800, 0);
}

#[derive(Debug, PartialEq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<blake3::Hash>,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn describe(root: &Path) -> (HashMap<PathBuf, Entry>, Vec<Vec<PathBuf>>) {
    let mut out = HashMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&p)
            .map(|l| {
                l.filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(&p, &n).ok()??)))
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let e = Entry {
            kind: m.mode() & libc::S_IFMT,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_file() { m.len() } else { 0 },
            mtime: if rel.as_os_str().is_empty() {
                (0, 0)
            } else {
                (m.mtime(), m.mtime_nsec())
            },
            content: ft
                .is_file()
                .then(|| blake3::hash(&std::fs::read(&p).unwrap())),
            link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
            xattrs,
        };
        out.insert(rel, e);
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// Assert two trees are equal in content and metadata (type, mode, owner, size, mtime,
/// symlink targets, xattrs, and hardlink groups).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, ga) = describe(a);
    let (db, gb) = describe(b);
    let mut missing: Vec<_> = da.keys().filter(|k| !db.contains_key(*k)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "missing from {}: {missing:?}",
        b.display()
    );
    let mut extra: Vec<_> = db.keys().filter(|k| !da.contains_key(*k)).collect();
    extra.sort();
    assert!(extra.is_empty(), "extra in {}: {extra:?}", b.display());
    for (k, ea) in &da {
        assert_eq!(ea, &db[k], "entry {} differs", k.display());
    }
    assert_eq!(ga, gb, "hardlink groups differ");
}

/// Every file below `root` with the hash of its content.
pub fn tree_state(root: &Path) -> std::collections::BTreeMap<String, blake3::Hash> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.insert(
                p.display().to_string(),
                blake3::hash(&std::fs::read(&p).unwrap()),
            );
        }
    }
    out
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `backup --json` that wrote an incomplete snapshot (exit 3) whose first problem
/// says `reason`.
pub fn assert_incomplete(out: &std::process::Output, reason: &str) {
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = last_json_line(&out.stdout);
    assert_eq!(s["complete"], false, "{s:#}");
    let first = s["problems"][0]["message"].as_str().unwrap_or_default();
    assert!(first.contains(reason), "{s:#}");
}

/// The snapshot id a successful `backup --json` printed (its stderr shown if it failed).
pub fn snapshot_id(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json_line(&out.stdout)["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_string()
}
