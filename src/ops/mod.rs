//! Operations over an open repository: the library calls the commands make.

pub mod backup;
pub mod browse;
pub mod check;
mod command;
pub mod copy;
pub mod dump;
pub mod forget;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod restore;
mod scan;
pub mod select;
pub mod stream_check;
pub mod walk;

use std::path::PathBuf;

/// Something that went wrong with one input or output path while the rest went on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// Run CPU work on the rayon pool from async code and await its result.
pub(crate) async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("rayon task ran to completion")
}

/// A rayon pool with stacks deep enough for deep directory trees.
pub(crate) fn cpu_pool() -> crate::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .stack_size(16 << 20)
        .thread_name(|i| format!("cairn-cpu-{i}"))
        .build()
        .map_err(|e| crate::Error::Config(format!("cannot start worker threads: {e}")))
}
