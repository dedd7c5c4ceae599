//! The `cairn` command. Thin: parse, call the library, print, map errors to exit codes.

mod browse;
mod check;
mod cli;
mod commands;
mod hooks;
mod mount;
mod profile;
mod progress;
mod retention;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (design.md): stable, scripts depend on them.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FATAL: u8 = 1;
    pub const INCOMPLETE: u8 = 3;
    pub const NO_REPOSITORY: u8 = 10;
    pub const LOCKED: u8 = 11;
    pub const WRONG_PASSWORD: u8 = 12;
}

fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena, and chunk-sized buffers freed
    // on one thread stay cached in another's: one arena cut peak RSS by a fifth on the
    // comparison corpus at the same speed (docs/benchmarks.md).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is called once, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let args = match profile::apply(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::FATAL);
        }
    };
    let cli = cli::Cli::parse_from(args);
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("cairn={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: cron mail and `kubectl logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();

    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        // A closed stdout (`cairn ls latest | head`) ends the command quietly. SIGPIPE
        // stays ignored (Rust's default): resetting it would let a server closing a
        // socket kill the process.
        Err(err) if is_closed_stdout(&err) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit_code(&err);
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn is_closed_stdout(err: &anyhow::Error) -> bool {
    let pipe = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| match e.downcast_ref::<cairn::Error>() {
        Some(cairn::Error::Io { path, error }) => path.as_os_str() == "<stdout>" && pipe(error),
        _ => e.downcast_ref::<std::io::Error>().is_some_and(pipe),
    })
}

pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<cairn::Error>() {
        Some(cairn::Error::NoRepository { .. }) => exit::NO_REPOSITORY,
        Some(cairn::Error::WrongPassword { .. }) => exit::WRONG_PASSWORD,
        Some(cairn::Error::Locked(_)) => exit::LOCKED,
        _ => exit::FATAL,
    }
}
