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

/// Temporary credentials in an STS answer (`AssumeRole`, `AssumeRoleWithWebIdentity`).
pub struct StsCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `SessionToken`.
    pub session_token: String,
    /// `Expiration`, ISO 8601.
    pub expiration: String,
}

/// Parses `<{action}Response><{action}Result><Credentials>...` from STS.
pub fn parse_sts_credentials(body: &[u8], action: &str) -> Result<StsCredentials, XmlError> {
    let root = expect_root(body, &format!("{action}Response"))?;
    let result_name = format!("{action}Result");
    let creds = root
        .child(&result_name)
        .and_then(|r| r.child("Credentials"))
        .ok_or_else(|| XmlError(format!("no <{result_name}><Credentials>")))?;
    Ok(StsCredentials {
        access_key_id: creds.required("AccessKeyId")?.to_string(),
        secret_access_key: creds.required("SecretAccessKey")?.to_string(),
        session_token: creds.required("SessionToken")?.to_string(),
        expiration: creds.required("Expiration")?.to_string(),
    })
}

/// Code and message of an AWS query-protocol error (`<ErrorResponse><Error>`), as STS sends.
pub fn parse_query_error(body: &[u8]) -> Option<(String, String)> {
    let root = expect_root(body, "ErrorResponse").ok()?;
    let e = root.child("Error")?;
    Some((
        e.text_of("Code").unwrap_or("").trim().to_string(),
        e.text_of("Message").unwrap_or("").trim().to_string(),
    ))
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
#[path = "xml_tests.rs"]
mod tests;
