//! Retention: which snapshots a keep policy keeps, and why.
//!
//! Rules are applied per group of snapshots (host and paths by default). A snapshot
//! stays when any rule keeps it; every rule that keeps it is recorded, so `--dry-run`
//! can say why. Rules:
//!
//! * `last N`: the N newest.
//! * `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of the N newest
//!   hours/days/ISO weeks/months/years that have one, in the snapshots' local time
//!   (a time zone given by the caller: local, or UTC with `--utc`). In the hour that a
//!   daylight-saving change repeats, both occurrences are one hour of local time.
//! * `within D`: everything younger than D, measured back from the group's newest
//!   snapshot (not from now: backups that stopped do not age their snapshots out).
//! * `within-hourly/daily/... D`: the newest of each hour/day/... in that window.
//! * `tag T[,U]`: snapshots carrying all of these tags.
//! * Protected snapshots are always kept.
//!
//! Two guarantees on top (design.md, "Retention"):
//!
//! * Incomplete snapshots never take a slot of a counted rule ahead of complete ones:
//!   counted rules first run over the complete snapshots, and the slots left over then
//!   go to incomplete ones.
//! * Coverage: a window rule also keeps the newest complete snapshot older than its
//!   window, so "keep 7 days" after a week of failed backups still holds a restorable
//!   point from before the week.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Serialize;

use crate::format::Snapshot;
use crate::id::SnapshotId;

/// How often a counted rule keeps a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    /// The bucket a local time falls in; snapshots in one bucket compete for one slot.
    fn bucket<Tz: TimeZone>(self, t: &DateTime<Tz>) -> (i32, u32, u32, u32) {
        match self {
            Period::Hourly => (t.year(), t.month(), t.day(), t.hour()),
            Period::Daily => (t.year(), t.month(), t.day(), 0),
            Period::Weekly => {
                let w = t.iso_week();
                (w.year(), w.week(), 0, 0)
            }
            Period::Monthly => (t.year(), t.month(), 0, 0),
            Period::Yearly => (t.year(), 0, 0, 0),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }
}

/// A keep policy. The default keeps nothing (and [`KeepPolicy::is_empty`] says so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: u32,
    /// Counted rules: how many hours, days, weeks, months, years.
    pub counts: BTreeMap<Period, u32>,
    pub within: Option<Duration>,
    /// Window rules per period: the newest snapshot of each period inside the window.
    pub within_periods: BTreeMap<Period, Duration>,
    /// Keep snapshots that carry every tag of any one of these sets.
    pub tags: Vec<Vec<String>>,
    /// Window rules count back from the newest snapshot, but from no later than this (a
    /// snapshot dated in the future by a clock that ran ahead must not move the
    /// windows past the real snapshots).
    pub now: Option<DateTime<Utc>>,
}

impl KeepPolicy {
    /// Does this policy keep nothing (besides protected snapshots)?
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.counts.values().all(|&n| n == 0)
            && self.within.is_none()
            && self.within_periods.is_empty()
            && self.tags.is_empty()
    }

    /// The window rules: name (for reasons), window, and the period of a per-period
    /// window rule.
    fn windows(&self) -> Vec<(String, Duration, Option<Period>)> {
        let mut w: Vec<_> = self
            .within
            .iter()
            .map(|d| (format!("within {}", fmt_duration(*d)), *d, None))
            .collect();
        for (p, d) in &self.within_periods {
            w.push((
                format!("within-{} {}", p.name(), fmt_duration(*d)),
                *d,
                Some(*p),
            ));
        }
        w
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// One snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub complete: bool,
    pub protected: bool,
    pub tags: Vec<String>,
}

impl Candidate {
    pub fn of(id: SnapshotId, s: &Snapshot) -> Self {
        Candidate {
            id,
            time: s.time.to_datetime().unwrap_or_default(),
            complete: s.complete,
            protected: s.protected,
            tags: s.tags.clone(),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    /// Every rule that keeps it, e.g. `daily 2026-11-20`, `last`, `protected`.
    pub reasons: Vec<String>,
}

/// Apply `policy` to one group, with buckets in time zone `tz`. Returns one decision per
/// snapshot, newest first.
pub fn apply<Tz: TimeZone>(group: &[Candidate], policy: &KeepPolicy, tz: &Tz) -> Vec<Decision>
where
    Tz::Offset: std::fmt::Display,
{
    let mut order: Vec<usize> = (0..group.len()).collect();
    // Newest first; ties broken by id so the result does not depend on input order.
    order.sort_by(|&a, &b| {
        group[b]
            .time
            .cmp(&group[a].time)
            .then(group[b].id.cmp(&group[a].id))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); group.len()];
    let Some(&newest) = order.first() else {
        return Vec::new();
    };
    let reference = match policy.now {
        Some(now) => group[newest].time.min(now),
        None => group[newest].time,
    };

    // Counted rules: complete snapshots first, then incomplete ones with what is left.
    let mut last_left = policy.last;
    let mut left: BTreeMap<Period, u32> = policy.counts.clone();
    let mut claimed: BTreeMap<Period, HashSet<(i32, u32, u32, u32)>> = BTreeMap::new();
    for complete_pass in [true, false] {
        for &i in order
            .iter()
            .filter(|&&i| group[i].complete == complete_pass)
        {
            let c = &group[i];
            if last_left > 0 {
                last_left -= 1;
                reasons[i].push("last".into());
            }
            let local = c.time.with_timezone(tz);
            for (period, n) in left.iter_mut() {
                if *n == 0 {
                    continue;
                }
                let bucket = period.bucket(&local);
                if claimed.entry(*period).or_default().insert(bucket) {
                    *n -= 1;
                    reasons[i].push(format!("{} {}", period.name(), label(*period, &local)));
                }
            }
        }
    }

    // Window rules, and the coverage each one guarantees.
    for (name, window, period) in policy.windows() {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let inside = |c: &Candidate| reference.signed_duration_since(c.time) < window;
        let mut seen = HashSet::new();
        for &i in &order {
            let c = &group[i];
            if !inside(c) {
                continue;
            }
            match period {
                None => reasons[i].push(name.clone()),
                Some(p) => {
                    let local = c.time.with_timezone(tz);
                    if seen.insert(p.bucket(&local)) {
                        reasons[i].push(format!("{name}: {}", label(p, &local)));
                    }
                }
            }
        }
        if let Some(&i) = order
            .iter()
            .find(|&&i| group[i].complete && !inside(&group[i]))
        {
            reasons[i].push(format!(
                "coverage: newest complete snapshot before the {name} window"
            ));
        }
    }

    for (i, c) in group.iter().enumerate() {
        for set in &policy.tags {
            if set.iter().all(|t| c.tags.contains(t)) {
                reasons[i].push(format!("tag {}", set.join(",")));
            }
        }
        if c.protected {
            reasons[i].push("protected".into());
        }
    }

    order
        .into_iter()
        .map(|i| Decision {
            id: group[i].id,
            keep: !reasons[i].is_empty(),
            reasons: std::mem::take(&mut reasons[i]),
        })
        .collect()
}

/// The bucket of a local time, as people write it.
fn label<Tz: TimeZone>(p: Period, t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match p {
        Period::Hourly => t.format("%Y-%m-%d %H:00").to_string(),
        Period::Daily => t.format("%Y-%m-%d").to_string(),
        Period::Weekly => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        Period::Monthly => t.format("%Y-%m").to_string(),
        Period::Yearly => t.format("%Y").to_string(),
    }
}

/// What snapshots are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = crate::Error;
    /// `host,paths,tags` in any combination, or empty for one group.
    fn from_str(s: &str) -> crate::Result<Self> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => {
                    return Err(crate::Error::Config(format!(
                        "--group-by: unknown field '{other}' (use host, paths, tags)"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// A group's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    pub fn of(by: GroupBy, s: &Snapshot) -> Self {
        let sorted = |v: &Vec<String>| {
            let mut v = v.clone();
            v.sort();
            v
        };
        GroupKey {
            host: by.host.then(|| s.host.clone()),
            paths: by.paths.then(|| sorted(&s.paths)),
            tags: by.tags.then(|| sorted(&s.tags)),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Split snapshots into groups, in a stable order.
pub fn group(
    snaps: Vec<(SnapshotId, Snapshot)>,
    by: GroupBy,
) -> BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> {
    let mut out: BTreeMap<GroupKey, Vec<_>> = BTreeMap::new();
    for (id, s) in snaps {
        out.entry(GroupKey::of(by, &s)).or_default().push((id, s));
    }
    out
}

#[cfg(test)]
mod tests;
