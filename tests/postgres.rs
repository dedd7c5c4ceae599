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
}
