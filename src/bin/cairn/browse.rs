//! dump, diff, find, stats.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use cairn::format::NodeKind;
use cairn::ops::{browse, dump as dump_ops, walk};
use cairn::util::human_bytes;

use crate::cli::{DiffArgs, DumpArgs, FindArgs, Global, StatsArgs};
use crate::commands::{local_time, open_indexed, print_json};
use crate::exit;

pub fn dump(g: &Global, a: DumpArgs) -> Result<u8> {
    let (spec, path) = walk::split_spec(&a.target);
    let repo = open_indexed(g)?;
    let (_, snap) = repo.find_snapshot(spec)?;
    let base = Path::new("/").join(path.trim_start_matches('/'));
    let mut out = std::io::stdout().lock();
    let dir = |name: &Path, tree: &cairn::BlobId, out: &mut dyn Write| -> Result<()> {
        if a.archive == "zip" {
            for s in dump_ops::dump_zip(&repo, name, tree, out)? {
                eprintln!("warning: {s}: not a file, directory or symlink; zip cannot hold it");
            }
        } else {
            dump_ops::dump_tar(&repo, name, tree, out)?;
        }
        Ok(())
    };
    match walk::find_node(&repo, &snap.tree, &base)? {
        None => dir(Path::new("."), &snap.tree, &mut out)?,
        Some(node) => match &node.kind {
            NodeKind::File { content } => {
                dump_ops::dump_file(&repo, content, &mut out)?;
            }
            NodeKind::Dir { subtree } => {
                let name = PathBuf::from(std::ffi::OsStr::from_bytes(&node.name));
                dir(&name, subtree, &mut out)?
            }
            _ => bail!("{} is neither a file nor a directory", base.display()),
        },
    }
    out.flush()?;
    Ok(exit::OK)
}

pub fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let repo = open_indexed(g)?;
    let (ia, sa) = repo.find_snapshot(&a.old)?;
    let (ib, sb) = repo.find_snapshot(&a.new)?;
    let mut entries = Vec::new();
    let mut out = std::io::stdout().lock();
    browse::diff(&repo, &sa.tree, &sb.tree, a.metadata, &mut |e| {
        if !g.json {
            let sizes = match (e.old_size, e.new_size) {
                (Some(x), Some(y)) if x != y => {
                    format!("  ({} -> {})", human_bytes(x), human_bytes(y))
                }
                (_, Some(y)) if e.change == browse::Change::Added => {
                    format!("  ({})", human_bytes(y))
                }
                _ => String::new(),
            };
            let _ = write!(out, "{}    ", e.change.letter());
            let _ = out.write_all(e.path.as_os_str().as_bytes());
            let _ = writeln!(out, "{sizes}");
        }
        entries.push(e);
    })?;
    let count = |c| entries.iter().filter(|e| e.change == c).count();
    if g.json {
        print_json(&serde_json::json!({"old": ia, "new": ib, "changes": entries}))?;
    } else if !g.quiet {
        writeln!(
            out,
            "{} -> {}: {} added, {} removed, {} modified, {} type changed, {} metadata only",
            ia.short(),
            ib.short(),
            count(browse::Change::Added),
            count(browse::Change::Removed),
            count(browse::Change::Modified),
            count(browse::Change::TypeChanged),
            count(browse::Change::Metadata)
        )?;
    }
    Ok(exit::OK)
}

/// The snapshots named, or all of them.
fn chosen(
    repo: &cairn::IndexedRepository,
    specs: &[String],
) -> cairn::Result<Vec<(cairn::SnapshotId, cairn::format::Snapshot)>> {
    if specs.is_empty() {
        repo.snapshots()
    } else {
        specs.iter().map(|s| repo.find_snapshot(s)).collect()
    }
}

pub fn find(g: &Global, a: FindArgs) -> Result<u8> {
    let repo = open_indexed(g)?;
    let matcher = cairn::ops::select::glob(&a.pattern, false)?.compile_matcher();
    let snaps = chosen(&repo, &a.snapshots)?;
    let mut found = Vec::new();
    let mut out = std::io::stdout().lock();
    for (id, s) in snaps
        .iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.host == h))
    {
        walk::walk(&repo, &s.tree, Path::new("/"), &mut |p, n| {
            if matcher.is_match(p) {
                if !g.json {
                    let _ = write!(
                        out,
                        "{}  {:>12}  {}  ",
                        id.short(),
                        n.size,
                        local_time(n.mtime)
                    );
                    let _ = out.write_all(p.as_os_str().as_bytes());
                    let _ = writeln!(out);
                }
                found.push(serde_json::json!({
                    "snapshot": id, "path": p.to_string_lossy(), "type": n.kind.letter().to_string(),
                    "size": n.size, "mtime": n.mtime.to_datetime().map(|d| d.to_rfc3339()),
                }));
            }
            Ok(true)
        })?;
    }
    if g.json {
        print_json(&found)?;
    }
    Ok(exit::OK)
}

pub fn stats(g: &Global, a: StatsArgs) -> Result<u8> {
    let repo = open_indexed(g)?;
    let snaps = chosen(&repo, &a.snapshots)?;
    let roots: Vec<_> = snaps.iter().map(|(_, s)| s.tree).collect();
    let raw = a.mode == "raw-data";
    let s = browse::stats(&repo, &roots, raw)?;
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        if raw {
            v["dedup_ratio"] = s.dedup_ratio().into();
            v["compression_ratio"] = s.compression_ratio().into();
        }
        print_json(&v)?;
    } else {
        println!("snapshots:      {}", s.snapshots);
        println!("files:          {}", s.files);
        println!("restore size:   {}", human_bytes(s.restore_size));
        if raw {
            println!("distinct blobs: {}", s.blobs);
            println!("raw data:       {}", human_bytes(s.raw_size));
            println!("stored:         {}", human_bytes(s.stored_size));
            println!(
                "dedup ratio:    {:.2}x  (restore size / raw data)",
                s.dedup_ratio()
            );
            println!(
                "compression:    {:.2}x  (raw data / stored)",
                s.compression_ratio()
            );
        }
    }
    Ok(exit::OK)
}
