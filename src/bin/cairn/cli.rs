//! Command-line definitions. Arguments become validated library options here; the
//! commands in `commands.rs` make the library calls.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicated, encrypted, verified backups on local disk or S3/MinIO",
    after_help = "Exit codes: 0 ok; 1 fatal error; 3 snapshot written but some inputs could not be read; \
                  10 no repository at --repo; 11 lock could not be taken; 12 wrong password."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Repository location: a local path, s3://BUCKET/PREFIX, or
    /// s3:http://HOST:PORT/BUCKET/PREFIX (MinIO and other S3 servers).
    #[arg(
        short = 'r',
        long,
        visible_alias = "repository",
        env = "CAIRN_REPOSITORY",
        global = true
    )]
    pub repo: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Local cache directory (default: $XDG_CACHE_HOME/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Concurrent requests to the repository (uploads in flight; a restore from S3 keeps
    /// four streamed reads open per connection).
    #[arg(long, default_value_t = 4, global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings (for cron).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Take options from this profile of the config file (see --config).
    #[arg(short = 'p', long, global = true)]
    pub profile: Option<String>,
    /// Config file with [profiles.NAME] sections (default ~/.config/cairn/config.toml,
    /// then /etc/cairn/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    // Last: the options after a flattened struct would get its help heading.
    #[command(flatten)]
    pub s3: S3Args,
}

/// S3 settings (repositories given as s3://BUCKET/PREFIX or s3:http://HOST:PORT/BUCKET/PREFIX).
/// Credentials come from --s3-access-key-id with --s3-secret-access-key-file, or
/// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials.
#[derive(Debug, Args)]
#[command(next_help_heading = "S3 options")]
pub struct S3Args {
    /// S3 endpoint for s3:// URLs, e.g. http://minio:9000 (else AWS_ENDPOINT_URL, else AWS).
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION, else us-east-1).
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// Virtual-hosted-style requests (default for custom endpoints: path-style).
    #[arg(long, global = true)]
    pub s3_virtual_hosted: bool,
    /// Profile in ~/.aws/credentials (else AWS_PROFILE, else "default").
    #[arg(long, global = true)]
    pub s3_profile: Option<String>,
    /// Access key id (with --s3-secret-access-key-file).
    #[arg(long, global = true, requires = "s3_secret_access_key_file")]
    pub s3_access_key_id: Option<String>,
    /// File holding the secret access key (a secret never goes on the command line).
    #[arg(long, global = true, requires = "s3_access_key_id")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Retries of a failed store request (5xx, throttling, connection errors).
    #[arg(long, global = true, default_value_t = 5)]
    pub retries: usize,
    /// Stop retrying a request after this long (e.g. 60s, 5m).
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_timeout: std::time::Duration,
    /// Timeout of one store request.
    #[arg(long, global = true, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// S3 multipart part size (at least 5MiB); packs over twice this are uploaded in
    /// parts, two at a time.
    #[arg(long, global = true, default_value = "16MiB", value_parser = cairn::util::parse_size)]
    pub s3_part_size: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Back up files and directories, or a stream from stdin.
    Backup(Box<BackupArgs>),
    /// List snapshots.
    Snapshots(SnapshotFilter),
    /// List files in a snapshot: SNAPSHOT[:/path].
    Ls(LsArgs),
    /// Restore a snapshot, or a path in it (SNAPSHOT:/path), into a directory.
    Restore(RestoreArgs),
    /// Write a file (SNAPSHOT:/path) to stdout, or a directory as a tar stream.
    Dump(DumpArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Find paths matching a glob in snapshots.
    Find(FindArgs),
    /// Sizes of snapshots: restore size, or distinct stored data and dedup ratio.
    Stats(StatsArgs),
    /// Manage passwords (key files).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a decrypted repository object, for debugging.
    #[command(subcommand)]
    Cat(CatCommand),
    /// Remove snapshots by a keep policy (or by id); `--prune` frees their space.
    Forget(Box<ForgetArgs>),
    /// Remove data no snapshot needs; safe beside running backups.
    Prune {
        /// Print the plan; change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        #[command(flatten)]
        args: PruneArgs,
    },
    /// Mark snapshots so that no forget policy removes them.
    Protect(ProtectArgs),
    /// Remove the protection of snapshots.
    Unprotect(ProtectArgs),
    /// Remove lock objects of operations that ended or went stale.
    Unlock(UnlockArgs),
    /// Copy snapshots to a second repository (re-encrypted, deduplicated there).
    Copy(CopyArgs),
    /// Verify the repository: structure, and with --read-data the data itself.
    /// Exit 0 when no damage is found, 1 when some is.
    Check(CheckArgs),
    /// Repair after damage found by `check`: rebuild the index, or rewrite snapshots.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Mount the repository as a read-only filesystem (FUSE) until Ctrl-C or SIGTERM.
    Mount(MountArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Minimum chunk size in bytes.
    #[arg(long, default_value_t = cairn::format::ChunkerParams::default().min)]
    pub chunk_min: u32,
    /// Average chunk size in bytes.
    #[arg(long, default_value_t = cairn::format::ChunkerParams::default().avg)]
    pub chunk_avg: u32,
    /// Maximum chunk size in bytes.
    #[arg(long, default_value_t = cairn::format::ChunkerParams::default().max)]
    pub chunk_max: u32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pub pack_size_mib: u32,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
    /// Create the S3 bucket if it does not exist.
    #[arg(long)]
    pub create_bucket: bool,
    /// Argon2id memory in KiB for the new key (tests lower it).
    #[arg(long, default_value_t = cairn::crypto::kdf::KdfParams::DEFAULT_MEMORY_KIB, hide = true)]
    pub kdf_memory_kib: u32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with_all = ["paths", "stdin_from_command"])]
    pub stdin: bool,
    /// Run the command given after `--` and back up its standard output; a non-zero
    /// exit fails the backup and writes no snapshot.
    #[arg(long, conflicts_with = "paths")]
    pub stdin_from_command: bool,
    /// Path the stream is stored under, e.g. harbor/registry.sql.
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Check the stream before the snapshot counts as complete: pg-dump (plain pg_dump
    /// or pg_dumpall output must end with its "dump complete" line), pg-custom (a `pg_dump -Fc`
    /// archive must pass `pg_restore -f /dev/null`, fed as it is stored), etcd-snapshot
    /// (the SHA-256 `etcdctl snapshot save` appends must match), none, or auto: these
    /// dumps are recognised by their first bytes and checked (the custom one only where pg_restore
    /// is installed; else the snapshot records the check as skipped). A failed check
    /// leaves the snapshot incomplete (exit 3).
    #[arg(long, default_value = "auto")]
    pub stdin_check: String,
    /// The command for --stdin-from-command (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Read more paths from this file, one per line.
    #[arg(long)]
    pub files_from: Vec<PathBuf>,
    /// Exclude paths matching this glob (repeatable). `*.tmp` matches names anywhere,
    /// `logs/*.tmp` path ends, `/var/cache` absolute paths.
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude")]
    pub iexcludes: Vec<String>,
    /// Read exclude patterns from this file (one per line, # comments).
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Skip directories containing a file of this name (e.g. .nobackup, CACHEDIR.TAG).
    #[arg(long)]
    pub exclude_if_present: Vec<String>,
    /// Stay on the file system of each source path.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time instead of now ("2026-11-21 03:00:00" local time, or RFC 3339).
    #[arg(long)]
    pub time: Option<String>,
    /// Compare with this snapshot instead of the latest of this host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Show what would be stored and how much; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run this shell command first; when it fails, the backup does not start.
    #[arg(long)]
    pub pre_command: Option<String>,
    /// Run this shell command at the end, whatever happened (also after a failure or
    /// SIGINT/SIGTERM), with CAIRN_STATUS (ok, incomplete, failed, interrupted),
    /// CAIRN_EXIT_CODE and CAIRN_SNAPSHOT_ID set.
    #[arg(long)]
    pub post_command: Option<String>,
    /// Read back and verify every pack this backup wrote before writing the snapshot.
    #[arg(long)]
    pub verify_new: bool,
    /// Write a Prometheus textfile with this backup's figures (node_exporter's
    /// textfile collector).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// SNAPSHOT or SNAPSHOT:/path (SNAPSHOT: an id, a unique prefix, or `latest`).
    pub snapshot: String,
    /// Path inside the snapshot (alternative to SNAPSHOT:/path).
    pub path: Option<String>,
    /// Long listing: type, mode, owner, size, time.
    #[arg(short, long)]
    pub long: bool,
    /// With a path: list everything below it, not only its entries.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// SNAPSHOT:/path of a file or directory.
    pub target: String,
    /// Archive format for directories.
    #[arg(long, default_value = "tar", value_parser = ["tar", "zip"])]
    pub archive: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub old: String,
    pub new: String,
    /// Also list entries whose mode, owner, times or xattrs changed.
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob: `*.sql` matches names anywhere, `etcd/*.db` path ends, `/etc/**` absolute.
    pub pattern: String,
    /// Search only these snapshots (repeatable; default: all).
    #[arg(short, long = "snapshot")]
    pub snapshots: Vec<String>,
    /// Search only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots (default: all).
    pub snapshots: Vec<String>,
    /// restore-size: what a restore writes; raw-data: distinct blobs stored.
    #[arg(long, default_value = "restore-size", value_parser = ["restore-size", "raw-data"])]
    pub mode: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:/path.
    pub snapshot: String,
    /// Directory to restore into.
    #[arg(short, long)]
    pub target: PathBuf,
    /// Restore only paths matching this glob, with what is below them (repeatable).
    #[arg(short, long = "include")]
    pub include: Vec<String>,
    /// Skip paths matching this glob, with what is below them (repeatable).
    #[arg(short, long = "exclude")]
    pub exclude: Vec<String>,
    /// Leave runs of zeros as holes in the restored files.
    #[arg(long)]
    pub sparse: bool,
    /// Check what is already in the target and fetch only what differs.
    #[arg(long)]
    pub verify: bool,
    /// Remove files in restored directories that are not in the snapshot.
    #[arg(long)]
    pub delete: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key files.
    List,
    /// Add a password.
    Add(NewPassword),
    /// Remove a key file by id.
    Remove { id: String },
    /// Change the password in use (adds the new key, then removes the old).
    Passwd(NewPassword),
}

#[derive(Debug, Args)]
pub struct NewPassword {
    /// Read the new password from this file (else CAIRN_NEW_PASSWORD, else a prompt).
    #[arg(long)]
    pub new_password_file: Option<PathBuf>,
    #[arg(long, default_value_t = cairn::crypto::kdf::KdfParams::DEFAULT_MEMORY_KIB, hide = true)]
    pub kdf_memory_kib: u32,
}

#[derive(Debug, Subcommand)]
pub enum CatCommand {
    /// The repository config.
    Config,
    /// A snapshot object.
    Snapshot { id: String },
    /// An index file.
    Index { id: String },
    /// A pack's header.
    Pack { id: String },
    /// A blob's plaintext (data blobs raw, tree blobs as JSON).
    Blob { id: String },
    /// A key file's public part.
    Key { id: String },
}

/// Lock handling shared by the commands that wait for or judge locks.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Ignore locks not refreshed for this long (running operations refresh every 5
    /// minutes; at least 30m).
    #[arg(long, default_value = "30m", value_parser = stale_lock_timeout)]
    pub stale_lock_timeout: std::time::Duration,
    /// When another prune runs, wait up to this long for it instead of failing (exit 11).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub retry_lock: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Unused space to tolerate: a percentage of the repository, a size (500MiB), or
    /// `unlimited`. Partly used packs are repacked only above it.
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
    /// Repack at most this much per run (e.g. 10GiB).
    #[arg(long)]
    pub max_repack: Option<String>,
    /// Write a Prometheus textfile with the result (node_exporter's textfile collector).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to forget by id, instead of a policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(short = 'l', long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours.
    #[arg(short = 'H', long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest days.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    #[arg(short = 'w', long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest months.
    #[arg(short = 'm', long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest years.
    #[arg(short = 'y', long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep everything younger than this (e.g. 7d, 2w, 1y), counted back from the
    /// group's newest snapshot; also keeps the newest complete snapshot before it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep the newest snapshot of each hour within this window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within_hourly: Option<std::time::Duration>,
    /// Keep the newest snapshot of each day within this window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within_daily: Option<std::time::Duration>,
    /// Keep the newest snapshot of each week within this window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within_weekly: Option<std::time::Duration>,
    /// Keep the newest snapshot of each month within this window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within_monthly: Option<std::time::Duration>,
    /// Keep the newest snapshot of each year within this window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_within_yearly: Option<std::time::Duration>,
    /// Keep snapshots carrying these tags (comma: all of them; repeat: any set).
    #[arg(long)]
    pub keep_tag: Vec<String>,
    /// Allow a policy that keeps nothing (every unprotected snapshot of the selection goes).
    #[arg(long)]
    pub keep_none: bool,
    /// Group snapshots by these fields before applying the policy.
    #[arg(short = 'g', long, default_value = "host,paths")]
    pub group_by: String,
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Days, weeks, ... in UTC instead of the local time zone.
    #[arg(long)]
    pub utc: bool,
    /// Print what would be kept and removed, and why; remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_args: PruneArgs,
}

/// Which snapshots `snapshots` lists and `forget` considers.
#[derive(Debug, Args)]
pub struct SnapshotFilter {
    /// Only snapshots of this host (repeatable).
    #[arg(long)]
    pub host: Vec<String>,
    /// Only snapshots with these tags (comma: all of them; repeat: any set).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only snapshots of this path (repeatable; a snapshot must have all given paths).
    #[arg(long)]
    pub path: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// Snapshots (ids, unique prefixes, or `latest`).
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock object, also of operations that look alive. Only when no cairn
    /// process works on this repository.
    #[arg(long)]
    pub remove_all: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Download every pack and verify every blob in it.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Verify part of the data: n/m (by pack id: 1/7 to 7/7 on seven days read every
    /// pack once), a random share (5%) or a random amount (500MiB).
    #[arg(long, value_name = "n/m|P%|SIZE", value_parser = parse_read_data)]
    pub read_data_subset: Option<cairn::ops::check::ReadData>,
    /// Write a Prometheus textfile with the result (node_exporter's textfile collector).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

fn parse_read_data(s: &str) -> Result<cairn::ops::check::ReadData, String> {
    s.parse().map_err(|e: cairn::Error| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' headers (after index files were lost or
    /// damaged). Replaces every index file.
    Index(RepairIndexArgs),
    /// Write new snapshots without the parts that cannot be read (listed in them).
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Show what would change; write and delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Read the header of every pack, not only of packs the index does not describe.
    #[arg(long)]
    pub read_all_packs: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    /// Snapshots to repair (default: all).
    pub snapshots: Vec<String>,
    /// Show what would be removed; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Remove each damaged snapshot once its repaired version is written.
    #[arg(long)]
    pub forget: bool,
    /// Verify pack data first so that damaged blobs are found too (slow: reads
    /// everything).
    #[arg(long)]
    pub read_data: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy (default: all); those the target already has are skipped.
    pub snapshots: Vec<String>,
    /// The target repository (a path or an S3 URL; S3 options apply to both).
    #[arg(long)]
    pub to: String,
    /// The target's password, from the first line of this file (else
    /// --to-password-command, else CAIRN_TO_PASSWORD).
    #[arg(long)]
    pub to_password_file: Option<PathBuf>,
    /// Run this shell command for the target's password.
    #[arg(long)]
    pub to_password_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An existing, empty directory to mount at.
    pub mountpoint: PathBuf,
    /// Let other users see the mount (the kernel checks the stored modes and owners);
    /// needs `user_allow_other` in /etc/fuse.conf unless run as root.
    #[arg(long)]
    pub allow_other: bool,
    /// Bytes of file data kept in memory (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_parser = cairn::util::parse_size)]
    pub cache_size: u64,
    /// How old the list of snapshots may grow before it is read again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, hide = true)]
    pub refresh: std::time::Duration,
}

/// A running backup stops before it writes an index file or its snapshot once its lock
/// went 25 minutes unrefreshed; a prune that took it for dead sooner could remove what
/// it still writes.
fn stale_lock_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < cairn::repository::STALE_AFTER {
        return Err(format!(
            "{s} is too short: at least {}, because a running backup only stops when its \
             own lock went {} unrefreshed, and a shorter timeout could remove data it still \
             needs. To clear the lock of a process that is gone, use `cairn unlock`",
            humantime::format_duration(cairn::repository::STALE_AFTER),
            humantime::format_duration(cairn::repository::STALE_AFTER - cairn::repository::REFRESH)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// A command's help lists its own options first, then the global ones, then the S3
    /// ones, each group under its heading (a flattened struct's heading would otherwise
    /// spill onto the options declared after it).
    #[test]
    fn help_groups_the_options_of_every_command() {
        fn check(cmd: &mut clap::Command, path: &str) {
            let help = cmd.render_long_help().to_string();
            let at = |s: &str| {
                help.find(s)
                    .unwrap_or_else(|| panic!("`{path} --help` lacks {s:?}:\n{help}"))
            };
            let (global, s3) = (at("\nGlobal options:\n"), at("\nS3 options:\n"));
            assert!(global < s3, "{path}");
            for own in ["--repo ", "--password-file ", "--quiet", "--config "] {
                let i = at(own);
                assert!(
                    global < i && i < s3,
                    "{path}: {own} is not under Global options"
                );
            }
            for s3_opt in ["--s3-endpoint ", "--retries ", "--s3-part-size "] {
                assert!(s3 < at(s3_opt), "{path}: {s3_opt} is not under S3 options");
            }
            if path == "cairn backup" {
                assert!(at("--exclude ") < global, "backup's own options come first");
            }
            for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                check(sub, &path);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        assert!(cli.get_subcommands().count() > 10);
        check(&mut cli, "cairn");
    }
}
