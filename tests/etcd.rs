//! The etcd recipe (docs/guides/etcd.md) against a real etcd on 127.0.0.1 (Debian's
//! `etcd-server`): keys written, `etcdctl snapshot save`, the snapshot backed up with its
//! SHA-256 checked, restored with `cairn dump` and `etcdctl snapshot restore` into a new
//! data directory, a second etcd started on it, every key compared. A truncated snapshot
//! is recorded as incomplete (exit 3).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Repo, free_port, succeeded};

struct Etcd {
    child: Child,
    client: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, name: &str, p: u16) -> Etcd {
    let c = free_port();
    let client = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("{name}={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let e = Etcd { child, client };
    for _ in 0..100 {
        if ctl(&e)
            .args(["endpoint", "health"])
            .output()
            .unwrap()
            .status
            .success()
        {
            return e;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("etcd did not start on {}", e.client);
}

fn ctl(e: &Etcd) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3").args(["--endpoints", &e.client]);
    c
}

fn all_keys(e: &Etcd) -> Vec<u8> {
    let out = ctl(e).args(["get", "", "--prefix"]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn etcd_snapshot_backed_up_checked_restored_and_served() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!(
            "skipped: etcd not installed (scripts/install-deps.sh installs etcd-server and etcd-client)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = start(&tmp.path().join("src.etcd"), "src", free_port());
    for i in 0..500 {
        let ok = ctl(&src)
            .args([
                "put",
                &format!("/registry/pods/p{i:04}"),
                &format!("{{\"v\":{i}}}"),
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let snap_file = tmp.path().join("snapshot.db");
    succeeded(
        ctl(&src)
            .arg("snapshot")
            .arg("save")
            .arg(&snap_file)
            .output()
            .unwrap(),
    );
    let want = all_keys(&src);
    drop(src);

    let repo = Repo::new();
    let backup = |file: &Path| {
        repo.cmd()
            .args([
                "backup",
                "--json",
                "--stdin",
                "--stdin-name",
                "etcd/snapshot.db",
            ])
            .args(["--stdin-check", "etcd-snapshot"])
            .pipe_stdin(file)
            .unwrap()
            .output()
            .unwrap()
    };
    let out = backup(&snap_file);
    let id = crate::common::snapshot_id(&out);

    // Restore: the file, then etcd's own restore into a new data directory.
    let restored: PathBuf = tmp.path().join("restored.db");
    let out = repo
        .cmd()
        .args(["dump", &format!("{id}:/etcd/snapshot.db")])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&restored, &out.stdout).unwrap();
    let new_data = tmp.path().join("new.etcd");
    let peer = free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    succeeded(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(&restored)
            .arg("--data-dir")
            .arg(&new_data)
            .args([
                "--name",
                "new",
                "--initial-cluster",
                &format!("new={peer_url}"),
            ])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .output()
            .unwrap(),
    );
    let new = start(&new_data, "new", peer);
    assert_eq!(all_keys(&new), want);
    assert!(want.len() > 500 * 20, "the keys were written");

    // A snapshot cut short: recorded, but incomplete, with the reason (exit 3).
    let bytes = std::fs::read(&snap_file).unwrap();
    let cut = tmp.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let out = backup(&cut);
    crate::common::assert_incomplete(&out, "SHA-256");
}
