//! The Kubernetes manifests in deploy/k8s parse, and what matters in them holds: every
//! CronJob runs a cairn command whose options exist, one job at a time, never retried
//! blindly; every secret key they read is in the Secret; the backup job's service
//! account may scale the deployment its hooks scale.

use std::collections::HashSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn docs(file: &str) -> Vec<Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/k8s")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn s<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

fn text(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

/// The long options `cairn SUB --help` lists.
fn options_of(sub: &str) -> HashSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cairn {sub} --help");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split(['=', ',', '<', '[']).next().unwrap().to_string())
        .collect()
}

#[test]
fn manifests_are_consistent_and_run_real_cairn_commands() {
    let secret = &docs("secret.yaml")[0];
    assert_eq!(text(&secret["kind"]), "Secret");
    let secret_name = text(s(secret, &["metadata", "name"]));
    let keys: HashSet<&str> = secret["stringData"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();

    let rbac = docs("rbac.yaml");
    let accounts: Vec<&str> = rbac
        .iter()
        .filter(|d| text(&d["kind"]) == "ServiceAccount")
        .map(|d| text(s(d, &["metadata", "name"])))
        .collect();
    let role = rbac.iter().find(|d| text(&d["kind"]) == "Role").unwrap();
    let may_scale = role["rules"].as_vec().unwrap().iter().any(|r| {
        let has = |k: &str, v: &str| r[k].as_vec().unwrap().iter().any(|x| x.as_str() == Some(v));
        has("resources", "deployments/scale") && has("verbs", "patch")
    });
    assert!(may_scale, "the Role must allow patching deployments/scale");
    let binding = rbac
        .iter()
        .find(|d| text(&d["kind"]) == "RoleBinding")
        .unwrap();
    assert_eq!(
        text(s(binding, &["roleRef", "name"])),
        text(s(role, &["metadata", "name"]))
    );

    let mut commands = Vec::new();
    for file in [
        "backup-cronjob.yaml",
        "check-cronjob.yaml",
        "forget-cronjob.yaml",
    ] {
        let job = &docs(file)[0];
        assert_eq!(text(&job["apiVersion"]), "batch/v1", "{file}");
        assert_eq!(text(&job["kind"]), "CronJob", "{file}");
        let spec = &job["spec"];
        assert_eq!(
            text(&spec["schedule"]).split_whitespace().count(),
            5,
            "{file}"
        );
        assert_eq!(text(&spec["concurrencyPolicy"]), "Forbid", "{file}");
        let pod = s(spec, &["jobTemplate", "spec", "template", "spec"]);
        assert_eq!(
            s(spec, &["jobTemplate", "spec", "backoffLimit"]).as_i64(),
            Some(0),
            "{file}"
        );
        assert_eq!(text(&pod["restartPolicy"]), "Never", "{file}");
        if let Some(sa) = pod["serviceAccountName"].as_str() {
            assert!(accounts.contains(&sa), "{file}: service account {sa}");
        }
        let c = &pod["containers"][0];
        assert!(text(&c["image"]).starts_with("cairn"), "{file}");
        for e in c["env"].as_vec().unwrap() {
            let r = s(e, &["valueFrom", "secretKeyRef"]);
            assert_eq!(text(&r["name"]), secret_name, "{file}");
            assert!(keys.contains(text(&r["key"])), "{file}: key {:?}", r["key"]);
        }
        // The cairn command line: args, or a shell line starting with `cairn`.
        let args: Vec<String> = c["args"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|a| text(a).to_string())
            .collect();
        let words: Vec<String> = if c["command"].is_badvalue() {
            args
        } else {
            let line = args.join(" ");
            let line = line.trim_start_matches("exec ");
            let rest = line
                .strip_prefix("cairn ")
                .unwrap_or_else(|| panic!("{file}: {line}"));
            rest.split_whitespace().map(str::to_string).collect()
        };
        let sub = words[0].clone();
        let known = options_of(&sub);
        for w in &words[1..] {
            if let Some(opt) = w.strip_prefix("--") {
                let name = opt.split('=').next().unwrap();
                assert!(
                    known.contains(name),
                    "{file}: `cairn {sub}` has no --{name}"
                );
            }
        }
        commands.push(sub);
    }
    assert_eq!(commands, ["backup", "check", "forget"]);
    // The backup job scales down before and up after, whatever happens.
    let backup = &docs("backup-cronjob.yaml")[0];
    let args = s(
        backup,
        &[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "spec",
            "containers",
        ],
    )[0]["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| text(a).to_string())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(args.contains("--pre-command=kubectl -n nexus scale deploy/nexus --replicas=0"));
    assert!(args.contains("--post-command=kubectl -n nexus scale deploy/nexus --replicas=1"));
}
