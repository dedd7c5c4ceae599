//! Restore and browse: partial restores, resume with --verify, --delete, --sparse, dump,
//! diff, find, stats.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{Repo, assert_same_tree, data};

fn tree(repo: &Repo) -> PathBuf {
    let src = repo.tmp.path().join("src");
    for d in ["db", "db/wal", "logs", "etcd"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("db/base.sql"), data(3 << 20, 1)).unwrap();
    std::fs::write(src.join("db/wal/0001"), data(500_000, 2)).unwrap();
    std::fs::write(src.join("logs/a.log"), data(200_000, 3)).unwrap();
    std::fs::write(src.join("logs/b.tmp"), b"temporary").unwrap();
    std::fs::write(src.join("etcd/member.db"), data(2 << 20, 4)).unwrap();
    src
}

fn restore_json(repo: &Repo, args: &[&str], target: &Path) -> serde_json::Value {
    let out = crate::common::run_ok(
        repo.cmd()
            .arg("--json")
            .arg("restore")
            .args(args)
            .arg("--target")
            .arg(target),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn include_and_exclude_restore_only_what_they_name() {
    let repo = Repo::new();
    let src = tree(&repo);
    repo.backup_json(&[src.as_os_str()]);
    let inner = |t: &Path| t.join(src.strip_prefix("/").unwrap());

    let t1 = repo.tmp.path().join("t1");
    let r = restore_json(&repo, &["latest", "--include", "db/**"], &t1);
    assert_eq!(
        std::fs::read(inner(&t1).join("db/wal/0001")).unwrap(),
        data(500_000, 2)
    );
    assert!(!inner(&t1).join("logs").exists() && !inner(&t1).join("etcd").exists());
    // Only what the included files need is read (ranged reads may span small gaps):
    // at most twice what was restored.
    let (fetched, written) = (
        r["bytes_fetched"].as_u64().unwrap(),
        r["bytes_written"].as_u64().unwrap(),
    );
    assert!(
        fetched <= 2 * written && fetched < repo.stored_bytes("data") * 3 / 4,
        "{r}"
    );

    let t2 = repo.tmp.path().join("t2");
    restore_json(
        &repo,
        &["latest", "--exclude", "*.tmp", "--exclude", "etcd"],
        &t2,
    );
    assert!(inner(&t2).join("logs/a.log").exists());
    assert!(!inner(&t2).join("logs/b.tmp").exists());
    assert!(!inner(&t2).join("etcd").exists());

    let t3 = repo.tmp.path().join("t3");
    restore_json(&repo, &["latest"], &t3);
    assert_same_tree(&src, &inner(&t3));
}

#[test]
fn verify_refetches_only_what_differs_and_delete_removes_extras() {
    let repo = Repo::new();
    let src = tree(&repo);
    repo.backup_json(&[src.as_os_str()]);
    let target = repo.tmp.path().join("t");
    let full = restore_json(&repo, &["latest"], &target);
    let full_fetched = full["bytes_fetched"].as_u64().unwrap();
    let inner = target.join(src.strip_prefix("/").unwrap());

    // An interrupted restore leaves a truncated file, a missing one and a damaged one.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(inner.join("db/base.sql"))
        .unwrap();
    f.set_len(1 << 20).unwrap();
    std::fs::remove_file(inner.join("logs/a.log")).unwrap();
    let mut member = std::fs::read(inner.join("etcd/member.db")).unwrap();
    member[1000] ^= 1;
    std::fs::write(inner.join("etcd/member.db"), &member).unwrap();
    std::fs::write(inner.join("stray-file"), b"not in the snapshot").unwrap();

    let again = restore_json(&repo, &["latest", "--verify", "--delete"], &target);
    assert_same_tree(&src, &inner);
    assert!(!inner.join("stray-file").exists());
    assert_eq!(again["deleted"], 1);
    // What remained: 2 MiB of base.sql, a.log, and one chunk of member.db (at most 512 KiB).
    let remained = (2u64 << 20) + 200_000 + (512 << 10);
    let fetched = again["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched <= remained + (1 << 20),
        "fetched {fetched} of {full_fetched}; about {remained} were missing"
    );

    // Without --verify a rerun skips files whose size and mtime already match.
    let third = restore_json(&repo, &["latest"], &target);
    assert_eq!(third["bytes_fetched"], 0, "{third}");
}

#[test]
fn killed_restore_rerun_completes() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("f{i}")), data(12 << 20, i)).unwrap();
    }
    repo.backup_json(&[src.as_os_str()]);
    let target = repo.tmp.path().join("t");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_REPOSITORY", &repo.path)
        .env("CAIRN_PASSWORD", crate::common::PASSWORD)
        .env("CAIRN_CACHE_DIR", repo.tmp.path().join("cache"))
        .args(["restore", "latest", "--connections", "1", "--target"])
        .arg(&target)
        .spawn()
        .unwrap();
    let inner = target.join(src.strip_prefix("/").unwrap());
    let started = std::time::Instant::now();
    loop {
        let written: u64 = std::fs::read_dir(&inner)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.metadata().map(|m| m.blocks() * 512).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if written > 20 << 20 || started.elapsed().as_secs() > 30 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    // What the killed restore had written; the rerun may fetch what remained, plus at
    // most one pack's worth (the bound) for blobs cut short at the kill.
    let written: u64 = std::fs::read_dir(&inner)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    e.metadata()
                        .map(|m| m.len().min(m.blocks() * 512))
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0);
    let r = restore_json(&repo, &["latest", "--verify"], &target);
    assert_same_tree(&src, &inner);
    let total: u64 = 8 * (12 << 20);
    let pack = 16 << 20;
    let fetched = r["bytes_fetched"].as_u64().unwrap();
    assert!(
        written > 0,
        "the first restore wrote nothing before the kill"
    );
    assert!(
        fetched < total - written + pack,
        "fetched {fetched} after {written} of {total} bytes were written: {r}"
    );
}

#[test]
fn sparse_restore_leaves_holes() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut v = vec![0u8; 16 << 20];
    v[5 << 20] = 7;
    std::fs::write(src.join("disk.img"), &v).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    let target = repo.tmp.path().join("t");
    restore_json(&repo, &["latest", "--sparse"], &target);
    let p = target.join(src.strip_prefix("/").unwrap()).join("disk.img");
    assert!(std::fs::read(&p).unwrap() == v);
    let m = std::fs::metadata(&p).unwrap();
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated for a file of zeros",
        m.blocks() * 512
    );
}

#[test]
fn dump_file_and_directory_match_the_source() {
    let repo = Repo::new();
    let src = tree(&repo);
    std::os::unix::fs::symlink("base.sql", src.join("db/link")).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    let out = repo
        .cmd()
        .arg("dump")
        .arg(format!("latest:{}/db/base.sql", src.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data(3 << 20, 1));

    let out = crate::common::run_ok(
        repo.cmd()
            .arg("dump")
            .arg(format!("latest:{}/db", src.display())),
    );
    let x = repo.tmp.path().join("untar");
    std::fs::create_dir(&x).unwrap();
    let mut tar = std::process::Command::new("tar")
        .arg("x")
        .arg("-C")
        .arg(&x)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &out.stdout).unwrap();
    drop(tar.stdin.take());
    assert!(tar.wait().unwrap().success());
    assert!(std::fs::read(x.join("db/wal/0001")).unwrap() == data(500_000, 2));
    assert_eq!(
        std::fs::read_link(x.join("db/link")).unwrap(),
        Path::new("base.sql")
    );

    // The same directory as zip: every file, mode and the symlink.
    let out = crate::common::run_ok(
        repo.cmd()
            .args(["dump", "--archive", "zip"])
            .arg(format!("latest:{}/db", src.display())),
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(out.stdout)).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["db/base.sql", "db/link", "db/wal/", "db/wal/0001"]);
    for (name, want) in [
        ("db/base.sql", data(3 << 20, 1)),
        ("db/wal/0001", data(500_000, 2)),
    ] {
        let mut f = zip.by_name(name).unwrap();
        let mode = std::fs::metadata(src.join(name)).unwrap().mode() & 0o7777;
        assert_eq!(f.unix_mode().map(|m| m & 0o7777), Some(mode), "{name}");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert!(got == want, "{name} differs");
    }
    let link = zip.by_name("db/link").unwrap();
    assert!(link.is_symlink());
}

#[test]
fn diff_lists_exactly_the_changes_and_find_and_stats_work() {
    let repo = Repo::new();
    let src = tree(&repo);
    let first = repo.backup_json(&[src.as_os_str()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(src.join("db/wal/0002"), b"new wal segment").unwrap();
    std::fs::remove_file(src.join("logs/b.tmp")).unwrap();
    std::fs::write(src.join("etcd/member.db"), data(2 << 20, 99)).unwrap();
    let second = repo.backup_json(&[src.as_os_str()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let out = repo
        .cmd()
        .args(["--json", "diff", &first, &second])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut changes: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changes.sort();
    let p = |s: &str| format!("{}/{s}", src.display());
    assert_eq!(
        changes,
        vec![
            ("Added".to_string(), p("db/wal/0002")),
            ("Modified".to_string(), p("etcd/member.db")),
            ("Removed".to_string(), p("logs/b.tmp")),
        ]
    );

    let out = repo
        .cmd()
        .args(["--json", "find", "*.tmp"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v.as_array().unwrap();
    assert_eq!(hits.len(), 1, "{v}");
    assert_eq!(hits[0]["snapshot"], first.as_str());

    let out = repo
        .cmd()
        .args(["--json", "stats", "--mode", "raw-data"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"], 2);
    // Two snapshots sharing all but the rewritten member.db: 11.9 MB restore from 8 MB.
    assert!(v["dedup_ratio"].as_f64().unwrap() > 1.4, "{v}");
}

/// What a target already holds never leads a restore outside it or into other files: a
/// symlink or a file where the snapshot has a directory is replaced, a file with a hard
/// link from outside is replaced rather than written through, and `--delete` leaves
/// excluded paths alone.
#[test]
fn restore_over_an_existing_target_stays_inside_it() {
    let repo = Repo::new();
    let src = tree(&repo);
    repo.backup_json(&[src.as_os_str()]);
    let target = repo.tmp.path().join("t");
    let inner = target.join(src.strip_prefix("/").unwrap());
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"precious").unwrap();
    std::fs::write(outside.join("linked"), b"also precious").unwrap();
    let before = std::fs::metadata(&outside).unwrap().mode();

    std::fs::create_dir_all(&inner).unwrap();
    std::os::unix::fs::symlink(&outside, inner.join("db")).unwrap();
    std::fs::write(inner.join("logs"), b"a file where a directory goes").unwrap();
    std::fs::create_dir_all(inner.join("etcd")).unwrap();
    std::fs::hard_link(outside.join("linked"), inner.join("etcd/member.db")).unwrap();
    restore_json(&repo, &["latest", "--delete"], &target);

    assert_same_tree(&src, &inner);
    assert!(
        !std::fs::symlink_metadata(inner.join("db"))
            .unwrap()
            .is_symlink()
    );
    let mut names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["keep", "linked"]);
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"precious");
    assert_eq!(
        std::fs::read(outside.join("linked")).unwrap(),
        b"also precious"
    );
    assert_eq!(std::fs::metadata(&outside).unwrap().mode(), before);

    // A complete file with a name outside too keeps that name's metadata: it is
    // replaced, not chmod-ed through the link.
    let alias = outside.join("alias");
    std::fs::hard_link(inner.join("logs/a.log"), &alias).unwrap();
    std::fs::set_permissions(&alias, std::fs::Permissions::from_mode(0o600)).unwrap();
    restore_json(&repo, &["latest"], &target);
    assert_eq!(std::fs::metadata(&alias).unwrap().mode() & 0o7777, 0o600);
    assert_same_tree(&src, &inner);

    // --delete with --exclude: what the patterns name is neither restored nor removed,
    // also where the snapshot does not have it.
    std::fs::write(inner.join("etcd/local-only"), b"not in the snapshot").unwrap();
    std::fs::write(inner.join("logs/stray"), b"not in the snapshot").unwrap();
    std::fs::write(inner.join("logs/x.keep"), b"not in the snapshot").unwrap();
    let r = restore_json(
        &repo,
        &[
            "latest",
            "--delete",
            "--exclude",
            "etcd",
            "--exclude",
            "*.keep",
        ],
        &target,
    );
    assert!(inner.join("etcd/local-only").exists() && inner.join("etcd/member.db").exists());
    assert!(inner.join("logs/x.keep").exists());
    assert!(!inner.join("logs/stray").exists());
    assert_eq!(r["deleted"], 1, "{r}");
}

/// A file whose content failed is not given the snapshot's size and time, so a rerun
/// after the repository is mended writes it again instead of taking it for complete.
#[test]
fn a_file_that_failed_is_written_again_by_a_rerun() {
    let repo = Repo::new();
    let src = tree(&repo);
    repo.backup_json(&[src.as_os_str()]);
    // Every pack of data blobs is put away (the trees stay).
    let data_packs: Vec<String> = repo
        .index_files_json()
        .iter()
        .flat_map(|i| i["packs"].as_array().unwrap().clone())
        .filter(|p| p["blobs"][0]["ty"] == "Data")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let packs: Vec<PathBuf> = repo
        .packs()
        .into_iter()
        .filter(|p| data_packs.iter().any(|d| p.ends_with(d)))
        .collect();
    assert!(!packs.is_empty());
    let aside = repo.tmp.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    for p in &packs {
        std::fs::rename(p, aside.join(p.file_name().unwrap())).unwrap();
    }
    let target = repo.tmp.path().join("t");
    let out = repo.restore_output("latest", &target);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &packs {
        std::fs::rename(aside.join(p.file_name().unwrap()), p).unwrap();
    }
    restore_json(&repo, &["latest"], &target);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}
