//! Unit tests of the S3 client's helpers: addressing, digests.

use super::*;

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
fn md5_header() {
    // RFC 1864 example digest of the empty string.
    assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
}
