//! Several passwords per repository; changing one never leaves the repository keyless.

use crate::common::Repo;

#[test]
fn add_list_remove_and_passwd() {
    let repo = Repo::new();
    let pw2 = repo.tmp.path().join("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    repo.cmd()
        .args([
            "key",
            "add",
            "--kdf-memory-kib",
            "1024",
            "--new-password-file",
        ])
        .arg(&pw2)
        .assert()
        .success();
    let out = repo.cmd().args(["key", "list", "--json"]).output().unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let current = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The second password opens the repository too.
    repo.cmd()
        .env("CAIRN_PASSWORD", "second password")
        .arg("snapshots")
        .assert()
        .success();

    // The key in use cannot be removed; the other can (from the second password).
    repo.cmd()
        .args(["key", "remove", &current[..8]])
        .assert()
        .failure();
    repo.cmd()
        .env("CAIRN_PASSWORD", "second password")
        .args(["key", "remove", &current[..8]])
        .assert()
        .success();
    let out = repo.cmd().arg("snapshots").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(12),
        "the removed password still opens the repository"
    );

    // passwd: the new password works, the old does not, one key remains.
    repo.cmd()
        .env("CAIRN_PASSWORD", "second password")
        .env("CAIRN_NEW_PASSWORD", "third password")
        .args(["key", "passwd", "--kdf-memory-kib", "1024"])
        .assert()
        .success();
    repo.cmd()
        .env("CAIRN_PASSWORD", "third password")
        .arg("snapshots")
        .assert()
        .success();
    let out = repo
        .cmd()
        .env("CAIRN_PASSWORD", "second password")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let out = repo
        .cmd()
        .env("CAIRN_PASSWORD", "third password")
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
}

#[test]
fn key_files_hold_no_plain_key_material() {
    let repo = Repo::new();
    let out = repo.cmd().args(["cat", "key", ""]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kdf"]["algorithm"], "argon2id");
    assert!(v.get("sealed_master").is_none());
}

/// A damaged key file (unusable Argon2id parameters, or cut short) never keeps another
/// password from opening the repository, is named by `check` and `key list`, and `key
/// remove` removes it.
#[test]
fn a_damaged_key_file_is_skipped_named_and_removable() {
    let repo = Repo::new();
    let keys = repo.path.join("keys");
    let good = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut kf = cairn::format::KeyFile::from_bytes("key", &std::fs::read(&good).unwrap()).unwrap();
    kf.kdf.parallelism = 0;
    // Names sort before and after the good key's, so either order of trying is seen.
    let bad_params = keys.join("0".repeat(64));
    let cut = keys.join("f".repeat(64));
    std::fs::write(&bad_params, kf.to_bytes()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    for _ in 0..4 {
        let out = repo.cmd().arg("snapshots").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = repo.cmd().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged: Vec<&str> = r["damage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "key")
        .map(|d| d["object"].as_str().unwrap())
        .collect();
    assert_eq!(damaged.len(), 2, "{r:#}");

    let out = repo.cmd().args(["key", "list"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("DAMAGED")
            .count(),
        2
    );
    for prefix in ["00000000", "ffffffff"] {
        repo.cmd()
            .args(["key", "remove", prefix])
            .assert()
            .success();
    }
    let out = repo.cmd().args(["check"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
