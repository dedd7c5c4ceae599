//! Backup behaviour: parent detection, streams from commands, selection, dry runs, and
//! inputs that fail while being read.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Repo, data, last_json_line, run_ok};

#[test]
fn touching_one_file_in_20k_reads_one_file() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    let first = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(first["summary"]["files_new"], 20_000);
    let unchanged = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(
        unchanged["summary"]["files_unmodified"], 20_000,
        "{unchanged}"
    );
    assert_eq!(unchanged["summary"]["bytes_read"], 0);
    // Unchanged trees keep their ids; only the chain of ancestors above the source
    // (`/`, `/tmp`, whose times other processes change) may get new trees.
    let depth = src.components().count() as u64 - 1;
    assert!(
        unchanged["summary"]["tree_blobs_added"].as_u64().unwrap() <= depth,
        "{unchanged}"
    );
    assert_eq!(unchanged["parent"], first["snapshot_id"]);

    std::fs::write(src.join("d042/f042"), "changed content").unwrap();
    let s = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(s["summary"]["files_changed"], 1, "{s}");
    assert_eq!(s["summary"]["files_new"], 0);
    assert_eq!(s["summary"]["files_unmodified"], 19_999);
    assert_eq!(s["summary"]["bytes_read"], "changed content".len());

    // The changed directory's new tree held a blob that was still pending when it was
    // written, so it was not marked complete; the next backup checks its blobs once more
    // and still reads nothing.
    let again = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(again["summary"]["files_unmodified"], 20_000, "{again}");
    assert_eq!(again["summary"]["bytes_read"], 0);

    // --force reads everything again.
    let forced = repo
        .cmd()
        .args(["backup", "--json", "--force"])
        .arg(&src)
        .output()
        .unwrap();
    let forced = last_json_line(&forced.stdout);
    assert_eq!(forced["summary"]["files_unmodified"], 0);
    assert_eq!(forced["summary"]["data_blobs_added"], 0);
}

#[test]
fn the_parent_is_the_latest_snapshot_of_this_host_and_paths_that_still_exists() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    let other = repo.tmp.path().join("other");
    for d in [&src, &other] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
    }
    let a = repo.backup_json(&[src.as_os_str()]);
    repo.backup_json(&[other.as_os_str()]);
    let b = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(b["parent"], a["snapshot_id"]);
    // The index cache knows b's head now; a forgotten b is not a parent any more.
    run_ok(
        repo.cmd()
            .args(["forget", b["snapshot_id"].as_str().unwrap()]),
    );
    let c = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(c["parent"], a["snapshot_id"], "{c}");
    let elsewhere = repo.backup_json(&[
        OsStr::new("--host"),
        OsStr::new("elsewhere"),
        src.as_os_str(),
    ]);
    assert!(elsewhere["parent"].is_null(), "{elsewhere}");
    let d = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(d["parent"], c["snapshot_id"]);
    // Without the cache the same parent is found.
    std::fs::remove_dir_all(repo.tmp.path().join("cache")).unwrap();
    let e = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(e["parent"], d["snapshot_id"]);
}

/// The library's view of a repository, with a cache of its own.
fn lib(repo: &Repo) -> cairn::IndexedRepository {
    let store = cairn::backend::open(
        repo.path.to_str().unwrap(),
        false,
        &cairn::backend::S3Options::with_defaults(),
    )
    .unwrap();
    let opts = cairn::repository::RepoOptions {
        cache_dir: Some(tempfile::tempdir_in(repo.tmp.path()).unwrap().keep()),
        connections: 4,
    };
    cairn::Repository::open(store, crate::common::PASSWORD.as_bytes(), opts)
        .unwrap()
        .into_indexed()
        .unwrap()
}

/// The CLI's index cache of `repo` (`cache/<repository id>/index-v1`).
fn cli_index_cache(repo: &Repo) -> cairn::repository::IndexCache {
    let root = repo.tmp.path().join("cache");
    let dirs: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1);
    cairn::repository::IndexCache::open(&dirs[0].path().join("index-v1")).unwrap()
}

#[test]
fn a_file_whose_blob_left_the_index_is_read_again_in_an_unchanged_directory() {
    use cairn::format::{BlobType, NodeKind};
    use cairn::ops::walk;
    use std::collections::HashSet;

    let repo = Repo::with_small_packs();
    let src = repo.tmp.path().join("src");
    let dir = src.join("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big"), data(3 << 20, 1)).unwrap();
    for i in 0..20 {
        std::fs::write(dir.join(format!("s{i:02}")), data(3000, 100 + i)).unwrap();
    }
    repo.backup_json(&[src.as_os_str()]);
    // The second backup finds every blob indexed and marks the trees complete in its
    // index cache; the third finds the marks.
    for _ in 0..2 {
        let s = repo.backup_json(&[src.as_os_str()]);
        assert_eq!(s["summary"]["files_unmodified"], 21, "{s}");
    }
    let lib = lib(&repo);
    let (_, snap) = lib.find_snapshot("latest").unwrap();
    let node = |p: &std::path::Path| walk::find_node(&lib, &snap.tree, p).unwrap().unwrap();
    let NodeKind::Dir { subtree } = node(&dir).kind else {
        panic!("not a directory")
    };
    let cache = cli_index_cache(&repo);
    assert!(cache.tree_complete(&subtree).unwrap());
    // (Not the root: `/` and the temporary directories above the source change while
    // other tests run, and a tree written by this backup is marked by the next one.)
    let NodeKind::Dir { subtree: src_tree } = node(&src).kind else {
        panic!("not a directory")
    };
    assert!(cache.tree_complete(&src_tree).unwrap());
    drop(cache);

    // The packs holding the big file's blobs leave the index, as when a prune removed
    // them or their index file was lost; the directory's tree stays indexed (trees are
    // in packs of their own).
    let content = |p: &std::path::Path| match node(p).kind {
        NodeKind::File { content } => content,
        _ => panic!("not a file"),
    };
    let gone: HashSet<cairn::PackId> = content(&dir.join("big"))
        .iter()
        .map(|b| lib.locate(BlobType::Data, b).unwrap().pack)
        .collect();
    let mut affected = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if content(&p)
            .iter()
            .any(|b| gone.contains(&lib.locate(BlobType::Data, b).unwrap().pack))
        {
            affected += 1;
        }
    }
    let index_dir = repo.path.join("index");
    let mut packs = Vec::new();
    let mut old = Vec::new();
    for e in std::fs::read_dir(&index_dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        let file: cairn::format::IndexFile =
            cairn::format::open_object(lib.key(), cairn::format::aad::INDEX, "index", &bytes)
                .unwrap();
        packs.extend(file.packs.into_iter().filter(|p| !gone.contains(&p.id)));
        old.push(p);
    }
    lib.block_on(lib.save_index(&cairn::format::IndexFile::new(packs)))
        .unwrap();
    for p in old {
        std::fs::remove_file(p).unwrap();
    }
    for p in &gone {
        let hex = p.to_hex();
        std::fs::remove_file(repo.path.join("data").join(&hex[..2]).join(&hex)).unwrap();
    }
    drop(lib);
    assert!(lib_contains_tree(&repo, &subtree));

    let s = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(s["summary"]["files_changed"], affected, "{s}");
    assert_eq!(s["summary"]["files_unmodified"], 21 - affected, "{s}");
    assert!(
        s["summary"]["bytes_read"].as_u64().unwrap() >= 3 << 20,
        "{s}"
    );
    // Same content, same tree: the directory is unchanged, its big file stored anew.
    let lib = self::lib(&repo);
    let (_, snap) = lib.find_snapshot("latest").unwrap();
    let NodeKind::Dir { subtree: now } = walk::find_node(&lib, &snap.tree, &dir)
        .unwrap()
        .unwrap()
        .kind
    else {
        panic!("not a directory")
    };
    assert_eq!(now, subtree);
    drop(lib);
    run_ok(repo.cmd().args(["check", "--read-data"]));
    let back = repo.restore_latest(&src);
    assert_eq!(std::fs::read(back.join("d/big")).unwrap(), data(3 << 20, 1));
}

/// Trees go through one packer: a backup of many directories read side by side stores
/// its trees in one pack (they fit), not in one partly filled pack per thread.
#[test]
fn a_backup_keeps_its_trees_in_one_pack() {
    use cairn::format::{BlobType, NodeKind};
    use cairn::ops::walk;
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    for d in 0..1000 {
        let dir = src.join(format!("d{:02}/e{d:03}", d % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), d.to_string()).unwrap();
    }
    repo.backup_json(&[src.as_os_str()]);
    let lib = lib(&repo);
    let (_, snap) = lib.find_snapshot("latest").unwrap();
    let mut packs = std::collections::BTreeSet::new();
    packs.insert(lib.locate(BlobType::Tree, &snap.tree).unwrap().pack);
    let mut trees = 1;
    walk::walk(&lib, &snap.tree, std::path::Path::new("/"), &mut |_, n| {
        if let NodeKind::Dir { subtree } = &n.kind {
            packs.insert(lib.locate(BlobType::Tree, subtree).unwrap().pack);
            trees += 1;
        }
        Ok(true)
    })
    .unwrap();
    assert!(trees > 1000, "{trees} trees");
    assert_eq!(packs.len(), 1, "{trees} trees in packs {packs:?}");
}

fn lib_contains_tree(repo: &Repo, id: &cairn::BlobId) -> bool {
    lib(repo)
        .index()
        .contains(cairn::format::BlobType::Tree, id)
        .unwrap()
}

#[test]
fn failing_command_writes_no_complete_snapshot_and_exits_1() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "db/x.sql",
            "--",
            "sh",
            "-c",
            "echo partial; echo oops >&2; exit 2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("status 2") && err.contains("oops"), "{err}");
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|s| s["snapshot"]["complete"] == false),
        "{v}"
    );

    // Killed by a signal: also no snapshot.
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo x; kill -9 $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signal 9"));
}

/// An empty stream (a failed `pg_dump` in a pipe without pipefail, a closed stdin, a
/// command that printed nothing) is stored but not counted as complete: exit 3.
#[test]
fn an_empty_stream_is_an_incomplete_snapshot() {
    let repo = Repo::new();
    let piped = repo
        .cmd_std()
        .args(["backup", "--stdin", "--stdin-name", "harbor/registry.sql"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let command = repo
        .cmd()
        .args(["backup", "--stdin-from-command", "--", "true"])
        .output()
        .unwrap();
    for out in [piped, command] {
        assert_eq!(out.status.code(), Some(3));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("stream was empty") && err.contains("pipefail"),
            "{err}"
        );
    }
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter().all(|s| s["snapshot"]["complete"] == false),
        "{v}"
    );
}

/// A producer that leaves a process behind holding its stderr (`cmd &` in a wrapper)
/// does not keep the backup waiting once it has exited.
#[test]
fn a_background_process_holding_stderr_does_not_hold_the_backup() {
    let repo = Repo::new();
    let pid_file = repo.tmp.path().join("pid");
    let script = format!(
        "sleep 300 > /dev/null & echo $! > {}; echo data; echo last words >&2",
        pid_file.display()
    );
    let started = std::time::Instant::now();
    let out = repo
        .cmd()
        .args(["backup", "--json", "--stdin-from-command", "--", "sh", "-c"])
        .arg(&script)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let waited = started.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(waited < std::time::Duration::from_secs(120), "{waited:?}");
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let tail = v[0]["snapshot"]["stream"]["stderr_tail"].as_str().unwrap();
    assert!(tail.contains("last words"), "{v}");
}

#[test]
fn command_output_is_stored_with_its_provenance() {
    let repo = Repo::new();
    let out = repo
        .cmd()
        .args([
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-name",
            "harbor/registry.sql",
            "--",
        ])
        .args(["sh", "-c", "seq 1 100000; echo done >&2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let stream = &v[0]["snapshot"]["stream"];
    assert_eq!(stream["exit_code"], 0);
    assert_eq!(stream["command"][0], "sh");
    assert_eq!(stream["stderr_tail"], "done\n");
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(stream["bytes"], expected.len());
    let target = repo.tmp.path().join("out");
    repo.cmd()
        .args(["restore", "latest:/harbor/registry.sql", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(target.join("registry.sql")).unwrap(),
        expected
    );
}

#[test]
fn excludes_and_files_from() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    for p in ["logs", "cache", "keep", "skipme", "Upper"] {
        std::fs::create_dir_all(src.join(p)).unwrap();
    }
    for (p, c) in [
        ("logs/a.tmp", "tmp"),
        ("logs/a.log", "log"),
        ("cache/x", "cached"),
        ("keep/k", "kept"),
        ("skipme/.nobackup", ""),
        ("skipme/data", "skipped"),
        ("Upper/FILE.BAK", "bak"),
    ] {
        std::fs::write(src.join(p), c).unwrap();
    }
    let pats = repo.tmp.path().join("patterns");
    std::fs::write(&pats, "# comment\n\ncache\n").unwrap();
    let list = repo.tmp.path().join("list");
    // Windows line ends are taken; NUL-separated lists are refused, naming the line.
    std::fs::write(&list, format!("# sources\r\n{}\r\n", src.display())).unwrap();
    let nul = repo.tmp.path().join("nul-list");
    std::fs::write(&nul, format!("{}\0{}\0", src.display(), src.display())).unwrap();
    let out = repo
        .cmd()
        .arg("backup")
        .arg("--files-from")
        .arg(&nul)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("NUL"), "{err}");
    crate::common::run_ok(
        repo.cmd()
            .args([
                "backup",
                "--json",
                "--exclude",
                "logs/*.tmp",
                "--iexclude",
                "*.bak",
                "--exclude-if-present",
                ".nobackup",
            ])
            .arg("--exclude-file")
            .arg(&pats)
            .arg("--files-from")
            .arg(&list),
    );
    let ls = repo
        .cmd()
        .args(["ls", "--recursive", "latest"])
        .arg(&src)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    let names: Vec<&str> = ls
        .lines()
        .map(|l| l.strip_prefix(src.to_str().unwrap()).unwrap_or(l))
        .collect();
    assert_eq!(
        names,
        ["", "/Upper", "/keep", "/keep/k", "/logs", "/logs/a.log"],
        "{ls}"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(1 << 20, 3)).unwrap();
    let before = repo.stored_bytes("");
    let out = repo
        .cmd()
        .args(["backup", "--json", "--dry-run"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = last_json_line(&out.stdout);
    assert_eq!(s["dry_run"], true);
    assert!(s["snapshot_id"].is_null());
    assert!(s["summary"]["bytes_added"].as_u64().unwrap() > 1 << 20);
    assert_eq!(repo.stored_bytes(""), before);
}

#[test]
fn missing_source_is_named_and_exits_3() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok"), "fine").unwrap();
    let gone = repo.tmp.path().join("vanished");
    let out = repo
        .cmd()
        .arg("backup")
        .arg(&src)
        .arg(&gone)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vanished"));
    // Not a terminal (cron mail, `kubectl logs`): no colour codes around the warning.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let v: serde_json::Value = serde_json::from_slice(
        &repo
            .cmd()
            .args(["snapshots", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v[0]["snapshot"]["complete"], false);
    assert!(
        v[0]["snapshot"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("vanished")
    );
    // A restore of it says that it is incomplete, and where the list is.
    let out = repo.restore_output("latest", &repo.tmp.path().join("r"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is incomplete"), "{err}");
    let cat = err.split('`').nth(1).unwrap().to_string();
    let args: Vec<&str> = cat.split_whitespace().skip(1).collect();
    let listed = crate::common::run_ok(repo.cmd().args(&args));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("vanished"));
}

#[test]
fn no_source_existing_fails_without_a_snapshot() {
    let repo = Repo::new();
    let a = repo.tmp.path().join("nexus-dta");
    let b = repo.tmp.path().join("file/under/nothing");
    let out = repo.cmd().arg("backup").arg(&a).arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nexus-dta")
            && stderr.contains("nothing")
            && stderr.contains("no snapshot"),
        "{stderr}"
    );
    let out = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    // One path there is enough for a snapshot; the other is named, under a directory
    // that is not there either, and the snapshot is incomplete (exit 3).
    std::fs::create_dir(&a).unwrap();
    let out = repo.cmd().arg("backup").arg(&a).arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("file/under/nothing"), "{stderr}");
}

/// A source given inside another is backed up although an exclude pattern or marker
/// names it, and it does not stop the next backup from finding its parent; an exclude
/// that leaves out a directory above it stops the backup before it starts.
#[test]
fn a_source_inside_another_is_backed_up_as_given() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(src.join("cache/keep")).unwrap();
    std::fs::create_dir_all(src.join("skip")).unwrap();
    std::fs::write(src.join("cache/keep/f"), b"kept").unwrap();
    std::fs::write(src.join("cache/junk"), b"junk").unwrap();
    std::fs::write(src.join("skip/.nobackup"), b"").unwrap();
    std::fs::write(src.join("skip/g"), b"marked, but named").unwrap();
    std::fs::write(src.join("x.tmp"), b"excluded, but named").unwrap();
    let a: Vec<std::ffi::OsString> = vec![
        "--exclude-if-present".into(),
        ".nobackup".into(),
        "--exclude".into(),
        "*.tmp".into(),
        src.clone().into(),
        src.join("skip").into(),
        src.join("x.tmp").into(),
    ];
    let argv: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
    let first = repo.backup_json(&argv);
    assert_eq!(first["summary"]["files_new"], 5, "{first}");
    let restored = repo.restore_latest(&src);
    assert_eq!(
        std::fs::read(restored.join("skip/g")).unwrap(),
        b"marked, but named"
    );
    assert_eq!(
        std::fs::read(restored.join("x.tmp")).unwrap(),
        b"excluded, but named"
    );
    let second = repo.backup_json(&argv);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(second["summary"]["bytes_read"], 0, "{second}");

    let out = repo
        .cmd()
        .args(["backup", "--exclude"])
        .arg(src.join("cache"))
        .arg(&src)
        .arg(src.join("cache/keep"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cache/keep") && err.contains("exclude"),
        "{err}"
    );
}

/// A symlink on the way to a source is stored as the directory it leads to: restored
/// with that directory's mode, not the link's 0777.
#[test]
fn a_symlink_above_a_source_is_stored_as_its_directory() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::new();
    let real = repo.tmp.path().join("real");
    std::fs::create_dir_all(real.join("nexus")).unwrap();
    std::fs::write(real.join("nexus/blob"), b"artifact").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o750)).unwrap();
    let lnk = repo.tmp.path().join("lnk");
    std::os::unix::fs::symlink(&real, &lnk).unwrap();
    repo.backup_json(&[lnk.join("nexus").as_os_str()]);
    let restored = repo.restore_latest(&lnk);
    let m = std::fs::symlink_metadata(&restored).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        std::fs::read(restored.join("nexus/blob")).unwrap(),
        b"artifact"
    );
}

/// A symlink given as a source is stored as the link, with a warning; given as `link/`,
/// the directory it leads to is backed up.
#[test]
fn a_symlink_source_with_a_trailing_slash_is_followed() {
    let repo = Repo::new();
    let real = repo.tmp.path().join("data");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("f"), b"content").unwrap();
    let link = repo.tmp.path().join("current");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = repo.backup_output(&[link.as_os_str()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a symlink") && err.contains("current/"),
        "{err}"
    );

    let slash = format!("{}/", link.display());
    let v = repo.backup_json(&[std::ffi::OsStr::new(&slash)]);
    assert_eq!(v["summary"]["files_new"], 1, "{v}");
    let restored = repo.restore_latest(&real);
    assert_eq!(std::fs::read(restored.join("f")).unwrap(), b"content");
}

/// A source inside another that the walk cannot reach (here behind a symlink inside the
/// outer source) is named, and the snapshot is incomplete (exit 3).
#[test]
fn a_source_the_outer_walk_cannot_reach_is_named() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("s");
    let real = repo.tmp.path().join("real");
    std::fs::create_dir_all(real.join("db")).unwrap();
    std::fs::write(real.join("db/f"), b"data").unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink(&real, src.join("data")).unwrap();
    let out = repo
        .cmd()
        .arg("backup")
        .arg(&src)
        .arg(src.join("data/db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data/db") && err.contains("not reached"),
        "{err}"
    );
}

/// `backup -x SRC SRC/mnt`: a mount point given as a source is walked on its own file
/// system (needs root and a mount namespace; skipped without).
#[test]
fn one_file_system_backs_up_a_mount_point_given_as_a_source() {
    if !crate::common::can_mount() {
        return;
    }
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(src.join("mnt")).unwrap();
    std::fs::create_dir_all(src.join("other")).unwrap();
    std::fs::write(src.join("top"), b"top").unwrap();
    let script = r#"mount -t tmpfs tmpfs "$SRC/mnt" && mount -t tmpfs tmpfs "$SRC/other" &&
        echo important > "$SRC/mnt/important" && echo elsewhere > "$SRC/other/f" &&
        "$CAIRN" backup -x "$SRC" "$SRC/mnt""#;
    let cairn = repo.cmd_std();
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .envs(cairn.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("SRC", &src)
        .env("CAIRN", env!("CARGO_BIN_EXE_cairn"))
        .output()
        .unwrap();
    crate::common::succeeded(out);
    let restored = repo.restore_latest(&src);
    assert_eq!(
        std::fs::read(restored.join("mnt/important")).unwrap(),
        b"important\n"
    );
    assert!(restored.join("other").is_dir() && !restored.join("other/f").exists());
    assert_eq!(std::fs::read(restored.join("top")).unwrap(), b"top");
}

/// Runs cairn as `nobody` so that a mode-000 file is really unreadable.
#[test]
fn unreadable_file_is_named_exit_3_rest_restorable() {
    if !crate::common::is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable"), "yes").unwrap();
    std::fs::write(src.join("secret"), "no").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Let `nobody` reach the repository, cache and sources.
    let chmod = |p: &std::path::Path| {
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(p)
            .status()
            .unwrap()
    };
    chmod(repo.tmp.path());
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_cairn"),
            "backup",
        ])
        .arg(&src)
        .env("CAIRN_REPOSITORY", &repo.path)
        .env("CAIRN_PASSWORD", crate::common::PASSWORD)
        .env("CAIRN_CACHE_DIR", repo.tmp.path().join("cache-nobody"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
    let restored = repo.restore_latest(&src);
    assert_eq!(
        std::fs::read_to_string(restored.join("readable")).unwrap(),
        "yes"
    );
    assert!(!restored.join("secret").exists());
}

/// A small file (read whole, up to the size its stat gave) that grows while it is backed
/// up is named, and what was stored of it is its beginning.
#[test]
fn a_small_file_growing_during_backup_is_named() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let log = src.join("small.log");
    std::fs::write(&log, b"start\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            // A byte every few tens of microseconds, for many seconds (a busy test
            // machine starts the backups late), staying far below the largest chunk so
            // the file is read whole.
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 300_000 {
                f.write_all(b"x").unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(10));
            }
        })
    };
    // Each backup names the file only when a byte lands between its stat and the check
    // after reading: a matter of tens of microseconds, so it may take many tries.
    let mut named = false;
    for _ in 0..200 {
        if writer.is_finished() {
            break;
        }
        let out = repo.backup_output(&[src.as_os_str()]);
        let s = last_json_line(&out.stdout);
        let problems = s["problems"].as_array().unwrap();
        if out.status.code() == Some(3) {
            assert!(
                problems
                    .iter()
                    .any(|p| p["path"].as_str().unwrap().ends_with("small.log")
                        && p["message"]
                            .as_str()
                            .unwrap()
                            .contains("changed while being read")),
                "{s:#}"
            );
            named = true;
            break;
        }
        assert_eq!(out.status.code(), Some(0), "{s:#}");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(named, "no backup named a file appended to all the time");
    let restored = std::fs::read(repo.restore_latest(&src).join("small.log")).unwrap();
    let now = std::fs::read(&log).unwrap();
    assert!(restored.len() > 5 && now.starts_with(&restored));
}

#[test]
fn files_changing_during_backup_are_named_and_the_rest_restores() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("static-{i:02}")), data(200_000, i)).unwrap();
    }
    for i in 0..200 {
        std::fs::write(src.join(format!("del-{i:03}")), data(10_000, 1000 + i)).unwrap();
    }
    std::fs::write(src.join("growing.log"), data(64 << 20, 7)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (src, stop) = (src.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(src.join("growing.log"))
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'x'; 4096]).unwrap();
                let _ = std::fs::remove_file(src.join(format!("del-{:03}", i % 200)));
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = repo.backup_output(&[src.as_os_str()]);
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = last_json_line(&out.stdout);
    let problems: Vec<String> = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.ends_with("growing.log")),
        "{problems:?}"
    );
    let restored = repo.restore_latest(&src);
    for i in 0..40 {
        assert_eq!(
            std::fs::read(restored.join(format!("static-{i:02}"))).unwrap(),
            data(200_000, i)
        );
    }
    // Every deletable file that was stored and not named is intact.
    for i in 0..200 {
        let p = restored.join(format!("del-{i:03}"));
        if p.exists() && !problems.iter().any(|q| q.ends_with(&format!("del-{i:03}"))) {
            assert_eq!(std::fs::read(&p).unwrap(), data(10_000, 1000 + i));
        }
    }
    let _ = OsStr::new("");
}
