//! WAL-G's own cases for `FindLastCommonPoint` and `GetMissingWals`
//! (`wal_restore_handler_test.go`), with the same inputs and expectations.

use super::*;

const SEG: u64 = 16 << 20;

fn rec(timeline: u32, lsn: u64) -> HistoryRecord {
    HistoryRecord {
        timeline,
        switch_lsn: Lsn(lsn),
    }
}

#[test]
fn common_point_same_timeline_is_an_error() {
    let target = [rec(1, 12), rec(2, 16)];
    let source = [rec(1, 8), rec(2, 20)];
    assert!(last_common_point(&target, &source).is_err());
}

#[test]
fn common_point_walg_cases() {
    type Case<'a> = (&'a [HistoryRecord], &'a [HistoryRecord], (u64, u32));
    let cases: &[Case] = &[
        (&[rec(1, 12)], &[], (12, 1)),
        (&[], &[rec(1, 12)], (12, 1)),
        (
            &[rec(1, 5), rec(2, 16), rec(3, 20)],
            &[rec(1, 5), rec(2, 12)],
            (12, 2),
        ),
        (
            &[rec(1, 5), rec(2, 16), rec(3, 20), rec(4, 26)],
            &[rec(1, 5), rec(2, 16), rec(3, 20)],
            (20, 3),
        ),
        (
            &[rec(1, 4), rec(2, 7), rec(3, 10), rec(4, 25)],
            &[rec(1, 5), rec(2, 9), rec(3, 30)],
            (4, 1),
        ),
        (
            &[rec(1, 5), rec(2, 9), rec(3, 30), rec(4, 32), rec(5, 48)],
            &[rec(1, 5), rec(2, 9), rec(3, 30), rec(4, 36)],
            (32, 4),
        ),
        (
            &[rec(1, 5), rec(2, 9), rec(3, 30), rec(4, 32), rec(5, 48)],
            &[rec(1, 5), rec(2, 9), rec(3, 30), rec(4, 32)],
            (32, 4),
        ),
    ];
    for (i, (target, source, (lsn, tl))) in cases.iter().enumerate() {
        let got = last_common_point(target, source).unwrap();
        assert_eq!(got, (Lsn(*lsn), *tl), "case {i}");
    }
}

/// WAL-G's map of timeline → first segment as this module's chain, newest first.
fn chain(starts: &[(u32, u64)], current: u32) -> Vec<(u32, u64)> {
    let mut c: Vec<(u32, u64)> = starts.iter().copied().filter(|s| s.0 <= current).collect();
    c.sort_by_key(|s| std::cmp::Reverse(s.0));
    c
}

fn present(segs: &[(u32, u64)]) -> BTreeSet<Segment> {
    segs.iter()
        .map(|&(timeline, segno)| Segment { timeline, segno })
        .collect()
}

fn missing(
    last: (u64, u32),
    current: u32,
    starts: &[(u32, u64)],
    have: &[(u32, u64)],
) -> Vec<String> {
    let last = Segment {
        timeline: last.1,
        segno: last.0,
    };
    missing_segments(last, &chain(starts, current), &present(have), SEG).unwrap()
}

#[test]
fn missing_walg_cases() {
    let one = &[(1, 1)][..];
    let two = &[(1, 1), (2, 3)][..];
    assert_eq!(
        missing((1, 1), 1, one, &[(1, 2)]),
        ["000000010000000000000001"]
    );
    assert_eq!(
        missing((1, 1), 1, one, &[(1, 3)]),
        ["000000010000000000000002", "000000010000000000000001"]
    );
    assert_eq!(
        missing((1, 1), 2, two, &[(1, 2), (2, 4)]),
        ["000000020000000000000003", "000000010000000000000001"]
    );
    assert_eq!(
        missing((1, 1), 2, two, &[(2, 3)]),
        ["000000010000000000000002", "000000010000000000000001"]
    );
    assert_eq!(
        missing((1, 1), 3, &[(1, 1), (2, 2), (3, 4)], &[(2, 3), (3, 5)]),
        [
            "000000030000000000000004",
            "000000020000000000000002",
            "000000010000000000000001"
        ]
    );
    assert!(missing((1, 1), 1, one, &[(1, 1), (1, 2)]).is_empty());
    assert!(missing((1, 1), 2, two, &[(1, 1), (1, 2), (2, 3), (2, 4)]).is_empty());
    let four = &[(1, 1), (2, 3), (3, 6), (4, 9)][..];
    assert_eq!(
        missing((5, 2), 4, four, &[(4, 9), (4, 10), (4, 11), (3, 8)]),
        [
            "000000030000000000000007",
            "000000030000000000000006",
            "000000020000000000000005"
        ]
    );
    let three = &[(1, 1), (2, 3), (3, 7)][..];
    assert_eq!(
        missing(
            (3, 2),
            3,
            three,
            &[(3, 7), (3, 10), (3, 11), (2, 3), (2, 6)]
        ),
        [
            "000000030000000000000009",
            "000000030000000000000008",
            "000000020000000000000005",
            "000000020000000000000004"
        ]
    );
    assert_eq!(
        missing(
            (3, 2),
            3,
            three,
            &[(3, 7), (3, 8), (3, 9), (3, 10), (3, 11)]
        ),
        [
            "000000020000000000000006",
            "000000020000000000000005",
            "000000020000000000000004",
            "000000020000000000000003"
        ]
    );
}

#[test]
fn chain_follows_the_history_records() {
    // Timeline 4 made from 3 at segment 9, 3 from 1 at segment 6 (2 belongs to a branch).
    let history = [rec(1, 6 * SEG + 40), rec(3, 9 * SEG)];
    assert_eq!(timeline_starts(&history, 4, SEG), [(4, 9), (3, 6), (1, 1)]);
    assert_eq!(timeline_starts(&[], 1, SEG), [(1, 1)]);
    // WAL-G would dereference a missing timeline 2 here; this walks 4, 3, 1.
    let got = missing_segments(
        Segment {
            timeline: 1,
            segno: 5,
        },
        &timeline_starts(&history, 4, SEG),
        &present(&[(4, 10)]),
        SEG,
    )
    .unwrap();
    assert_eq!(
        got,
        [
            "000000040000000000000009",
            "000000030000000000000008",
            "000000030000000000000007",
            "000000030000000000000006",
            "000000010000000000000005"
        ]
    );
}

#[test]
fn no_segment_of_the_current_timeline_is_an_error() {
    let last = Segment {
        timeline: 1,
        segno: 1,
    };
    assert!(missing_segments(last, &[(2, 3), (1, 1)], &present(&[(1, 2)]), SEG).is_err());
}
