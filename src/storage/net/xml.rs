//! The little XML the clouds answer in (S3's and Azure's listings and errors): the body is
//! read once into a small element tree (local names, namespaces ignored, entities
//! resolved) and the few fields a client needs are picked from it. Unknown elements are
//! ignored, so newer API versions and compatible stores that add fields keep working.

use std::fmt;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// A body that is not the XML document expected.
#[derive(Debug)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad XML: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

/// An element of the parsed document: local name, direct text and children.
#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    /// Text directly inside this element (entities resolved, CDATA included).
    pub text: String,
    /// Child elements, in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child called `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child called `name`, exactly as sent.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The text of a child that must be present, trimmed (numbers, flags, codes).
    pub fn required(&self, name: &str) -> Result<&str, XmlError> {
        self.text_of(name)
            .map(str::trim)
            .ok_or_else(|| XmlError(format!("<{}> has no <{name}>", self.name)))
    }
}

/// An [`XmlError`] from any message.
pub fn err(e: impl fmt::Display) -> XmlError {
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
pub fn parse_document(body: &[u8]) -> Result<Element, XmlError> {
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

/// The document's root element, which must be called `name`.
pub fn expect_root(body: &[u8], name: &str) -> Result<Element, XmlError> {
    let root = parse_document(body)?;
    if root.name != name {
        return Err(XmlError(format!("expected <{name}>, got <{}>", root.name)));
    }
    Ok(root)
}
