//! `cairn copy` to a second repository with other keys: from a local repository to the
//! S3 server and back to another local one; everything restores identical, a rerun
//! copies nothing, and a later snapshot adds only what changed.

use crate::common::s3::{S3Server, SECRET};
use crate::common::{PASSWORD, Repo, assert_same_tree, awkward_tree, data, run_ok};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn copy_to_s3_and_back_restores_identical_and_resumes() {
    let src_repo = Repo::new();
    let src = src_repo.tmp.path().join("src");
    awkward_tree(&src, 300_000);
    run_ok(src_repo.cmd().args(["backup", "--tag", "t1"]).arg(&src));
    std::fs::write(src.join("added.bin"), data(2_000_000, 77)).unwrap();
    run_ok(src_repo.cmd().arg("backup").arg(&src));

    let server = S3Server::start(&src_repo.tmp.path().join("s3"));
    let url = server.url("copy");
    let s3 = |c: &mut assert_cmd::Command| {
        c.env("AWS_ACCESS_KEY_ID", "cairn-full")
            .env("AWS_SECRET_ACCESS_KEY", SECRET);
    };
    let mut init = src_repo.cmd();
    s3(&mut init);
    init.env("CAIRN_REPOSITORY", &url)
        .env("CAIRN_CACHE_DIR", src_repo.tmp.path().join("cache-s3"))
        .env("CAIRN_PASSWORD", "another password")
        .args(["init", "--kdf-memory-kib", "1024"]);
    run_ok(&mut init);

    // Everything, then again: the second run copies nothing.
    let copy = |args: &[&str]| {
        let mut c = src_repo.cmd();
        s3(&mut c);
        c.env("CAIRN_TO_PASSWORD", "another password")
            .args(["copy", "--json", "--to", &url])
            .args(args);
        json(&run_ok(&mut c))
    };
    let first = copy(&[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 2, "{first:#}");
    let bytes_first = first["bytes_added"].as_u64().unwrap();
    assert!(bytes_first > 0);
    let again = copy(&[]);
    assert!(again["copied"].as_array().unwrap().is_empty(), "{again:#}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(again["bytes_added"], 0);
    // A later snapshot with one small new file adds about that file to the target.
    std::fs::write(src.join("small.bin"), data(20_000, 78)).unwrap();
    run_ok(src_repo.cmd().arg("backup").arg(&src));
    let later = copy(&[]);
    assert_eq!(later["copied"].as_array().unwrap().len(), 1, "{later:#}");
    let added = later["bytes_added"].as_u64().unwrap();
    assert!(
        added < 20_000 + 40_000,
        "added {added} bytes for a 20 kB change"
    );

    // Restore the newest copy from S3: identical to the source.
    let target = src_repo.tmp.path().join("out");
    let mut r = src_repo.cmd();
    s3(&mut r);
    r.env("CAIRN_REPOSITORY", &url)
        .env("CAIRN_CACHE_DIR", src_repo.tmp.path().join("cache-s3"))
        .env("CAIRN_PASSWORD", "another password")
        .args(["restore", "latest", "--target"])
        .arg(&target);
    run_ok(&mut r);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));

    // And on to a local repository, from the S3 one: tags and times survive.
    let third = Repo::new();
    let mut c = src_repo.cmd();
    s3(&mut c);
    c.env("CAIRN_REPOSITORY", &url)
        .env("CAIRN_CACHE_DIR", src_repo.tmp.path().join("cache-s3"))
        .env("CAIRN_PASSWORD", "another password")
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .args(["copy", "--json", "--to"])
        .arg(&third.path);
    let out = json(&run_ok(&mut c));
    assert_eq!(out["copied"].as_array().unwrap().len(), 3);
    let a = json(&run_ok(src_repo.cmd().args(["snapshots", "--json"])));
    let b = json(&run_ok(third.cmd().args(["snapshots", "--json"])));
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(x["snapshot"]["time"], y["snapshot"]["time"]);
        assert_eq!(x["snapshot"]["tags"], y["snapshot"]["tags"]);
        assert_eq!(x["snapshot"]["paths"], y["snapshot"]["paths"]);
    }
    let out = third.restore_latest(&src);
    assert_same_tree(&src, &out);
}

/// A source snapshot that cannot be read does not stop the others from being copied:
/// it is named and the copy exits 1. A snapshot replaced by `protect` is not copied
/// again.
#[test]
fn a_damaged_snapshot_is_named_and_the_others_are_copied() {
    let src_repo = Repo::new();
    let a = src_repo.tmp.path().join("a");
    let b = src_repo.tmp.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("fa"), data(300_000, 1)).unwrap();
    std::fs::write(b.join("fb"), data(300_000, 2)).unwrap();
    run_ok(src_repo.cmd().arg("backup").arg(&a));
    let before = src_repo.packs();
    run_ok(src_repo.cmd().arg("backup").arg(&b));
    for p in src_repo.packs() {
        if !before.contains(&p) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let target = Repo::new();
    let copy = || {
        src_repo
            .cmd()
            .env("CAIRN_TO_PASSWORD", PASSWORD)
            .args(["copy", "--json", "--to"])
            .arg(&target.path)
            .output()
            .unwrap()
    };
    let out = copy();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be copied"), "{err}");
    let r = json(&out);
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["failed"].as_array().unwrap().len(), 1, "{r:#}");
    assert_same_tree(&a, &target.restore_latest(&a));

    let copied_from = r["copied"][0][0].as_str().unwrap().to_string();
    run_ok(src_repo.cmd().args(["protect", &copied_from]));
    let r = json(&copy());
    assert!(r["copied"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1, "{r:#}");
    let snaps = json(&run_ok(target.cmd().args(["snapshots", "--json"])));
    assert_eq!(snaps.as_array().unwrap().len(), 1);
}
