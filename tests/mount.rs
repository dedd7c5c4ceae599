//! `cairn mount`: the repository through FUSE, checked with ordinary tools (ls, read,
//! cp -a, tar, sha256sum). Needs /dev/fuse and fusermount3 (`.ci/run` installs fuse3);
//! where they are missing only the refusal is checked.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{PASSWORD, Repo, assert_same_tree, data};

fn fuse_usable() -> bool {
    let helper = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    Path::new("/dev/fuse").exists() && helper
}

/// Whether `dir` is a mountpoint now.
fn is_mounted(dir: &Path) -> bool {
    let dir = dir.as_os_str().as_bytes();
    std::fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .any(|line| line.split(|&b| b == b' ').nth(4) == Some(dir))
}

/// A running `cairn mount`; killed and unmounted on drop if a test fails half way.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
    /// Where its stderr goes.
    stderr: PathBuf,
}

impl Mounted {
    fn start(repo: &Repo, extra: &[&str]) -> Self {
        let dir = repo.tmp.path().join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let stderr = repo.tmp.path().join("mount.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_REPOSITORY", &repo.path)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", repo.tmp.path().join("cache"))
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            dir,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(is_mounted(&m.dir) && m.dir.join("snapshots").is_dir()) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cairn mount exited early: {status}: {}", m.stderr_text());
            }
            assert!(Instant::now() < deadline, "no mount after 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 10 s); it must have printed no panic.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                assert!(out.starts_with("mounted at "), "stdout: {out:?}");
                let err = self.stderr_text();
                assert!(!err.contains("panicked"), "stderr: {err}");
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cairn mount did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

fn source(repo: &Repo) -> PathBuf {
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(src.join("db/wal")).unwrap();
    std::fs::create_dir_all(src.join("etc/deep/er")).unwrap();
    std::fs::write(src.join("db/base.sql"), data(5 << 20, 11)).unwrap();
    std::fs::write(src.join("db/wal/0001"), data(300_000, 12)).unwrap();
    std::fs::write(src.join("etc/deep/er/conf"), b"key = value\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name").unwrap();
    std::os::unix::fs::symlink("db/base.sql", src.join("link")).unwrap();
    std::fs::set_permissions(
        src.join("etc/deep/er/conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    src
}

/// Run a tool that must succeed; its stderr is shown when it does not.
fn ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn snapshots_read_through_the_mount_like_the_source() {
    if !fuse_usable() {
        eprintln!("skipped: no /dev/fuse or no fusermount3 on PATH");
        return;
    }
    let repo = Repo::new();
    let src = source(&repo);
    repo.backup_json(&[src.as_os_str()]);
    std::fs::write(src.join("db/wal/0002"), data(200_000, 13)).unwrap();
    repo.backup_json(&[src.as_os_str(), OsStr::new("--tag"), OsStr::new("weekly")]);

    let m = Mounted::start(&repo, &[]);
    let snaps = names(&m.dir.join("snapshots"));
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(
        names(&m.dir),
        ["hosts", "ids", "latest", "snapshots", "tags"]
    );
    // Two backups in one second get names made unique by id, so find which is newer.
    let latest = std::fs::read_link(m.dir.join("latest")).unwrap();
    let newest = latest.strip_prefix("snapshots").unwrap().to_str().unwrap();
    let oldest = snaps.iter().find(|s| *s != newest).unwrap();
    assert!(snaps.iter().any(|s| s == newest), "{latest:?}");
    assert_eq!(names(&m.dir.join("tags")), ["weekly"]);
    assert_eq!(names(&m.dir.join("tags/weekly")), [newest, "latest"]);
    let hosts = names(&m.dir.join("hosts"));
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        names(&m.dir.join("hosts").join(&hosts[0])),
        [snaps[0].as_str(), snaps[1].as_str(), "latest"]
    );
    assert_eq!(names(&m.dir.join("ids")).len(), 2);

    // Every file, mode, owner, time and link target, as stored.
    let inner = |snap: &Path| snap.join(src.strip_prefix("/").unwrap());
    let mounted = inner(&m.dir.join("latest"));
    assert_same_tree(&src, &mounted);
    assert!(
        !inner(&m.dir.join("snapshots").join(oldest))
            .join("db/wal/0002")
            .exists()
    );
    assert_same_tree(&src, &inner(&m.dir.join("tags/weekly/latest")));

    // A read at an offset inside a multi-chunk file.
    let mut f = std::fs::File::open(mounted.join("db/base.sql")).unwrap();
    f.seek(SeekFrom::Start(3_141_592)).unwrap();
    let mut buf = vec![0; 777_777];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data(5 << 20, 11)[3_141_592..3_141_592 + 777_777]);

    // Read-only.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(mounted.join("empty"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = std::fs::write(mounted.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // Ordinary tools: cp -a, tar, sha256sum.
    let copy = repo.tmp.path().join("copy");
    ok(Command::new("cp").arg("-a").arg(&mounted).arg(&copy));
    assert_same_tree(&src, &copy);
    let tar = repo.tmp.path().join("x.tar");
    // pax format: GNU tar's default drops the nanoseconds of mtimes.
    ok(Command::new("tar")
        .args(["--format=posix", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&mounted)
        .arg("."));
    let untarred = repo.tmp.path().join("untarred");
    std::fs::create_dir(&untarred).unwrap();
    ok(Command::new("tar")
        .arg("-xpf")
        .arg(&tar)
        .arg("-C")
        .arg(&untarred));
    assert_same_tree(&src, &untarred);
    let sums = |dir: &Path| {
        let out = ok(Command::new("sha256sum")
            .args(["db/base.sql", "db/wal/0001", "db/wal/0002", "link"])
            .current_dir(dir));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sums(&mounted), sums(&src));

    let status = m.stop();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(
        &repo.tmp.path().join("mnt").canonicalize().unwrap()
    ));
}

#[test]
fn a_snapshot_made_while_mounted_appears() {
    if !fuse_usable() {
        eprintln!("skipped: no /dev/fuse or no fusermount3 on PATH");
        return;
    }
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("one"), data(100_000, 1)).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    let m = Mounted::start(&repo, &["--refresh", "1s"]);
    assert_eq!(names(&m.dir.join("snapshots")).len(), 1);

    std::fs::write(src.join("two"), data(400_000, 2)).unwrap();
    repo.backup_json(&[src.as_os_str(), OsStr::new("--tag"), OsStr::new("later")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&m.dir.join("snapshots")).len() < 2 {
        assert!(Instant::now() < deadline, "new snapshot not seen in 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its new blobs are found (the index was read again).
    let two = m
        .dir
        .join("tags/later/latest")
        .join(src.strip_prefix("/").unwrap())
        .join("two");
    assert_eq!(std::fs::read(two).unwrap(), data(400_000, 2));
    assert!(m.stop().success());
}

#[test]
fn mount_refuses_with_a_reason() {
    let repo = Repo::new();
    let missing = repo.tmp.path().join("no-such-dir");
    let out = repo.cmd().arg("mount").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    if Path::new("/dev/fuse").exists() {
        assert!(err.contains("is not an existing directory"), "{err}");
        assert!(err.contains(missing.to_str().unwrap()), "{err}");
    } else {
        // Without FUSE that is the first thing said, for any mountpoint.
        assert!(err.contains("FUSE is not available"), "{err}");
        assert!(err.contains("fuse3"), "{err}");
    }
    let file = repo.tmp.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = repo.cmd().arg("mount").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_damaged_blob_fails_its_read_and_nothing_else() {
    if !fuse_usable() {
        eprintln!("skipped: no /dev/fuse or no fusermount3 on PATH");
        return;
    }
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), data(3 << 20, 5)).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    repo.backup_json(&[src.as_os_str()]);
    // Trees and small files sit in small packs; flip a byte in the middle of the data.
    for pack in repo.packs() {
        let mut bytes = std::fs::read(&pack).unwrap();
        if bytes.len() > 1 << 20 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&pack, bytes).unwrap();
        }
    }
    let m = Mounted::start(&repo, &[]);
    let inner = m.dir.join("latest").join(src.strip_prefix("/").unwrap());
    let err = std::fs::read(inner.join("big")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(names(&inner), ["big", "small"]);
    assert_eq!(std::fs::read(inner.join("small")).unwrap(), b"small");
    assert!(m.stop().success());
}
