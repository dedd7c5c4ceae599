//! `cairn mount MOUNTPOINT`: mount, say so, wait for Ctrl-C or SIGTERM, unmount.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn::ops::mount::{self, CairnFs, MountOptions};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::{Global, MountArgs};
use crate::exit;

pub fn mount(g: &Global, a: MountArgs) -> Result<u8> {
    mount::check_fuse()?;
    if !a.mountpoint.is_dir() {
        // Said before the password is asked for.
        anyhow::bail!(
            "mountpoint {} is not an existing directory; create it first",
            a.mountpoint.display()
        );
    }
    // Block the signals in every thread (threads inherit the mask, and the repository
    // starts its own): one thread below takes them with sigwait, so none can end the
    // process before the filesystem is unmounted.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM")?;

    let repo = Arc::new(crate::commands::open_indexed(g)?);
    let opts = MountOptions {
        allow_other: a.allow_other,
        refresh: a.refresh,
        cache_bytes: usize::try_from(a.cache_size).unwrap_or(usize::MAX),
        readahead: 2 * g.connections as usize + 8,
        ..MountOptions::default()
    };
    let fs = CairnFs::new(repo, opts)?;
    let mounted = mount::mount(fs, &a.mountpoint).with_context(|| {
        format!(
            "cannot mount at {} (FUSE needs /dev/fuse, the fuse3 package, and in a container CAP_SYS_ADMIN)",
            a.mountpoint.display()
        )
    })?;
    println!("mounted at {}; Ctrl-C to unmount", a.mountpoint.display());

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                let _ = tx.send(sig);
            }
        })
        .context("starting the signal thread")?;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(sig) => {
                if !g.quiet {
                    eprintln!("{sig}: unmounting {}", a.mountpoint.display());
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if mounted.is_finished() => {
                if !g.quiet {
                    eprintln!("{} was unmounted", a.mountpoint.display());
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    mounted
        .unmount()
        .with_context(|| format!("unmounting {}", a.mountpoint.display()))?;
    Ok(exit::OK)
}
