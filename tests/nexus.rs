//! The Nexus recipe (docs/guides/nexus.md): the guide's profile, taken from the guide
//! itself, backs up a Nexus-like `nexus-data` (file blob store, OrientDB files, the
//! "Export databases for backup" output) with Nexus scaled down by its pre command and
//! up again by its post command, also when the backup fails. Kubernetes cannot run
//! here: `kubectl` is a stand-in script first on PATH that records its arguments and
//! `CAIRN_STATUS`, and plays Nexus by removing a marker file on scale 0 and writing it
//! on scale 1. The restore (`--delete`, over a freshly initialised data directory) is
//! compared byte for byte.

use std::path::{Path, PathBuf};

use crate::common::{PASSWORD, Repo, data, run_ok, tree_state};

/// What a running Nexus leaves in its data directory, in this test only.
const MARKER: &str = "fake-nexus-running";

/// The guide's profile: its first TOML block with `[profiles.nexus.backup]`.
fn guide_profile() -> String {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/nexus.md"))
            .unwrap();
    guide
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("[profiles.nexus.backup]"))
        .expect("a profile in docs/guides/nexus.md")
        .to_string()
}

/// Replace `from` by `to`, which must be there.
fn subst(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the guide's profile no longer has {from}"
    );
    text.replace(from, to)
}

/// A `nexus-data` as Nexus 3 (OrientDB) lays it out, smaller: a file blob store with
/// `.bytes`/`.properties` pairs in `vol-NN/chap-NN`, the database directories, the
/// export task's `.bak` files, configuration, the node id, search index, logs, and the
/// instance's `tmp` and `cache`.
fn nexus_data(root: &Path) {
    let f = |p: &str, c: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    };
    f(
        "blobs/default/metadata.properties",
        b"type=file/1\nblobCount=240\n",
    );
    for i in 0..240u64 {
        let uuid = hex(&data(16, 10_000 + i));
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &uuid[..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..]
        );
        let dir = format!(
            "blobs/default/content/vol-{:02}/chap-{:02}",
            1 + i % 43,
            1 + i % 47
        );
        let bytes = data(1000 + (i as usize * 997) % 60_000, i);
        f(
            &format!("{dir}/{uuid}.properties"),
            format!(
                "@BlobStore.created-by=ci\nsize={}\n@Bucket.repo-name=maven-releases\n\
                 creationTime=1763700000000\n@BlobStore.content-type=application/java-archive\n\
                 @BlobStore.blob-name=com/acme/app/{i}/app-{i}.jar\n",
                bytes.len()
            )
            .as_bytes(),
        );
        f(&format!("{dir}/{uuid}.bytes"), &bytes);
    }
    f("blobs/default/content/tmp/tmp$upload.bytes", &data(5000, 1));
    for db in ["component", "config", "security"] {
        f(&format!("db/{db}/asset.pcl"), &data(70_000, 20));
        f(&format!("db/{db}/database.ocf"), b"orientdb");
        f(
            &format!("backup/{db}-2026-11-21-01-00-3.70.1-02.bak"),
            &data(40_000, 30),
        );
    }
    f(
        "etc/nexus.properties",
        b"nexus.scripts.allowCreation=false\n",
    );
    f("keystores/node/node.ks", &data(2000, 40));
    f(
        "elasticsearch/nexus/nodes/0/_state/global-1.st",
        &data(3000, 50),
    );
    f(
        "log/nexus.log",
        b"2026-11-21 01:00:00 INFO Started Sonatype Nexus\n",
    );
    f("tmp/jetty/work.tmp", b"scratch");
    f("cache/bundle1/data", b"cached");
    f(MARKER, b"running");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The fake `kubectl`: appends `ARGS status=$CAIRN_STATUS` to `$KUBECTL_LOG`; scaling
/// to 0 removes the marker, to 1 writes it; `KUBECTL_POD_STUCK=1` makes the pod never
/// go away (`wait` times out, `get pod` lists it).
const FAKE_KUBECTL: &str = r#"#!/bin/sh
echo "$* status=${CAIRN_STATUS:-}" >> "$KUBECTL_LOG"
case "$*" in
  *"scale deploy/nexus --replicas=0"*) [ -n "$KUBECTL_POD_STUCK" ] || rm -f "$NEXUS_DATA/fake-nexus-running" ;;
  *"scale deploy/nexus --replicas=1"*) echo running > "$NEXUS_DATA/fake-nexus-running" ;;
  *"wait --for=delete"*) [ -z "$KUBECTL_POD_STUCK" ] || { echo "error: timed out waiting for the condition" >&2; exit 1; } ;;
  *"get pod"*) [ -z "$KUBECTL_POD_STUCK" ] || echo pod/nexus-7d9f-x2x ;;
esac
"#;

struct Setup {
    repo: Repo,
    config: PathBuf,
    src: PathBuf,
    bin: PathBuf,
    log: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let repo = Repo::new();
        let src = repo.tmp.path().join("nexus-data");
        nexus_data(&src);
        let bin = repo.tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let kubectl = bin.join("kubectl");
        std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pw = repo.tmp.path().join("password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let profile = guide_profile();
        let profile = subst(
            &profile,
            "s3:http://minio.minio.svc:9000/cairn/nexus",
            repo.path.to_str().unwrap(),
        );
        let profile = subst(&profile, "/etc/cairn/password", pw.to_str().unwrap());
        let profile = subst(
            &profile,
            "\"/nexus-data\"",
            &format!("\"{}\"", src.display()),
        );
        let config = repo.tmp.path().join("config.toml");
        std::fs::write(&config, profile).unwrap();
        let log = repo.tmp.path().join("kubectl.log");
        Setup {
            repo,
            config,
            src,
            bin,
            log,
        }
    }

    /// `cairn --config C -p nexus ARGS` with the fake kubectl first on PATH.
    fn cairn(&self, args: &[&str]) -> assert_cmd::Command {
        let mut path = std::ffi::OsString::from(self.bin.as_os_str());
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = self.repo.cmd();
        c.env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD")
            .env("PATH", path)
            .env("KUBECTL_LOG", &self.log)
            .env("NEXUS_DATA", &self.src)
            .arg("--config")
            .arg(&self.config)
            .args(["-p", "nexus"])
            .args(args);
        c
    }

    /// The `kubectl scale` calls since the last look, as (replicas, CAIRN_STATUS).
    fn scale_calls(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        std::fs::remove_file(&self.log).ok();
        text.lines()
            .filter(|l| l.contains(" scale "))
            .map(|l| {
                let replicas = l.split("--replicas=").nth(1).unwrap();
                let status = l.split("status=").nth(1).unwrap();
                (
                    replicas.split_whitespace().next().unwrap().to_string(),
                    status.to_string(),
                )
            })
            .collect()
    }

    fn snapshot_count(&self) -> usize {
        let out = run_ok(
            self.cairn(&["snapshots", "--json"])
                .env("KUBECTL_LOG", "/dev/null"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().len()
    }
}

fn pair(replicas: &str, status: &str) -> (String, String) {
    (replicas.to_string(), status.to_string())
}

#[test]
fn nexus_profile_scales_down_backs_up_scales_up_and_restores() {
    let s = Setup::new();
    let out = run_ok(&mut s.cairn(&["backup"]));
    assert_eq!(
        s.scale_calls(),
        [pair("0", ""), pair("1", "ok")],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nexus was back (marker written by scale 1) only after the backup had read the tree.
    assert!(s.src.join(MARKER).exists());

    // Restore as the guide does: over a data directory a fresh Nexus has initialised.
    let target = s.repo.tmp.path().join("restored/nexus-data");
    std::fs::create_dir_all(target.join("db/component")).unwrap();
    std::fs::write(target.join("db/component/fresh.pcl"), b"new empty db").unwrap();
    std::fs::write(target.join("instance-id"), b"new").unwrap();
    let from = format!("latest:{}", s.src.display());
    run_ok(&mut s.cairn(&[
        "restore",
        &from,
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]));
    let strip = |state: std::collections::BTreeMap<String, blake3::Hash>, root: &Path| {
        state
            .into_iter()
            .map(|(k, v)| (k[root.display().to_string().len()..].to_string(), v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut want = strip(tree_state(&s.src), &s.src);
    let excluded = |k: &str| {
        k.starts_with("/tmp/")
            || k.starts_with("/cache/")
            || k.starts_with("/blobs/default/content/tmp/")
            || k == format!("/{MARKER}")
    };
    let before = want.len();
    want.retain(|k, _| !excluded(k));
    assert_eq!(
        before - want.len(),
        4,
        "tmp, cache, content/tmp and the marker"
    );
    let got = strip(tree_state(&target), &target);
    assert_eq!(got, want, "restored nexus-data differs");
    assert!(got.keys().any(|k| k.ends_with(".bak")) && got.len() > 480);
}

#[test]
fn nexus_is_scaled_up_again_when_the_backup_fails() {
    let s = Setup::new();
    // The pod does not go away: the pre command fails, no backup, Nexus scaled up.
    let out = s
        .cairn(&["backup"])
        .env("KUBECTL_POD_STUCK", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pre-command exited 1"), "{err}");
    assert_eq!(s.scale_calls(), [pair("0", ""), pair("1", "failed")]);
    assert_eq!(s.snapshot_count(), 0);

    // The repository cannot be opened (a lost mount, a wrong URL): exit 10, and the
    // post command still scales Nexus up.
    let moved = s.repo.tmp.path().join("repo-moved");
    std::fs::rename(&s.repo.path, &moved).unwrap();
    let out = s.cairn(&["backup"]).output().unwrap();
    std::fs::rename(&moved, &s.repo.path).unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.scale_calls(), [pair("0", ""), pair("1", "failed")]);
    assert!(s.src.join(MARKER).exists());
    assert_eq!(s.snapshot_count(), 0);
}
