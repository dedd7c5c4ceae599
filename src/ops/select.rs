//! Which paths a backup reads: exclude patterns, marker files, file system boundaries.
//!
//! Patterns follow the shell glob syntax (`*`, `?`, `[a-z]`, `**`); `*` does not cross a
//! `/`. A pattern starting with `/` matches the whole absolute path; a pattern without a
//! `/` matches any single name (`*.tmp`, `node_modules`); any other pattern matches the
//! end of the path (`logs/*.tmp` matches `/var/lib/deis/store/logs/a.tmp`). An excluded
//! directory is skipped with everything below it.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Selection options of a backup.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    pub excludes: Vec<String>,
    /// Case-insensitive excludes.
    pub iexcludes: Vec<String>,
    /// Skip directories that contain a file of one of these names.
    pub exclude_if_present: Vec<String>,
    /// Do not descend into other file systems than the source's.
    pub one_file_system: bool,
}

/// Compiled selection rules.
#[derive(Debug, Clone)]
pub struct Selector {
    set: GlobSet,
    markers: Vec<String>,
    pub one_file_system: bool,
}

/// Compile one pattern with the rules of this module.
pub fn glob(pattern: &str, case_insensitive: bool) -> Result<Glob> {
    let p = pattern.trim_end_matches('/');
    let full = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("**/{p}")
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .case_insensitive(case_insensitive)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::Config(format!("exclude pattern '{pattern}': {e}")))
}

impl Selector {
    pub fn new(opts: &SelectOptions) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        for p in &opts.excludes {
            b.add(glob(p, false)?);
        }
        for p in &opts.iexcludes {
            b.add(glob(p, true)?);
        }
        Ok(Selector {
            set: b
                .build()
                .map_err(|e| Error::Config(format!("exclude patterns: {e}")))?,
            markers: opts.exclude_if_present.clone(),
            one_file_system: opts.one_file_system,
        })
    }

    /// Is this absolute path excluded by a pattern?
    /// Are there exclude patterns at all (else a path need not be built to ask)?
    pub fn excludes_any(&self) -> bool {
        !self.set.is_empty()
    }

    pub fn excluded(&self, path: &Path) -> bool {
        !self.set.is_empty() && self.set.is_match(path)
    }

    /// Does this directory carry a marker file that excludes it?
    pub fn marked(&self, dir: &Path) -> bool {
        self.markers
            .iter()
            .any(|m| std::fs::symlink_metadata(dir.join(m)).is_ok())
    }
}

/// Read exclude patterns from a file: one per line, `#` comments and blank lines ignored.
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(ex: &[&str], iex: &[&str]) -> Selector {
        Selector::new(&SelectOptions {
            excludes: ex.iter().map(|s| s.to_string()).collect(),
            iexcludes: iex.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn pattern_forms() {
        let s = sel(
            &["*.tmp", "logs/*.log", "/var/cache", "node_modules/"],
            &["*.BAK"],
        );
        assert!(s.excluded(Path::new("/a/b/x.tmp")));
        assert!(!s.excluded(Path::new("/a/b/x.tmpl")));
        assert!(s.excluded(Path::new("/srv/deis/logs/a.log")));
        assert!(!s.excluded(Path::new("/srv/deis/logs/sub/a.log")));
        assert!(s.excluded(Path::new("/var/cache")));
        assert!(!s.excluded(Path::new("/x/var/cache")));
        assert!(s.excluded(Path::new("/app/node_modules")));
        assert!(s.excluded(Path::new("/a/file.bak")));
        assert!(s.excluded(Path::new("/a/FILE.Bak")));
        assert!(!sel(&[], &[]).excluded(Path::new("/anything")));
    }

    #[test]
    fn bad_pattern_is_named() {
        let e = Selector::new(&SelectOptions {
            excludes: vec!["a[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("a["), "{e}");
    }
}
