//! The local index cache is never the truth: deleting it, or sharing it between two
//! processes, costs time only.

use crate::common::{Repo, data};

#[test]
fn deleted_cache_is_rebuilt_from_the_index() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(2 << 20, 11)).unwrap();
    repo.backup_json(&[src.as_os_str()]);
    std::fs::remove_dir_all(repo.tmp.path().join("cache")).unwrap();
    // A backup after the cache is gone still deduplicates against the repository.
    let again = repo.backup_json(&[src.as_os_str()]);
    assert_eq!(again["summary"]["data_blobs_added"], 0, "{again}");
    std::fs::remove_dir_all(repo.tmp.path().join("cache")).unwrap();
    let target = repo.tmp.path().join("out");
    repo.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("f")).unwrap(),
        data(2 << 20, 11)
    );
}

#[test]
fn two_processes_share_a_repository_and_cache() {
    let repo = Repo::new();
    let mut children = Vec::new();
    for i in 0..2u64 {
        let src = repo.tmp.path().join(format!("src{i}"));
        std::fs::create_dir(&src).unwrap();
        // Overlapping content: shared chunks are deduplicated or stored twice, never lost.
        std::fs::write(src.join("shared"), data(3 << 20, 99)).unwrap();
        std::fs::write(src.join("own"), data(1 << 20, i)).unwrap();
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env("CAIRN_REPOSITORY", &repo.path)
            .env("CAIRN_PASSWORD", crate::common::PASSWORD)
            .env("CAIRN_CACHE_DIR", repo.tmp.path().join("cache"))
            .args(["backup", "-q"])
            .arg(&src);
        children.push((src, c.spawn().unwrap()));
    }
    for (_, c) in &mut children {
        assert!(c.wait().unwrap().success());
    }
    let out = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    for (src, _) in &children {
        let target = repo.tmp.path().join("out").join(src.file_name().unwrap());
        let spec = format!(
            "{}:{}",
            &v.as_array()
                .unwrap()
                .iter()
                .find(|s| s["snapshot"]["paths"][0] == src.to_str().unwrap())
                .unwrap()["id"]
                .as_str()
                .unwrap()[..12],
            src.display()
        );
        repo.cmd()
            .args(["restore", &spec, "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(target.join("shared")).unwrap(),
            data(3 << 20, 99)
        );
    }
}
