//! A throwaway PostgreSQL server on 127.0.0.1 (Debian's `postgresql` package), started
//! for a test and stopped when dropped. As root, the server runs as `postgres` (it
//! refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The newest installed server's bin directory.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl PgServer {
    /// Start a server, or `None` (with a note) where PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "skipped: no PostgreSQL server under /usr/lib/postgresql (scripts/install-deps.sh installs it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let as_postgres = nix::unistd::getuid().is_root();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = free_port();
        let s = PgServer {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        s.run_tool(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-D",
                s.data.to_str().unwrap(),
            ],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            s.data.display()
        );
        let log = s.data.join("server.log");
        s.run_tool(
            "pg_ctl",
            &[
                "-D",
                s.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(s)
    }

    /// A server tool, run as `postgres` when we are root.
    fn tool(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run_tool(&self, tool: &str, args: &[&str]) {
        let out = self.tool(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client tool (`psql`, `pg_dump`, `createdb`) with connection arguments.
    pub fn client(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }

    /// The same as a command line, for `--stdin-from-command`.
    pub fn argv(&self, tool: &str) -> Vec<String> {
        vec![
            self.bin.join(tool).display().to_string(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    /// Run SQL in `db`; the unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let _ = self
            .tool("pg_ctl")
            .args(["-D", data.as_str(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
