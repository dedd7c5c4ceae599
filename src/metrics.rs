//! Prometheus textfiles for scheduled jobs (node_exporter's textfile collector).
//!
//! A job (`check`, `backup`, `forget`, `prune`) fills a [`Metrics`] with gauges and
//! writes it with [`Metrics::write_file`]: to `PATH.tmp.<pid>` in the same directory,
//! fsynced, then renamed over `PATH`, so the collector never reads half a file. The
//! output follows the text exposition format 0.0.4: `# HELP` and `# TYPE` once per
//! family, samples of a family together, label values escaped (`\\`, `\"`, `\n`).
//!
//! ```
//! let mut m = cairn::metrics::Metrics::new();
//! m.gauge("cairn_check_success", "1 when the last check found no damage.", &[("repository", "/srv/backup")], 1.0);
//! assert!(m.render().contains("cairn_check_success{repository=\"/srv/backup\"} 1\n"));
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;

struct Family {
    name: String,
    help: String,
    samples: Vec<(String, f64)>,
}

/// A set of gauge families, rendered in the order first added.
#[derive(Default)]
pub struct Metrics {
    families: Vec<Family>,
}

/// A metric or label name with every character the format does not allow replaced by
/// `_` (names come from code, but a bad one must not make the file unreadable).
fn sanitize_name(name: &str, colons: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Escape a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escape a HELP text: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sample of gauge `name`; the family is created (with `help`) on first use.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> &mut Self {
        let name = sanitize_name(name, true);
        let mut sample = String::new();
        if !labels.is_empty() {
            sample.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    sample.push(',');
                }
                let _ = write!(
                    sample,
                    "{}=\"{}\"",
                    sanitize_name(k, false),
                    escape_label_value(v)
                );
            }
            sample.push('}');
        }
        let fam = match self.families.iter().position(|f| f.name == name) {
            Some(i) => &mut self.families[i],
            None => {
                self.families.push(Family {
                    name,
                    help: escape_help(help),
                    samples: Vec::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        };
        fam.samples.push((sample, value));
        self
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} gauge", f.name);
            for (labels, v) in &f.samples {
                let _ = writeln!(out, "{}{labels} {}", f.name, format_value(*v));
            }
        }
        out
    }

    /// Write atomically: `PATH.tmp.<pid>`, fsync, rename over `PATH`, fsync the directory.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp_name);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Snapshot figures every job writes: how many snapshots there are per host, and
    /// the age of the newest per host and tag (`tag=""` for untagged snapshots), so an
    /// alert can fire when a host stops backing up.
    pub fn snapshots(
        &mut self,
        repository: &str,
        snaps: &[(SnapshotId, Snapshot)],
        now: i64,
    ) -> &mut Self {
        use std::collections::BTreeMap;
        let mut count: BTreeMap<&str, u64> = BTreeMap::new();
        let mut newest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (_, s) in snaps {
            *count.entry(&s.host).or_default() += 1;
            let tags: Vec<&str> = if s.tags.is_empty() {
                vec![""]
            } else {
                s.tags.iter().map(String::as_str).collect()
            };
            for t in tags {
                let e = newest.entry((&s.host, t)).or_insert(i64::MIN);
                *e = (*e).max(s.time.secs);
            }
        }
        self.gauge(
            "cairn_snapshots",
            "Number of snapshots in the repository.",
            &[("repository", repository)],
            snaps.len() as f64,
        );
        for (host, n) in count {
            self.gauge(
                "cairn_snapshots_by_host",
                "Number of snapshots in the repository, by host.",
                &[("repository", repository), ("host", host)],
                n as f64,
            );
        }
        for ((host, tag), t) in newest {
            self.gauge(
                "cairn_snapshot_newest_age_seconds",
                "Age of the newest snapshot of a host and tag, in seconds.",
                &[("repository", repository), ("host", host), ("tag", tag)],
                (now - t).max(0) as f64,
            );
            self.gauge(
                "cairn_snapshot_newest_timestamp_seconds",
                "Time of the newest snapshot of a host and tag (Unix seconds).",
                &[("repository", repository), ("host", host), ("tag", tag)],
                t as f64,
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_families_once_with_samples_together() {
        let mut m = Metrics::new();
        m.gauge("a_total", "A.", &[("k", "1")], 1.0)
            .gauge("b", "B\nline", &[], 2.5)
            .gauge("a_total", "ignored", &[("k", "2")], 3.0);
        assert_eq!(
            m.render(),
            "# HELP a_total A.\n# TYPE a_total gauge\na_total{k=\"1\"} 1\na_total{k=\"2\"} 3\n\
             # HELP b B\\nline\n# TYPE b gauge\nb 2.5\n"
        );
    }

    #[test]
    fn bad_names_and_values_are_made_safe() {
        let mut m = Metrics::new();
        m.gauge("9 bad-name", "h", &[("la-bel", "q\"uo\\te\nnl")], f64::NAN);
        let r = m.render();
        assert!(
            r.contains("_9_bad_name{la_bel=\"q\\\"uo\\\\te\\nnl\"} NaN\n"),
            "{r}"
        );
    }

    #[test]
    fn file_is_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cairn.prom");
        let mut m = Metrics::new();
        m.gauge("x", "x", &[], 1.0);
        m.write_file(&p).unwrap();
        m.gauge("x", "x", &[("a", "b")], 2.0);
        m.write_file(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), m.render());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    /// Undo the label escaping as a Prometheus parser would.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some(c) => out.push(c),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn label_values_round_trip(v in ".*") {
            let e = escape_label_value(&v);
            prop_assert!(!e.contains('\n'));
            // No unescaped quote: every '"' is preceded by an odd run of backslashes.
            let b = e.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'"' {
                    let run = b[..i].iter().rev().take_while(|&&x| x == b'\\').count();
                    prop_assert!(run % 2 == 1);
                }
            }
            prop_assert_eq!(unescape(&e), v);
        }

        #[test]
        fn every_line_is_well_formed(name in ".{0,12}", key in ".{0,8}", val in ".{0,20}", x in any::<f64>()) {
            let mut m = Metrics::new();
            m.gauge(&name, &val, &[(&key, &val)], x);
            for line in m.render().lines() {
                prop_assert!(line.starts_with('#') || line.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':'));
            }
            prop_assert_eq!(m.render().lines().count(), 3);
        }
    }
}
