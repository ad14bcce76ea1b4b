//! Property tests for every parser of bytes that come from storage or from the command
//! line: S3's XML answers, the sentinel, `metadata.json` and `files_metadata.json`, tar
//! partitions, compressed frames, WAL pages, WAL and backup names, LSNs. Whoever can write
//! to the bucket chooses these bytes, so for any input each parser must return (a value or
//! an error) without panicking, and what it accepts must survive a round trip. Case counts
//! are small enough for CI (a few seconds in all).

use proptest::prelude::*;
use std::io::{Read, Write};
use wal_rus::codec::{Decoder, EncodeOptions, Encoder, Method, ReadFormat, ZstdLevel};
use wal_rus::format::lsn::Lsn;
use wal_rus::format::metadata::ExtendedMetadata;
use wal_rus::format::sentinel::Sentinel;
use wal_rus::format::wal_name::{self, Segment};
use wal_rus::format::{backup_name, files_metadata, wal_page};
use wal_rus::pipeline::dest::Destination;
use wal_rus::pipeline::extract;
use wal_rus::pipeline::sync::NoSync;
use wal_rus::storage::s3::xml;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like JSON often enough to reach deep into a parser: fragments of the
/// documents' own vocabulary, glued at random.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("null".to_string()),
        Just("\"LSN\"".to_string()),
        Just("\"FinishLSN\"".to_string()),
        Just("\"DeltaFrom\"".to_string()),
        Just("\"DeltaLSN\"".to_string()),
        Just("\"DeltaCount\"".to_string()),
        Just("\"Spec\"".to_string()),
        Just("\"UserData\"".to_string()),
        Just("\"Files\"".to_string()),
        Just("\"TarFileSets\"".to_string()),
        Just("\"start_lsn\"".to_string()),
        Just("\"is_permanent\"".to_string()),
        Just("\"StartTime\"".to_string()),
        Just("\"2024-05-01T10:00:00.123Z\"".to_string()),
        Just("\"tablespaces\"".to_string()),
        (0u64..u64::MAX).prop_map(|n| n.to_string()),
        "-?[0-9]{1,25}(\\.[0-9]{1,5})?(e[0-9]{1,3})?".prop_map(|s| s),
        "\"[a-zA-Z0-9_/\\\\.]{0,12}\"".prop_map(|s| s),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat().into_bytes())
}

fn xmlish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("<ListBucketResult>"),
        Just("</ListBucketResult>"),
        Just("<Contents>"),
        Just("</Contents>"),
        Just("<Key>"),
        Just("</Key>"),
        Just("<Size>"),
        Just("</Size>"),
        Just("<IsTruncated>"),
        Just("</IsTruncated>"),
        Just("true"),
        Just("12345"),
        Just("<Error>"),
        Just("</Error>"),
        Just("<Code>"),
        Just("</Code>"),
        Just("<ListMultipartUploadsResult>"),
        Just("<Upload>"),
        Just("</Upload>"),
        Just("<UploadId>"),
        Just("</UploadId>"),
        Just("<DeleteResult>"),
        Just("&amp;"),
        Just("&#x41;"),
        Just("<![CDATA[x]]>"),
        Just("<?xml version=\"1.0\"?>"),
        Just("wal_005/0000000100000000000000A1.lz4"),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn s3_xml_never_panics(body in prop_oneof![xmlish(), prop::collection::vec(any::<u8>(), 0..512)]) {
        let _ = xml::parse_list_v2(&body);
        let _ = xml::parse_error(&body);
        let _ = xml::parse_list_uploads(&body);
        let _ = xml::parse_delete_result(&body);
        let _ = xml::parse_initiate_multipart(&body);
    }

    #[test]
    fn sentinels_parse_or_fail_and_round_trip(body in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..256)]) {
        let from_slice = Sentinel::from_slice(&body);
        let from_reader = Sentinel::from_reader(&body[..]);
        prop_assert_eq!(from_slice.is_ok(), from_reader.is_ok());
        // What is written reads back to what writes the same text (the first write may
        // normalise, e.g. a missing time becomes Go's zero time, as WAL-G writes it).
        if let Ok(s) = from_slice {
            let text = s.to_json();
            let again = Sentinel::from_slice(text.as_bytes());
            prop_assert!(again.as_ref().map(|a| a.to_json()) == Ok(text.clone()), "{:?} -> {} -> {:?}", s, text, again);
        }
    }

    #[test]
    fn metadata_parses_or_fails_and_round_trips(body in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..256)]) {
        if let Ok(m) = ExtendedMetadata::from_slice(&body) {
            let text = m.to_json();
            let again = ExtendedMetadata::from_slice(text.as_bytes());
            prop_assert!(again.as_ref().map(|a| a.to_json()) == Ok(text.clone()), "{:?} -> {} -> {:?}", m, text, again);
        }
    }

    #[test]
    fn files_metadata_never_panics(body in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..256)]) {
        let mut files = 0;
        let _ = files_metadata::read_entries(&body[..], &mut |_, _| { files += 1; Ok(()) }, &mut |_, _| Ok(()));
    }

    #[test]
    fn wal_names_round_trip(name in "[0-9A-Fa-f]{20,28}|[0-9A-F]{8}\\.history|.{0,30}", mib in prop::sample::select(vec![1u64, 16, 64, 1024])) {
        let size = mib << 20;
        let _ = wal_name::kind_of(&name, size);
        let _ = wal_name::is_safe_file_name(&name);
        if let Some(seg) = Segment::parse(&name, size) {
            prop_assert_eq!(seg.name(size), name.clone());
            prop_assert_eq!(Segment::parse(&seg.name(size), size), Some(seg));
        }
        let _ = backup_name::find_backup_name(&name);
        let _ = backup_name::first_segment(&name, size);
        let _ = backup_name::is_usable_name(&name);
        let _ = backup_name::name_from_sentinel(&name);
    }

    #[test]
    fn segments_round_trip(timeline in 1u32.., segno in 0u64..(1 << 40)) {
        let seg = Segment { timeline, segno };
        let size = 16u64 << 20;
        prop_assert_eq!(Segment::parse(&seg.name(size), size), Some(seg));
    }

    #[test]
    fn lsns_round_trip(v in any::<u64>(), text in "[0-9A-Fa-f/]{0,20}") {
        prop_assert_eq!(Lsn::parse(&Lsn(v).to_string()), Some(Lsn(v)));
        if let Some(l) = Lsn::parse(&text) {
            prop_assert_eq!(Lsn::parse(&l.to_string()), Some(l));
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Any bytes as any compressed format: an error or some output, never a panic or a
    /// hang, and never more output than the format could make from so little input.
    #[test]
    fn decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048), fmt in prop::sample::select(vec![
        ReadFormat::Lz4, ReadFormat::Zstd, ReadFormat::Lzma, ReadFormat::Brotli, ReadFormat::Gzip,
    ])) {
        if let Ok(mut d) = Decoder::new(fmt, &body[..]) {
            let mut out = Vec::new();
            let _ = (&mut d).take(64 << 20).read_to_end(&mut out);
        }
    }

    /// What any encoder writes, its decoder reads back exactly; a flipped byte is an error
    /// or different output, never a panic.
    #[test]
    fn codecs_round_trip(data in prop::collection::vec(any::<u8>(), 0..70_000), method in prop::sample::select(vec![
        Method::Lz4, Method::Zstd, Method::Lzma, Method::Brotli, Method::None,
    ]), flip in any::<usize>()) {
        let opts = EncodeOptions { method, zstd_level: ZstdLevel::Default };
        let mut enc = Encoder::new(opts, Vec::new(), Some(data.len() as u64)).unwrap();
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let mut back = Vec::new();
        Decoder::new(method.read_format(), &packed[..]).unwrap().read_to_end(&mut back).unwrap();
        prop_assert!(back == data);
        if !packed.is_empty() {
            let mut bad = packed.clone();
            let at = flip % bad.len();
            bad[at] ^= 0x5A;
            let mut out = Vec::new();
            let _ = Decoder::new(method.read_format(), &bad[..]).unwrap().take(1 << 20).read_to_end(&mut out);
        }
    }

    /// Any bytes as a tar partition: an error or files, and never anything outside the
    /// destination.
    #[test]
    fn tar_partitions_stay_inside(body in prop::collection::vec(any::<u8>(), 0..4096), header_like in any::<bool>()) {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut bytes = body;
        if header_like && bytes.len() >= 512 {
            // A plausible header: name, mode, size fields, ustar magic and a right checksum.
            bytes[..512].iter_mut().for_each(|b| *b = if *b > 127 { b'/' } else { *b });
            bytes[257..263].copy_from_slice(b"ustar\0");
            bytes[148..156].copy_from_slice(b"        ");
            let sum: u32 = bytes[..512].iter().map(|&b| u32::from(b)).sum();
            bytes[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        }
        let d = Destination::open(&dest, &[]).unwrap();
        let _ = extract::unpack(&mut &bytes[..], &d, &mut [0u8; 4096], &NoSync, &extract::WriteAll);
        let outside: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten()
            .map(|e| e.file_name()).filter(|n| n != "dest").collect();
        prop_assert!(outside.is_empty(), "{:?}", outside);
    }

    /// Any bytes as a WAL segment: the page check answers, never panics.
    #[test]
    fn wal_pages_never_panic(body in prop::collection::vec(any::<u8>(), 0..40_000), step in 1usize..9000) {
        let seg = Segment { timeline: 1, segno: 1 };
        let mut check = wal_page::PageCheck::new(Vec::new(), seg, 1 << 16);
        let mut ok = true;
        for piece in body.chunks(step) {
            if check.write_all(piece).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = check.finish();
        }
    }
}
