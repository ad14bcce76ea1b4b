//! Unit tests of each stage, and Amazon S3's worked signing examples.

use super::suite_tests::parse_rfc3339_utc;
use super::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn generic_path_normalisation() {
    let n = |p: &str| canonical_path(p, PathRules::GENERIC);
    assert_eq!(n(""), "/");
    assert_eq!(n("/"), "/");
    assert_eq!(n("//"), "/");
    assert_eq!(n("/a/b/.."), "/a/");
    assert_eq!(n("/a/./b"), "/a/b");
    assert_eq!(n("/a//b//"), "/a/b/");
    assert_eq!(n("/../a"), "/a");
    assert_eq!(n("/a%2Fb"), "/a%252Fb");
    assert_eq!(canonical_path("", PathRules::S3), "/");
    assert_eq!(canonical_path("/a/../b//c", PathRules::S3), "/a/../b//c");
}

// ---------------------------------------------------------------------
// Amazon S3's worked examples (S3 API reference, "Signature Calculations for
// the Authorization Header: Transferring Payload in a Single Chunk", and
// "Authenticating Requests: Using Query Parameters"). The requests below are
// transcribed from the documented example requests and canonical requests;
// the documented signatures confirm the transcriptions.
// ---------------------------------------------------------------------

const EX_TIME: UtcTime = UtcTime(1_369_353_600); // 20130524T000000Z
const EX_HOST: &str = "examplebucket.s3.amazonaws.com";

fn ex_creds() -> Credentials {
    Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    }
}

fn ex_signature(req: &Request) -> String {
    let auth = authorization(&ex_creds(), "us-east-1", "s3", EX_TIME, req, PathRules::S3);
    let prefix =
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ";
    assert!(auth.starts_with(prefix), "{auth}");
    auth.rsplit_once("Signature=").unwrap().1.to_string()
}

#[test]
fn s3_example_time() {
    assert_eq!(EX_TIME.amz_date(), "20130524T000000Z");
}

#[test]
fn s3_example_get_object() {
    let headers = h(&[
        ("Host", EX_HOST),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]);
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: &[],
        headers: &headers,
        payload_hash: EMPTY_PAYLOAD_SHA256,
    };
    let creq = canonical_request(&req, PathRules::S3);
    assert_eq!(
        creq,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // The documented string to sign carries this canonical request hash.
    assert_eq!(
        string_to_sign(EX_TIME, "us-east-1", "s3", &creq),
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    assert_eq!(
        ex_signature(&req),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn s3_example_put_object() {
    let body = b"Welcome to Amazon S3.";
    let hash = sha256_hex(body);
    assert_eq!(
        hash,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    let headers = h(&[
        ("Host", EX_HOST),
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", &hash),
    ]);
    // The documented key is `test$file.text`; the client encodes it for the wire.
    let path = format!("/{}", uri_encode("test$file.text", false));
    assert_eq!(path, "/test%24file.text");
    let req = Request {
        method: "PUT",
        path: &path,
        query: &[],
        headers: &headers,
        payload_hash: &hash,
    };
    assert_eq!(
        canonical_request(&req, PathRules::S3),
        "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n\
         host:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
         x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n\
         date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
         44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    assert_eq!(
        ex_signature(&req),
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    );
}

fn ex_bucket_get(query: &[(String, String)]) -> (String, String) {
    let headers = h(&[
        ("Host", EX_HOST),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
    ]);
    let req = Request {
        method: "GET",
        path: "/",
        query,
        headers: &headers,
        payload_hash: EMPTY_PAYLOAD_SHA256,
    };
    (canonical_request(&req, PathRules::S3), ex_signature(&req))
}

#[test]
fn s3_example_get_bucket_lifecycle() {
    let (creq, sig) = ex_bucket_get(&h(&[("lifecycle", "")]));
    assert!(creq.starts_with("GET\n/\nlifecycle=\nhost:"), "{creq}");
    assert_eq!(
        sig,
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    );
}

#[test]
fn s3_example_list_objects() {
    // Given out of order on purpose: the signer sorts.
    let (creq, sig) = ex_bucket_get(&h(&[("prefix", "J"), ("max-keys", "2")]));
    assert!(
        creq.starts_with("GET\n/\nmax-keys=2&prefix=J\nhost:"),
        "{creq}"
    );
    assert_eq!(
        sig,
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    );
}

#[test]
fn s3_example_presigned_url() {
    let headers = h(&[("Host", EX_HOST)]);
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: &[],
        headers: &headers,
        payload_hash: UNSIGNED_PAYLOAD,
    };
    let mut query = req.query.to_vec();
    query.extend(presign_params(
        &ex_creds(),
        "us-east-1",
        "s3",
        EX_TIME,
        86_400,
        &req,
    ));
    assert_eq!(
        canonical_request(
            &Request {
                query: &query,
                ..req
            },
            PathRules::S3
        ),
        "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&\
         X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&\
         X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
         host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    let params = presign(
        &ex_creds(),
        "us-east-1",
        "s3",
        EX_TIME,
        86_400,
        &req,
        PathRules::S3,
    );
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature"
        ]
    );
    assert_eq!(
        params[1].1,
        "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
    );
    assert_eq!(
        params[5].1,
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}

#[test]
fn presign_signs_the_session_token() {
    let mut creds = ex_creds();
    creds.session_token = Some("tok/en+=".into());
    let headers = h(&[("Host", EX_HOST)]);
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: &[],
        headers: &headers,
        payload_hash: UNSIGNED_PAYLOAD,
    };
    let params = presign(&creds, "us-east-1", "s3", EX_TIME, 60, &req, PathRules::S3);
    assert_eq!(
        params[5],
        ("X-Amz-Security-Token".to_string(), "tok/en+=".to_string())
    );
    assert_eq!(params[6].0, "X-Amz-Signature");
    let without = presign(
        &ex_creds(),
        "us-east-1",
        "s3",
        EX_TIME,
        60,
        &req,
        PathRules::S3,
    );
    assert_ne!(
        params[6].1, without[5].1,
        "the token must be covered by the signature"
    );
}

#[test]
fn unsigned_payload_is_passed_through() {
    let headers = h(&[
        ("host", EX_HOST),
        ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
    ]);
    let req = Request {
        method: "PUT",
        path: "/k",
        query: &[],
        headers: &headers,
        payload_hash: UNSIGNED_PAYLOAD,
    };
    let creq = canonical_request(&req, PathRules::S3);
    assert!(
        creq.ends_with("\nhost;x-amz-content-sha256\nUNSIGNED-PAYLOAD"),
        "{creq}"
    );
    assert!(
        creq.contains("\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"),
        "{creq}"
    );
}

#[test]
fn header_canonicalisation() {
    let headers = h(&[
        ("X-B", "  two   words  "),
        ("Host", "h"),
        ("x-b", "second"),
        ("X-A", "\tx"),
    ]);
    let req = Request {
        method: "GET",
        path: "/",
        query: &[],
        headers: &headers,
        payload_hash: UNSIGNED_PAYLOAD,
    };
    assert_eq!(
        canonical_request(&req, PathRules::S3),
        "GET\n/\n\nhost:h\nx-a:x\nx-b:two words,second\n\nhost;x-a;x-b\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(signed_headers(&headers), "host;x-a;x-b");
}

#[test]
fn query_sorting_uses_encoded_forms() {
    let q = h(&[
        ("b", "2"),
        ("a", "z"),
        ("a", "y"),
        ("A", "1"),
        ("c d", "e/f"),
        ("~", ""),
    ]);
    assert_eq!(canonical_query(&q), "A=1&a=y&a=z&b=2&c%20d=e%2Ff&~=");
    assert_eq!(canonical_query(&[]), "");
}

#[test]
fn uri_encode_edge_cases() {
    let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
    assert_eq!(uri_encode(unreserved, true), unreserved);
    assert_eq!(uri_encode("", true), "");
    assert_eq!(uri_encode("a/b", false), "a/b");
    assert_eq!(uri_encode("a/b", true), "a%2Fb");
    assert_eq!(uri_encode(" ", true), "%20");
    assert_eq!(uri_encode("+", true), "%2B");
    assert_eq!(uri_encode("*", true), "%2A");
    assert_eq!(uri_encode("%", true), "%25");
    assert_eq!(uri_encode("=&?#", false), "%3D%26%3F%23");
    assert_eq!(uri_encode("ሴ", true), "%E1%88%B4");
    assert_eq!(uri_encode("\u{0}\u{7f}", true), "%00%7F");
    assert_eq!(
        uri_encode("wal_005/000000010000000000000001.br", false),
        "wal_005/000000010000000000000001.br"
    );
}

#[test]
fn credentials_debug_redacts_secrets() {
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("SESSIONTOKENVALUE".into()),
    };
    let dbg = format!("{creds:?} {creds:#?}");
    assert!(dbg.contains("AKIDEXAMPLE"));
    assert!(!dbg.contains("wJalrXUtnFEMI"));
    assert!(!dbg.contains("EXAMPLEKEY"));
    assert!(!dbg.contains("SESSIONTOKENVALUE"));
    let none = Credentials {
        session_token: None,
        ..creds
    };
    assert!(format!("{none:?}").contains("session_token: None"));
}

#[test]
fn utc_time_formatting() {
    let cases = [
        (0, "19700101T000000Z"),
        (1_440_938_160, "20150830T123600Z"),
        (951_782_400, "20000229T000000Z"), // 2000 is a leap year (divisible by 400)
        (951_868_800, "20000301T000000Z"),
        (1_709_164_800, "20240229T000000Z"),
        (1_709_251_199, "20240229T235959Z"),
        (4_107_542_400, "21000301T000000Z"), // 2100 is not: Feb 28 -> Mar 1
        (4_107_542_399, "21000228T235959Z"),
        (1_795_478_400, "20261124T000000Z"),
        (1_795_564_799, "20261124T235959Z"),
        (-1, "19691231T235959Z"),
    ];
    for (secs, want) in cases {
        let t = UtcTime(secs);
        assert_eq!(t.amz_date(), want, "{secs}");
        assert_eq!(t.date(), &want[..8], "{secs}");
        assert_eq!(
            parse_rfc3339_utc(&format!(
                "{}-{}-{}T{}:{}:{}Z",
                &want[0..4],
                &want[4..6],
                &want[6..8],
                &want[9..11],
                &want[11..13],
                &want[13..15]
            )),
            t
        );
    }
    let now = UtcTime::now();
    assert!(now.0 > 1_700_000_000, "system clock before 2023?");
}

#[test]
fn signing_key_matches_aws_documentation() {
    // AWS General Reference "Examples of how to derive a signing key":
    // 20120215, us-east-1, iam.
    let t = parse_rfc3339_utc("2012-02-15T00:00:00Z");
    let key = signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        t,
        "us-east-1",
        "iam",
    );
    assert_eq!(
        hex(&key),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}
