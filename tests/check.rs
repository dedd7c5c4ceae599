//! `check` on real repositories with injected damage: each kind is found, named with
//! the snapshots and paths it damages, and nothing else is reported.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn::format::{BlobType, NodeKind};
use cairn::ops::walk;
use cairn::repository::{IndexedRepository, RepoOptions, Repository};
use serde_json::Value;

use crate::common::{PASSWORD, Repo, data, run_ok};

/// A repository with two snapshots of a small tree in 1 MiB packs.
pub struct Fixture {
    pub repo: Repo,
    pub src: PathBuf,
    /// Snapshot ids, oldest first.
    pub snaps: Vec<String>,
}

pub fn fixture() -> Fixture {
    let repo = Repo::uninitialized();
    run_ok(
        repo.cmd()
            .args(["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"]),
    );
    let src = repo.tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir_all(src.join("c")).unwrap();
    for i in 0..12u64 {
        std::fs::write(
            src.join(format!("a/f{i:02}")),
            data(300_000 + i as usize, 100 + i),
        )
        .unwrap();
    }
    for i in 0..4 {
        std::fs::write(src.join(format!("a/b/small-{i}")), format!("small {i}\n")).unwrap();
    }
    std::fs::write(src.join("c/one"), b"one\n").unwrap();
    let mut snaps = Vec::new();
    snaps.push(
        repo.backup_json(&[src.as_os_str()])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    std::fs::write(src.join("a/f01"), data(310_000, 999)).unwrap();
    std::fs::write(src.join("c/two"), data(200_000, 998)).unwrap();
    snaps.push(
        repo.backup_json(&[src.as_os_str()])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    Fixture { repo, src, snaps }
}

impl Fixture {
    /// The path of a source file as the snapshot names it.
    pub fn path(&self, rel: &str) -> String {
        self.src.join(rel).display().to_string()
    }

    /// The library's view of the repository, with its own cache.
    pub fn lib(&self) -> IndexedRepository {
        let store = cairn::backend::open(
            self.repo.path.to_str().unwrap(),
            false,
            &cairn::backend::S3Options::with_defaults(),
        )
        .unwrap();
        let opts = RepoOptions {
            cache_dir: Some(tempfile::tempdir_in(self.repo.tmp.path()).unwrap().keep()),
            connections: 4,
        };
        Repository::open(store, PASSWORD.as_bytes(), opts)
            .unwrap()
            .into_indexed()
            .unwrap()
    }

    /// (pack file, offset, length) of the first data blob of a file of the latest snapshot.
    pub fn blob_of(&self, rel: &str) -> (PathBuf, u64, u32) {
        let lib = self.lib();
        let (_, snap) = lib.find_snapshot(&self.snaps[1]).unwrap();
        let node = walk::find_node(&lib, &snap.tree, Path::new(&self.path(rel)))
            .unwrap()
            .unwrap();
        let NodeKind::File { content } = node.kind else {
            panic!("not a file")
        };
        let loc = lib.locate(BlobType::Data, &content[0]).unwrap();
        (self.pack_file(&loc.pack.to_hex()), loc.offset, loc.length)
    }

    pub fn pack_file(&self, hex: &str) -> PathBuf {
        self.repo.path.join("data").join(&hex[..2]).join(hex)
    }

    pub fn check(&self, args: &[&str]) -> (i32, Value) {
        check_cmd(&mut self.repo.cmd(), args)
    }
}

/// Run `check --json ARGS`; its exit code and report.
pub fn check_cmd(cmd: &mut assert_cmd::Command, args: &[&str]) -> (i32, Value) {
    let out = cmd.arg("check").arg("--json").args(args).output().unwrap();
    let code = out.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "check failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        code == 0,
        v["damage"].as_array().unwrap().is_empty(),
        "{v:#}"
    );
    (code, v)
}

/// The name of a pack file as reports give it (`data/ab/ab…`).
pub fn object_name(pack_file: &Path) -> String {
    let hex = pack_file.file_name().unwrap().to_str().unwrap();
    format!("data/{}/{hex}", &hex[..2])
}

pub fn damage_of<'a>(report: &'a Value, kind: &str, object: &str) -> &'a Value {
    report["damage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == kind && d["object"] == object)
        .unwrap_or_else(|| panic!("no {kind} damage of {object} in {report:#}"))
}

/// (snapshot id, path) pairs a damage names.
pub fn affected(d: &Value) -> BTreeSet<(String, String)> {
    d["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["snapshot"].as_str().unwrap().to_string(),
                a["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn flip_byte(file: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x55], at).unwrap();
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn clean_repository_passes_structure_and_data_checks() {
    let f = fixture();
    let (code, r) = f.check(&[]);
    assert_eq!(code, 0);
    assert_eq!(r["stats"]["snapshots"], 2);
    assert!(r["stats"]["packs"].as_u64().unwrap() >= 4, "{r:#}");
    assert_eq!(r["stats"]["packs_verified"], 0);
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0);
    assert_eq!(r["stats"]["packs_verified"], r["stats"]["packs"]);
    // Human output for cron: one summary, exit 0.
    let out = run_ok(f.repo.cmd().arg("check"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no damage found"));
}

#[test]
fn flipped_byte_in_a_blob_is_named_with_its_files() {
    let f = fixture();
    let (pack, offset, length) = f.blob_of("a/f03");
    flip_byte(&pack, offset + length as u64 / 2);
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 1);
    let name = object_name(&pack);
    let d = damage_of(&r, "blob", &name);
    let want: BTreeSet<_> = f
        .snaps
        .iter()
        .map(|s| (s.clone(), f.path("a/f03")))
        .collect();
    assert_eq!(affected(d), want, "{d:#}");
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 2);
    // The pack's own hash fails too; nothing else is reported.
    damage_of(&r, "pack", &name);
    assert_eq!(r["damage"].as_array().unwrap().len(), 2, "{r:#}");
    // Human output names the object and the path.
    let out = f
        .repo
        .cmd()
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&name) && text.contains(&f.path("a/f03")),
        "{text}"
    );
}

#[test]
fn truncated_pack_is_named_with_the_files_past_the_cut() {
    let f = fixture();
    let (pack, offset, _) = f.blob_of("a/f05");
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(offset + 10).unwrap();
    for args in [&[][..], &["--read-data"][..]] {
        let (code, r) = f.check(args);
        assert_eq!(code, 1);
        let d = damage_of(&r, "pack_size", &object_name(&pack));
        let paths = affected(d);
        for s in &f.snaps {
            assert!(paths.contains(&(s.clone(), f.path("a/f05"))), "{d:#}");
        }
        assert!(
            d["message"].as_str().unwrap().contains("truncated"),
            "{d:#}"
        );
    }
}

/// A restore from a truncated pack loses exactly the files `check` names: the blobs
/// before the cut still arrive, also when they share a ranged read with blobs past it.
#[test]
fn restore_from_a_truncated_pack_loses_only_the_files_check_names() {
    let f = fixture();
    let (pack, offset, _) = f.blob_of("a/f05");
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(offset + 10).unwrap();
    let (_, r) = f.check(&[]);
    let named: BTreeSet<String> = affected(damage_of(&r, "pack_size", &object_name(&pack)))
        .into_iter()
        .filter(|(s, _)| s == &f.snaps[1])
        .map(|(_, p)| p)
        .collect();
    let target = f.repo.tmp.path().join("restored");
    let out = f.repo.restore_output(&f.snaps[1], &target);
    assert_eq!(out.status.code(), Some(1));
    let mut lost = BTreeSet::new();
    let mut intact = 0;
    for dir in ["a", "a/b", "c"] {
        for e in std::fs::read_dir(f.src.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if !p.is_file() {
                continue;
            }
            let restored = target.join(p.strip_prefix("/").unwrap());
            if std::fs::read(&restored).ok() == Some(std::fs::read(&p).unwrap()) {
                intact += 1;
            } else {
                lost.insert(p.display().to_string());
            }
        }
    }
    assert_eq!(lost, named, "{r:#}");
    assert!(
        named.contains(&f.path("a/f05")) && intact >= 10,
        "{named:?}"
    );
}

#[test]
fn deleted_pack_is_named_with_its_files() {
    let f = fixture();
    let (pack, _, _) = f.blob_of("a/f07");
    std::fs::remove_file(&pack).unwrap();
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let d = damage_of(&r, "pack_missing", &object_name(&pack));
    let paths = affected(d);
    for s in &f.snaps {
        assert!(paths.contains(&(s.clone(), f.path("a/f07"))), "{d:#}");
    }
    // Files stored elsewhere are not named.
    let (other, _, _) = f.blob_of("c/two");
    if other != pack {
        assert!(!paths.iter().any(|(_, p)| p == &f.path("c/two")), "{d:#}");
    }
}

#[test]
fn deleted_index_file_is_found_and_repair_index_restores_everything() {
    let f = fixture();
    let before = f.repo.stored_bytes("data");
    for i in files_in(&f.repo.path.join("index")) {
        std::fs::remove_file(i).unwrap();
    }
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    // Every pack is now unreferenced, every snapshot's root is missing.
    assert_eq!(
        r["unreferenced_packs"].as_array().unwrap().len(),
        f.repo.packs().len()
    );
    let missing: Vec<&Value> = r["damage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "blob_missing")
        .collect();
    let roots: BTreeSet<(String, String)> = missing.iter().flat_map(|d| affected(d)).collect();
    for s in &f.snaps {
        assert!(roots.contains(&(s.clone(), "/".to_string())), "{r:#}");
    }
    // Dry run changes nothing.
    let out = run_ok(
        f.repo
            .cmd()
            .args(["repair", "index", "--dry-run", "--json"]),
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["packs_added"].as_array().unwrap().len(),
        f.repo.packs().len()
    );
    assert!(files_in(&f.repo.path.join("index")).is_empty());
    run_ok(f.repo.cmd().args(["repair", "index"]));
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0, "{r:#}");
    assert!(r["unreferenced_packs"].as_array().unwrap().is_empty());
    assert_eq!(f.repo.stored_bytes("data"), before);
    let restored = f.repo.restore_latest(&f.src);
    crate::common::assert_same_tree(&f.src, &restored);
}

#[test]
fn corrupt_index_file_is_named_and_repaired() {
    let f = fixture();
    let index = files_in(&f.repo.path.join("index"));
    let victim = &index[0];
    flip_byte(victim, 40);
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let name = format!("index/{}", victim.file_name().unwrap().to_str().unwrap());
    let d = damage_of(&r, "index", &name);
    assert!(
        d["message"].as_str().unwrap().contains("repair index"),
        "{d:#}"
    );
    run_ok(f.repo.cmd().args(["repair", "index"]));
    assert!(!victim.exists(), "the damaged index file was replaced");
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0, "{r:#}");
    let restored = f.repo.restore_latest(&f.src);
    crate::common::assert_same_tree(&f.src, &restored);
}

/// A pack whose header cannot be read keeps the index entries it has: `repair index
/// --read-all-packs` once dropped them with the old index files, losing every blob in it.
#[test]
fn repair_index_keeps_the_entries_of_a_pack_with_a_damaged_header() {
    let f = fixture();
    let (pack, _, _) = f.blob_of("a/f05");
    let len = std::fs::metadata(&pack).unwrap().len();
    // Inside the sealed header, just before the trailer.
    flip_byte(&pack, len - 12 - 5);
    let out = run_ok(
        f.repo
            .cmd()
            .args(["repair", "index", "--read-all-packs", "--json"]),
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = object_name(&pack);
    assert_eq!(rep["packs_unreadable"][0][0], name.as_str(), "{rep:#}");
    assert_eq!(rep["packs_kept_from_index"][0][0], name.as_str(), "{rep:#}");
    // Every blob is still indexed and readable: only the header is damaged.
    let (code, r) = f.check(&[]);
    assert_eq!(code, 0, "{r:#}");
    let restored = f.repo.restore_latest(&f.src);
    crate::common::assert_same_tree(&f.src, &restored);
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 1);
    damage_of(&r, "pack", &name);
}

/// When the newest snapshot object is damaged, `latest` is the newest readable one, and
/// a restore says so instead of only skipping the object.
#[test]
fn latest_with_the_newest_snapshot_damaged_says_which_it_restores() {
    let f = fixture();
    flip_byte(&f.repo.path.join("snapshots").join(&f.snaps[1]), 30);
    let out = f
        .repo
        .restore_output("latest", &f.repo.tmp.path().join("r"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&f.snaps[1]) && err.contains("may not be the newest"),
        "{err}"
    );
    assert!(err.contains(&f.snaps[0][..8]), "{err}");
}

#[test]
fn corrupt_snapshot_object_is_named() {
    let f = fixture();
    let victim = f.repo.path.join("snapshots").join(&f.snaps[0]);
    flip_byte(&victim, 30);
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let d = damage_of(&r, "snapshot", &format!("snapshots/{}", f.snaps[0]));
    assert_eq!(d["snapshots"][0], f.snaps[0].as_str());
    assert_eq!(r["damage"].as_array().unwrap().len(), 1, "{r:#}");
    // The other snapshot was still checked.
    assert_eq!(r["stats"]["snapshots"], 1);
}

#[test]
fn deleted_tree_pack_names_each_snapshot_and_directory() {
    let f = fixture();
    let lib = f.lib();
    // The pack holding the tree of `a/b`, which both snapshots share: the
    // second backup left that directory unchanged. (The root trees may be in
    // other packs: a backup writes its trees through more than one packer.)
    let (_, s0) = lib.find_snapshot(&f.snaps[0]).unwrap();
    let node = walk::find_node(&lib, &s0.tree, &f.src.join("a/b"))
        .unwrap()
        .unwrap();
    let NodeKind::Dir { subtree } = node.kind else {
        panic!("a/b is a directory")
    };
    let tree_pack = lib.locate(BlobType::Tree, &subtree).unwrap().pack;
    // Expected: in each snapshot, the topmost directories whose tree is in that pack.
    let mut want = BTreeSet::new();
    for s in &f.snaps {
        let (_, snap) = lib.find_snapshot(s).unwrap();
        if lib.locate(BlobType::Tree, &snap.tree).unwrap().pack == tree_pack {
            want.insert((s.clone(), "/".to_string()));
            continue;
        }
        let mut stop: HashSet<PathBuf> = HashSet::new();
        walk::walk(&lib, &snap.tree, Path::new("/"), &mut |p, n| {
            if let NodeKind::Dir { subtree } = &n.kind {
                if stop.iter().any(|s| p.starts_with(s)) {
                    return Ok(false);
                }
                if lib.locate(BlobType::Tree, subtree).unwrap().pack == tree_pack {
                    want.insert((s.clone(), p.display().to_string()));
                    stop.insert(p.to_path_buf());
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .unwrap();
    }
    drop(lib);
    assert!(want.len() >= 2, "both snapshots use the pack: {want:?}");
    std::fs::remove_file(f.pack_file(&tree_pack.to_hex())).unwrap();
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let d = damage_of(
        &r,
        "pack_missing",
        &object_name(&f.pack_file(&tree_pack.to_hex())),
    );
    assert_eq!(affected(d), want, "{d:#}");
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 2);
}

#[test]
fn stray_pack_is_unreferenced_not_damage() {
    let f = fixture();
    let hex = blake3::hash(b"stray").to_hex().to_string();
    let stray = f.pack_file(&hex);
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, data(5000, 7)).unwrap();
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0, "{r:#}");
    let u = r["unreferenced_packs"].as_array().unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0]["name"], object_name(&stray));
    assert_eq!(u[0]["size"], 5000);
}

#[test]
fn subset_days_cover_each_pack_exactly_once() {
    let f = fixture();
    let packs = f.repo.packs();
    assert!(packs.len() >= 4);
    // Damage every pack's bytes: a day's data check names exactly the packs it read.
    for p in &packs {
        let len = std::fs::metadata(p).unwrap().len();
        flip_byte(p, len / 2);
    }
    let days = 3;
    let mut seen: Vec<String> = Vec::new();
    for n in 1..=days {
        let (_, r) = f.check(&["--read-data-subset", &format!("{n}/{days}")]);
        let read: Vec<String> = r["damage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "pack")
            .map(|d| d["object"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            read.len() as u64,
            r["stats"]["packs_verified"].as_u64().unwrap()
        );
        seen.extend(read);
    }
    seen.sort();
    let mut all: Vec<String> = packs.iter().map(|p| object_name(p)).collect();
    all.sort();
    assert_eq!(seen, all, "each pack read on exactly one day");
    // A random sample reads what it says.
    let (_, r) = f.check(&["--read-data-subset", "1%"]);
    assert_eq!(r["stats"]["packs_verified"], 1);
    let (_, r) = f.check(&["--read-data-subset", "1B"]);
    assert_eq!(r["stats"]["packs_verified"], 1);
    let out = f
        .repo
        .cmd()
        .args(["check", "--read-data-subset", "0/7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects a bad subset");
}

#[test]
fn metrics_file_reports_result_and_errors_by_kind() {
    let f = fixture();
    let m = f.repo.tmp.path().join("cairn.prom");
    run_ok(f.repo.cmd().args(["check", "--metrics-file"]).arg(&m));
    let text = std::fs::read_to_string(&m).unwrap();
    let repo = f.repo.path.display().to_string();
    assert!(
        text.contains(&format!("cairn_check_success{{repository=\"{repo}\"}} 1\n")),
        "{text}"
    );
    assert!(
        text.contains("cairn_snapshot_newest_age_seconds{"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cairn_snapshots{{repository=\"{repo}\"}} 2\n")),
        "{text}"
    );
    let (pack, _, _) = f.blob_of("a/f07");
    std::fs::remove_file(&pack).unwrap();
    let out = f
        .repo
        .cmd()
        .args(["check", "--metrics-file"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(
        text.contains(&format!("cairn_check_success{{repository=\"{repo}\"}} 0\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cairn_check_errors{{repository=\"{repo}\",kind=\"pack_missing\"}} 1\n"
        )),
        "{text}"
    );
    // A check that cannot run still records it.
    let out = f
        .repo
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .args(["check", "--metrics-file"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(
        text.contains(&format!(
            "cairn_check_completed{{repository=\"{repo}\"}} 0\n"
        )),
        "{text}"
    );
}

#[test]
fn backup_verify_new_reads_back_its_packs_and_writes_metrics() {
    let f = fixture();
    std::fs::write(f.src.join("c/three"), data(1_500_000, 4242)).unwrap();
    let m = f.repo.tmp.path().join("backup.prom");
    let out = run_ok(
        f.repo
            .cmd()
            .args(["backup", "--json", "--verify-new", "--metrics-file"])
            .arg(&m)
            .arg(&f.src),
    );
    let v = crate::common::last_json_line(&out.stdout);
    assert!(v["verified"]["packs"].as_u64().unwrap() >= 2, "{v:#}");
    assert!(
        v["verified"]["bytes"].as_u64().unwrap() > 1_500_000,
        "{v:#}"
    );
    let text = std::fs::read_to_string(&m).unwrap();
    let repo = f.repo.path.display().to_string();
    assert!(
        text.contains(&format!(
            "cairn_backup_success{{repository=\"{repo}\"}} 1\n"
        )),
        "{text}"
    );
    assert!(text.contains("cairn_backup_added_bytes{"), "{text}");
}

#[test]
fn pack_removed_by_a_prune_in_progress_is_not_damage() {
    // What a prune leaves between its steps: a consolidated index file that supersedes
    // the old ones and no longer names a pack, the pack deleted, an old index file not
    // yet deleted that still names it, and the snapshot that needed it forgotten.
    let f = fixture();
    let lib = f.lib();
    let (_, s1) = lib.find_snapshot(&f.snaps[1]).unwrap();
    let node = walk::find_node(&lib, &s1.tree, Path::new(&f.path("c/two")))
        .unwrap()
        .unwrap();
    let NodeKind::File { content } = node.kind else {
        panic!()
    };
    let gone = lib.locate(BlobType::Data, &content[0]).unwrap().pack;
    // Rewrite the index without that pack, superseding every old file.
    let mut packs = Vec::new();
    let old: Vec<cairn::IndexId> = files_in(&f.repo.path.join("index"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    for id in &old {
        let bytes = std::fs::read(f.repo.path.join("index").join(id.to_hex())).unwrap();
        let file: cairn::format::IndexFile =
            cairn::format::open_object(lib.key(), cairn::format::aad::INDEX, "index", &bytes)
                .unwrap();
        packs.extend(file.packs.into_iter().filter(|p| p.id != gone));
    }
    let mut new = cairn::format::IndexFile::new(packs);
    new.supersedes = old;
    lib.block_on(lib.save_index(&new)).unwrap();
    std::fs::remove_file(f.repo.path.join("snapshots").join(&f.snaps[1])).unwrap();
    std::fs::remove_file(f.pack_file(&gone.to_hex())).unwrap();
    drop(lib);
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0, "{r:#}");
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains(&gone.to_hex())),
        "{r:#}"
    );
}

/// The main cases on the S3 test server: the store is reached only through S3.
mod on_s3 {
    use std::path::{Path, PathBuf};

    use assert_cmd::Command;
    use cairn::format::{BlobType, NodeKind};

    use super::{affected, check_cmd, damage_of, flip_byte};
    use crate::common::s3::{S3Server, SECRET};
    use crate::common::{PASSWORD, data, run_ok};

    struct S3Fixture {
        tmp: tempfile::TempDir,
        server: S3Server,
        url: String,
        src: PathBuf,
        snap: String,
    }

    impl S3Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let server = S3Server::start(&tmp.path().join("s3"));
            let url = server.url("repo");
            let src = tmp.path().join("src");
            std::fs::create_dir_all(src.join("d")).unwrap();
            for i in 0..8u64 {
                std::fs::write(src.join(format!("d/f{i}")), data(300_000, 500 + i)).unwrap();
            }
            let f = S3Fixture {
                tmp,
                server,
                url,
                src,
                snap: String::new(),
            };
            run_ok(
                f.cmd()
                    .args(["init", "--kdf-memory-kib", "1024", "--pack-size-mib", "1"]),
            );
            let out = run_ok(f.cmd().args(["backup", "--json"]).arg(&f.src));
            let snap = crate::common::last_json_line(&out.stdout)["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string();
            S3Fixture { snap, ..f }
        }

        fn cmd(&self) -> Command {
            let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
            c.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("CAIRN_REPOSITORY", &self.url)
                .env("CAIRN_PASSWORD", PASSWORD)
                .env("CAIRN_CACHE_DIR", self.tmp.path().join("cache"))
                .env("AWS_ACCESS_KEY_ID", "cairn-full")
                .env("AWS_SECRET_ACCESS_KEY", SECRET);
            c
        }

        /// The stored file of an object (`data/ab/ab…`, `index/…`) on the server.
        fn file(&self, object: &str) -> PathBuf {
            self.server
                .root
                .join(crate::common::s3::BUCKET)
                .join("repo")
                .join(object)
        }

        fn path(&self, rel: &str) -> String {
            self.src.join(rel).display().to_string()
        }

        /// The object name of the pack holding the first blob of `rel`, and its place.
        fn blob_of(&self, rel: &str) -> (String, u64, u32) {
            let store =
                cairn::backend::open(&self.url, false, &self.server.options("cairn-full")).unwrap();
            let opts = cairn::repository::RepoOptions {
                cache_dir: Some(self.tmp.path().join("libcache")),
                connections: 2,
            };
            let lib = cairn::Repository::open(store, PASSWORD.as_bytes(), opts)
                .unwrap()
                .into_indexed()
                .unwrap();
            let (_, snap) = lib.find_snapshot(&self.snap).unwrap();
            let node = cairn::ops::walk::find_node(&lib, &snap.tree, Path::new(&self.path(rel)))
                .unwrap()
                .unwrap();
            let NodeKind::File { content } = node.kind else {
                panic!()
            };
            let loc = lib.locate(BlobType::Data, &content[0]).unwrap();
            let hex = loc.pack.to_hex();
            (format!("data/{}/{hex}", &hex[..2]), loc.offset, loc.length)
        }
    }

    #[test]
    fn flipped_byte_is_found_by_the_data_check() {
        let f = S3Fixture::new();
        let (code, _) = check_cmd(&mut f.cmd(), &["--read-data"]);
        assert_eq!(code, 0);
        let (pack, offset, length) = f.blob_of("d/f2");
        flip_byte(&f.file(&pack), offset + length as u64 / 2);
        let (code, r) = check_cmd(&mut f.cmd(), &["--read-data"]);
        assert_eq!(code, 1);
        let d = damage_of(&r, "blob", &pack);
        assert!(
            affected(d).contains(&(f.snap.clone(), f.path("d/f2"))),
            "{d:#}"
        );
    }

    #[test]
    fn deleted_pack_and_stray_pack() {
        let f = S3Fixture::new();
        let (pack, _, _) = f.blob_of("d/f5");
        std::fs::remove_file(f.file(&pack)).unwrap();
        let stray_hex = blake3::hash(b"stray on s3").to_hex().to_string();
        let stray = format!("data/{}/{stray_hex}", &stray_hex[..2]);
        std::fs::create_dir_all(f.file(&stray).parent().unwrap()).unwrap();
        std::fs::write(f.file(&stray), data(4000, 3)).unwrap();
        let (code, r) = check_cmd(&mut f.cmd(), &[]);
        assert_eq!(code, 1);
        let d = damage_of(&r, "pack_missing", &pack);
        assert!(
            affected(d).contains(&(f.snap.clone(), f.path("d/f5"))),
            "{d:#}"
        );
        let u = r["unreferenced_packs"].as_array().unwrap();
        assert_eq!(u.len(), 1, "{r:#}");
        assert_eq!(u[0]["name"], stray.as_str());
    }

    #[test]
    fn deleted_index_is_rebuilt_by_repair_index() {
        let f = S3Fixture::new();
        for e in std::fs::read_dir(f.file("index")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let (code, r) = check_cmd(&mut f.cmd(), &[]);
        assert_eq!(code, 1);
        let roots: Vec<_> = r["damage"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(affected)
            .collect();
        assert!(roots.contains(&(f.snap.clone(), "/".to_string())), "{r:#}");
        run_ok(f.cmd().args(["repair", "index"]));
        let (code, r) = check_cmd(&mut f.cmd(), &["--read-data"]);
        assert_eq!(code, 0, "{r:#}");
        let target = f.tmp.path().join("out");
        run_ok(f.cmd().args(["restore", "latest", "--target"]).arg(&target));
        crate::common::assert_same_tree(&f.src, &target.join(f.src.strip_prefix("/").unwrap()));
    }
}
