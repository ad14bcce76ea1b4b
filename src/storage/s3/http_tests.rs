//! Unit tests of the S3 client's helpers: body coalescing, addressing, dates, digests.

use super::*;

#[test]
fn bodies_are_read_a_full_buffer_at_a_time() {
    // A body that yields 3 bytes a read, as the files-metadata renderer yields one member.
    struct Trickle(std::io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }
    let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let mut body = Coalesced(Trickle(std::io::Cursor::new(data.clone())));
    let mut buf = vec![0u8; 8192];
    let mut sizes = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = body.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sizes.push(n);
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(sizes, [8192, 8192, 20_000 - 16_384]);
    assert!(out == data);
}

#[test]
fn bucket_names() {
    assert!(dns_compatible("my-bucket", true));
    assert!(!dns_compatible("my.bucket", true));
    assert!(dns_compatible("my.bucket", false));
    assert!(!dns_compatible("My_Bucket", false));
    assert!(!dns_compatible("192.168.1.1", false));
    assert!(!dns_compatible("ab", false));
}

#[test]
fn http_dates() {
    assert_eq!(
        parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
        Some(UtcTime(1_440_938_160))
    );
    assert_eq!(parse_http_date("garbage"), None);
}

#[test]
fn md5_header() {
    // RFC 1864 example digest of the empty string.
    assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
}
