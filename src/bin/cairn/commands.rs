//! One function per command; each turns arguments into library options and makes the
//! library call.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use cairn::backend::{self, S3Options};
use cairn::crypto::kdf::KdfParams;
use cairn::format::{
    self, BlobType, ChunkerParams, IndexFile, KeyFile, PackHeader, Tree, aad, names,
};
use cairn::ops::backup::{self, BackupOptions, Progress, Source};
use cairn::ops::restore::{self, RestoreOptions};
use cairn::ops::select::{self, SelectOptions};
use cairn::ops::walk;
use cairn::repository::{IndexedRepository, InitOptions, RepoOptions, Repository};
use cairn::util::human_bytes;
use zeroize::Zeroizing;

use crate::cli::{
    BackupArgs, CatCommand, Cli, Command, Global, InitArgs, KeyCommand, LsArgs, NewPassword,
    RestoreArgs,
};
use crate::exit;

pub fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init(g, a),
        Command::Backup(a) => {
            let (metrics, started) = (a.metrics_file.clone(), std::time::Instant::now());
            let (pre, post) = (a.pre_command.clone(), a.post_command.clone());
            let r = crate::hooks::around(
                pre.as_deref(),
                post.as_deref(),
                crate::exit_code,
                |snapshot| backup_cmd(g, *a, snapshot),
            );
            if let (Err(_), Some(path)) = (&r, &metrics) {
                let repo = g.repo.as_deref().unwrap_or_default();
                if let Err(e) = crate::check::backup_metrics(path, repo, None, started.elapsed()) {
                    eprintln!("warning: {e:#}");
                }
            }
            r
        }
        Command::Snapshots(f) => snapshots(g, &f),
        Command::Ls(a) => ls(g, a),
        Command::Restore(a) => restore_cmd(g, a),
        Command::Dump(a) => crate::browse::dump(g, a),
        Command::Diff(a) => crate::browse::diff(g, a),
        Command::Find(a) => crate::browse::find(g, a),
        Command::Stats(a) => crate::browse::stats(g, a),
        Command::Key(k) => key(g, k),
        Command::Cat(c) => cat(g, c),
        Command::Forget(a) => crate::retention::forget(g, *a),
        Command::Prune { dry_run, args } => crate::retention::prune_cmd(g, dry_run, &args),
        Command::Protect(a) => crate::retention::protect(g, a, true),
        Command::Unprotect(a) => crate::retention::protect(g, a, false),
        Command::Unlock(a) => crate::retention::unlock(g, a),
        Command::Copy(a) => copy_cmd(g, a),
        Command::Check(a) => crate::check::check(g, a),
        Command::Repair(r) => crate::check::repair(g, r),
        Command::Mount(a) => crate::mount::mount(g, a),
    }
}

fn repo_url(g: &Global) -> Result<&str> {
    g.repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set CAIRN_REPOSITORY"))
}

fn repo_options(g: &Global) -> RepoOptions {
    RepoOptions {
        cache_dir: g.cache_dir.clone(),
        connections: g.connections as usize,
    }
}

fn first_line(s: &str) -> &str {
    s.split(['\n', '\r']).next().unwrap_or("")
}

/// The password: --password-file, --password-command, CAIRN_PASSWORD, or a TTY prompt.
fn password(g: &Global, confirm: bool) -> Result<Zeroizing<String>> {
    match given_password(
        g.password_file.as_deref(),
        g.password_command.as_deref(),
        "CAIRN_PASSWORD",
        "--password-command",
    )? {
        Some(p) => Ok(p),
        None => prompt("password", confirm),
    }
}

/// A password from a file's first line, a command's output, or an environment
/// variable, in that order; `None` when none is given.
fn given_password(
    file: Option<&Path>,
    command: Option<&str>,
    env: &str,
    option: &str,
) -> Result<Option<Zeroizing<String>>> {
    if let Some(f) = file {
        let s = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading password file {}", f.display()))?,
        );
        return Ok(Some(Zeroizing::new(first_line(&s).to_string())));
    }
    if let Some(cmd) = command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {option}"))?;
        if !out.status.success() {
            bail!("{option} failed ({})", out.status);
        }
        let s = Zeroizing::new(
            String::from_utf8(out.stdout).context("password command output is not UTF-8")?,
        );
        return Ok(Some(Zeroizing::new(first_line(&s).to_string())));
    }
    Ok(std::env::var(env).ok().map(Zeroizing::new))
}

/// `cairn copy`: the target's password comes from its own options or CAIRN_TO_PASSWORD.
fn copy_cmd(g: &Global, a: crate::cli::CopyArgs) -> Result<u8> {
    let src = open_indexed(g)?;
    let snaps = if a.snapshots.is_empty() {
        src.snapshots()?
    } else {
        a.snapshots
            .iter()
            .map(|s| src.find_snapshot(s))
            .collect::<cairn::Result<Vec<_>>>()?
    };
    let pw = match given_password(
        a.to_password_file.as_deref(),
        a.to_password_command.as_deref(),
        "CAIRN_TO_PASSWORD",
        "--to-password-command",
    )? {
        Some(p) => p,
        None => prompt("target repository password", false)?,
    };
    let store = backend::open(&a.to, false, &s3_options(g)?)?;
    let dst = Repository::open(store, pw.as_bytes(), repo_options(g))?
        .into_indexed_announced(cairn::format::LockKind::Backup)?;
    let report = cairn::ops::copy::copy(&src, &dst, &snaps)?;
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        for (from, to) in &report.copied {
            println!("copied {} as {}", from.short(), to.short());
        }
        if !report.skipped.is_empty() {
            println!("{} snapshot(s) already in the target", report.skipped.len());
        }
        println!(
            "read {}, added {} to {}",
            human_bytes(report.bytes_read),
            human_bytes(report.bytes_added),
            a.to
        );
    }
    if let Some((id, why)) = report.failed.first() {
        bail!(
            "{} snapshot(s) could not be copied, the first {}: {why}. The others were \
             copied; run `cairn check` on the source",
            report.failed.len(),
            id.short()
        );
    }
    Ok(exit::OK)
}

fn prompt(what: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!(
            "no {what} given: use --password-file, --password-command or CAIRN_PASSWORD (no terminal to ask on)"
        );
    }
    let p = Zeroizing::new(rpassword::prompt_password(format!("enter {what}: "))?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password(format!("enter {what} again: "))?);
        if *again != *p {
            bail!("the two {what}s differ");
        }
    }
    if p.is_empty() {
        bail!("empty {what}");
    }
    Ok(p)
}

fn s3_options(g: &Global) -> Result<S3Options> {
    let a = &g.s3;
    let secret = match &a.s3_secret_access_key_file {
        Some(f) => Some(
            first_line(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            )
            .to_string(),
        ),
        None => None,
    };
    Ok(S3Options {
        endpoint: a.s3_endpoint.clone(),
        region: a.s3_region.clone(),
        virtual_hosted: a.s3_virtual_hosted,
        access_key_id: a.s3_access_key_id.clone(),
        secret_access_key: secret,
        session_token: None,
        profile: a.s3_profile.clone(),
        retries: a.retries,
        retry_timeout: a.retry_timeout,
        timeout: a.timeout,
        connect_timeout: std::time::Duration::from_secs(10).min(a.timeout),
        part_size: a.s3_part_size,
    })
}

pub(crate) fn open(g: &Global) -> Result<Repository> {
    let url = repo_url(g)?;
    let store = backend::open(url, false, &s3_options(g)?)?;
    let pw = password(g, false)?;
    Ok(Repository::open(store, pw.as_bytes(), repo_options(g))?)
}

pub(crate) fn open_indexed(g: &Global) -> Result<IndexedRepository> {
    announced(open(g)?, None)
}

/// Load the index, announcing the operation first when it has a `kind` of lock.
pub(crate) fn announced(
    repo: cairn::Repository,
    kind: Option<cairn::format::LockKind>,
) -> Result<IndexedRepository> {
    let repo = match kind {
        Some(k) => repo.into_indexed_announced(k)?,
        None => repo.into_indexed()?,
    };
    for name in &repo.sync_stats().damaged {
        eprintln!("warning: index file {name} could not be read; run `cairn check`");
    }
    Ok(repo)
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn init(g: &Global, a: InitArgs) -> Result<u8> {
    let url = repo_url(g)?;
    let chunker = ChunkerParams {
        min: a.chunk_min,
        avg: a.chunk_avg,
        max: a.chunk_max,
    };
    chunker.validate()?;
    let opts = InitOptions {
        chunker,
        pack_size: a
            .pack_size_mib
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("--pack-size-mib {} is too large", a.pack_size_mib))?,
        compression: a.compression,
        kdf: KdfParams::with_cost(
            a.kdf_memory_kib,
            KdfParams::DEFAULT_ITERATIONS,
            KdfParams::DEFAULT_PARALLELISM,
        ),
    };
    let s3 = s3_options(g)?;
    if a.create_bucket {
        if !backend::is_s3(url) {
            bail!("--create-bucket is for S3 repositories");
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(backend::s3::create_bucket(url, &s3))?;
    }
    let store = backend::open(url, true, &s3)?;
    let pw = password(g, true)?;
    let repo = Repository::init(store, pw.as_bytes(), opts, repo_options(g))
        .context("init refused, nothing was changed")?;
    if g.json {
        print_json(&serde_json::json!({"repository": url, "id": repo.config().id}))?;
    } else if !g.quiet {
        println!(
            "created cairn repository {} at {url}",
            repo.config().id.short()
        );
        println!("keep the password safe: without it the data cannot be restored");
    }
    Ok(exit::OK)
}

fn parse_time(s: &str) -> Result<format::Timestamp> {
    use chrono::TimeZone;
    let dt = if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&chrono::Utc)
    } else {
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
            })
            .map_err(|_| {
                anyhow!("--time '{s}': use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339")
            })?;
        chrono::Local
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| anyhow!("--time '{s}' does not exist in the local time zone"))?
            .with_timezone(&chrono::Utc)
    };
    Ok(format::Timestamp {
        secs: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos(),
    })
}

fn backup_options(g: &Global, a: &BackupArgs, repo: &IndexedRepository) -> Result<BackupOptions> {
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_file {
        excludes.extend(select::read_pattern_file(f)?);
    }
    let parent = match &a.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    let _ = g;
    Ok(BackupOptions {
        tags: a.tags.clone(),
        host: a.host.clone(),
        time: a.time.as_deref().map(parse_time).transpose()?,
        parent,
        force: a.force,
        dry_run: a.dry_run,
        verify_new: a.verify_new,
        stream_check: a.stdin_check.parse()?,
        select: SelectOptions {
            excludes,
            iexcludes: a.iexcludes.clone(),
            exclude_if_present: a.exclude_if_present.clone(),
            one_file_system: a.one_file_system,
        },
    })
}

fn backup_source(a: &BackupArgs) -> Result<Source> {
    if a.stdin_from_command {
        if a.command.is_empty() {
            bail!(
                "--stdin-from-command needs the command after `--`, e.g. -- pg_dump -Fp registry"
            );
        }
        return Ok(Source::Command {
            name: a.stdin_name.clone(),
            argv: a.command.clone(),
        });
    }
    if !a.command.is_empty() {
        bail!("arguments after `--` are only used with --stdin-from-command");
    }
    if a.stdin {
        return Ok(Source::Stream {
            name: a.stdin_name.clone(),
            reader: Box::new(std::io::stdin()),
            info: Default::default(),
        });
    }
    let mut paths = a.paths.clone();
    for f in &a.files_from {
        let text =
            std::fs::read(f).with_context(|| format!("reading --files-from {}", f.display()))?;
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            // Lists written on Windows end their lines with CR LF.
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            if line.contains(&0) {
                bail!(
                    "--files-from {}: line {} holds a NUL byte; give one path per line \
                     (`find -print`, not `-print0`)",
                    f.display(),
                    n + 1
                );
            }
            paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(line)));
        }
    }
    if paths.is_empty() {
        bail!("nothing to back up: give paths, --files-from, --stdin or --stdin-from-command");
    }
    Ok(Source::Paths(paths))
}

fn backup_cmd(g: &Global, a: BackupArgs, snapshot: &mut Option<cairn::SnapshotId>) -> Result<u8> {
    let source = backup_source(&a)?;
    let kind = (!a.dry_run).then_some(cairn::format::LockKind::Backup);
    let repo = announced(open(g)?, kind)?;
    let opts = backup_options(g, &a, &repo)?;
    let progress = std::sync::Arc::new(Progress::default());
    let reporter = crate::progress::Reporter::start(progress.clone(), g.json, g.quiet);
    let done = backup::backup(&repo, source, &opts, &progress);
    reporter.finish();
    let done = done?;
    *snapshot = done.id;
    if let Some(path) = &a.metrics_file {
        let elapsed = std::time::Duration::from_millis(done.snapshot.summary.duration_ms);
        crate::check::backup_metrics(path, repo_url(g)?, Some(&done), elapsed)?;
    }
    let s = &done.snapshot.summary;
    let short = done
        .id
        .map(|i| i.short())
        .unwrap_or_else(|| "(dry run)".into());
    if g.json {
        let requests = repo.backend().request_stats().map(|r| {
            use std::sync::atomic::Ordering::Relaxed;
            serde_json::json!({
                "gets": r.gets.load(Relaxed), "puts": r.puts.load(Relaxed),
                "other": r.other.load(Relaxed), "failed_attempts": r.failed_attempts.load(Relaxed),
            })
        });
        let line = serde_json::json!({
            "message_type": "summary",
            "requests": requests,
            "snapshot_id": done.id,
            "dry_run": opts.dry_run,
            "parent": done.snapshot.parent,
            "complete": done.snapshot.complete,
            "problems": done.problems,
            "stream_check": done.snapshot.extra.get("stream_check"),
            "summary": s,
            "verified": done.verified.map(|(packs, bytes)| serde_json::json!({"packs": packs, "bytes": bytes})),
        });
        summary_line(&line.to_string());
    } else if !g.quiet {
        let verb = if opts.dry_run { "would add" } else { "added" };
        summary_line(&format!(
            "snapshot {short}: {} new, {} changed, {} unchanged files, {} dirs; {} read, {} {verb} to the repository in {:.1}s",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            s.dirs,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_added),
            s.duration_ms as f64 / 1000.0
        ));
    }
    if done.snapshot.complete {
        Ok(exit::OK)
    } else {
        eprintln!(
            "warning: snapshot {short} is incomplete: {} input(s) could not be read (listed above)",
            done.problems.len()
        );
        Ok(exit::INCOMPLETE)
    }
}

/// Print a backup's summary. The snapshot is written by now: a closed stdout (a reader
/// that went away) must not turn that into a failure or skip `--post-command`.
fn summary_line(line: &str) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        tracing::debug!("summary not printed: {e}");
    }
}

pub(crate) fn local_time(t: format::Timestamp) -> String {
    t.to_datetime()
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| format!("@{}", t.secs))
}

fn snapshots(g: &Global, filter: &crate::cli::SnapshotFilter) -> Result<u8> {
    let repo = open(g)?;
    let mut list = repo.snapshots()?;
    list.retain(|(_, s)| crate::retention::selected(filter, s));
    if g.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| serde_json::json!({"id": id, "snapshot": s}))
            .collect();
        print_json(&v)?;
        return Ok(exit::OK);
    }
    println!(
        "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:<8}  paths",
        "id", "time", "host", "tags", "size", "state"
    );
    for (id, s) in &list {
        println!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {:<8}  {}",
            id.short(),
            local_time(s.time),
            s.host,
            s.tags.join(","),
            human_bytes(s.summary.total_bytes),
            if s.complete { "complete" } else { "INCOMPLETE" },
            s.paths.join(" ")
        );
    }
    if !g.quiet {
        println!("{} snapshot(s)", list.len());
    }
    Ok(exit::OK)
}

fn ls(g: &Global, a: LsArgs) -> Result<u8> {
    let (spec, mut path) = walk::split_spec(&a.snapshot);
    if let Some(p) = &a.path {
        path = p;
    }
    let repo = open_indexed(g)?;
    let (_, snap) = repo.find_snapshot(spec)?;
    let base = PathBuf::from(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    });
    let mut out = std::io::stdout().lock();
    let mut print = |p: &Path, n: &format::Node| -> cairn::Result<bool> {
        let r = if g.json {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({
                    "path": p.to_string_lossy(), "type": n.kind.letter().to_string(), "mode": n.mode,
                    "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group, "size": n.size,
                    "mtime": n.mtime.to_datetime().map(|d| d.to_rfc3339()),
                }),
            )
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out))
        } else if a.long {
            let user = if n.user.is_empty() {
                n.uid.to_string()
            } else {
                n.user.clone()
            };
            let group = if n.group.is_empty() {
                n.gid.to_string()
            } else {
                n.group.clone()
            };
            write!(
                out,
                "{}{:04o} {user:>8} {group:>8} {:>12} {}  ",
                n.kind.letter(),
                n.mode,
                n.size,
                local_time(n.mtime),
            )
            .and_then(|_| out.write_all(p.as_os_str().as_bytes()))
            .and_then(|_| writeln!(out))
        } else {
            // Names are bytes: print them as stored, not lossily.
            out.write_all(p.as_os_str().as_bytes())
                .and_then(|_| writeln!(out))
        };
        r.map_err(|e| cairn::Error::Io {
            path: "<stdout>".into(),
            error: e,
        })?;
        Ok(true)
    };
    match walk::find_node(&repo, &snap.tree, &base)? {
        None => walk::walk(&repo, &snap.tree, Path::new("/"), &mut print)?,
        Some(node) => {
            print(&base, &node)?;
            if let format::NodeKind::Dir { subtree } = &node.kind {
                if a.recursive {
                    walk::walk(&repo, subtree, &base, &mut print)?;
                } else {
                    // One level: the directory's own entries.
                    for n in &repo.load_tree(subtree)?.nodes {
                        print(&base.join(std::ffi::OsStr::from_bytes(&n.name)), n)?;
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}

fn restore_cmd(g: &Global, a: RestoreArgs) -> Result<u8> {
    let (spec, path) = walk::split_spec(&a.snapshot);
    let repo = open_indexed(g)?;
    let (id, snap) = repo.find_snapshot(spec)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        path: PathBuf::from(path),
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        sparse: a.sparse,
        verify: a.verify,
        delete: a.delete,
    };
    // What was left out when the snapshot was taken is not in it to restore.
    if !snap.complete {
        eprintln!(
            "warning: snapshot {} is incomplete: {} input(s) could not be read when it was \
             taken and are not in it (`cairn cat snapshot {}` lists them)",
            id.short(),
            snap.problems.len(),
            id.short()
        );
    }
    let stats = restore::restore(&repo, &snap, &opts)?;
    for p in &stats.problems {
        eprintln!("error: {p}");
    }
    if g.json {
        print_json(&serde_json::json!({
            "snapshot_id": id, "files": stats.files, "dirs": stats.dirs, "other": stats.other,
            "files_unchanged": stats.files_unchanged, "bytes_written": stats.bytes_written,
            "bytes_fetched": stats.bytes_fetched, "requests": stats.requests, "deleted": stats.deleted,
            "problems": stats.problems, "snapshot_complete": snap.complete,
        }))?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({} already complete), {} dirs, {} other; {} written, {} fetched in {} requests",
            id.short(),
            a.target.display(),
            stats.files,
            stats.files_unchanged,
            stats.dirs,
            stats.other,
            human_bytes(stats.bytes_written),
            human_bytes(stats.bytes_fetched),
            stats.requests
        );
    }
    if stats.problems.is_empty() {
        Ok(exit::OK)
    } else {
        bail!(
            "restore finished with {} error(s) (listed above); everything else was restored",
            stats.problems.len()
        )
    }
}

fn new_password(a: &NewPassword) -> Result<Zeroizing<String>> {
    if let Some(f) = &a.new_password_file {
        let s = Zeroizing::new(
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        );
        return Ok(Zeroizing::new(first_line(&s).to_string()));
    }
    if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    prompt("new password", true)
}

fn key(g: &Global, k: KeyCommand) -> Result<u8> {
    let mut repo = open(g)?;
    match k {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                print_json(&keys)?;
            } else {
                println!("  {:<8}  {:<19}  {:<12}  user", "id", "created", "host");
                for k in keys {
                    if let Some(d) = &k.damage {
                        println!("  {:<8}  DAMAGED: {d}", k.id.short());
                        continue;
                    }
                    println!(
                        "{} {:<8}  {:<19}  {:<12}  {}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        local_time(format::Timestamp {
                            secs: k.created,
                            nanos: 0
                        }),
                        k.host,
                        k.user
                    );
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = new_password(&a)?;
            let id = repo.add_key(
                pw.as_bytes(),
                KdfParams::with_cost(
                    a.kdf_memory_kib,
                    KdfParams::DEFAULT_ITERATIONS,
                    KdfParams::DEFAULT_PARALLELISM,
                ),
            )?;
            if !g.quiet {
                println!("added key {}", id.short());
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys()?;
            let m: Vec<_> = keys
                .iter()
                .filter(|k| k.id.to_hex().starts_with(&id.to_lowercase()))
                .collect();
            let k = match m.as_slice() {
                [k] => k.id,
                [] => bail!("no key {id}"),
                _ => bail!("key prefix {id} is ambiguous"),
            };
            repo.remove_key(&k)?;
            if !g.quiet {
                println!("removed key {}", k.short());
            }
        }
        KeyCommand::Passwd(a) => {
            let pw = new_password(&a)?;
            let id = repo.change_password(
                pw.as_bytes(),
                KdfParams::with_cost(
                    a.kdf_memory_kib,
                    KdfParams::DEFAULT_ITERATIONS,
                    KdfParams::DEFAULT_PARALLELISM,
                ),
            )?;
            if !g.quiet {
                println!("password changed; new key {}", id.short());
            }
        }
    }
    Ok(exit::OK)
}

fn find_object(repo: &Repository, folder: &str, prefix: &str) -> Result<String> {
    let list = repo.block_on(repo.backend().list(folder))?;
    let m: Vec<_> = list
        .into_iter()
        .filter(|o| {
            o.name
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(&prefix.to_lowercase()))
        })
        .collect();
    match m.as_slice() {
        [o] => Ok(o.name.clone()),
        [] => bail!("no object {folder}{prefix}*"),
        _ => bail!("prefix {prefix} is ambiguous in {folder}"),
    }
}

fn tree_json(t: &Tree) -> serde_json::Value {
    serde_json::Value::Array(
        t.nodes
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["name"] = serde_json::Value::String(n.name_lossy());
                v
            })
            .collect(),
    )
}

fn cat(g: &Global, c: CatCommand) -> Result<u8> {
    let repo = open(g)?;
    let key = repo.key().clone();
    match c {
        CatCommand::Config => print_json(repo.config())?,
        CatCommand::Snapshot { id } => {
            let (id, s) = repo.find_snapshot(&id)?;
            print_json(&serde_json::json!({"id": id, "snapshot": s}))?;
        }
        CatCommand::Index { id } => {
            let name = find_object(&repo, names::INDEX, &id)?;
            let bytes = repo.block_on(repo.backend().get(&name))?;
            let idx: IndexFile = format::open_object(&key, aad::INDEX, &name, &bytes)?;
            print_json(&idx)?;
        }
        CatCommand::Pack { id } => {
            let name = find_object(&repo, names::DATA, &id)?;
            let bytes = repo.block_on(repo.backend().get(&name))?;
            let pid = name.rsplit('/').next().unwrap_or_default().parse()?;
            let h = PackHeader::from_pack_bytes(&key, &pid, &bytes)?;
            print_json(&h)?;
        }
        CatCommand::Blob { id } => {
            let id = id.parse()?;
            let repo = repo.into_indexed()?;
            if repo.index().contains(BlobType::Data, &id)? {
                let data = repo.read_blob(BlobType::Data, &id)?;
                std::io::stdout().write_all(&data)?;
            } else {
                let t = repo.load_tree(&id)?;
                print_json(&tree_json(&t))?;
            }
        }
        CatCommand::Key { id } => {
            let name = find_object(&repo, names::KEYS, &id)?;
            let bytes = repo.block_on(repo.backend().get(&name))?;
            let kf = KeyFile::from_bytes(&name, &bytes)?;
            print_json(&serde_json::json!({
                "created": kf.created, "host": kf.host, "user": kf.user,
                "kdf": {"algorithm": "argon2id", "memory_kib": kf.kdf.memory_kib,
                        "iterations": kf.kdf.iterations, "parallelism": kf.kdf.parallelism},
            }))?;
        }
    }
    Ok(exit::OK)
}
