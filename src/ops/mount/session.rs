//! Mounting and unmounting: the FUSE session around [`CairnFs`].

use std::path::{Path, PathBuf};

use fuser::MountOption;

use super::CairnFs;
use crate::error::{Error, Result};

/// A mounted filesystem; [`Mounted::unmount`] ends it.
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

/// Why FUSE cannot be used here, if it cannot: checked before the repository is opened
/// so that the message names the cause.
pub fn check_fuse() -> Result<()> {
    let hint = "install fuse3 (apt-get install fuse3); in a container, pass the device \
                (--device /dev/fuse) and CAP_SYS_ADMIN";
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Config(format!(
            "FUSE is not available: /dev/fuse does not exist; {hint}"
        )));
    }
    // Root mounts directly; other users go through the setuid helper.
    let helper = std::env::var_os("FUSERMOUNT_PATH").is_some()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !nix::unistd::geteuid().is_root() && !helper {
        return Err(Error::Config(format!(
            "FUSE is not available: fusermount3 is not on PATH; {hint}"
        )));
    }
    Ok(())
}

/// Mount `fs` read-only at `mountpoint` (an existing directory); requests are answered
/// on background threads until [`Mounted::unmount`].
pub fn mount(fs: CairnFs, mountpoint: &Path) -> Result<Mounted> {
    let meta = std::fs::metadata(mountpoint).map_err(|e| {
        Error::Config(format!(
            "mountpoint {}: {e}; it must be an existing directory",
            mountpoint.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        )));
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
    ];
    if fs.opts.allow_other {
        config.acl = fuser::SessionACL::All;
        // Other users get what the stored modes and owners allow them.
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(fs.opts.threads.max(1));
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| Error::Io {
        path: mountpoint.to_path_buf(),
        error: e,
    })?;
    Ok(Mounted {
        session,
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once the filesystem is gone (unmounted from outside, `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmount and wait for the request threads. A mountpoint still in use (a shell
    /// inside it) is detached instead: it disappears once the last user leaves.
    pub fn unmount(self) -> Result<()> {
        let mountpoint = self.mountpoint;
        if self.session.guard.is_finished() {
            // Unmounted from outside: the kernel has let go already, and dropping the
            // session would try a second unmount (and warn that it failed). Its thread
            // has ended; what stays behind is one descriptor of /dev/fuse.
            std::mem::forget(self.session);
            return Ok(());
        }
        match self.session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(
                    "{} is busy; detaching it (it goes once nothing uses it)",
                    mountpoint.display()
                );
                lazy_unmount(&mountpoint)
            }
            Err(e) => Err(Error::io(mountpoint, e)),
        }
    }
}

fn lazy_unmount(mountpoint: &Path) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::io(mountpoint, e.into()));
    }
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()
        .map_err(|e| Error::io("fusermount3", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::io(
            mountpoint,
            std::io::Error::other(format!("fusermount3 -u -z: {status}")),
        ))
    }
}
