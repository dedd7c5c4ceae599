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
