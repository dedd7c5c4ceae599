//! Bad input gets a clear error and the right exit code, and nothing is lost.

use std::path::{Path, PathBuf};

use crate::common::{Repo, data, tree_state};

#[test]
fn wrong_password_exits_12_with_one_line() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .env("CAIRN_PASSWORD", "nope")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong password"), "{err}");
}

#[test]
fn no_repository_exits_10() {
    let repo = Repo::uninitialized();
    let out = repo.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no repository"));
    // An existing but empty directory is no repository either.
    std::fs::create_dir_all(&repo.path).unwrap();
    let out = repo.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
}

#[test]
fn init_on_existing_repository_refuses_and_changes_nothing() {
    let repo = Repo::new();
    let before = tree_state(&repo.path);
    let out = repo
        .cmd()
        .args(["init", "--kdf-memory-kib", "1024"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(tree_state(&repo.path), before);
    // Also with another password.
    let out = repo
        .cmd()
        .env("CAIRN_PASSWORD", "other")
        .args(["init"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(tree_state(&repo.path), before);
}

#[test]
fn missing_password_is_a_clear_error() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-file"));
}

#[test]
fn password_file_and_command_work() {
    let repo = Repo::new();
    let pw = repo.tmp.path().join("pw");
    std::fs::write(&pw, format!("{}\n", crate::common::PASSWORD)).unwrap();
    repo.cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .assert()
        .success();
    let cmd = format!("cat {}", pw.display());
    repo.cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--password-command", &cmd, "snapshots"])
        .assert()
        .success();
    let out = repo
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--password-command", "exit 4", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Find the index entry of the data blob whose plaintext is `len` bytes long.
fn blob_with_raw_length(repo: &Repo, len: u64) -> (String, u64, u64) {
    for v in repo.index_files_json() {
        for p in v["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                if b["raw_length"] == len && b["ty"] == "Data" {
                    return (
                        p["id"].as_str().unwrap().to_string(),
                        b["offset"].as_u64().unwrap(),
                        b["length"].as_u64().unwrap(),
                    );
                }
            }
        }
    }
    panic!("no blob of {len} bytes");
}

#[test]
fn flipped_byte_in_a_pack_names_pack_and_file_and_restores_the_rest() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("victim"), data(30_001, 1)).unwrap();
    std::fs::write(src.join("bystander"), data(30_002, 2)).unwrap();
    repo.backup_json(&[src.as_os_str()]);

    let (pack, offset, length) = blob_with_raw_length(&repo, 30_001);
    let pack_path = repo.path.join("data").join(&pack[..2]).join(&pack);
    let mut bytes = std::fs::read(&pack_path).unwrap();
    bytes[(offset + length / 2) as usize] ^= 0x40;
    // Write-once objects are read-only on disk; corruption ignores that.
    std::fs::remove_file(&pack_path).unwrap();
    std::fs::write(&pack_path, &bytes).unwrap();

    let target = repo.tmp.path().join("out");
    let out = repo
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&pack), "pack not named: {err}");
    assert!(err.contains("victim"), "file not named: {err}");
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert!(std::fs::read(restored.join("bystander")).unwrap() == data(30_002, 2));
}

#[test]
fn truncated_pack_is_named() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(500_000, 3)).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    for p in repo.packs() {
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 3).unwrap();
    }
    let out = repo
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(repo.tmp.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data/"), "no pack named: {err}");
}

#[test]
fn missing_pack_is_named() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(500_000, 4)).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    for p in repo.packs() {
        std::fs::remove_file(p).unwrap();
    }
    let out = repo.cmd().args(["ls", "latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found") && err.contains("data/"), "{err}");
}

#[test]
fn bad_arguments_are_rejected_before_work() {
    let repo = Repo::uninitialized();
    let out = repo
        .cmd()
        .args([
            "init",
            "--chunk-min",
            "1",
            "--chunk-avg",
            "2",
            "--chunk-max",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
    assert!(!repo.path.exists(), "nothing is created for a bad init");
    let out = repo
        .cmd()
        .args(["restore", "zz", "--target", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The repository's file system fills up during a backup: the backup stops with exit 1,
/// naming the repository and what to do, reports no input file as unreadable, and leaves
/// no snapshot, no temporary pack and no damaged pack (`check --read-data`); with room
/// again, the next backup completes and restores. The file system is a 6 MiB tmpfs in a
/// mount namespace of the test's own (`unshare -m`, which needs root, as CI runs); packs
/// are written through the page cache there.
#[test]
fn full_disk_stops_the_backup_and_says_what_to_do() {
    full_disk(
        r#"mount -t tmpfs -o size=6m tmpfs "$MNT" || exit 90"#,
        r#"mount -o remount,size=64m "$MNT""#,
    );
}

/// The same on ext4 in a loop device, 6 MiB free, where packs are written directly
/// (`O_DIRECT`, from threads of their own, where the kernel reports direct I/O through
/// `statx`: Linux 6.1 and later): the failed write stops the backup the same way.
#[test]
fn full_disk_with_direct_writes_stops_the_backup_too() {
    full_disk(
        r#"command -v mkfs.ext4 > /dev/null || exit 90
        truncate -s 64m "$OUT/img" && mkfs.ext4 -q -b 4096 -m 0 "$OUT/img" || exit 98
        mount -o loop "$OUT/img" "$MNT" || exit 90
        free=$(df --output=avail -B1 "$MNT" | tail -1)
        fallocate -l $((free - (6 << 20))) "$MNT/ballast" || exit 99"#,
        r#"rm "$MNT/ballast""#,
    );
}

/// The file system of the cache directory is full when prune starts: prune stops with
/// exit 1, naming the cache and what to do, and removes nothing; with room again it
/// runs, and what it kept restores. (Prune's working sets and the index cache both live
/// there; whichever cannot be written stops it.)
#[test]
fn full_cache_disk_stops_prune_before_it_removes_anything() {
    let Some((_t, src, mnt, out)) = scenario_dirs() else {
        return;
    };
    std::fs::write(src.join("a"), data(300_000, 1)).unwrap();
    std::fs::write(src.join("b"), data(300_000, 2)).unwrap();
    let script = r#"
        mount -t tmpfs -o size=4m tmpfs "$MNT" || exit 90
        export CAIRN_REPOSITORY="$OUT/repo" CAIRN_CACHE_DIR="$MNT/cache"
        "$BIN" -q init --kdf-memory-kib 1024 || exit 91
        "$BIN" -q backup "$SRC" || exit 92
        head -c 300000 /dev/urandom > "$SRC/a" || exit 93
        "$BIN" -q backup "$SRC" || exit 94
        "$BIN" -q forget --keep-last 1 || exit 95
        ls -R "$OUT/repo/data" "$OUT/repo/index" > "$OUT/before"
        rm -rf "$MNT/cache"
        dd if=/dev/zero of="$MNT/ballast" bs=4k 2> /dev/null
        "$BIN" -q prune 2> "$OUT/err"; echo $? > "$OUT/code"
        ls -R "$OUT/repo/data" "$OUT/repo/index" > "$OUT/after"
        rm "$MNT/ballast"
        "$BIN" -q prune || exit 96
        "$BIN" -q check --read-data || exit 97
        "$BIN" -q restore latest --target "$OUT/back" || exit 98
    "#;
    if !unshared(script, &src, &mnt, &out) {
        return;
    }
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let err = read("err");
    assert_eq!(read("code").trim(), "1", "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&format!("{}/cache", mnt.display())), "{err}");
    assert!(err.contains("make room there"), "{err}");
    assert_eq!(
        read("before"),
        read("after"),
        "prune changed the repository"
    );
    let back = out.join("back").join(src.strip_prefix("/").unwrap());
    crate::common::assert_same_tree(&src, &back);
}

/// A temporary directory with `src`, `mnt` and `out` in it, for a scenario run by
/// [`unshared`]; None where mounts are not allowed (the test is skipped).
fn scenario_dirs() -> Option<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
    if !crate::common::can_mount() {
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = ["src", "mnt", "out"].map(|d| t.path().join(d));
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let [src, mnt, out] = dirs;
    Some((t, src, mnt, out))
}

/// Run `script` with `sh` in a mount namespace of its own, with the cairn binary in
/// `$BIN` and the three directories in `$SRC`, `$MNT` and `$OUT`. False when the script
/// exits 90 (it cannot mount its file system here: the test is skipped); any other
/// failure fails the test.
fn unshared(script: &str, src: &Path, mnt: &Path, out: &Path) -> bool {
    let status = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("BIN", env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_PASSWORD", "pw")
        .env("SRC", src)
        .env("MNT", mnt)
        .env("OUT", out)
        .status()
        .unwrap();
    if status.code() == Some(90) {
        eprintln!("skipped: cannot mount the file system here");
        return false;
    }
    assert!(status.success(), "the script failed: {status}");
    true
}

/// Run the full-disk scenario on the file system `mount` mounts at `$MNT` (exit 90 when
/// it cannot), and `make_room` frees.
fn full_disk(mount: &str, make_room: &str) {
    let Some((_t, src, mnt, out)) = scenario_dirs() else {
        return;
    };
    // Incompressible, so it does not fit in 6 MiB stored either.
    std::fs::write(src.join("big"), data(12 << 20, 5)).unwrap();
    std::fs::write(src.join("small"), data(10_000, 6)).unwrap();
    let script = format!(
        r#"
        {mount}
        export CAIRN_REPOSITORY="$MNT/repo" CAIRN_CACHE_DIR="$OUT/cache"
        "$BIN" -q init --kdf-memory-kib 1024 || exit 91
        "$BIN" -q backup "$SRC" 2> "$OUT/err"; echo $? > "$OUT/code"
        "$BIN" snapshots --json > "$OUT/snapshots" || exit 92
        ls -A "$MNT/repo/tmp" > "$OUT/tmp" || exit 93
        {make_room} || exit 94
        "$BIN" -q check --read-data 2> "$OUT/check" || exit 97
        "$BIN" -q backup "$SRC" || exit 95
        "$BIN" -q restore latest --target "$OUT/back" || exit 96
    "#
    );
    if !unshared(&script, &src, &mnt, &out) {
        return;
    }
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let err = read("err");
    assert_eq!(read("code").trim(), "1", "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(err.contains(&format!("{}/repo", mnt.display())), "{err}");
    assert!(err.contains("make room there"), "{err}");
    assert!(
        !err.contains("read error"),
        "an input file was blamed: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let snapshots: serde_json::Value = serde_json::from_str(&read("snapshots")).unwrap();
    assert_eq!(snapshots.as_array().map(Vec::len), Some(0), "{snapshots}");
    assert_eq!(read("tmp"), "", "a temporary pack was left behind");
    assert_eq!(
        read("check"),
        "",
        "check --read-data after the failed backup"
    );
    let back = out.join("back").join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(back.join("big")).unwrap(), data(12 << 20, 5));
    assert_eq!(std::fs::read(back.join("small")).unwrap(), data(10_000, 6));
}
