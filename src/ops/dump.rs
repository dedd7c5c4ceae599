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
        error: e,
    }
}

/// A repository error that travelled through `Read`/`Write` plumbing (a
/// [`BlobReader`]) as an `io::Error`, unwrapped; any other io error goes to `otherwise`.
pub(crate) fn carried(e: std::io::Error, otherwise: impl FnOnce(std::io::Error) -> Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(Ok(inner)) = e.into_inner().map(|i| i.downcast::<Error>()) {
            return *inner;
        }
        unreachable!("checked to hold an Error above");
    }
    otherwise(e)
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
        r.map_err(|e| carried(e, stdout_err))?;
    }
    Ok(())
}

/// Write the tree under `root` (named `name` in the archive) as a zip stream: files
/// (deflated), directories and symlinks, with modes and modification times. Zip has no
/// place for owners, devices, fifos or sockets: those entries are left out and named
/// in the returned list.
pub fn dump_zip(
    repo: &IndexedRepository,
    name: &Path,
    root: &BlobId,
    out: &mut dyn Write,
) -> Result<Vec<String>> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let mut skipped = Vec::new();
    add_zip_tree(repo, &mut zip, name, root, &mut skipped)?;
    zip.finish().map_err(zip_err)?.flush().map_err(stdout_err)?;
    Ok(skipped)
}

fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => stdout_err(e),
        other => Error::Source(format!("writing the zip stream: {other}")),
    }
}

fn zip_options(node: &Node) -> zip::write::SimpleFileOptions {
    use chrono::{Datelike, Timelike};
    let mut o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(node.mode & 0o7777)
        // A stream cannot go back to widen a size field: zip64 where the file needs it.
        .large_file(node.size >= u32::MAX as u64);
    if let Some(t) = node.mtime.to_datetime() {
        if let Ok(d) = zip::DateTime::from_date_and_time(
            t.year().clamp(1980, 2107) as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
        ) {
            o = o.last_modified_time(d);
        }
    }
    o
}

fn add_zip_tree<W: Write>(
    repo: &IndexedRepository,
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    prefix: &Path,
    tree: &BlobId,
    skipped: &mut Vec<String>,
) -> Result<()> {
    for node in repo.load_tree(tree)?.nodes {
        let path = prefix.join(OsStr::from_bytes(&node.name));
        let shown = path.to_string_lossy().into_owned();
        match &node.kind {
            NodeKind::Dir { subtree } => {
                zip.add_directory(format!("{shown}/"), zip_options(&node))
                    .map_err(zip_err)?;
                add_zip_tree(repo, zip, &path, subtree, skipped)?;
            }
            NodeKind::File { content } => {
                zip.start_file(shown, zip_options(&node)).map_err(zip_err)?;
                let mut reader = BlobReader::new(repo, content).take(node.size);
                std::io::copy(&mut reader, zip).map_err(|e| carried(e, stdout_err))?;
            }
            NodeKind::Symlink { target } => {
                let target = String::from_utf8_lossy(target).into_owned();
                zip.add_symlink(shown, target, zip_options(&node))
                    .map_err(zip_err)?;
            }
            _ => skipped.push(shown),
        }
    }
    Ok(())
}
