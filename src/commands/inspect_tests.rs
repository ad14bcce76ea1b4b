//! Unit tests of wal-verify and wal-show run against the in-memory storage: which objects
//! count, how missing segments are judged and the checks' verdicts, the walk across a
//! timeline switch, and wal-show's timelines with their gaps and backups. The integrity
//! scan is also compared with a plain transcription of WAL-G's segment-by-segment walk on
//! many small random archives, since wal-rus crosses gaps in one step.

use super::backup_push::phases_tests::store_backup;
use super::command_tests::{Fixture, SEG, segment_name};
use super::wal_show;
use super::wal_verify::integrity::{self, Plan, SegmentStatus, Sequence, Status};
use super::wal_verify::{self, Check, Outcome};
use crate::config::Cmd;
use crate::format::wal_name::Segment;
use crate::repo::wal_inventory;
use crate::storage::{BytesBody, Storage};
use std::collections::{BTreeMap, BTreeSet};

fn put(f: &Fixture, name: &str) {
    f.mem
        .put(&format!("wal_005/{name}"), &BytesBody(b"x"))
        .unwrap();
}

fn put_segments(f: &Fixture, tli: u32, segnos: impl IntoIterator<Item = u64>) {
    for s in segnos {
        put(f, &format!("{}.lz4", segment_name(tli, s)));
    }
}

fn at(timeline: u32, segno: u64) -> Segment {
    Segment { timeline, segno }
}

/// The integrity check from `current` with the fixture's settings.
fn verify(f: &Fixture, current: Segment, backup: Option<&str>) -> integrity::Report {
    let settings = f.settings(Cmd::WalVerify);
    let names = wal_inventory::list_names(&f.mem).unwrap();
    wal_verify::integrity_check(&settings, &f.mem, &names, current, backup).unwrap()
}

/// The sequences as (timeline, first, last, status word).
fn runs(r: &integrity::Report) -> Vec<(u32, u64, u64, &'static str)> {
    let seqs = r.sequences.iter();
    seqs.map(|s| (s.timeline, s.first, s.last, s.status.word()))
        .collect()
}

#[test]
fn missing_segments_are_delayed_uploading_or_lost_by_where_they_are_met() {
    let f = Fixture::new(&[
        ("WALG_INTEGRITY_MAX_DELAYED_WALS", "1"),
        ("WALG_UPLOAD_CONCURRENCY", "2"),
    ]);
    put_segments(&f, 1, [1, 2, 3, 5, 6]);
    let r = verify(&f, at(1, 10), None);
    assert_eq!(
        runs(&r),
        [
            (1, 1, 3, "FOUND"),
            (1, 4, 4, "MISSING_LOST"),
            (1, 5, 6, "FOUND"),
            (1, 7, 8, "MISSING_UPLOADING"),
            (1, 9, 9, "MISSING_DELAYED"),
        ]
    );
    assert_eq!(r.status, Status::Failure);
    // Without the lost one, only a warning; with nothing missing, OK.
    put_segments(&f, 1, [4]);
    assert_eq!(verify(&f, at(1, 10), None).status, Status::Warning);
    put_segments(&f, 1, 7..=9);
    let r = verify(&f, at(1, 10), None);
    assert_eq!((runs(&r), r.status), (vec![(1, 1, 9, "FOUND")], Status::Ok));
}

#[test]
fn without_backups_lost_segments_before_anything_stored_only_warn() {
    let f = Fixture::new(&[]);
    put_segments(&f, 1, 3..=5);
    let r = verify(&f, at(1, 6), None);
    assert_eq!(runs(&r), [(1, 1, 2, "MISSING_LOST"), (1, 3, 5, "FOUND")]);
    assert_eq!(r.status, Status::Warning);
    // Nothing to scan below the current segment: no sequences, `null` details.
    let empty = verify(&f, at(1, 1), None);
    assert!(empty.sequences.is_empty());
    let json = wal_verify::render_json(&[(Check::Integrity, Outcome::Integrity(empty))], SEG);
    assert_eq!(json, r#"{"integrity":{"status":"OK","details":null}}"#);
}

#[test]
fn metadata_objects_count_and_partial_segments_do_not() {
    let f = Fixture::new(&[]);
    put_segments(&f, 1, [1, 3]);
    put(&f, &format!("{}.json", segment_name(1, 2)));
    put(&f, &format!("{}.partial.lz4", segment_name(1, 4)));
    put(&f, &format!("{}.00000028.backup.lz4", segment_name(1, 4)));
    let r = verify(&f, at(1, 6), None);
    assert_eq!(
        runs(&r),
        [
            (1, 1, 3, "FOUND"),
            (1, 4, 4, "MISSING_LOST"),
            (1, 5, 5, "MISSING_UPLOADING")
        ]
    );
}

#[test]
fn the_earliest_usable_backup_is_where_the_scan_stops() {
    let f = Fixture::new(&[]);
    let old = store_backup(&f, 3 * SEG + 0x28, true).unwrap();
    let name = store_backup(&f, 4 * SEG + 0x28, false).unwrap();
    put_segments(&f, 1, [4, 6, 7]);
    let r = verify(&f, at(1, 8), None);
    // The permanent backup at 3 is passed over; the scan stops at 4, and 5 is lost.
    assert_eq!(
        runs(&r),
        [
            (1, 4, 4, "FOUND"),
            (1, 5, 5, "MISSING_LOST"),
            (1, 6, 7, "FOUND")
        ]
    );
    assert_eq!(r.status, Status::Failure);
    // Named, a permanent backup is a valid border.
    let named = verify(&f, at(1, 8), Some(&old));
    assert_eq!(
        named.sequences[0],
        Sequence {
            timeline: 1,
            first: 3,
            last: 3,
            status: SegmentStatus::Lost,
        }
    );
    let settings = f.settings(Cmd::WalVerify);
    let err = wal_verify::integrity_check(&settings, &f.mem, &[], at(1, 8), Some("base_x"));
    assert!(err.unwrap_err().to_string().contains("base_x"));
    // A backup without metadata.json: WAL-G falls back to segment 1.
    f.mem
        .delete_many(&[crate::repo::backups::metadata_key(&name)])
        .unwrap();
    let r = verify(&f, at(1, 8), None);
    assert_eq!(r.sequences[0].first, 1);
    assert_eq!(
        r.status,
        Status::Failure,
        "found segment 4 before the lost 5"
    );
}

/// Timeline 2 branched from 1 at segment 5 (00000002.history stored uncompressed).
fn branched(f: &Fixture) {
    put_segments(f, 1, 1..=4);
    put_segments(f, 2, 5..=7);
    f.mem
        .put(
            "wal_005/00000002.history",
            &BytesBody(b"1\t0/500000\tno recovery target specified\n"),
        )
        .unwrap();
}

#[test]
fn the_scan_follows_the_history_to_the_parent_timeline() {
    let f = Fixture::new(&[]);
    branched(&f);
    let r = verify(&f, at(2, 8), None);
    assert_eq!(runs(&r), [(1, 1, 4, "FOUND"), (2, 5, 7, "FOUND")]);
    assert_eq!(r.status, Status::Ok);
    // Timeline 1's own scan never leaves it.
    let r = verify(&f, at(1, 6), None);
    assert_eq!(
        runs(&r),
        [(1, 1, 4, "FOUND"), (1, 5, 5, "MISSING_UPLOADING")]
    );
    // A backup on timeline 1 after the switch cannot be reached from timeline 2.
    let late = store_backup(&f, 6 * SEG + 0x28, false).unwrap();
    let settings = f.settings(Cmd::WalVerify);
    let err = wal_verify::integrity_check(&settings, &f.mem, &[], at(2, 8), Some(&late));
    assert!(err.unwrap_err().to_string().contains("cannot be reached"));
    let early = store_backup(&f, 2 * SEG + 0x28, false).unwrap();
    assert_eq!(verify(&f, at(2, 8), None).sequences[0].first, 2, "{early}");
}

#[test]
fn the_timeline_check_compares_with_the_highest_stored() {
    let f = Fixture::new(&[]);
    branched(&f);
    let names = wal_inventory::list_names(&f.mem).unwrap();
    // The bare history file does not count, the segments of timeline 2 do.
    assert_eq!(wal_verify::highest_timeline(&names, SEG), 2);
    put(&f, "00000003.history.lz4");
    let names = wal_inventory::list_names(&f.mem).unwrap();
    let highest = wal_verify::highest_timeline(&names, SEG);
    let outcome = |current| Outcome::Timeline { current, highest };
    assert_eq!(outcome(3).status(), Status::Ok);
    assert_eq!(outcome(2).status(), Status::Failure);
    let none = Outcome::Timeline {
        current: 1,
        highest: wal_verify::highest_timeline(&[], SEG),
    };
    assert_eq!(none.status(), Status::Warning);
    let results = [
        (Check::Timeline, outcome(2)),
        (
            Check::Integrity,
            Outcome::Integrity(verify(&f, at(2, 8), None)),
        ),
    ];
    let json = wal_verify::render_json(&results, SEG);
    assert!(json.starts_with(r#"{"integrity":{"status":"OK","details":[{"timeline_id":1,"start_segment":"000000010000000000000001","end_segment":"000000010000000000000004","segments_count":4,"status":"FOUND"},"#), "{json}");
    assert!(json.ends_with(r#""timeline":{"status":"FAILURE","details":{"current_timeline_id":2,"highest_storage_timeline_id":3}}}"#), "{json}");
    let plain = wal_verify::render_plain(&results, SEG);
    assert!(plain.starts_with("[wal-verify] timeline check status: FAILURE\n[wal-verify] timeline check details:\nHighest timeline found in storage: 3\nCurrent cluster timeline: 2\n[wal-verify] integrity check status: OK\n"), "{plain}");
    assert!(plain.contains("\n| TLI | START                    | END                      | SEGMENTS COUNT | STATUS |\n"), "{plain}");
    assert!(plain.contains("\n|   2 | 000000020000000000000005 | 000000020000000000000007 |              3 |  FOUND |\n"), "{plain}");
}

#[test]
fn wal_show_groups_by_timeline_with_gaps_and_backups() {
    let f = Fixture::new(&[]);
    branched(&f);
    f.mem
        .delete_many(&[format!("wal_005/{}.lz4", segment_name(1, 2))])
        .unwrap();
    put(&f, &format!("{}.lz4", segment_name(2, 10)));
    let backup = store_backup(&f, 3 * SEG + 0x28, false).unwrap();
    let settings = f.settings(Cmd::WalShow);
    let mut timelines = wal_show::timelines(&settings, &f.mem).unwrap();
    assert_eq!(timelines.len(), 2);
    assert_eq!(
        (timelines[0].missing.clone(), timelines[0].parent),
        (vec![2], 0)
    );
    assert_eq!(timelines[1].missing, [9, 8]);
    let bare = wal_show::render_json(&timelines, SEG);
    wal_show::add_backups(&f.mem, &mut timelines, SEG).unwrap();
    assert_eq!(timelines[0].backups.len(), 1);
    assert_eq!(timelines[0].backups[0].0.name, backup);
    assert!(timelines[1].backups.is_empty());
    let json = wal_show::render_json(&timelines, SEG);
    assert!(json.ends_with(r#"{"id":2,"parent_id":1,"switch_point_lsn":5242880,"start_segment":"000000020000000000000005","end_segment":"00000002000000000000000A","segments_count":4,"missing_segments":["000000020000000000000009","000000020000000000000008"],"segment_range_size":6,"status":"LOST_SEGMENTS"}]"#), "{json}");
    assert!(json.contains(&format!(r#""missing_segments":["000000010000000000000002"],"backups":[{{"backup_name":"{backup}","#)), "{json}");
    assert!(!bare.contains("backups"), "{bare}");
    let table = wal_show::render_table(&timelines, true, SEG);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[1],
        "| TLI | PARENT TLI | SWITCHPOINT LSN | START SEGMENT            | END SEGMENT              | SEGMENT RANGE | SEGMENTS COUNT | STATUS        | BACKUPS COUNT |"
    );
    assert_eq!(
        lines[3],
        "|   1 |          0 |             0/0 | 000000010000000000000001 | 000000010000000000000004 |             4 |              3 | LOST_SEGMENTS |             1 |"
    );
    assert_eq!(
        lines[4],
        "|   2 |          1 |        0/500000 | 000000020000000000000005 | 00000002000000000000000A |             6 |              4 | LOST_SEGMENTS |             0 |"
    );
    assert_eq!(lines.len(), 6);
    // An empty archive is an empty array and a table of headers.
    let empty = Fixture::new(&[]);
    let none = wal_show::timelines(&empty.settings(Cmd::WalShow), &empty.mem).unwrap();
    assert_eq!(wal_show::render_json(&none, SEG), "[]");
    assert_eq!(wal_show::render_table(&none, false, SEG).lines().count(), 4);
}

/// WAL-G's walk, one segment at a time, transcribed plainly: the reference for the scan.
fn walg_scan(plan: &Plan) -> Vec<Sequence> {
    let mut at = plan.current;
    let mut scanned: Vec<(Segment, SegmentStatus)> = Vec::new();
    let phases = [
        (Some(plan.delayed_window), true, SegmentStatus::Delayed),
        (Some(plan.uploading_window), false, SegmentStatus::Uploading),
        (None, false, SegmentStatus::Lost),
    ];
    'phases: for (limit, until_found, missing) in phases {
        let mut i = 0;
        while limit.is_none_or(|l| i < l) {
            i += 1;
            if at.segno <= plan.stop {
                continue 'phases;
            }
            let tli = plan.switches.get(&at.segno).copied().unwrap_or(at.timeline);
            at = Segment {
                timeline: tli,
                segno: at.segno - 1,
            };
            if plan.present.contains(&at) {
                scanned.push((at, SegmentStatus::Found));
                if until_found {
                    continue 'phases;
                }
            } else {
                scanned.push((at, missing));
            }
        }
    }
    scanned.sort_by_key(|(s, _)| s.segno);
    let mut out: Vec<Sequence> = Vec::new();
    for (s, status) in scanned {
        match out.last_mut() {
            Some(q) if q.timeline == s.timeline && q.status == status => q.last = s.segno,
            _ => out.push(Sequence {
                timeline: s.timeline,
                first: s.segno,
                last: s.segno,
                status,
            }),
        }
    }
    out
}

#[test]
fn the_scan_agrees_with_walgs_walk_on_random_archives() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for case in 0..2000 {
        let present: BTreeSet<Segment> = (0..rand(40))
            .map(|_| at(1 + rand(3) as u32, rand(40)))
            .collect();
        let switches: BTreeMap<u64, u32> = (0..rand(3))
            .map(|_| (rand(40), 1 + rand(3) as u32))
            .collect();
        let plan = Plan {
            current: at(1 + rand(3) as u32, rand(45)),
            stop: rand(12),
            no_backups: rand(2) == 0,
            present: &present,
            switches: &switches,
            delayed_window: rand(4),
            uploading_window: rand(6),
        };
        let got = integrity::scan(&plan);
        assert_eq!(got.sequences, walg_scan(&plan), "case {case}");
    }
}
