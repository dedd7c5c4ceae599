//! The Harbor recipe (docs/guides/harbor-postgres.md) against a real PostgreSQL on
//! 127.0.0.1: `pg_dump` streamed into cairn on three "days" of changes, each day
//! restored with `cairn dump | psql` into a fresh database and compared by query; a
//! failing `pg_dump` leaves no snapshot and exits 1.

use std::process::Stdio;

use crate::common::Repo;
use crate::common::pg::PgServer;

/// What the registry holds, as one line: counts, sums and a digest of every row.
const FINGERPRINT: &str = "SELECT (SELECT count(*) FROM artifact) || ' ' || \
    (SELECT coalesce(sum(size), 0) FROM artifact) || ' ' || \
    (SELECT md5(coalesce(string_agg(id || repo || digest || size, ',' ORDER BY id), '')) FROM artifact) || ' ' || \
    (SELECT md5(coalesce(string_agg(artifact_id || name, ',' ORDER BY artifact_id, name), '')) FROM tag)";

const DAYS: [&str; 3] = [
    "CREATE TABLE artifact (id serial PRIMARY KEY, repo text NOT NULL, digest text NOT NULL, size bigint NOT NULL);
     CREATE TABLE tag (artifact_id int REFERENCES artifact(id) ON DELETE CASCADE, name text);
     INSERT INTO artifact (repo, digest, size)
       SELECT 'library/app' || (g % 50), md5(g::text), g * 1000 FROM generate_series(1, 20000) g;
     INSERT INTO tag SELECT id, 'v' || id FROM artifact WHERE id % 3 = 0;",
    "UPDATE artifact SET size = size + 1 WHERE id % 7 = 0;
     INSERT INTO artifact (repo, digest, size)
       SELECT 'library/new' || (g % 5), md5('new' || g), g FROM generate_series(1, 3000) g;",
    "DELETE FROM artifact WHERE id % 11 = 0;
     INSERT INTO tag SELECT id, 'latest' FROM artifact WHERE id > 22000;",
];

#[test]
fn registry_dumps_of_three_days_restore_into_fresh_databases() {
    let Some(pg) = PgServer::start() else { return };
    pg.sql("postgres", "CREATE DATABASE registry");
    let repo = Repo::new();
    let mut days = Vec::new();
    for (n, change) in DAYS.iter().enumerate() {
        pg.sql("registry", change);
        let expected = pg.sql("registry", FINGERPRINT);
        let out = repo
            .cmd()
            .args(["backup", "--json", "--stdin-from-command"])
            .args([
                "--stdin-name",
                "harbor/registry.sql",
                "--tag",
                &format!("day{}", n + 1),
            ])
            .arg("--")
            .args(pg.argv("pg_dump"))
            .args(["-d", "registry"])
            .output()
            .unwrap();
        let id = crate::common::snapshot_id(&out);
        days.push((id, expected));
    }
    for (n, (id, expected)) in days.iter().enumerate() {
        let db = format!("restore_day{}", n + 1);
        pg.sql("postgres", &format!("CREATE DATABASE {db}"));
        let mut dump = repo
            .cmd_std()
            .args(["dump", &format!("{id}:/harbor/registry.sql")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let psql = pg
            .client("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db])
            .stdin(dump.stdout.take().unwrap())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(dump.wait().unwrap().success());
        assert!(
            psql.status.success(),
            "{}",
            String::from_utf8_lossy(&psql.stderr)
        );
        assert_eq!(&pg.sql(&db, FINGERPRINT), expected, "day {}", n + 1);
    }
    // The days differ, so the comparisons above compared something.
    assert_ne!(days[0].1, days[1].1);
    assert_ne!(days[1].1, days[2].1);

    // Each dump was recognised and checked for its "dump complete" line.
    let out = repo
        .cmd()
        .args(["cat", "snapshot", &days[0].0])
        .output()
        .unwrap();
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        snap["snapshot"]["extra"]["stream_check"], "pg-dump: ok",
        "{snap:#}"
    );

    // A dump cut short (a pipe without `pipefail`): recorded, but incomplete (exit 3).
    let full = pg
        .client("pg_dump")
        .args(["-d", "registry"])
        .output()
        .unwrap();
    assert!(full.status.success());
    let cut = &full.stdout[..full.stdout.len() * 2 / 3];
    let mut child = repo
        .cmd_std()
        .args([
            "backup",
            "--json",
            "--stdin",
            "--stdin-name",
            "harbor/cut.sql",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), cut).unwrap();
    let out = child.wait_with_output().unwrap();
    crate::common::assert_incomplete(&out, "dump complete");

    // A dump that fails (no such database): exit 1, pg_dump's message, no snapshot.
    let out = repo
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-name",
            "harbor/nope.sql",
            "--",
        ])
        .args(pg.argv("pg_dump"))
        .args(["-d", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\" does not exist"), "{err}");
    let out = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 4);

    // `pg_dumpall` (the Deis recipe's extra dump): recognised and held to its cluster
    // trailer, which a cut before it lacks even though a database's trailer is there.
    let out = repo
        .cmd()
        .args(["backup", "--json", "--stdin-from-command"])
        .args(["--stdin-name", "deis/dump_all.sql", "--"])
        .args(pg.argv("pg_dumpall"))
        .output()
        .unwrap();
    crate::common::snapshot_id(&out);
    let s = crate::common::last_json_line(&out.stdout);
    assert_eq!(s["stream_check"], "pg-dump: ok", "{s:#}");
    let all = pg.client("pg_dumpall").output().unwrap().stdout;
    // Cut just before the cluster trailer's first line.
    let trailer = b"--\n-- PostgreSQL database cluster dump complete";
    let cut = all
        .windows(trailer.len())
        .rposition(|w| w == trailer)
        .unwrap();
    let out = repo
        .cmd()
        .args([
            "backup",
            "--json",
            "--stdin",
            "--stdin-name",
            "deis/cut.sql",
        ])
        .write_stdin(all[..cut].to_vec())
        .output()
        .unwrap();
    crate::common::assert_incomplete(&out, "cluster dump complete");
}

/// `cairn` with the server's client tools (`pg_restore`) first on PATH, or with `path`.
fn cmd_with_path(repo: &Repo, path: &std::ffi::OsStr) -> assert_cmd::Command {
    let mut c = repo.cmd();
    c.env("PATH", path);
    c
}

#[test]
fn custom_format_dumps_are_checked_with_pg_restore_whole_and_cut() {
    let Some(pg) = PgServer::start() else { return };
    pg.sql("postgres", "CREATE DATABASE registry");
    pg.sql("registry", DAYS[0]);
    let expected = pg.sql("registry", FINGERPRINT);
    let repo = Repo::new();
    let bin = crate::common::pg::bin_dir().unwrap();
    let mut path = std::ffi::OsString::from(bin.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());

    // A whole dump, streamed from pg_dump: recognised by its magic and checked.
    let out = cmd_with_path(&repo, &path)
        .args(["backup", "--json", "--stdin-from-command"])
        .args(["--stdin-name", "harbor/registry.dump", "--"])
        .args(pg.argv("pg_dump"))
        .args(["-Fc", "-d", "registry"])
        .output()
        .unwrap();
    let id = crate::common::snapshot_id(&out);
    let summary = crate::common::last_json_line(&out.stdout);
    assert_eq!(summary["stream_check"], "pg-custom: ok", "{summary:#}");

    // It restores with pg_restore into a fresh database.
    pg.sql("postgres", "CREATE DATABASE restored");
    let mut dump = repo
        .cmd_std()
        .args(["dump", &format!("{id}:/harbor/registry.dump")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let restore = pg
        .client("pg_restore")
        .args(["--exit-on-error", "-d", "restored"])
        .stdin(dump.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(pg.sql("restored", FINGERPRINT), expected);

    // Cut short, in the data and in its last bytes (where `pg_restore --list`, which
    // reads only the table of contents, would still pass): incomplete, exit 3.
    let full = pg
        .client("pg_dump")
        .args(["-Fc", "-d", "registry"])
        .output()
        .unwrap();
    assert!(full.status.success());
    let whole = full.stdout;
    assert!(whole.starts_with(b"PGDMP") && whole.len() > 100_000);
    let backup = |cmd: &mut assert_cmd::Command, bytes: &[u8], check: &str| {
        cmd.args(["backup", "--json", "--stdin", "--stdin-check", check])
            .args(["--stdin-name", "harbor/cut.dump"])
            .write_stdin(bytes.to_vec())
            .output()
            .unwrap()
    };
    for (len, check) in [
        (whole.len() * 2 / 3, "auto"),
        (whole.len() - 10, "auto"),
        (whole.len() - 10, "pg-custom"),
    ] {
        let out = backup(&mut cmd_with_path(&repo, &path), &whole[..len], check);
        crate::common::assert_incomplete(&out, "does not restore");
        let s = crate::common::last_json_line(&out.stdout);
        assert_eq!(s["stream_check"], "pg-custom: failed", "{s:#}");
        assert!(
            s["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("end of file"),
            "{s:#}"
        );
    }
    let out = backup(&mut cmd_with_path(&repo, &path), &whole, "pg-custom");
    crate::common::snapshot_id(&out);

    // Without pg_restore: `auto` stores the dump and records that the check was
    // skipped; an explicit `pg-custom` refuses to run (exit 1, no snapshot).
    let empty = tempfile::tempdir().unwrap();
    let out = backup(
        &mut cmd_with_path(&repo, empty.path().as_os_str()),
        &whole[..whole.len() - 10],
        "auto",
    );
    crate::common::snapshot_id(&out);
    let s = crate::common::last_json_line(&out.stdout);
    assert_eq!(s["complete"], true, "{s:#}");
    assert_eq!(
        s["stream_check"], "pg-custom: skipped (pg_restore is not installed)",
        "{s:#}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("check was skipped"), "{err}");
    let out = backup(
        &mut cmd_with_path(&repo, empty.path().as_os_str()),
        &whole,
        "pg-custom",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg_restore") && err.contains("cannot be run"),
        "{err}"
    );
    let out = repo.cmd().args(["snapshots", "--json"]).output().unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 6);
}
