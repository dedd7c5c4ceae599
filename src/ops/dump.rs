//! `dump`: one file's content, or a directory as a tar stream, to any writer (stdout),
//! without touching the local disk. `cairn dump latest:/harbor/registry.sql | psql`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeKind};
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// Write a file's content to `out`, blobs fetched ahead (`connections` at a time) and
/// written in order. Every blob is verified before it is written.
pub fn dump_file(repo: &IndexedRepository, content: &[BlobId], out: &mut dyn Write) -> Result<u64> {
    let conns = repo.options().connections.max(1);
    repo.block_on(async {
        let mut blobs = futures::stream::iter(content)
            .map(|id| repo.read_blob_async(BlobType::Data, id))
            .buffered(conns);
        let mut n = 0u64;
        while let Some(b) = blobs.next().await {
            let b = b?;
            tokio::task::block_in_place(|| out.write_all(&b)).map_err(stdout_err)?;
            n += b.len() as u64;
        }
        Ok(n)
    })
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        path: "<stdout>".into(),
        source: e,
    }
}

/// A reader over a file's blobs, one at a time (for the tar writer and `copy`).
pub(crate) struct BlobReader<'a> {
    repo: &'a IndexedRepository,
    content: std::slice::Iter<'a, BlobId>,
    current: Vec<u8>,
    at: usize,
}

impl<'a> BlobReader<'a> {
    pub(crate) fn new(repo: &'a IndexedRepository, content: &'a [BlobId]) -> Self {
        BlobReader {
            repo,
            content: content.iter(),
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.content.next() {
                None => return Ok(0),
                Some(id) => {
                    self.current = self
                        .repo
                        .read_blob(BlobType::Data, id)
                        .map_err(std::io::Error::other)?;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Write the tree under `node` (named `name` in the archive) as a POSIX tar stream.
pub fn dump_tar(
    repo: &IndexedRepository,
    name: &Path,
    root: &BlobId,
    out: &mut dyn Write,
) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut links: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    add_tree(repo, &mut tar, name, root, &mut links)?;
    tar.into_inner().and_then(|w| w.flush()).map_err(stdout_err)
}

fn header(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(node.mode);
    h.set_uid(node.uid as u64);
    h.set_gid(node.gid as u64);
    let _ = h.set_username(&node.user);
    let _ = h.set_groupname(&node.group);
    h.set_mtime(node.mtime.secs.max(0) as u64);
    h.set_size(size);
    h
}

fn add_tree(
    repo: &IndexedRepository,
    tar: &mut tar::Builder<&mut dyn Write>,
    prefix: &Path,
    tree: &BlobId,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    for node in repo.load_tree(tree)?.nodes {
        let path = prefix.join(OsStr::from_bytes(&node.name));
        let r = match &node.kind {
            NodeKind::Dir { subtree } => {
                let mut h = header(&node, tar::EntryType::Directory, 0);
                tar.append_data(&mut h, &path, std::io::empty())
                    .map_err(stdout_err)?;
                add_tree(repo, tar, &path, subtree, links)?;
                Ok(())
            }
            NodeKind::File { content } => {
                let first = (node.links > 1)
                    .then(|| links.get(&(node.device, node.inode)).cloned())
                    .flatten();
                if let Some(target) = first {
                    let mut h = header(&node, tar::EntryType::Link, 0);
                    tar.append_link(&mut h, &path, &target)
                } else {
                    if node.links > 1 {
                        links.insert((node.device, node.inode), path.clone());
                    }
                    let mut h = header(&node, tar::EntryType::Regular, node.size);
                    let reader = BlobReader {
                        repo,
                        content: content.iter(),
                        current: Vec::new(),
                        at: 0,
                    };
                    tar.append_data(&mut h, &path, reader.take(node.size))
                }
            }
            NodeKind::Symlink { target } => {
                let mut h = header(&node, tar::EntryType::Symlink, 0);
                tar.append_link(&mut h, &path, OsStr::from_bytes(target))
            }
            NodeKind::Fifo => {
                let mut h = header(&node, tar::EntryType::Fifo, 0);
                tar.append_data(&mut h, &path, std::io::empty())
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                let kind = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header(&node, kind, 0);
                let _ = h.set_device_major(libc::major(*rdev as libc::dev_t));
                let _ = h.set_device_minor(libc::minor(*rdev as libc::dev_t));
                tar.append_data(&mut h, &path, std::io::empty())
            }
            NodeKind::Socket => Ok(()),
        };
        // A repository error travels through the tar writer as an io::Error: unwrap it.
        r.map_err(|e| {
            if e.get_ref().is_some_and(|i| i.is::<Error>()) {
                match e.into_inner().map(|i| i.downcast::<Error>()) {
                    Some(Ok(inner)) => *inner,
                    _ => unreachable!("checked above"),
                }
            } else {
                stdout_err(e)
            }
        })?;
    }
    Ok(())
}
