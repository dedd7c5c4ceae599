//! Backups, forget + prune and restores at the same time, on one repository: four
//! backup processes store overlapping data (shared blobs) while a loop forgets old
//! snapshots and prunes with `--max-unused 0` (so it deletes and repacks packs holding
//! blobs the backups are deduplicating against), and another loop restores a protected
//! snapshot. Afterwards every remaining snapshot must restore exactly what was backed
//! up. On a local repository and on the S3 test server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::s3::{S3Server, SECRET};
use crate::common::{PASSWORD, data};

const WORKERS: usize = 4;
const ROUNDS: usize = 6;

/// How to run cairn against the repository under test.
#[derive(Clone)]
struct Target {
    env: Vec<(String, String)>,
    tmp: PathBuf,
}

impl Target {
    fn cmd(&self, cache: &str) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", self.tmp.join(cache))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn ok(&self, cache: &str, args: &[&str]) -> Vec<u8> {
        let out = self.cmd(cache).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cairn {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    }
}

/// Files of worker `w` in round `r`: most shared with other workers and rounds.
fn fill(dir: &Path, w: usize, r: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..4 {
        let seed = (((w + r + i) % 5) * 1000 + i) as u64;
        std::fs::write(dir.join(format!("shared{i}")), data(150_000, seed)).unwrap();
    }
    let own = (10_000 + w * 100 + r) as u64;
    std::fs::write(dir.join("own"), data(60_000, own)).unwrap();
}

fn same_files(want: &Path, got: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(want)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut got_names: Vec<_> = std::fs::read_dir(got)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    got_names.sort();
    assert_eq!(names, got_names, "{} vs {}", want.display(), got.display());
    for n in names {
        assert!(
            std::fs::read(want.join(&n)).unwrap() == std::fs::read(got.join(&n)).unwrap(),
            "{} differs",
            got.join(&n).display()
        );
    }
}

fn restore_and_compare(t: &Target, cache: &str, id: &str, src: &Path, want: &Path) {
    let out = tempfile::tempdir_in(&t.tmp).unwrap();
    t.ok(
        cache,
        &["restore", id, "--target", out.path().to_str().unwrap()],
    );
    same_files(want, &out.path().join(src.strip_prefix("/").unwrap()));
}

fn stress(t: Target) {
    let tmp = t.tmp.clone();
    // A protected snapshot that a reader restores over and over meanwhile.
    let keep_src = tmp.join("keep");
    fill(&keep_src, 9, 9);
    let out = t.ok(
        "c-keep",
        &[
            "backup",
            "--json",
            "--host",
            "keeper",
            keep_src.to_str().unwrap(),
        ],
    );
    let v = crate::common::last_json_line(&out);
    let kept = v["snapshot_id"].as_str().unwrap().to_string();
    let out = t.ok("c-keep", &["protect", &kept, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let kept = v["new"].as_str().unwrap().to_string();
    let kept_copy = tmp.join("expect-keep");
    fill(&kept_copy, 9, 9);

    let expected: Arc<Mutex<BTreeMap<String, (PathBuf, PathBuf)>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (t, expected) = (t.clone(), expected.clone());
            std::thread::spawn(move || {
                let src = t.tmp.join(format!("src-{w}"));
                for r in 0..ROUNDS {
                    fill(&src, w, r);
                    let cache = format!("c-{w}");
                    let host = format!("host{w}");
                    let out = t.ok(
                        &cache,
                        &["backup", "--json", "--host", &host, src.to_str().unwrap()],
                    );
                    let v = crate::common::last_json_line(&out);
                    let id = v["snapshot_id"].as_str().unwrap().to_string();
                    let copy = t.tmp.join(format!("expect-{id}"));
                    fill(&copy, w, r);
                    expected.lock().unwrap().insert(id, (src.clone(), copy));
                }
            })
        })
        .collect();
    let pruner = {
        let (t, done) = (t.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut rounds, mut removed, mut waited) = (0, 0, 0);
            while !done.load(Ordering::SeqCst) || rounds < 2 {
                t.ok(
                    "c-prune",
                    &["forget", "-q", "--keep-last", "1", "--group-by", "host"],
                );
                let out = t.ok("c-prune", &["prune", "--json", "--max-unused", "0%"]);
                let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
                removed += r["packs_removed"].as_u64().unwrap();
                waited += r["waiting"].as_array().unwrap().len();
                rounds += 1;
            }
            eprintln!(
                "{rounds} prunes beside the backups removed {removed} packs; {waited} times packs waited for backups"
            );
            (rounds, removed + waited as u64)
        })
    };
    let reader = {
        let (t, done, kept, keep_src) = (t.clone(), done.clone(), kept.clone(), keep_src.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) || n == 0 {
                restore_and_compare(&t, "c-read", &kept, &keep_src, &kept_copy);
                // A check beside the backups and prunes finds no damage either.
                let out = t.ok("c-read", &["check", "--json"]);
                let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert!(r["damage"].as_array().unwrap().is_empty(), "{r:#}");
                n += 1;
            }
            n
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (prunes, removed) = pruner.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(prunes >= 2 && reads >= 1);
    assert!(
        removed > 0,
        "the prunes beside the backups neither removed nor marked anything"
    );

    // Finish what waited for the backups, then everything left must restore exactly.
    t.ok(
        "c-prune",
        &["forget", "-q", "--keep-last", "1", "--group-by", "host"],
    );
    t.ok("c-prune", &["prune", "--max-unused", "0%"]);
    let out = t.ok("c-prune", &["prune", "--max-unused", "0%", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(r["waiting"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["unused_bytes_after"], 0, "{r:#}");
    let out = t.ok("c-prune", &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let ids: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        WORKERS + 1,
        "one per host and the protected one: {ids:?}"
    );
    t.ok("c-final", &["check", "--read-data"]);
    let expected = expected.lock().unwrap();
    for id in ids {
        if id == kept {
            restore_and_compare(&t, "c-final", &id, &keep_src, &tmp.join("expect-keep"));
        } else {
            let (src, copy) = &expected[&id];
            restore_and_compare(&t, "c-final", &id, src, copy);
        }
    }
}

#[test]
fn backups_prunes_and_restores_at_once_on_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let t = Target {
        env: vec![("CAIRN_REPOSITORY".into(), repo.display().to_string())],
        tmp: tmp.path().to_path_buf(),
    };
    t.ok(
        "c-init",
        &["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"],
    );
    stress(t);
}

#[test]
fn backups_prunes_and_restores_at_once_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3"));
    let t = Target {
        env: vec![
            ("CAIRN_REPOSITORY".into(), server.url("repo")),
            ("AWS_ACCESS_KEY_ID".into(), "cairn-full".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ],
        tmp: tmp.path().to_path_buf(),
    };
    t.ok(
        "c-init",
        &["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"],
    );
    stress(t);
}
