//! `repair snapshots` and `repair index` after injected damage: the unreadable parts are
//! left out and named, everything else stays restorable.

use std::path::Path;

use serde_json::Value;

use crate::check::{fixture, object_name};
use crate::common::{run_ok, tree_state};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn repair_snapshots_leaves_out_unreadable_files_and_names_them() {
    let f = fixture();
    let (pack, _, _) = f.blob_of("a/f07");
    std::fs::remove_file(&pack).unwrap();
    // Every file of the lost pack, as check names them for the latest snapshot.
    let (_, r) = f.check(&[]);
    let d = crate::check::damage_of(&r, "pack_missing", &object_name(&pack));
    let lost: Vec<String> = crate::check::affected(d)
        .into_iter()
        .filter(|(s, _)| s == &f.snaps[1])
        .map(|(_, p)| p)
        .collect();
    assert!(lost.contains(&f.path("a/f07")));

    // Dry run: the plan, and nothing written.
    let before = tree_state(&f.repo.path);
    let plan = json(&run_ok(f.repo.cmd().args([
        "repair",
        "snapshots",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(plan["repaired"].as_array().unwrap().len(), 2, "{plan:#}");
    assert_eq!(tree_state(&f.repo.path), before, "dry run wrote nothing");

    let done = json(&run_ok(f.repo.cmd().args([
        "repair",
        "snapshots",
        "--json",
    ])));
    let latest = done["repaired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["original"] == f.snaps[1].as_str())
        .unwrap();
    let removed: Vec<&str> = latest["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = lost.iter().map(String::as_str).collect();
    want.sort();
    let mut got = removed.clone();
    got.sort();
    assert_eq!(got, want);
    let new_id = latest["repaired"].as_str().unwrap();

    // The new snapshot says what it lacks, names its original, and is tagged.
    let cat = json(&run_ok(f.repo.cmd().args(["cat", "snapshot", new_id])));
    let s = &cat["snapshot"];
    assert_eq!(s["complete"], false);
    assert_eq!(s["original"], f.snaps[1].as_str());
    assert!(
        s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "repaired")
    );
    let problems = s["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains(&f.path("a/f07"))),
        "{s:#}"
    );
    // The originals stay (no --forget).
    assert!(f.repo.path.join("snapshots").join(&f.snaps[1]).exists());

    // The repaired snapshot restores everything but the lost files.
    let target = f.repo.tmp.path().join("restored");
    run_ok(
        f.repo
            .cmd()
            .args(["restore", new_id, "--target"])
            .arg(&target),
    );
    let root = target.join(f.src.strip_prefix("/").unwrap());
    for l in &lost {
        let rel = Path::new(l).strip_prefix(&f.src).unwrap();
        assert!(!root.join(rel).exists(), "{l} was left out");
    }
    for rel in ["a/f00", "c/two", "a/b/small-1"] {
        if lost.contains(&f.path(rel)) {
            continue;
        }
        assert_eq!(
            std::fs::read(root.join(rel)).unwrap(),
            std::fs::read(f.src.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn repair_with_forget_then_index_gives_a_clean_repository() {
    let f = fixture();
    let (pack, _, _) = f.blob_of("a/f07");
    std::fs::remove_file(&pack).unwrap();
    run_ok(f.repo.cmd().args(["repair", "snapshots", "--forget"]));
    for s in &f.snaps {
        assert!(
            !f.repo.path.join("snapshots").join(s).exists(),
            "{s} forgotten"
        );
    }
    // The index still names the lost pack until the index is rebuilt.
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let d = crate::check::damage_of(&r, "pack_missing", &object_name(&pack));
    assert!(d["paths"].as_array().unwrap().is_empty(), "{d:#}");
    let plan = json(&run_ok(f.repo.cmd().args(["repair", "index", "--json"])));
    assert_eq!(plan["packs_dropped"][0], object_name(&pack));
    let (code, r) = f.check(&["--read-data"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["stats"]["snapshots"], 2);
}

#[test]
fn repair_snapshots_drops_a_directory_whose_tree_is_damaged() {
    let f = fixture();
    let lib = f.lib();
    let (_, s1) = lib.find_snapshot(&f.snaps[1]).unwrap();
    let node = cairn::ops::walk::find_node(&lib, &s1.tree, &f.src.join("a/b"))
        .unwrap()
        .unwrap();
    let cairn::format::NodeKind::Dir { subtree } = node.kind else {
        panic!()
    };
    let loc = lib.locate(cairn::format::BlobType::Tree, &subtree).unwrap();
    drop(lib);
    let pack = f.pack_file(&loc.pack.to_hex());
    crate::check::flip_byte(&pack, loc.offset + loc.length as u64 / 2);
    let (code, r) = f.check(&[]);
    assert_eq!(code, 1);
    let d = crate::check::damage_of(&r, "blob", &object_name(&pack));
    assert_eq!(d["blob"], subtree.to_hex());
    let want: std::collections::BTreeSet<_> =
        f.snaps.iter().map(|s| (s.clone(), f.path("a/b"))).collect();
    assert_eq!(crate::check::affected(d), want);

    let done = json(&run_ok(f.repo.cmd().args([
        "repair",
        "snapshots",
        "--json",
    ])));
    for s in done["repaired"].as_array().unwrap() {
        let removed = s["removed"].as_array().unwrap();
        assert_eq!(removed.len(), 1, "{s:#}");
        assert_eq!(removed[0]["path"], f.path("a/b"));
        let new_id = s["repaired"].as_str().unwrap();
        let target = f.repo.tmp.path().join(format!("r-{new_id}"));
        run_ok(
            f.repo
                .cmd()
                .args(["restore", new_id, "--target"])
                .arg(&target),
        );
        let root = target.join(f.src.strip_prefix("/").unwrap());
        assert!(!root.join("a/b").exists());
        assert!(root.join("a/f00").exists());
    }
}
