//! Backup and restore round trips through the binary.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::common::{Repo, assert_same_tree, awkward_tree, data};

#[test]
fn awkward_tree_round_trips_with_metadata() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    awkward_tree(&src, 100 << 20);
    let summary = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(summary["complete"], true, "{summary}");

    assert_same_tree(&src, &repo.restore_latest(&src));

    // ls shows the odd names, byte for byte.
    let out = repo.cmd().args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success());
    let listing = out.stdout;
    let needle = b"latin1-\xe9t\xe9.txt";
    assert!(
        listing.windows(needle.len()).any(|w| w == needle),
        "non-UTF-8 name missing from ls"
    );
}

#[test]
fn partial_restore_of_a_sub_path() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(src.join("keep/inner")).unwrap();
    std::fs::create_dir_all(src.join("skip")).unwrap();
    std::fs::write(src.join("keep/inner/a"), data(300_000, 5)).unwrap();
    std::fs::write(src.join("skip/b"), b"not wanted").unwrap();
    repo.backup_json(&[src.as_os_str()]);
    let target = repo.tmp.path().join("restore");
    let spec = format!("latest:{}", src.join("keep").display());
    repo.cmd()
        .args(["restore", &spec, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(target.join("inner/a")).unwrap(),
        data(300_000, 5)
    );
    assert!(!target.join("skip").exists());
}

#[test]
fn stdin_round_trip_of_200_mib() {
    let repo = Repo::new();
    let input = data(200 << 20, 9);
    let out = crate::common::run_ok(
        repo.cmd()
            .args([
                "backup",
                "--json",
                "--stdin",
                "--stdin-name",
                "harbor/registry.sql",
            ])
            .write_stdin(input.clone()),
    );
    let summary = crate::common::last_json_line(&out.stdout);
    assert_eq!(summary["summary"]["bytes_read"], 200u64 << 20);

    let ls = repo.cmd().args(["ls", "latest"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "/harbor\n/harbor/registry.sql\n"
    );

    let target = repo.tmp.path().join("out");
    repo.cmd()
        .args(["restore", "latest:/harbor/registry.sql", "--target"])
        .arg(&target)
        .assert()
        .success();
    let back = std::fs::read(target.join("registry.sql")).unwrap();
    assert!(back == input, "restored stream differs");
}

#[test]
fn unchanged_second_backup_adds_under_one_percent() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..200u64 {
        std::fs::write(
            src.join(format!("f{i}")),
            data(40_000 + i as usize * 500, i),
        )
        .unwrap();
    }
    std::fs::write(src.join("big"), data(20 << 20, 77)).unwrap();
    let first = repo.backup_json(&[src.as_os_str()]);
    let after_first = repo.stored_bytes("");
    let second = repo.backup_json(&[src.as_os_str()]);
    let added = repo.stored_bytes("") - after_first;
    let first_added = first["summary"]["bytes_added"].as_u64().unwrap();
    assert!(first_added > 20 << 20);
    assert!(
        (added as f64) < 0.01 * after_first as f64,
        "second backup grew the repository by {added} bytes (first: {after_first})"
    );
    assert_eq!(second["summary"]["data_blobs_added"], 0);
}

#[test]
fn snapshots_json_lists_tags_and_paths() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("x"), b"x").unwrap();
    repo.cmd()
        .arg("backup")
        .arg(&src)
        .args(["--tag", "nightly", "--host", "nexus-0"])
        .assert()
        .success();
    let out = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v[0]["snapshot"];
    assert_eq!(s["tags"][0], "nightly");
    assert_eq!(s["host"], "nexus-0");
    assert_eq!(s["paths"][0], src.to_str().unwrap());
    assert_eq!(s["complete"], true);
    assert_eq!(v[0]["id"].as_str().unwrap().len(), 64);
}

#[test]
fn cat_shows_every_object_kind() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), b"hello cat").unwrap();
    let s = repo.backup_json(&[src.as_os_str()]);
    let snap = s["snapshot_id"].as_str().unwrap().to_string();

    let cfg = repo.cmd().args(["cat", "config"]).output().unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert_eq!(cfg["pack_size"], 16 << 20);

    let out = repo
        .cmd()
        .args(["cat", "snapshot", &snap[..8]])
        .output()
        .unwrap();
    let sv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tree = sv["snapshot"]["tree"].as_str().unwrap().to_string();

    let out = repo.cmd().args(["cat", "blob", &tree]).output().unwrap();
    assert!(out.status.success());
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t[0]["name"], "tmp");

    // A slow backup may index its data pack and its tree pack in separate files.
    let indexes = repo.index_files_json();
    assert!(!indexes.is_empty());
    let packs: Vec<serde_json::Value> = indexes
        .iter()
        .flat_map(|iv| iv["packs"].as_array().unwrap().clone())
        .collect();
    let pack = packs[0]["id"].as_str().unwrap().to_string();
    let out = repo.cmd().args(["cat", "pack", &pack]).output().unwrap();
    let pv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!pv["blobs"].as_array().unwrap().is_empty());

    // Find the data blob of "file" through the index and print it raw.
    let data_blob = packs
        .iter()
        .flat_map(|p| p["blobs"].as_array().unwrap().clone())
        .find(|b| b["ty"] == "Data")
        .expect("a data blob in some index file");
    let out = repo
        .cmd()
        .args(["cat", "blob", data_blob["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hello cat");
    let _ = OsStr::from_bytes(b"");
}
