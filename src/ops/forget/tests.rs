//! Golden cases of the keep decisions: a year of hourly snapshots against each rule and
//! their combinations, daylight-saving changes, `--utc`, incomplete snapshots, tags and
//! groups. Expected sets are written out by hand from the rules in the module docs.

use super::*;
use crate::id::Id;
use chrono::{Duration as CDuration, NaiveDate};
use chrono_tz::Europe::Berlin;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
        .and_utc()
}

fn cand(n: usize, time: DateTime<Utc>) -> Candidate {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Candidate {
        id: SnapshotId(Id(b)),
        time,
        complete: true,
        protected: false,
        tags: Vec::new(),
    }
}

/// Hourly snapshots from `start`, `hours` of them.
fn hourly(start: DateTime<Utc>, hours: usize) -> Vec<Candidate> {
    (0..hours)
        .map(|i| cand(i, start + CDuration::hours(i as i64)))
        .collect()
}

fn year_2025() -> Vec<Candidate> {
    hourly(at(2025, 1, 1, 0), 365 * 24)
}

/// Times of the kept snapshots, newest first.
fn kept<Tz: TimeZone>(group: &[Candidate], p: &KeepPolicy, tz: &Tz) -> Vec<DateTime<Utc>>
where
    Tz::Offset: std::fmt::Display,
{
    let by_id: std::collections::HashMap<_, _> = group.iter().map(|c| (c.id, c.time)).collect();
    apply(group, p, tz)
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| by_id[&d.id])
        .collect()
}

fn policy(f: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
    let mut p = KeepPolicy::default();
    f(&mut p);
    p
}

fn count(p: Period, n: u32) -> KeepPolicy {
    policy(|k| {
        k.counts.insert(p, n);
    })
}

#[test]
fn keep_last() {
    let y = year_2025();
    let p = policy(|k| k.last = 5);
    let want: Vec<_> = (0..5).map(|i| at(2025, 12, 31, 23 - i)).collect();
    assert_eq!(kept(&y, &p, &Utc), want);
}

#[test]
fn keep_hourly_daily_weekly_monthly_yearly() {
    let y = year_2025();
    let hours: Vec<_> = (0..24).map(|i| at(2025, 12, 31, 23 - i)).collect();
    assert_eq!(kept(&y, &count(Period::Hourly, 24), &Utc), hours);

    let days: Vec<_> = (0..7).map(|i| at(2025, 12, 31 - i, 23)).collect();
    assert_eq!(kept(&y, &count(Period::Daily, 7), &Utc), days);

    // 2025-12-31 is a Wednesday in ISO week 2026-W01; the weeks before end on Sundays.
    let weeks = vec![
        at(2025, 12, 31, 23),
        at(2025, 12, 28, 23),
        at(2025, 12, 21, 23),
        at(2025, 12, 14, 23),
    ];
    assert_eq!(kept(&y, &count(Period::Weekly, 4), &Utc), weeks);

    let month_ends = [31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 28, 31];
    let months: Vec<_> = (0..12)
        .map(|i| at(2025, 12 - i as u32, month_ends[i], 23))
        .collect();
    assert_eq!(kept(&y, &count(Period::Monthly, 12), &Utc), months);
    // More slots than months: every month once, nothing else.
    assert_eq!(kept(&y, &count(Period::Monthly, 100), &Utc), months);

    assert_eq!(
        kept(&y, &count(Period::Yearly, 3), &Utc),
        vec![at(2025, 12, 31, 23)]
    );
}

#[test]
fn combined_rules_keep_the_union_with_every_reason() {
    let y = year_2025();
    let p = policy(|k| {
        k.counts.insert(Period::Daily, 7);
        k.counts.insert(Period::Weekly, 4);
        k.counts.insert(Period::Monthly, 12);
    });
    let k = kept(&y, &p, &Utc);
    // 7 days; weeks add Dec 21 and Dec 14; months add the ends of Jan..Nov.
    assert_eq!(k.len(), 7 + 2 + 11);
    let d = apply(&y, &p, &Utc);
    let newest = &d[0];
    assert_eq!(
        newest.reasons,
        vec!["daily 2025-12-31", "weekly 2026-W01", "monthly 2025-12"]
    );
    let removed = d.iter().filter(|d| !d.keep).count();
    assert_eq!(removed, y.len() - 20);
    assert!(d.iter().all(|d| d.keep != d.reasons.is_empty()));
}

#[test]
fn keep_within_keeps_the_window_and_covers_its_start() {
    let y = year_2025();
    let p = policy(|k| k.within = Some(Duration::from_secs(2 * 86400)));
    let k = kept(&y, &p, &Utc);
    // 48 hours younger than 2 days before the newest, plus the one exactly 2 days old:
    // the newest complete snapshot outside the window (coverage).
    assert_eq!(k.len(), 49);
    assert_eq!(*k.last().unwrap(), at(2025, 12, 29, 23));
    let d = apply(&y, &p, &Utc);
    assert!(d[48].reasons[0].starts_with("coverage"), "{:?}", d[48]);
}

/// A snapshot dated in the future (its host's clock ran ahead) does not move the window
/// past the real ones: the window counts back from now at the latest.
#[test]
fn keep_within_counts_back_from_now_not_from_a_future_snapshot() {
    let mut y = hourly(at(2025, 12, 1, 0), 10 * 24);
    y.push(cand(9999, at(2026, 11, 1, 3)));
    let now = at(2025, 12, 11, 0);
    let p = policy(|k| {
        k.within = Some(Duration::from_secs(2 * 86400));
        k.now = Some(now);
    });
    let k = kept(&y, &p, &Utc);
    // The future one (a window ending before it still holds it), the 47 snapshots less
    // than 2 days before now, and the one exactly 2 days before now (coverage); counted
    // back from the future one, only it and one coverage snapshot would be kept.
    assert_eq!(k.len(), 49, "{k:?}");
    assert!(k.contains(&at(2025, 12, 9, 0)) && k.contains(&at(2025, 12, 10, 23)));
}

#[test]
fn keep_within_daily() {
    let y = year_2025();
    let p = policy(|k| {
        k.within_periods
            .insert(Period::Daily, Duration::from_secs(7 * 86400));
    });
    let mut want: Vec<_> = (0..7).map(|i| at(2025, 12, 31 - i, 23)).collect();
    want.push(at(2025, 12, 24, 23)); // coverage
    assert_eq!(kept(&y, &p, &Utc), want);
}

#[test]
fn the_repeated_hour_of_a_dst_change_is_one_hour() {
    // Europe/Berlin falls back on 2025-10-26: 02:00-03:00 local happens twice
    // (00:00Z in CEST, 01:00Z in CET).
    let snaps = hourly(at(2025, 10, 25, 0), 48);
    let k = kept(&snaps, &count(Period::Hourly, 1000), &Berlin);
    assert_eq!(k.len(), 47);
    assert!(!k.contains(&at(2025, 10, 26, 0)));
    assert!(k.contains(&at(2025, 10, 26, 1)));
    // In UTC every hour is its own.
    assert_eq!(kept(&snaps, &count(Period::Hourly, 1000), &Utc).len(), 48);

    // The local day of the change has 25 hours (22:00Z to 22:00Z the next day); 23:00Z
    // is already October 27.
    let on = |d: u32| {
        snaps
            .iter()
            .filter(|c| c.time.with_timezone(&Berlin).day() == d)
            .count()
    };
    assert_eq!(on(26), 25);
    assert_eq!(
        kept(&snaps, &count(Period::Daily, 3), &Berlin),
        vec![
            at(2025, 10, 26, 23),
            at(2025, 10, 26, 22),
            at(2025, 10, 25, 21)
        ]
    );
}

#[test]
fn spring_forward_loses_no_hour_bucket() {
    // 2025-03-30: 02:00 CET becomes 03:00 CEST; local hour 2 does not exist.
    let snaps = hourly(at(2025, 3, 29, 0), 72);
    assert_eq!(
        kept(&snaps, &count(Period::Hourly, 1000), &Berlin).len(),
        72
    );
    // The local day has 23 hours: its newest snapshot is 21:00Z (23:00 CEST).
    let on_30 = snaps
        .iter()
        .filter(|c| c.time.with_timezone(&Berlin).day() == 30)
        .count();
    assert_eq!(on_30, 23);
    assert_eq!(
        kept(&snaps, &count(Period::Daily, 3), &Berlin),
        vec![
            at(2025, 3, 31, 23),
            at(2025, 3, 31, 21),
            at(2025, 3, 30, 21)
        ]
    );
}

#[test]
fn utc_and_local_days_differ() {
    // 23:30Z on June 1 is already June 2 in Berlin.
    let snaps = vec![
        cand(1, at(2025, 6, 1, 12)),
        cand(2, at(2025, 6, 1, 23) + CDuration::minutes(30)),
        cand(3, at(2025, 6, 2, 12)),
    ];
    let p = count(Period::Daily, 10);
    assert_eq!(kept(&snaps, &p, &Utc).len(), 2);
    assert_eq!(
        kept(&snaps, &p, &Berlin),
        vec![at(2025, 6, 2, 12), at(2025, 6, 1, 12)]
    );
}

#[test]
fn incomplete_snapshots_take_slots_only_after_complete_ones() {
    // Complete daily snapshots on days 1..5, incomplete ones on days 6 and 7.
    let mut snaps: Vec<_> = (1..=7).map(|d| cand(d, at(2025, 5, d as u32, 3))).collect();
    snaps[5].complete = false;
    snaps[6].complete = false;
    assert_eq!(
        kept(&snaps, &count(Period::Daily, 3), &Utc),
        vec![at(2025, 5, 5, 3), at(2025, 5, 4, 3), at(2025, 5, 3, 3)]
    );
    assert_eq!(
        kept(&snaps, &policy(|k| k.last = 2), &Utc),
        vec![at(2025, 5, 5, 3), at(2025, 5, 4, 3)]
    );
    // Leftover slots go to incomplete ones.
    assert_eq!(kept(&snaps, &policy(|k| k.last = 6), &Utc).len(), 6);
}

#[test]
fn a_week_of_failed_backups_keeps_the_last_complete_one() {
    // Good backups every day in April, then a week of incomplete ones.
    let mut snaps: Vec<_> = (1..=30)
        .map(|d| cand(d, at(2025, 4, d as u32, 2)))
        .collect();
    for d in 1..=7 {
        let mut c = cand(100 + d, at(2025, 5, d as u32, 2));
        c.complete = false;
        snaps.push(c);
    }
    let k = kept(
        &snaps,
        &policy(|k| k.within = Some(Duration::from_secs(7 * 86400))),
        &Utc,
    );
    assert_eq!(k.len(), 8);
    assert_eq!(*k.last().unwrap(), at(2025, 4, 30, 2));
}

#[test]
fn tags_and_protection_keep() {
    let mut snaps = hourly(at(2025, 1, 1, 0), 10);
    snaps[2].tags = vec!["release".into(), "db".into()];
    snaps[3].tags = vec!["release".into()];
    snaps[4].protected = true;
    let p = policy(|k| k.tags = vec![vec!["release".into(), "db".into()]]);
    let d = apply(&snaps, &p, &Utc);
    let keep: Vec<_> = d.iter().filter(|d| d.keep).collect();
    assert_eq!(keep.len(), 2);
    assert!(
        keep.iter()
            .any(|d| d.id == snaps[2].id && d.reasons == ["tag release,db"])
    );
    assert!(
        keep.iter()
            .any(|d| d.id == snaps[4].id && d.reasons == ["protected"])
    );
}

#[test]
fn empty_policy_is_detected() {
    assert!(KeepPolicy::default().is_empty());
    assert!(count(Period::Daily, 0).is_empty());
    assert!(!count(Period::Daily, 1).is_empty());
}

#[test]
fn groups_by_host_and_paths() {
    let mk = |host: &str, paths: &[&str], tags: &[&str]| {
        let mut s = Snapshot::new(
            crate::id::BlobId::default(),
            paths.iter().map(|p| p.to_string()).collect(),
        );
        s.host = host.into();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        (SnapshotId(Id::random()), s)
    };
    let snaps = vec![
        mk("a", &["/etc", "/srv"], &[]),
        mk("a", &["/srv", "/etc"], &["x"]),
        mk("b", &["/etc", "/srv"], &[]),
    ];
    assert_eq!(group(snaps.clone(), GroupBy::default()).len(), 2);
    assert_eq!(
        group(snaps.clone(), "host,paths,tags".parse().unwrap()).len(),
        3
    );
    assert_eq!(group(snaps.clone(), "".parse().unwrap()).len(), 1);
    assert_eq!(group(snaps, "paths".parse().unwrap()).len(), 1);
    assert!("hosts".parse::<GroupBy>().is_err());
}
