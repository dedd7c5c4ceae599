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
    // The hooks are the Nexus guide's (tests/nexus.rs runs those), and the Role allows
    // what they do beyond scaling: waiting for the pod to go and listing pods.
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/nexus.md"))
            .unwrap();
    let profile = guide
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("[profiles.nexus.backup]"))
        .unwrap();
    let profile: toml::Table = profile.parse().unwrap();
    let hooks = &profile["profiles"]["nexus"]["backup"];
    for (key, opt) in [
        ("pre_command", "pre-command"),
        ("post_command", "post-command"),
    ] {
        let hook = hooks[key].as_str().unwrap();
        assert!(
            args.contains(&format!("--{opt}={hook}")),
            "the CronJob's --{opt} is not the guide's: {hook}"
        );
    }
    let pre = hooks["pre_command"].as_str().unwrap();
    if pre.contains(" wait ") || pre.contains(" get pod") {
        let may_watch_pods = role["rules"].as_vec().unwrap().iter().any(|r| {
            let has =
                |k: &str, v: &str| r[k].as_vec().unwrap().iter().any(|x| x.as_str() == Some(v));
            has("apiGroups", "")
                && has("resources", "pods")
                && ["get", "list", "watch"].iter().all(|v| has("verbs", v))
        });
        assert!(
            may_watch_pods,
            "the hooks wait for pods: the Role must get, list and watch pods"
        );
    }
}

/// The image cannot be built here (no Docker engine, no network), so its recipe is
/// checked: a release build of the locked sources, the binary as the entry point, the
/// tools the jobs and recipes call, no root, and the cache where the jobs mount it.
#[test]
fn dockerfile_has_what_the_jobs_need() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    // Instructions, with continuation lines joined and comments dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a small runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"), "{}", froms[0]);
    // The runtime's Debian release is the build's, so the binary's glibc is there.
    let release = |from: &str| {
        from.split([':', '-', ' '])
            .find(|w| ["bookworm", "trixie", "bullseye"].contains(w))
            .map(str::to_string)
    };
    assert!(release(froms[0]).is_some());
    assert_eq!(release(froms[0]), release(froms[1]));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RUN ") && l.contains("cargo build --release --locked")),
        "the image builds the locked release binary"
    );
    assert!(lines.contains(&"COPY --from=build /src/target/release/cairn /usr/local/bin/cairn"));
    assert_eq!(
        lines.iter().rfind(|l| l.starts_with("ENTRYPOINT")).copied(),
        Some("ENTRYPOINT [\"/usr/local/bin/cairn\"]")
    );
    let installs = lines
        .iter()
        .filter(|l| l.starts_with("RUN ") && l.contains("apt-get install"))
        .skip(1)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    // TLS to S3; pg_dump/pg_restore (the Harbor recipe and the pg-custom check); etcdctl.
    for pkg in ["ca-certificates", "postgresql-client", "etcd-client"] {
        assert!(
            installs.split_whitespace().any(|w| w == pkg),
            "runtime lacks {pkg}: {installs}"
        );
    }
    assert!(
        lines.iter().any(|l| (l.starts_with("ADD ")
            || l.starts_with("COPY ")
            || l.starts_with("RUN "))
            && l.contains("/usr/local/bin/kubectl")),
        "kubectl for the scale hooks"
    );
    let user = lines
        .iter()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains(" root") && !user.contains(" 0"), "{user}");
    // The jobs mount the cache at /cache: the image's XDG_CACHE_HOME must point there.
    assert!(lines.contains(&"ENV XDG_CACHE_HOME=/cache"));
    for file in [
        "backup-cronjob.yaml",
        "check-cronjob.yaml",
        "forget-cronjob.yaml",
    ] {
        let job = &docs(file)[0];
        let pod = s(job, &["spec", "jobTemplate", "spec", "template", "spec"]);
        let mounts = pod["containers"][0]["volumeMounts"].as_vec().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"].as_str() == Some("/cache")),
            "{file}: no cache volume at /cache"
        );
    }
}
