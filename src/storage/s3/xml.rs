//! The S3 XML documents wal-rus reads and writes.
//!
//! S3 answers listings, multipart uploads, batch deletes and errors in XML and
//! expects XML bodies for CompleteMultipartUpload and DeleteObjects. Only a
//! handful of elements of each document matter to wal-rus, so instead of a
//! serde mapping the body is read once into a small element tree (local names,
//! namespaces ignored, entities resolved) and the few fields are picked from it.
//! Unknown elements are ignored so that newer S3 versions and S3-compatible
//! stores that add fields keep working.

use std::fmt;

use quick_xml::escape::partial_escape;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The namespace S3 puts on its documents; sent on the bodies we write too.
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One object in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectEntry {
    /// The object key (URL-decoded when the listing used `EncodingType=url`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// `LastModified` as sent, ISO 8601 (e.g. `2009-10-12T17:50:30.000Z`);
    /// empty if the server left it out.
    pub last_modified: String,
}

/// One page of a ListObjectsV2 listing.
#[derive(Debug, Default, PartialEq)]
pub struct ListPage {
    /// The objects of this page, in the order S3 sent them (key order).
    pub objects: Vec<ObjectEntry>,
    /// The `CommonPrefixes` when a delimiter was given.
    pub common_prefixes: Vec<String>,
    /// Whether more pages follow.
    pub is_truncated: bool,
    /// The token to pass as `continuation-token` for the next page.
    pub next_continuation_token: Option<String>,
}

/// A body that is not the XML document expected.
#[derive(Debug)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad S3 XML: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

/// An S3 `<Error>` body.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Error {
    /// The error code, e.g. `NoSuchKey`, `SignatureDoesNotMatch`, `SlowDown`.
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The bucket or object concerned, when S3 says.
    pub resource: Option<String>,
    /// The request id, to quote to AWS support.
    pub request_id: Option<String>,
}

/// One key that DeleteObjects could not delete.
#[derive(Debug, PartialEq)]
pub struct DeleteFailure {
    /// The key that was not deleted.
    pub key: String,
    /// The error code, e.g. `AccessDenied`.
    pub code: String,
    /// The error message.
    pub message: String,
}

/// An element of the parsed document: local name, direct text and children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    /// Text directly inside this element (entities resolved, CDATA included).
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child called `name`, exactly as sent.
    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The text of a child that must be present, trimmed (numbers, flags, codes).
    fn required(&self, name: &str) -> Result<&str, XmlError> {
        self.text_of(name)
            .map(str::trim)
            .ok_or_else(|| XmlError(format!("<{}> has no <{name}>", self.name)))
    }
}

fn err(e: impl fmt::Display) -> XmlError {
    XmlError(e.to_string())
}

/// The local part of a possibly prefixed name (`s3:Error` -> `Error`).
fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// Reads a whole document into its root element; anything that is not one
/// well-formed XML element (truncated bodies, HTML, plain text) is an error.
fn parse_document(body: &[u8]) -> Result<Element, XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError(format!("{e} at byte {}", reader.error_position())))?;
        match event {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                return Err(XmlError(format!(
                    "element <{}> after the root element",
                    e.name().as_ref()
                )));
            }
            Event::Start(e) => stack.push(Element {
                name: local(e.name().as_ref()).to_string(),
                ..Element::default()
            }),
            Event::Empty(e) => {
                let el = Element {
                    name: local(e.name().as_ref()).to_string(),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // The reader has already checked that the end tag matches.
                let el = stack.pop().ok_or_else(|| err("unmatched end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(err("text outside the root element")),
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None => return Err(err("CDATA outside the root element")),
            },
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(err)? {
                    Some(c) => c,
                    None => resolve_entity(&r)
                        .ok_or_else(|| XmlError(format!("unknown entity &{};", &*r)))?,
                };
                match stack.last_mut() {
                    Some(el) => el.text.push(c),
                    None => return Err(err("entity outside the root element")),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!("document ends inside <{}>", open.name)));
    }
    root.ok_or_else(|| err("empty document"))
}

fn expect_root(body: &[u8], name: &str) -> Result<Element, XmlError> {
    let root = parse_document(body)?;
    if root.name != name {
        return Err(XmlError(format!("expected <{name}>, got <{}>", root.name)));
    }
    Ok(root)
}

fn parse_bool(el: &Element, name: &str) -> Result<bool, XmlError> {
    match el.text_of(name).map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(XmlError(format!("<{name}> is {v:?}, not a boolean"))),
    }
}

/// Decodes a value S3 URL-encoded for `EncodingType=url`. S3 encodes like an
/// HTML form (space as `+`, a literal `+` as `%2B`), so `+` decodes to a space.
fn url_decode(s: &str) -> Result<String, XmlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => return Err(XmlError(format!("bad percent-encoding in {s:?}"))),
                }
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| XmlError(format!("{s:?} does not decode to UTF-8")))
}

/// Parses a ListObjectsV2 response (`<ListBucketResult>`).
///
/// When the listing carries `<EncodingType>url</EncodingType>` (the request
/// asked for `encoding-type=url`, which keeps keys with characters XML 1.0
/// cannot carry listable), keys and common prefixes are URL-decoded here.
pub fn parse_list_v2(body: &[u8]) -> Result<ListPage, XmlError> {
    let root = expect_root(body, "ListBucketResult")?;
    let url_encoded = root
        .text_of("EncodingType")
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("url"));
    let decode = |s: &str| -> Result<String, XmlError> {
        if url_encoded {
            url_decode(s)
        } else {
            Ok(s.to_string())
        }
    };
    let mut page = ListPage {
        is_truncated: parse_bool(&root, "IsTruncated")?,
        next_continuation_token: root
            .text_of("NextContinuationToken")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from),
        ..ListPage::default()
    };
    for c in root.children("Contents") {
        let key = c
            .text_of("Key")
            .ok_or_else(|| err("<Contents> has no <Key>"))?;
        let size = c.required("Size")?;
        page.objects.push(ObjectEntry {
            key: decode(key)?,
            size: size
                .parse()
                .map_err(|_| XmlError(format!("<Size> is {size:?}, not a byte count")))?,
            last_modified: c.text_of("LastModified").unwrap_or("").trim().to_string(),
        });
    }
    for p in root.children("CommonPrefixes") {
        for prefix in p.children("Prefix") {
            page.common_prefixes.push(decode(&prefix.text)?);
        }
    }
    Ok(page)
}

/// Parses an S3 `<Error>` body.
///
/// Returns `None` if the body is not an `<Error>` document (e.g. an HTML error
/// page from a proxy, or an empty body), so callers fall back to the HTTP status.
pub fn parse_error(body: &[u8]) -> Option<S3Error> {
    let root = expect_root(body, "Error").ok()?;
    let opt = |name: &str| {
        root.text_of(name)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
    };
    Some(S3Error {
        code: root.text_of("Code").unwrap_or("").trim().to_string(),
        message: root.text_of("Message").unwrap_or("").trim().to_string(),
        resource: opt("Resource"),
        request_id: opt("RequestId"),
    })
}

/// One multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    /// The object key the upload would create.
    pub key: String,
    /// Its id, for AbortMultipartUpload.
    pub upload_id: String,
    /// `Initiated` as sent, ISO 8601.
    pub initiated: String,
}

/// One page of a ListMultipartUploads answer, with the markers of the next page when
/// truncated.
#[derive(Debug, Default, PartialEq)]
pub struct UploadsPage {
    /// The uploads of this page.
    pub uploads: Vec<PendingUpload>,
    /// `(NextKeyMarker, NextUploadIdMarker)` when more pages follow.
    pub next: Option<(String, String)>,
}

/// Parses a ListMultipartUploads answer.
pub fn parse_list_uploads(body: &[u8]) -> Result<UploadsPage, XmlError> {
    let root = expect_root(body, "ListMultipartUploadsResult")?;
    let mut page = UploadsPage::default();
    for u in root.children("Upload") {
        page.uploads.push(PendingUpload {
            key: u.required("Key")?.to_string(),
            upload_id: u.required("UploadId")?.to_string(),
            initiated: u.text_of("Initiated").unwrap_or("").trim().to_string(),
        });
    }
    if root.text_of("IsTruncated").map(str::trim) == Some("true") {
        let key = root
            .text_of("NextKeyMarker")
            .unwrap_or("")
            .trim()
            .to_string();
        let id = root
            .text_of("NextUploadIdMarker")
            .unwrap_or("")
            .trim()
            .to_string();
        if key.is_empty() && id.is_empty() {
            return Err(err("truncated upload listing without markers"));
        }
        page.next = Some((key, id));
    }
    Ok(page)
}

/// Parses a CreateMultipartUpload response and returns its `UploadId`.
pub fn parse_initiate_multipart(body: &[u8]) -> Result<String, XmlError> {
    let root = expect_root(body, "InitiateMultipartUploadResult")?;
    let id = root.required("UploadId")?;
    if id.is_empty() {
        return Err(err("empty <UploadId>"));
    }
    Ok(id.to_string())
}

/// The CompleteMultipartUpload request body for `parts` (part number, ETag as
/// returned by UploadPart, quotes kept), in the order given; S3 requires
/// ascending part numbers.
///
/// A CompleteMultipartUpload can return 200 with an `<Error>` body: callers use [`parse_error`] on it.
pub fn complete_multipart_body(parts: &[(u32, String)]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"{S3_NS}\">"
    );
    for (number, etag) in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
            partial_escape(etag.as_str())
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

/// The DeleteObjects request body for `keys` (at most 1000 per request).
///
/// With `quiet`, S3 reports only the keys it failed to delete. S3 refuses this
/// request without a `Content-MD5` or `x-amz-checksum-*` header over the body.
pub fn delete_objects_body(keys: &[String], quiet: bool) -> String {
    debug_assert!(keys.len() <= 1000, "DeleteObjects takes at most 1000 keys");
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"{S3_NS}\">");
    if quiet {
        out.push_str("<Quiet>true</Quiet>");
    }
    for key in keys {
        out.push_str("<Object><Key>");
        out.push_str(&partial_escape(key.as_str()));
        out.push_str("</Key></Object>");
    }
    out.push_str("</Delete>");
    out
}

/// Parses a DeleteObjects response (`<DeleteResult>`) and returns the keys that
/// were not deleted; the `<Deleted>` entries are not needed.
pub fn parse_delete_result(body: &[u8]) -> Result<Vec<DeleteFailure>, XmlError> {
    let root = expect_root(body, "DeleteResult")?;
    root.children("Error")
        .map(|e| {
            Ok(DeleteFailure {
                key: e
                    .text_of("Key")
                    .ok_or_else(|| err("<Error> in <DeleteResult> has no <Key>"))?
                    .to_string(),
                code: e.text_of("Code").unwrap_or("").trim().to_string(),
                message: e.text_of("Message").unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
        assert!(e.to_string().starts_with("bad S3 XML: "), "{e}");
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
            parse_delete_result(b"<DeleteResult><Error><Code>X</Code></Error></DeleteResult>")
                .is_err()
        );
        assert!(parse_delete_result(b"<DeleteResult><Deleted>").is_err());
        assert!(parse_delete_result(b"<Error><Code>AccessDenied</Code></Error>").is_err());
    }

    #[test]
    fn cdata_and_comments() {
        let body = b"<ListBucketResult><!-- c --><Contents><Key><![CDATA[a<b>&c]]></Key><Size>7</Size></Contents></ListBucketResult>";
        assert_eq!(parse_list_v2(body).unwrap().objects[0].key, "a<b>&c");
    }
}
