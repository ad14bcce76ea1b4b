//! The Blob service's XML: List Blobs pages and error documents read, the block list of
//! Put Block List written. The element tree is `storage::net::xml`'s, shared with S3.

use crate::storage::net::xml::{XmlError, expect_root};
use quick_xml::escape::partial_escape;

/// One blob of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobEntry {
    /// Its full name in the container.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `Last-Modified` as sent (RFC 1123); empty if left out.
    pub last_modified: String,
}

/// One page of List Blobs.
#[derive(Debug, Default, PartialEq)]
pub struct ListPage {
    /// The blobs of this page, in name order.
    pub blobs: Vec<BlobEntry>,
    /// The `BlobPrefix` names when a delimiter was given.
    pub prefixes: Vec<String>,
    /// The marker of the next page; `None` on the last.
    pub next_marker: Option<String>,
}

/// Parses a List Blobs answer (`<EnumerationResults>`).
pub fn parse_list(body: &[u8]) -> Result<ListPage, XmlError> {
    let root = expect_root(body, "EnumerationResults")?;
    let mut page = ListPage {
        next_marker: root
            .text_of("NextMarker")
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from),
        ..ListPage::default()
    };
    let Some(blobs) = root.child("Blobs") else {
        return Ok(page);
    };
    for b in blobs.children("Blob") {
        let name = b
            .text_of("Name")
            .ok_or_else(|| XmlError("<Blob> has no <Name>".into()))?;
        let props = b
            .child("Properties")
            .ok_or_else(|| XmlError(format!("<Blob> {name} has no <Properties>")))?;
        let size = props.required("Content-Length")?;
        page.blobs.push(BlobEntry {
            name: name.to_string(),
            size: size
                .parse()
                .map_err(|_| XmlError(format!("<Content-Length> is {size:?}, not a byte count")))?,
            last_modified: props
                .text_of("Last-Modified")
                .unwrap_or("")
                .trim()
                .to_string(),
        });
    }
    for p in blobs.children("BlobPrefix") {
        page.prefixes.push(p.required("Name")?.to_string());
    }
    Ok(page)
}

/// An Azure `<Error>` document: its code and the first line of its message (the lines
/// after it are the request id and the time). Its `AuthenticationErrorDetail`, which quotes
/// the signature received, is never read.
#[derive(Debug, Clone, PartialEq)]
pub struct AzError {
    /// E.g. `BlobNotFound`, `AuthenticationFailed`, `ContainerNotFound`.
    pub code: String,
    /// The message's first line.
    pub message: String,
}

/// Parses an error body; `None` when it is not an `<Error>` document (a proxy's page, or
/// the empty body of a HEAD).
pub fn parse_error(body: &[u8]) -> Option<AzError> {
    let root = expect_root(body, "Error").ok()?;
    Some(AzError {
        code: root.text_of("Code").unwrap_or("").trim().to_string(),
        message: root
            .text_of("Message")
            .unwrap_or("")
            .trim()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

/// The Put Block List body committing `ids` (base64 block ids) in order.
pub fn block_list_body(ids: &[String]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for id in ids {
        out.push_str("<Latest>");
        out.push_str(&partial_escape(id.as_str()));
        out.push_str("</Latest>");
    }
    out.push_str("</BlockList>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_with_prefixes_and_a_marker() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
  <Prefix>pg/</Prefix><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>pg/a &amp; b</Name><Properties>
      <Creation-Time>Thu, 03 Dec 2026 10:00:00 GMT</Creation-Time>
      <Last-Modified>Fri, 04 Dec 2026 03:25:05 GMT</Last-Modified>
      <Etag>0x8DB1</Etag><Content-Length>5497558138880</Content-Length>
      <BlobType>BlockBlob</BlobType></Properties><OrMetadata /></Blob>
    <BlobPrefix><Name>pg/wal_005/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!88!MDAw</NextMarker>
</EnumerationResults>"#;
        let page = parse_list(body).unwrap();
        assert_eq!(
            page.blobs,
            vec![BlobEntry {
                name: "pg/a & b".into(),
                size: 5_497_558_138_880,
                last_modified: "Fri, 04 Dec 2026 03:25:05 GMT".into(),
            }]
        );
        assert_eq!(page.prefixes, vec!["pg/wal_005/".to_string()]);
        assert_eq!(page.next_marker.as_deref(), Some("2!88!MDAw"));
    }

    #[test]
    fn the_last_and_an_empty_page() {
        let page = parse_list(b"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>")
            .unwrap();
        assert_eq!(page, ListPage::default());
        assert!(parse_list(b"<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs></EnumerationResults>").is_err());
        assert!(parse_list(b"<EnumerationResults><Blobs>").is_err());
        assert!(parse_list(b"<Error><Code>X</Code></Error>").is_err());
    }

    #[test]
    fn errors_keep_code_and_first_line_only() {
        let body = b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1b2c\nTime:2026-12-04T03:25:05Z</Message><AuthenticationErrorDetail>The MAC signature found in the HTTP request 'c2VjcmV0' is not the same</AuthenticationErrorDetail></Error>";
        let e = parse_error(body).unwrap();
        assert_eq!(e.code, "AuthenticationFailed");
        assert_eq!(e.message, "Server failed to authenticate the request.");
        assert!(!format!("{e:?}").contains("c2VjcmV0"));
        assert_eq!(parse_error(b""), None);
        assert_eq!(parse_error(b"<html>busy</html>"), None);
    }

    #[test]
    fn block_lists_keep_order() {
        assert_eq!(
            block_list_body(&["QUFB".into(), "QkJC".into()]),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>QUFB</Latest>\
             <Latest>QkJC</Latest></BlockList>"
        );
    }
}
