//! Tests of the retention catalogue: its order, its "older" rule, what permanence protects
//! and the target of each form of `delete`.

use super::*;

const SEG: u64 = 16 << 20;

fn info(seg: u64, from: Option<u64>, modified: i64, permanent: bool) -> BackupInfo {
    let name = match from {
        None => format!(
            "base_{}",
            Segment {
                timeline: 1,
                segno: seg
            }
            .name(SEG)
        ),
        Some(f) => format!(
            "base_{}_D_{}",
            Segment {
                timeline: 1,
                segno: seg
            }
            .name(SEG),
            Segment {
                timeline: 1,
                segno: f
            }
            .name(SEG)
        ),
    };
    let base = |s: u64| {
        format!(
            "base_{}",
            Segment {
                timeline: 1,
                segno: s
            }
            .name(SEG)
        )
    };
    BackupInfo {
        sentinel_file: format!("{name}_backup_stop_sentinel.json"),
        name,
        modified: PreciseTime {
            secs: modified,
            nanos: 0,
        },
        delta_from: from.map(|f| {
            if f == 3 || f == 10 {
                base(f)
            } else {
                format!(
                    "base_{}_D_{}",
                    Segment {
                        timeline: 1,
                        segno: f
                    }
                    .name(SEG),
                    Segment {
                        timeline: 1,
                        segno: 3
                    }
                    .name(SEG)
                )
            }
        }),
        delta_full_name: from.map(|f| base(if f >= 10 { 10 } else { 3 })),
        permanent,
        start_time: Some(PreciseTime {
            secs: modified - 10,
            nanos: 0,
        }),
        lsns: Some((Lsn(seg * SEG + 40), Lsn(seg * SEG + 4000))),
        has_metadata: true,
    }
}

/// F3 <- D5 (on F3), F10 <- D12 (on F10), F14.
fn sample(permanent3: bool) -> Catalogue {
    let list = vec![
        info(10, None, 300, false),
        info(3, None, 100, permanent3),
        info(5, Some(3), 200, false),
        info(12, Some(10), 400, false),
        info(14, None, 500, false),
    ];
    Catalogue::new(list, SEG, false)
}

fn seg_name(n: u64) -> String {
    Segment {
        timeline: 1,
        segno: n,
    }
    .name(SEG)
}

#[test]
fn retention_targets() {
    let c = sample(false);
    let names: Vec<&str> = c.backups().iter().map(|b| &b.name[5..29]).collect();
    assert_eq!(
        names,
        [
            seg_name(3),
            seg_name(5),
            seg_name(10),
            seg_name(12),
            seg_name(14)
        ]
    );
    let t = |b: Option<&BackupInfo>| b.map(|b| b.name.clone());
    assert_eq!(
        t(c.find_retain(Modifier::None, 3)),
        Some(format!("base_{}", seg_name(10)))
    );
    assert!(!c.find_retain(Modifier::None, 2).unwrap().is_full());
    assert_eq!(
        t(c.find_retain(Modifier::Full, 2)),
        Some(format!("base_{}", seg_name(10)))
    );
    assert_eq!(
        t(c.find_retain(Modifier::FindFull, 2)),
        Some(format!("base_{}", seg_name(10)))
    );
    assert_eq!(c.find_retain(Modifier::None, 6), None);
    assert_eq!(
        t(c.find_retain(Modifier::Full, 3)),
        Some(format!("base_{}", seg_name(3)))
    );
    // --after: the older of the two candidates.
    let after = Point::Name(format!("base_{}", seg_name(5)));
    assert_eq!(
        t(c.find_retain_after(Modifier::None, 1, &after)).unwrap(),
        format!("base_{}_D_{}", seg_name(5), seg_name(3))
    );
    assert_eq!(
        t(c.find_retain_after(Modifier::Full, 1, &after)),
        Some(format!("base_{}", seg_name(10)))
    );
    let after_time = Point::Time(PreciseTime {
        secs: 250,
        nanos: 0,
    });
    assert_eq!(
        t(c.find_retain_after(Modifier::None, 1, &after_time)),
        Some(format!("base_{}", seg_name(10)))
    );
    // before.
    assert_eq!(
        t(c.find_before_name(&format!("base_{}", seg_name(12)), false)).unwrap(),
        format!("base_{}_D_{}", seg_name(12), seg_name(10))
    );
    assert_eq!(
        t(c.find_before_name(&format!("base_{}", seg_name(12)), true)),
        Some(format!("base_{}", seg_name(10)))
    );
    assert_eq!(c.find_before_name("base_X", false), None);
    assert_eq!(
        t(c.find_before_time(
            PreciseTime {
                secs: 150,
                nanos: 0
            },
            true
        )),
        Some(format!("base_{}", seg_name(3)))
    );
    assert_eq!(
        c.find_before_time(
            PreciseTime {
                secs: 501,
                nanos: 0
            },
            false
        ),
        None
    );
}

#[test]
fn older_and_permanent() {
    let c = sample(true);
    let t = format!("base_{}_backup_stop_sentinel.json", seg_name(10));
    assert!(c.older(&format!("wal_005/{}.lz4", seg_name(9)), &t));
    assert!(!c.older(&format!("wal_005/{}.lz4", seg_name(10)), &t));
    assert!(!c.older("wal_005/00000001.history.lz4", &t));
    // Lower timelines are always older.
    assert!(c.older("wal_005/000000000000000000000020.lz4", &t));
    assert!(!c.older("wal_005/000000020000000000000001.lz4", &t));
    // F3's range: segno(start-1)..=segno(finish-1) = 3..=3 on timeline 1.
    assert!(c.is_permanent(&format!("wal_005/{}.lz4", seg_name(3))));
    assert!(c.is_permanent(&format!("wal_005/{}.00000028.backup.lz4", seg_name(3))));
    assert!(!c.is_permanent(&format!("wal_005/{}.lz4", seg_name(2))));
    assert!(!c.is_permanent("wal_005/000000020000000000000003.lz4"));
    assert!(c.is_permanent(&format!(
        "basebackups_005/base_{}/metadata.json",
        seg_name(3)
    )));
    assert!(c.is_permanent(&format!(
        "basebackups_005/base_{}_backup_stop_sentinel.json",
        seg_name(3)
    )));
    assert!(!c.is_permanent(&format!(
        "basebackups_005/base_{}_D_{}/metadata.json",
        seg_name(5),
        seg_name(3)
    )));
    assert_eq!(
        c.permanent_backups().iter().collect::<Vec<_>>(),
        [&format!("base_{}", seg_name(3))]
    );
}

#[test]
fn garbage_and_target_sets() {
    let c = sample(false);
    assert_eq!(
        c.find_garbage_target().unwrap().unwrap().name,
        format!("base_{}", seg_name(3))
    );
    // With F3 permanent the oldest non-permanent is D5 (a delta): its full base is used.
    let c = sample(true);
    assert_eq!(
        c.find_garbage_target().unwrap().unwrap().name,
        format!("base_{}", seg_name(3))
    );

    let names = |v: Vec<&BackupInfo>| {
        v.into_iter()
            .map(|b| b.name[5..29].to_string())
            .collect::<Vec<_>>()
    };
    let c = sample(false);
    assert_eq!(
        names(c.target_set(&format!("base_{}", seg_name(3)), false)),
        [seg_name(3), seg_name(5)]
    );
    assert_eq!(
        names(c.target_set(&format!("base_{}_D_{}", seg_name(12), seg_name(10)), false)),
        [seg_name(12)]
    );
    assert_eq!(
        names(c.target_set(&format!("base_{}_D_{}", seg_name(12), seg_name(10)), true)),
        [seg_name(10), seg_name(12)]
    );
    assert_eq!(
        names(c.target_set(&format!("base_{}", seg_name(14)), true)),
        [seg_name(14)]
    );
}

#[test]
fn sentinel_time_order() {
    // Timelines restart: start times order the backups, WAL compares by segment alone.
    let mut a = info(3, None, 100, false);
    a.name = "base_000000020000000000000003".into();
    a.sentinel_file = format!("{}_backup_stop_sentinel.json", a.name);
    let b = info(5, None, 200, false);
    let c = Catalogue::new(vec![b.clone(), a.clone()], SEG, true);
    assert_eq!(c.backups()[0].name, a.name);
    assert!(c.older(&format!("basebackups_005/{}/x", a.name), &b.sentinel_file));
    assert!(c.older("wal_005/000000030000000000000004.lz4", &b.sentinel_file));
    // A backup folder without a sentinel has no start time: never older.
    assert!(!c.older(
        "basebackups_005/base_000000010000000000000001/x",
        &b.sentinel_file
    ));
    // Missing start time: fall back to segment order.
    let mut no_time = a.clone();
    no_time.start_time = None;
    let c = Catalogue::new(vec![b, no_time], SEG, true);
    assert!(c.start_times.is_none());
}

#[test]
fn a_delta_across_a_newer_full_backup_keeps_its_base() {
    // D16 was taken on F3 by name, across F10 and F14.
    let mut list: Vec<BackupInfo> = sample(false).backups().to_vec();
    list.push(info(16, Some(3), 600, false));
    let c = Catalogue::new(list, SEG, false);
    let f14 = c.by_name(&format!("base_{}", seg_name(14))).unwrap();
    let kept: Vec<String> = c.bases_kept_with(f14).into_iter().collect();
    assert_eq!(kept, [format!("base_{}", seg_name(3))]);
    // Without it, nothing older is needed.
    let c = sample(false);
    let f14 = c.by_name(&format!("base_{}", seg_name(14))).unwrap();
    assert!(c.bases_kept_with(f14).is_empty());
    // D12's base is the target itself: not "older", nothing extra kept.
    let f10 = c.by_name(&format!("base_{}", seg_name(10))).unwrap();
    assert!(c.bases_kept_with(f10).is_empty());
}
