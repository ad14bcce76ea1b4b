//! Parsing and writing of S3's XML documents, including hostile and damaged ones.

use super::*;

#[test]
fn upload_listings() {
    // The example of the S3 API reference, shortened.
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>my-divisor</Key><UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
<StorageClass>STANDARD</StorageClass><Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>
  <Upload><Key>my-movie.m2ts</Key><UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
<Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
    let page = parse_list_uploads(body).unwrap();
    assert_eq!(page.uploads.len(), 2);
    assert_eq!(page.uploads[1].key, "my-movie.m2ts");
    assert_eq!(page.uploads[0].initiated, "2010-11-10T20:48:33.000Z");
    assert_eq!(
        page.next,
        Some((
            "my-movie.m2ts".into(),
            "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into()
        ))
    );
    let last = br#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
    assert_eq!(parse_list_uploads(last).unwrap(), UploadsPage::default());
    assert!(parse_list_uploads(b"<html/>").is_err());
}

fn entry(key: &str, size: u64, last_modified: &str) -> ObjectEntry {
    ObjectEntry {
        key: key.to_string(),
        size,
        last_modified: last_modified.to_string(),
    }
}

#[test]
fn list_v2_with_contents_and_continuation() {
    // Shaped after the ListObjectsV2 examples in the S3 API reference.
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>bucket</Name>
<Prefix>wal_005/</Prefix>
<KeyCount>2</KeyCount>
<MaxKeys>2</MaxKeys>
<IsTruncated>true</IsTruncated>
<ContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</ContinuationToken>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
<Contents>
    <Key>wal_005/000000010000000000000001.br</Key>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
    <ChecksumAlgorithm>CRC32</ChecksumAlgorithm>
    <Size>434234</Size>
    <StorageClass>STANDARD</StorageClass>
</Contents>
<Contents>
    <Key>wal_005/R&amp;D &lt;old&gt; &#x41;&#66;</Key>
    <LastModified>2009-10-12T17:50:31.000Z</LastModified>
    <ETag>"599bab3ed2c697f1d26842727561fd94"</ETag>
    <Size>5368709120</Size>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID></Owner>
    <StorageClass>STANDARD</StorageClass>
</Contents>
<StartAfter>ExampleGuide.pdf</StartAfter>
</ListBucketResult>"#;
    let page = parse_list_v2(body).unwrap();
    assert_eq!(
        page,
        ListPage {
            objects: vec![
                entry(
                    "wal_005/000000010000000000000001.br",
                    434_234,
                    "2009-10-12T17:50:30.000Z"
                ),
                entry(
                    "wal_005/R&D <old> AB",
                    5_368_709_120,
                    "2009-10-12T17:50:31.000Z"
                ),
            ],
            common_prefixes: vec![],
            is_truncated: true,
            next_continuation_token: Some(
                "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=".to_string()
            ),
        }
    );
    assert!(page.objects[1].size > u64::from(u32::MAX));
}

#[test]
fn list_v2_with_common_prefixes_last_page() {
    let body = br#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>example-bucket</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>
  <Contents><Key>sample.jpg</Key><LastModified>2011-02-26T01:56:20.000Z</LastModified>
<ETag>"bf1d737a4d46a19f3bced6905cc8b902"</ETag><Size>142863</Size>
<StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>photos/</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>basebackups_005/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
    let page = parse_list_v2(body).unwrap();
    assert_eq!(
        page.objects,
        vec![entry("sample.jpg", 142_863, "2011-02-26T01:56:20.000Z")]
    );
    assert_eq!(page.common_prefixes, ["photos/", "basebackups_005/"]);
    assert!(!page.is_truncated);
    assert_eq!(page.next_continuation_token, None);
}

#[test]
fn list_v2_empty_bucket() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>x/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"#;
    assert_eq!(parse_list_v2(body).unwrap(), ListPage::default());
}

#[test]
fn list_v2_url_encoding_type() {
    let body = br#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>dir%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>
  <Contents><Key>dir/a+b%2Bc%26d%0A%E1%88%B4</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><Size>1</Size></Contents>
  <CommonPrefixes><Prefix>dir/sub+dir/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
    let page = parse_list_v2(body).unwrap();
    assert_eq!(page.objects[0].key, "dir/a b+c&d\nሴ");
    assert_eq!(page.common_prefixes, ["dir/sub dir/"]);

    // Without EncodingType the same text is taken literally.
    let literal = br#"<ListBucketResult><IsTruncated>false</IsTruncated>
  <Contents><Key>a+b%2B</Key><Size>1</Size></Contents></ListBucketResult>"#;
    assert_eq!(parse_list_v2(literal).unwrap().objects[0].key, "a+b%2B");

    let bad = br#"<ListBucketResult><EncodingType>url</EncodingType>
  <Contents><Key>a%zz</Key><Size>1</Size></Contents></ListBucketResult>"#;
    assert!(parse_list_v2(bad).is_err());
}

#[test]
fn list_v2_rejects_bad_documents() {
    for body in [
        &b""[..],
        b"<ListBucketResult><Contents><Key>a</Key><Size>1</Size></Contents>",
        b"<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Key>a</Key><Size>18446744073709551616</Size></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>",
        b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        b"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
        b"<ListBucketResult><Key>a&nbsp;</Key></ListBucketResult>",
        b"<ListBucketResult></ListBucket>",
        b"<Error><Code>NoSuchBucket</Code></Error>",
        b"<a/><b/>",
        b"not xml at all",
    ] {
        let res = parse_list_v2(body);
        assert!(res.is_err(), "{:?} -> {res:?}", String::from_utf8_lossy(body));
    }
    let e = parse_list_v2(b"<ListBucketResult><Contents>").unwrap_err();
    assert!(e.to_string().starts_with("bad XML: "), "{e}");
    let _: &dyn std::error::Error = &e;
}

#[test]
fn size_beyond_u32() {
    let body = b"<ListBucketResult><Contents><Key>big</Key><Size> 5497558138880 </Size></Contents></ListBucketResult>";
    assert_eq!(
        parse_list_v2(body).unwrap().objects[0].size,
        5_497_558_138_880
    );
    let max = format!(
        "<ListBucketResult><Contents><Key>k</Key><Size>{}</Size></Contents></ListBucketResult>",
        u64::MAX
    );
    assert_eq!(
        parse_list_v2(max.as_bytes()).unwrap().objects[0].size,
        u64::MAX
    );
}

#[test]
fn error_no_such_key() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchKey</Code>
  <Message>The resource you requested does not exist</Message>
  <Resource>/mybucket/myfoto.jpg</Resource>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>"#;
    assert_eq!(
        parse_error(body),
        Some(S3Error {
            code: "NoSuchKey".into(),
            message: "The resource you requested does not exist".into(),
            resource: Some("/mybucket/myfoto.jpg".into()),
            request_id: Some("4442587FB7D0A2F9".into()),
        })
    );
}

#[test]
fn error_signature_does_not_match() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. Check your key and signing method.</Message><AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256
20130524T000000Z
20130524/us-east-1/s3/aws4_request
7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972</StringToSign><SignatureProvided>f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb42</SignatureProvided><CanonicalRequest>GET
/test.txt
</CanonicalRequest><RequestId>3L137</RequestId><HostId>3L137+hostid=</HostId></Error>"#;
    let e = parse_error(body).unwrap();
    assert_eq!(e.code, "SignatureDoesNotMatch");
    assert!(e.message.starts_with("The request signature we calculated"));
    assert_eq!(e.resource, None);
    assert_eq!(e.request_id.as_deref(), Some("3L137"));
}

#[test]
fn error_access_denied_namespaced() {
    let default_ns = br#"<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>656c76696e6727732072657175657374</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>"#;
    let prefixed = br#"<s3:Error xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Code>AccessDenied</s3:Code><s3:Message>Access Denied</s3:Message></s3:Error>"#;
    for body in [&default_ns[..], &prefixed[..]] {
        let e = parse_error(body).unwrap();
        assert_eq!(e.code, "AccessDenied");
        assert_eq!(e.message, "Access Denied");
    }
}

#[test]
fn error_inside_200_from_complete_multipart() {
    // CompleteMultipartUpload can fail after its 200 has been sent; S3 pads
    // the body with white space while it works.
    let body = b"\n \n \n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>";
    assert_eq!(parse_error(body).unwrap().code, "InternalError");
    let ok = br#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>https://b.s3.amazonaws.com/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag></CompleteMultipartUploadResult>"#;
    assert_eq!(parse_error(ok), None);
}

#[test]
fn error_not_an_error_document() {
    let html = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
    assert_eq!(parse_error(html), None);
    let xhtml = b"<html><body><h1>Error</h1></body></html>";
    assert_eq!(parse_error(xhtml), None);
    assert_eq!(parse_error(b""), None);
    assert_eq!(parse_error(b"Service Unavailable"), None);
    assert_eq!(parse_error(b"<Error><Code>Trunc"), None);
}

#[test]
fn initiate_multipart() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
</InitiateMultipartUploadResult>"#;
    assert_eq!(
        parse_initiate_multipart(body).unwrap(),
        "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
    );
    assert!(
        parse_initiate_multipart(
            b"<InitiateMultipartUploadResult><UploadId/></InitiateMultipartUploadResult>"
        )
        .is_err()
    );
    assert!(
        parse_initiate_multipart(
            b"<InitiateMultipartUploadResult></InitiateMultipartUploadResult>"
        )
        .is_err()
    );
    assert!(parse_initiate_multipart(b"<Error><Code>AccessDenied</Code></Error>").is_err());
    assert!(parse_initiate_multipart(b"<InitiateMultipartUploadResult><UploadId>x").is_err());
}

#[test]
fn complete_multipart_body_escapes_and_keeps_quotes() {
    let body = complete_multipart_body(&[
        (1, "\"a54357aff0632cce46d942af68356b38\"".to_string()),
        (2, "\"0c78aef83f66abc1fa1e8477f296d394\"".to_string()),
        (3, "odd<&>".to_string()),
    ]);
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Part><PartNumber>1</PartNumber><ETag>\"a54357aff0632cce46d942af68356b38\"</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>\"0c78aef83f66abc1fa1e8477f296d394\"</ETag></Part>\
         <Part><PartNumber>3</PartNumber><ETag>odd&lt;&amp;&gt;</ETag></Part>\
         </CompleteMultipartUpload>"
    );
    // What we write reads back to what we were given.
    let root = parse_document(body.as_bytes()).unwrap();
    let etags: Vec<&str> = root
        .children("Part")
        .map(|p| p.text_of("ETag").unwrap())
        .collect();
    assert_eq!(etags[2], "odd<&>");
    assert_eq!(etags[0], "\"a54357aff0632cce46d942af68356b38\"");
}

#[test]
fn delete_objects_body_shape() {
    let keys = vec![
        "wal_005/000000010000000000000001.br".to_string(),
        "a&b <c> \"d\" 'e'".to_string(),
    ];
    let body = delete_objects_body(&keys, true);
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>\
         <Object><Key>wal_005/000000010000000000000001.br</Key></Object>\
         <Object><Key>a&amp;b &lt;c&gt; \"d\" 'e'</Key></Object></Delete>"
    );
    let root = parse_document(body.as_bytes()).unwrap();
    let back: Vec<String> = root
        .children("Object")
        .map(|o| o.text_of("Key").unwrap().to_string())
        .collect();
    assert_eq!(back, keys);
    assert!(!delete_objects_body(&keys, false).contains("Quiet"));
    assert!(!body.contains("VersionId"));
}

#[test]
fn delete_result_with_failures() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted><Key>sample1.txt</Key></Deleted>
  <Error>
<Key>sample2.txt</Key>
<Code>AccessDenied</Code>
<Message>Access Denied</Message>
  </Error>
  <Error><Key>a&amp;b</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>
</DeleteResult>"#;
    assert_eq!(
        parse_delete_result(body).unwrap(),
        vec![
            DeleteFailure {
                key: "sample2.txt".into(),
                code: "AccessDenied".into(),
                message: "Access Denied".into(),
            },
            DeleteFailure {
                key: "a&b".into(),
                code: "InternalError".into(),
                message: "We encountered an internal error. Please try again.".into(),
            },
        ]
    );
    let quiet_ok = br#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>"#;
    assert_eq!(parse_delete_result(quiet_ok).unwrap(), vec![]);
    assert!(
        parse_delete_result(b"<DeleteResult><Error><Code>X</Code></Error></DeleteResult>").is_err()
    );
    assert!(parse_delete_result(b"<DeleteResult><Deleted>").is_err());
    assert!(parse_delete_result(b"<Error><Code>AccessDenied</Code></Error>").is_err());
}

#[test]
fn cdata_and_comments() {
    let body = b"<ListBucketResult><!-- c --><Contents><Key><![CDATA[a<b>&c]]></Key><Size>7</Size></Contents></ListBucketResult>";
    assert_eq!(parse_list_v2(body).unwrap().objects[0].key, "a<b>&c");
}
