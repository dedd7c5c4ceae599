//! Profiles: named sets of options in a TOML file, so a cron line or a CronJob says
//! `cairn -p nexus backup` instead of twenty flags.
//!
//! ```toml
//! [profiles.nexus]                       # options before the command (global ones)
//! repository = "s3:http://minio:9000/backups/nexus"
//! password_command = "cat /etc/cairn/password"
//! s3_access_key_id = "${MINIO_ACCESS_KEY}"   # ${VAR}: from the environment
//!
//! [profiles.nexus.backup]                # options of `backup`
//! paths = ["/nexus-data"]
//! exclude = ["*/tmp/*"]
//! tag = ["nexus"]
//! pre_command = "kubectl scale deploy/nexus --replicas=0"
//!
//! [profiles.nexus.forget]
//! keep_daily = 7
//! prune = true
//! ```
//!
//! A key is the long option's name with `_` for `-`; arrays repeat the option; `true`
//! gives a flag, `false` leaves it out. A key no option has is an error that names it.
//! Options given on the command line win over the profile's.
//! The file is `--config PATH`, else `~/.config/cairn/config.toml`, else
//! `/etc/cairn/config.toml`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::CommandFactory;

use crate::cli::Cli;

/// The value of `--profile`/`-p` or `--config` in `args`, if given.
fn option_value(args: &[OsString], long: &str, short: Option<&str>) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == long || short.is_some_and(|s| a == s) {
            return it.next().map(|v| v.to_string_lossy().into_owned());
        }
        if let Some(v) = a.strip_prefix(&format!("{long}=")) {
            return Some(v.to_string());
        }
    }
    None
}

fn config_path(explicit: Option<String>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(x).join("cairn/config.toml"));
    } else if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(h).join(".config/cairn/config.toml"));
    }
    candidates.push(PathBuf::from("/etc/cairn/config.toml"));
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "--profile needs a config file: none of {} exists (or give --config PATH)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// `${VAR}` replaced by the environment's value.
fn expand(s: &str, key: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| anyhow!("{key}: unclosed ${{ in {s:?}"))?;
        let var = &rest[start + 2..start + end];
        let val = std::env::var(var)
            .map_err(|_| anyhow!("{key}: environment variable {var} is not set"))?;
        out.push_str(&val);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The arguments a table of options stands for, checked against `cmd`'s options.
fn to_args(
    table: &toml::Table,
    cmd: &clap::Command,
    given: &[OsString],
    place: &str,
) -> Result<(Vec<OsString>, Vec<OsString>)> {
    let mut args = Vec::new();
    let mut positional = Vec::new();
    for (key, value) in table {
        if value.is_table() {
            continue; // a subcommand's section, handled by the caller
        }
        let name = format!("{place}.{key}");
        if key == "paths" {
            for v in value
                .as_array()
                .ok_or_else(|| anyhow!("{name}: an array of paths"))?
            {
                let s = v
                    .as_str()
                    .ok_or_else(|| anyhow!("{name}: paths are strings"))?;
                positional.push(expand(s, &name)?.into());
            }
            continue;
        }
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(long.as_str())
                    || a.get_all_aliases()
                        .is_some_and(|al| al.contains(&long.as_str()))
            })
            .ok_or_else(|| {
                anyhow!(
                    "{name}: unknown key (`cairn {}` has no --{long} option)",
                    cmd.get_name()
                )
            })?;
        // The command line wins.
        let flag = format!("--{}", arg.get_long().unwrap_or(&long));
        let short = arg.get_short().map(|c| format!("-{c}"));
        let on_command_line = given.iter().any(|g| {
            let g = g.to_string_lossy();
            g == flag || g.starts_with(&format!("{flag}=")) || short.as_deref() == Some(&*g)
        });
        if on_command_line {
            continue;
        }
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => args.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => {
                    args.push(flag.clone().into());
                    args.push(expand(s, &name)?.into());
                }
                toml::Value::Integer(i) => {
                    args.push(flag.clone().into());
                    args.push(i.to_string().into());
                }
                toml::Value::Float(f) => {
                    args.push(flag.clone().into());
                    args.push(f.to_string().into());
                }
                other => bail!("{name}: {} values are not options", other.type_str()),
            }
        }
    }
    Ok((args, positional))
}

/// `args` with the selected profile's options put in, or `args` as they are.
pub fn apply(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(profile) = option_value(&args, "--profile", Some("-p")) else {
        return Ok(args);
    };
    let path = config_path(option_value(&args, "--config", None))?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
    for key in doc.keys() {
        if key != "profiles" {
            bail!(
                "config file {}: unknown key '{key}' (profiles go under [profiles.NAME])",
                path.display()
            );
        }
    }
    let profiles = doc
        .get("profiles")
        .and_then(|p| p.as_table())
        .ok_or_else(|| {
            anyhow!(
                "config file {}: no [profiles.NAME] sections",
                path.display()
            )
        })?;
    let p = profiles
        .get(&profile)
        .and_then(|p| p.as_table())
        .ok_or_else(|| {
            anyhow!(
                "no profile '{profile}' in {} (it has: {})",
                path.display(),
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
    let root = Cli::command();
    let place = format!("{}: [profiles.{profile}]", path.display());
    let (global, _) = to_args(p, &root, &args, &place)?;
    // The command: the first argument naming a subcommand that is not an option's value.
    let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
    let mut out: Vec<OsString> = vec![args[0].clone()];
    out.extend(global);
    let mut after_value = false;
    let mut command_seen = false;
    for a in &args[1..] {
        out.push(a.clone());
        let s = a.to_string_lossy();
        if command_seen {
            continue;
        }
        if after_value {
            after_value = false;
            continue;
        }
        if s.starts_with('-') {
            let takes_value = root.get_arguments().any(|arg| {
                let long = arg.get_long().map(|l| format!("--{l}"));
                let short = arg.get_short().map(|c| format!("-{c}"));
                (long.as_deref() == Some(&*s) || short.as_deref() == Some(&*s))
                    && arg.get_action().takes_values()
            });
            after_value = takes_value;
            continue;
        }
        if names.contains(&&*s) {
            command_seen = true;
            if let Some(section) = p.get(&*s).and_then(|v| v.as_table()) {
                let sub = root.find_subcommand(&*s).expect("listed");
                let (opts, positional) = to_args(section, sub, &args, &format!("{place}.{s}"))?;
                out.extend(opts);
                out.extend(positional);
            }
        }
    }
    for (key, value) in p {
        if value.is_table() && !names.contains(&key.as_str()) {
            bail!("{place}: unknown section [{key}] (not a cairn command)");
        }
    }
    Ok(out)
}
