//! Profiles: `cairn -p NAME CMD` takes options from a TOML config file; the command line
//! wins; `${VAR}` comes from the environment; unknown keys are errors naming the key.

use crate::common::{Repo, data, last_json_line, run_ok};

fn write_config(repo: &Repo, body: &str) -> std::path::PathBuf {
    let path = repo.tmp.path().join("config.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_profile_runs_backup_and_forget_with_its_options() {
    let repo = Repo::new();
    let src = repo.tmp.path().join("nexus-data");
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    std::fs::write(src.join("blob"), data(10_000, 1)).unwrap();
    std::fs::write(src.join("tmp/scratch"), b"x").unwrap();
    let hook = repo.tmp.path().join("hook");
    let config = write_config(
        &repo,
        &format!(
            r#"
[profiles.nexus]
repository = "{repo}"
json = true

[profiles.nexus.backup]
paths = ["${{NEXUS_DIR}}"]
exclude = ["tmp"]
tag = ["nexus", "nightly"]
post_command = "echo $CAIRN_STATUS > {hook}"

[profiles.nexus.forget]
keep_last = 1
"#,
            repo = repo.path.display(),
            hook = hook.display()
        ),
    );
    let mut cmd = repo.cmd();
    cmd.env_remove("CAIRN_REPOSITORY")
        .env("NEXUS_DIR", &src)
        .arg("--config")
        .arg(&config)
        .args(["-p", "nexus", "backup"]);
    let out = run_ok(&mut cmd);
    let s = last_json_line(&out.stdout);
    assert_eq!(s["summary"]["files_new"], 1, "tmp/ is excluded: {s:#}");
    assert_eq!(std::fs::read_to_string(&hook).unwrap().trim(), "ok");
    // The command line wins over the profile: its --tag replaces the profile's tags.
    let mut cmd = repo.cmd();
    cmd.env("NEXUS_DIR", &src)
        .arg("--config")
        .arg(&config)
        .args(["-p", "nexus", "backup", "--tag", "extra"]);
    run_ok(&mut cmd);
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(
        snaps[0]["snapshot"]["tags"],
        serde_json::json!(["nexus", "nightly"])
    );
    assert_eq!(snaps[1]["snapshot"]["tags"], serde_json::json!(["extra"]));

    let mut cmd = repo.cmd();
    cmd.arg("--config")
        .arg(&config)
        .args(["-p", "nexus", "forget"]);
    run_ok(&mut cmd);
    let out = run_ok(repo.cmd().args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
}

#[test]
fn unknown_keys_missing_profiles_and_unset_variables_are_named() {
    let repo = Repo::new();
    let config = write_config(
        &repo,
        r#"
[profiles.a.backup]
exclude_everything = true

[profiles.b.backup]
paths = ["${CAIRN_TEST_UNSET_VAR}"]

[profiles.c.backpu]
tag = ["x"]
"#,
    );
    let run = |args: &[&str]| {
        let out = repo
            .cmd()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["-p", "a", "backup"]);
    assert!(
        e.contains("exclude_everything") && e.contains("unknown key"),
        "{e}"
    );
    let e = run(&["-p", "b", "backup"]);
    assert!(e.contains("CAIRN_TEST_UNSET_VAR"), "{e}");
    let e = run(&["-p", "c", "backup"]);
    assert!(e.contains("backpu"), "{e}");
    let e = run(&["-p", "zzz", "snapshots"]);
    assert!(
        e.contains("no profile 'zzz'") && e.contains("a, b, c"),
        "{e}"
    );
}
