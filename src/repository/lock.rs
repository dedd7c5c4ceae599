//! Announcing operations with lock objects, and reading who is at work.
//!
//! An operation writes a lock object before it reads anything (so a key that may not
//! write fails before any work), refreshes it by writing a new object every
//! [`REFRESH`], and ends with a last one marked finished (a backup) or by removing its
//! objects (a prune). A backup never deletes or overwrites one: its key can be denied
//! DeleteObject. Prune uses what [`Repository::locks`] reports to decide when packs it
//! marked may go; the protocol is in `docs/design.md`, "Prune beside backups".
//!
//! Staleness is judged by the store's clock where it has one (the listed modification
//! times of lock objects, compared with that of an object the caller just wrote), so a
//! client with a wrong clock neither ignores a live backup nor waits forever for a dead
//! one. A lock from this host whose process is gone is stale at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::Repository;
use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::{self, Lock, LockKind, Timestamp, aad, names};
use crate::id::{Id, LockId};

/// How often a running operation writes a fresh lock object.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);

/// Default age after which a lock that was not refreshed is ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

async fn write(backend: &dyn Backend, key: &MasterKey, lock: &Lock) -> Result<LockId> {
    let id = LockId(Id::random());
    let bytes = format::seal_object(key, aad::LOCK, 3, lock);
    backend
        .create(&names::lock(&id), Bytes::from(bytes))
        .await?;
    Ok(id)
}

/// What an announcement has written, shared with its refresher.
struct Written {
    objects: Vec<LockId>,
    /// When a lock object was last written successfully, by the monotonic clock and by
    /// the wall clock: the first does not advance while the machine is suspended (a
    /// laptop, a paused VM), the second does.
    last_ok: Instant,
    last_ok_wall: std::time::SystemTime,
    /// The longest time between two successful writes so far. A process stopped (SIGSTOP,
    /// a paused container) refreshes at once when it resumes, so the time since the last
    /// write alone would not show that others saw its lock go stale meanwhile.
    longest_gap: Duration,
}

/// Whether an operation's lock has stayed fresh the whole time, for the parts of it
/// that hold no [`Announcement`] (a backup's index writes).
#[derive(Clone)]
pub struct Freshness(Arc<Mutex<Written>>);

impl Written {
    /// Time since the last successful write, by whichever clock says more.
    fn since_ok(&self) -> Duration {
        let wall = std::time::SystemTime::now()
            .duration_since(self.last_ok_wall)
            .unwrap_or_default();
        self.last_ok.elapsed().max(wall)
    }
}

impl Freshness {
    /// Fail when the lock went unrefreshed for longer than `max`, now or at any time
    /// before: others may have taken the operation for dead (a prune would no longer
    /// wait for it, and may have removed what it wrote).
    pub fn check(&self, max: Duration, location: &str) -> Result<()> {
        let (gap, now) = {
            let w = self.0.lock().expect("lock objects");
            (w.longest_gap, w.since_ok())
        };
        let worst = gap.max(now);
        if worst > max {
            return Err(Error::Locked(format!(
                "this operation's lock in {location} went unrefreshed for {}s (the process \
                 was stopped, or the store unreachable); a prune may have taken it for dead, \
                 so it stops here without writing its result. Run it again (a backup reuses \
                 what is still there)",
                worst.as_secs()
            )));
        }
        Ok(())
    }
}

/// A held announcement. End it with [`Announcement::finish`] (leave a finished marker)
/// or [`Announcement::release`] (remove its objects).
pub struct Announcement {
    lock: Lock,
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    rt: Arc<super::IoRuntime>,
    written: Arc<Mutex<Written>>,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Announcement({:?} {})", self.lock.kind, self.lock.op)
    }
}

impl Repository {
    /// Write the first lock object of an operation and keep it fresh.
    pub fn announce(&self, kind: LockKind) -> Result<Announcement> {
        let lock = Lock::new(kind);
        let first = self.block_on(write(self.backend().as_ref(), self.key(), &lock))?;
        let written = Arc::new(Mutex::new(Written {
            objects: vec![first],
            last_ok: Instant::now(),
            last_ok_wall: std::time::SystemTime::now(),
            longest_gap: Duration::ZERO,
        }));
        let (backend, key, mut fresh, w) = (
            self.backend().clone(),
            self.key().clone(),
            lock.clone(),
            written.clone(),
        );
        let refresher = self.runtime().spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                fresh.time = Timestamp::now();
                match write(backend.as_ref(), &key, &fresh).await {
                    Ok(id) => {
                        let mut w = w.lock().expect("lock objects");
                        w.objects.push(id);
                        w.longest_gap = w.longest_gap.max(w.since_ok());
                        w.last_ok = Instant::now();
                        w.last_ok_wall = std::time::SystemTime::now();
                    }
                    Err(e) => tracing::warn!("could not refresh the lock: {e}"),
                }
            }
        });
        Ok(Announcement {
            lock,
            backend: self.backend().clone(),
            key: self.key().clone(),
            refresher: Some(refresher),
            rt: self.runtime().clone(),
            written,
        })
    }

    /// Read every lock object and say, per operation, whether it still runs. With
    /// `mine` (the caller's own running operation) staleness is judged by the store's
    /// clock: against the time the store gave the caller's newest lock object.
    pub fn locks(&self, stale_after: Duration, mine: Option<Id>) -> Result<Locks> {
        self.block_on(read_locks(
            self.backend().as_ref(),
            self.key(),
            stale_after,
            mine,
            self.options().connections.max(1) * 2,
        ))
    }

    /// Take the prune lock: announce, then give way to any running prune that
    /// announced first (two prunes that announce at once both see each other and agree
    /// on the order). Waits up to `wait` for a running prune to end.
    pub fn lock_exclusive(
        &self,
        stale_after: Duration,
        wait: Duration,
    ) -> Result<(Announcement, Locks)> {
        let deadline = Instant::now() + wait;
        loop {
            let me = self.announce(LockKind::Prune)?;
            let locks = self.locks(stale_after, Some(me.op()))?;
            let mine = locks.ops.get(&me.op()).map(|o| o.first_seen);
            let ahead = locks.ops.values().find(|o| {
                o.kind == LockKind::Prune
                    && o.op != me.op()
                    && o.state == OpState::Running
                    && (o.first_seen, o.op) < (mine.unwrap_or(o.first_seen), me.op())
            });
            let Some(other) = ahead else {
                return Ok((me, locks));
            };
            let who = other.describe();
            me.release();
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Locked(format!(
                    "{who} is pruning; wait for it (--retry-lock 30m), or if that process is gone \
                     run `cairn unlock` once its lock is stale"
                )));
            }
            tracing::info!("waiting for {who} to finish pruning");
            std::thread::sleep((deadline - now).min(Duration::from_secs(5)));
        }
    }
}

impl Announcement {
    /// The operation id all of this announcement's lock objects carry.
    pub fn op(&self) -> Id {
        self.lock.op
    }

    /// Fail when the lock went unrefreshed for longer than `max`, at any time so far
    /// ([`Freshness::check`]).
    pub fn check_fresh(&self, max: Duration) -> Result<()> {
        self.freshness().check(max, self.backend.location())
    }

    pub fn freshness(&self) -> Freshness {
        Freshness(self.written.clone())
    }

    fn stop_refresh(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
    }

    /// Write the finished marker (best effort: a missing one only means prune waits for
    /// the lock to go stale).
    pub fn finish(mut self) {
        self.stop_refresh();
        let mut done = self.lock.clone();
        done.time = Timestamp::now();
        done.finished = true;
        if let Err(e) = self
            .rt
            .block_on(write(self.backend.as_ref(), &self.key, &done))
        {
            tracing::warn!("could not record the end of the operation in locks/: {e}");
        }
    }

    /// Remove this operation's lock objects (for keys that may delete); falls back to
    /// the finished marker when a removal fails.
    pub fn release(mut self) {
        self.stop_refresh();
        let objects = std::mem::take(&mut self.written.lock().expect("lock objects").objects);
        let removed = self.rt.block_on(async {
            for id in &objects {
                self.backend.delete(&names::lock(id)).await?;
            }
            Ok::<_, Error>(())
        });
        if removed.is_err() {
            self.finish();
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        self.stop_refresh();
    }
}

/// Whether an operation still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum OpState {
    Running,
    Finished,
    /// Not refreshed for longer than the timeout, or its process is gone.
    Stale(String),
}

/// One operation, from all of its lock objects.
#[derive(Debug, Clone, Serialize)]
pub struct OpStatus {
    pub op: Id,
    pub kind: LockKind,
    pub host: String,
    pub user: String,
    pub pid: u32,
    /// When it started, by its own clock.
    pub started: DateTime<Utc>,
    /// When its first and newest lock objects were written (store time where known).
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub state: OpState,
    /// It claims a process on this host that does not exist (a hint for `unlock`).
    pub process_gone: bool,
    /// Its lock objects.
    pub objects: Vec<String>,
}

impl OpStatus {
    /// `backup by root@db1 (pid 4711) since 2026-11-21 03:00:00 UTC`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            LockKind::Backup => "backup",
            LockKind::Prune => "prune",
        };
        format!(
            "{kind} by {}@{} (pid {}) since {}",
            self.user,
            self.host,
            self.pid,
            self.started.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    /// Finished or stale: nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.state != OpState::Running
    }
}

/// Everything in `locks/`.
#[derive(Debug, Clone, Default)]
pub struct Locks {
    pub ops: BTreeMap<Id, OpStatus>,
    /// Lock objects that could not be read (damaged, or written by a newer version):
    /// prune stops while there are any; `unlock` removes them.
    pub unreadable: Vec<String>,
    /// The time staleness was judged against.
    pub now: DateTime<Utc>,
}

impl Locks {
    /// Operations of `kind` that run.
    pub fn running(&self, kind: LockKind) -> impl Iterator<Item = &OpStatus> {
        self.ops
            .values()
            .filter(move |o| o.kind == kind && o.state == OpState::Running)
    }

    pub fn stale(&self) -> impl Iterator<Item = &OpStatus> {
        self.ops
            .values()
            .filter(|o| matches!(o.state, OpState::Stale(_)))
    }
}

async fn read_locks(
    backend: &dyn Backend,
    key: &MasterKey,
    stale_after: Duration,
    mine: Option<Id>,
    parallel: usize,
) -> Result<Locks> {
    let listed: Vec<_> = backend
        .list(names::LOCKS)
        .await?
        .into_iter()
        .filter(|o| !o.name.contains("/probe-"))
        .collect();
    let fetched: Vec<_> = futures::stream::iter(listed)
        .map(|o| async move {
            let bytes = backend.get(&o.name).await;
            (o, bytes)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    // The store's "now": when the caller's own newest lock object was written, where
    // the store reports modification times; else this machine's clock.
    let now = mine
        .and_then(|op| {
            fetched
                .iter()
                .filter_map(|(o, b)| {
                    let b = b.as_ref().ok()?;
                    let l = format::open_object::<Lock>(key, aad::LOCK, &o.name, b).ok()?;
                    (l.op == op).then_some(o.modified?)
                })
                .max()
        })
        .unwrap_or_else(Utc::now);
    let mut out = Locks {
        now,
        ..Default::default()
    };
    let mut parts: BTreeMap<Id, Vec<(Lock, DateTime<Utc>, String)>> = BTreeMap::new();
    for (o, bytes) in fetched {
        let lock =
            match bytes.and_then(|b| format::open_object::<Lock>(key, aad::LOCK, &o.name, &b)) {
                Ok(l) => l,
                Err(Error::NotFound { .. }) => continue, // released since the listing
                // Not knowing who runs is no reason to think nobody does.
                Err(e @ Error::Backend { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("ignoring lock object {}: {e}", o.name);
                    out.unreadable.push(o.name);
                    continue;
                }
            };
        let when = o
            .modified
            .or_else(|| lock.time.to_datetime())
            .unwrap_or(now);
        parts.entry(lock.op).or_default().push((lock, when, o.name));
    }
    let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let this_host = crate::util::hostname();
    for (op, mut objs) in parts {
        objs.sort_by_key(|(_, when, _)| *when);
        let (first, first_seen, _) = objs.first().expect("at least one object").clone();
        let last_seen = objs.last().expect("at least one object").1;
        let finished = objs.iter().any(|(l, _, _)| l.finished);
        // A dead process id on this host is only a hint: a container with its own
        // process ids may share the host name, so it never makes a lock stale alone.
        let gone = first.host == this_host && !process_alive(first.pid);
        let state = if finished {
            OpState::Finished
        } else if now.signed_duration_since(last_seen) > stale_after {
            OpState::Stale(format!(
                "not refreshed for {}",
                humantime::format_duration(Duration::from_secs(
                    now.signed_duration_since(last_seen).num_seconds().max(0) as u64
                ))
            ))
        } else {
            OpState::Running
        };
        out.ops.insert(
            op,
            OpStatus {
                op,
                kind: first.kind,
                host: first.host.clone(),
                user: first.user.clone(),
                pid: first.pid,
                started: first.started.to_datetime().unwrap_or_default(),
                first_seen,
                last_seen,
                state,
                process_gone: gone,
                objects: objs.into_iter().map(|(_, _, n)| n).collect(),
            },
        );
    }
    Ok(out)
}

/// Does a process with this id exist on this machine?
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        // EPERM: it exists, owned by someone else.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock refreshed again after a long stop (the process was stopped, then resumed
    /// and refreshed at once) still counts as having gone stale.
    #[test]
    fn a_gap_in_the_past_still_fails_the_freshness_check() {
        // `None` where the machine has been up for less than `since_min`.
        let written = |gap_min: u64, since_min: u64| {
            let last_ok = Instant::now().checked_sub(Duration::from_secs(since_min * 60))?;
            Some(Freshness(Arc::new(Mutex::new(Written {
                objects: Vec::new(),
                last_ok,
                last_ok_wall: std::time::SystemTime::now(),
                longest_gap: Duration::from_secs(gap_min * 60),
            }))))
        };
        let max = STALE_AFTER - REFRESH;
        assert!(written(5, 0).unwrap().check(max, "here").is_ok());
        assert!(written(31, 0).unwrap().check(max, "here").is_err());
        if let Some(f) = written(5, 26) {
            assert!(f.check(max, "here").is_err());
        }
        // A suspend: the monotonic clock stood still, the wall clock went on.
        let suspended = written(0, 0).unwrap();
        suspended.0.lock().unwrap().last_ok_wall -= Duration::from_secs(40 * 60);
        assert!(suspended.check(max, "here").is_err());
    }
}
