//! The YAML document as litestream reads it: Go's `gopkg.in/yaml.v2` (YAML 1.1) decoding into
//! litestream's config structs, rebuilt on the events of the `saphyr-parser` scanner.
//!
//! What this reproduces of yaml.v2, because each one changes what a config means:
//! - plain scalars resolve by YAML 1.1 rules: `yes`/`no`/`on`/`off`/`y`/`n` are booleans,
//!   `0600` is octal, `0x1F` hex, `1_000` an integer ([`resolve`]); quoted scalars are strings;
//! - a scalar read into a string field is its text as written (`bucket: 0600` is `"0600"`);
//! - aliases stand for a copy of their anchor's node;
//! - a mapping's keys are applied in document order and the last one wins, and a merge key
//!   (`<<: *anchor`, or a list of anchors, the first winning) applies the merged mapping's keys at
//!   its own place: keys written after `<<` override the merged ones, keys written *before* it are
//!   overridden by them (the YAML merge spec says explicit keys always win; yaml.v2 does not);
//! - a mapping applied over a mapping already there merges into it, key by key (yaml.v2 decodes
//!   into the struct already filled), where anything else replaces what was there;
//! - only the first document of the stream is read.
//!
//! Repeated keys and keys a later merge overrides are kept as [`Note`]s for the rules to report.

mod emit;
mod resolve;

use std::collections::HashMap;
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use zeroize::Zeroizing;

pub(crate) use emit::to_yaml;
pub(crate) use resolve::Kind;

/// How many nodes aliases may expand to before the document is refused (yaml.v2 has a similar
/// guard against "billion laughs" documents).
const NODE_BUDGET: usize = 100_000;

/// How deep collections may nest (through aliases too): far beyond any config, well within the
/// stack.
const MAX_DEPTH: usize = 128;

/// A decoded node: where it starts and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    /// True when the node carries an anchor that an alias uses: a key holding only such a node
    /// is a template for the rest of the document, not a mistake.
    pub shared: bool,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in the order they were first set, each once (the merged view).
    Map(Vec<(String, Node)>),
}

/// A scalar: its text as written and what YAML 1.1 makes of it.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub text: Zeroizing<String>,
    pub kind: Kind,
}

/// Something in the document's own text that a reader may not expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The same key written twice in one mapping: the last one wins.
    Duplicate {
        at: String,
        key: String,
        line: usize,
    },
    /// A key written before a `<<` merge that sets it too: the merged value wins.
    MergeOverrides {
        at: String,
        key: String,
        line: usize,
    },
}

/// A failure to read the document, without its content (it may hold a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: Option<usize>,
    pub message: String,
}

/// A document as litestream decodes it.
#[derive(Debug)]
pub(crate) struct Document {
    /// The root node; `None` for an empty document.
    pub root: Option<Node>,
    pub notes: Vec<Note>,
}

impl Node {
    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, when this is a mapping holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// What a Go string field receives: the text of any scalar but a null one.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) if s.kind != Kind::Null => Some(&s.text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.kind == Kind::Null)
    }

    /// What a Go bool field receives, when it is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(Scalar {
                kind: Kind::Bool(b),
                ..
            }) => Some(*b),
            _ => None,
        }
    }

    /// A new string scalar (for configs the supervisor writes itself).
    pub fn string(text: impl Into<String>) -> Node {
        Node {
            line: 0,
            shared: false,
            value: Value::Scalar(Scalar {
                text: Zeroizing::new(text.into()),
                kind: Kind::Str,
            }),
        }
    }

    /// A new mapping.
    pub fn map(entries: Vec<(String, Node)>) -> Node {
        Node {
            line: 0,
            shared: false,
            value: Value::Map(entries),
        }
    }
}

/// What a plain (unquoted) scalar written as `text` would be.
pub(crate) fn plain_kind(text: &str) -> Kind {
    resolve::resolve(text, true, None).unwrap_or(Kind::Str)
}

/// Reads `text` as yaml.v2 would.
pub(crate) fn parse(text: &str) -> Result<Document, YamlError> {
    let raw = Builder::default().document(text)?;
    let mut decoder = Decoder {
        notes: Vec::new(),
        budget: NODE_BUDGET,
        depth: 0,
    };
    let root = match raw {
        Some(raw) => Some(decoder.node(&raw, "")?),
        None => None,
    };
    Ok(Document {
        root,
        notes: decoder.notes,
    })
}

/// A node as the parser gave it, aliases pointing at their anchor's node.
#[derive(Debug)]
enum Raw {
    Scalar {
        text: Zeroizing<String>,
        plain: bool,
        tag: Option<String>,
        line: usize,
        shared: std::cell::Cell<bool>,
    },
    Seq {
        items: Vec<Rc<Raw>>,
        line: usize,
        shared: std::cell::Cell<bool>,
    },
    Map {
        pairs: Vec<(Rc<Raw>, Rc<Raw>)>,
        line: usize,
        shared: std::cell::Cell<bool>,
    },
}

impl Raw {
    fn line(&self) -> usize {
        match self {
            Raw::Scalar { line, .. } | Raw::Seq { line, .. } | Raw::Map { line, .. } => *line,
        }
    }

    fn shared(&self) -> &std::cell::Cell<bool> {
        match self {
            Raw::Scalar { shared, .. } | Raw::Seq { shared, .. } | Raw::Map { shared, .. } => {
                shared
            }
        }
    }

    /// yaml.v2's `isMerge`: a plain `<<` key, or one tagged `!!merge`.
    fn is_merge_key(&self) -> bool {
        matches!(self, Raw::Scalar { text, plain, tag, .. }
            if text.as_str() == "<<" && ((*plain && tag.is_none()) || tag.as_deref() == Some("!!merge")))
    }
}

/// Builds the [`Raw`] tree of the first document from the parser's events.
#[derive(Default)]
struct Builder {
    /// Anchor id to its node; `None` while the node is still being read.
    anchors: HashMap<usize, Option<Rc<Raw>>>,
    depth: usize,
}

type Events<'a> = Parser<'a, saphyr_parser::StrInput<'a>>;

impl Builder {
    fn document(&mut self, text: &str) -> Result<Option<Rc<Raw>>, YamlError> {
        let mut events = Parser::new_from_str(text);
        loop {
            match next(&mut events)? {
                (Event::StreamStart | Event::Nothing, _) => {}
                (Event::DocumentStart(_), _) => break,
                (Event::StreamEnd, _) => return Ok(None),
                (_, line) => return Err(syntax(line, "expected a document")),
            }
        }
        let (event, line) = next(&mut events)?;
        if matches!(event, Event::DocumentEnd) {
            return Ok(None);
        }
        self.node(event, line, &mut events).map(Some)
    }

    // Long on purpose: one arm per YAML event kind, as yaml.v2 decodes it.
    fn node(
        &mut self,
        event: Event,
        line: usize,
        events: &mut Events,
    ) -> Result<Rc<Raw>, YamlError> {
        if self.depth > MAX_DEPTH {
            return Err(syntax(line, "collections nest too deeply"));
        }
        let shared = std::cell::Cell::new(false);
        let (anchor, raw) = match event {
            Event::Alias(id) => {
                return match self.anchors.get(&id) {
                    Some(Some(node)) => {
                        node.shared().set(true);
                        Ok(Rc::clone(node))
                    }
                    Some(None) => Err(syntax(
                        line,
                        "an anchor's value contains an alias to itself",
                    )),
                    None => Err(syntax(line, "an alias names an anchor that is not defined")),
                };
            }
            Event::Scalar(text, style, anchor, tag) => (
                anchor,
                Raw::Scalar {
                    text: Zeroizing::new(text.into_owned()),
                    plain: style == ScalarStyle::Plain,
                    tag: tag.map(|t| short_tag(&t)),
                    line,
                    shared,
                },
            ),
            Event::SequenceStart(anchor, _) => {
                self.reserve(anchor);
                let mut items = Vec::new();
                loop {
                    let (event, at) = next(events)?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    self.depth += 1;
                    let item = self.node(event, at, events);
                    self.depth -= 1;
                    items.push(item?);
                }
                (
                    anchor,
                    Raw::Seq {
                        items,
                        line,
                        shared,
                    },
                )
            }
            Event::MappingStart(anchor, _) => {
                self.reserve(anchor);
                let mut pairs = Vec::new();
                loop {
                    let (event, at) = next(events)?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    self.depth += 1;
                    let key = self.node(event, at, events);
                    let value = key.and_then(|key| {
                        let (event, at) = next(events)?;
                        Ok((key, self.node(event, at, events)?))
                    });
                    self.depth -= 1;
                    pairs.push(value?);
                }
                (
                    anchor,
                    Raw::Map {
                        pairs,
                        line,
                        shared,
                    },
                )
            }
            _ => return Err(syntax(line, "unexpected token")),
        };
        let node = Rc::new(raw);
        if anchor != 0 {
            self.anchors.insert(anchor, Some(Rc::clone(&node)));
        }
        Ok(node)
    }

    /// Marks `anchor` as being read, so an alias to it from inside is caught.
    fn reserve(&mut self, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, None);
        }
    }
}

fn next<'a>(events: &mut Events<'a>) -> Result<(Event<'a>, usize), YamlError> {
    match events.next_event() {
        Some(Ok((event, span))) => Ok((event, span.start.line())),
        Some(Err(e)) => Err(YamlError {
            line: Some(e.marker().line()),
            message: format!(
                "syntax error at line {} column {}: {}",
                e.marker().line(),
                e.marker().col() + 1,
                e.info()
            ),
        }),
        None => Err(syntax(0, "unexpected end of the document")),
    }
}

fn syntax(line: usize, what: &str) -> YamlError {
    YamlError {
        line: (line > 0).then_some(line),
        message: if line > 0 {
            format!("{what} at line {line}")
        } else {
            what.to_string()
        },
    }
}

/// `!!int` for the core schema's tags, the tag as written otherwise.
fn short_tag(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Turns [`Raw`] nodes into [`Node`]s the way yaml.v2 decodes them into structs.
struct Decoder {
    notes: Vec<Note>,
    budget: usize,
    depth: usize,
}

impl Decoder {
    fn node(&mut self, raw: &Raw, at: &str) -> Result<Node, YamlError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| YamlError {
            line: Some(raw.line()),
            message: "the document expands to too many nodes through its aliases".into(),
        })?;
        if self.depth > MAX_DEPTH {
            return Err(syntax(
                raw.line(),
                "collections nest too deeply (through aliases)",
            ));
        }
        self.depth += 1;
        let node = self.decode(raw, at);
        self.depth -= 1;
        node
    }

    fn decode(&mut self, raw: &Raw, at: &str) -> Result<Node, YamlError> {
        let value = match raw {
            Raw::Scalar {
                text, plain, tag, ..
            } => {
                let kind = resolve::resolve(text, *plain, tag.as_deref()).map_err(|message| {
                    YamlError {
                        line: Some(raw.line()),
                        message: format!("{message} at line {}", raw.line()),
                    }
                })?;
                Value::Scalar(Scalar {
                    text: text.clone(),
                    kind,
                })
            }
            Raw::Seq { items, .. } => Value::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Raw::Map { pairs, .. } => {
                let mut entries = Vec::new();
                self.map_into(pairs, at, &mut entries)?;
                Value::Map(entries)
            }
        };
        Ok(Node {
            line: raw.line(),
            shared: raw.shared().get(),
            value,
        })
    }

    /// Applies the keys of one mapping to `entries`, in order, merges at their place.
    fn map_into(
        &mut self,
        pairs: &[(Rc<Raw>, Rc<Raw>)],
        at: &str,
        entries: &mut Vec<(String, Node)>,
    ) -> Result<(), YamlError> {
        // Keys written in this mapping itself, with their line.
        let mut written: Vec<(String, usize)> = Vec::new();
        for (key, value) in pairs {
            if key.is_merge_key() {
                let mut merged = Vec::new();
                match &**value {
                    Raw::Map { pairs, .. } => self.map_into(pairs, at, &mut merged)?,
                    // Earlier mappings of the list take precedence: apply them last.
                    Raw::Seq { items, .. } => {
                        for item in items.iter().rev() {
                            match &**item {
                                Raw::Map { pairs, .. } => self.map_into(pairs, at, &mut merged)?,
                                _ => return Err(merge_wants_map(item)),
                            }
                        }
                    }
                    _ => return Err(merge_wants_map(value)),
                }
                for (k, v) in merged {
                    if let Some((_, line)) = written.iter().find(|(w, _)| *w == k) {
                        self.notes.push(Note::MergeOverrides {
                            at: at.to_string(),
                            key: k.clone(),
                            line: *line,
                        });
                    }
                    assign(entries, k, v);
                }
                continue;
            }
            let name = match &**key {
                // A null key is the empty name; any other scalar key is its text.
                Raw::Scalar {
                    text, plain, tag, ..
                } => {
                    if *plain
                        && tag.is_none()
                        && resolve::resolve(text, true, None) == Ok(Kind::Null)
                    {
                        String::new()
                    } else {
                        text.to_string()
                    }
                }
                other => {
                    return Err(YamlError {
                        line: Some(other.line()),
                        message: format!(
                            "a key at line {} is a mapping or a list: keys must be plain words",
                            other.line()
                        ),
                    })
                }
            };
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            let node = self.node(value, &path)?;
            if written.iter().any(|(w, _)| *w == name) {
                self.notes.push(Note::Duplicate {
                    at: at.to_string(),
                    key: name.clone(),
                    line: key.line(),
                });
            } else {
                written.push((name.clone(), key.line()));
            }
            assign(entries, name, node);
        }
        Ok(())
    }
}

/// Sets `key` in `entries` as yaml.v2 sets a struct field: a mapping over a mapping merges into
/// it, anything else replaces it.
fn assign(entries: &mut Vec<(String, Node)>, key: String, node: Node) {
    let Some((_, slot)) = entries.iter_mut().find(|(k, _)| *k == key) else {
        entries.push((key, node));
        return;
    };
    match (&mut slot.value, node.value) {
        (Value::Map(old), Value::Map(new)) => {
            for (k, v) in new {
                assign(old, k, v);
            }
        }
        (_, value) => {
            *slot = Node {
                line: node.line,
                shared: node.shared,
                value,
            }
        }
    }
}

fn merge_wants_map(raw: &Raw) -> YamlError {
    YamlError {
        line: Some(raw.line()),
        message: format!(
            "a `<<` merge at line {} needs a mapping or a list of mappings (litestream refuses anything else)",
            raw.line()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(yaml: &str) -> Node {
        parse(yaml).unwrap().root.unwrap()
    }

    fn text_at<'a>(node: &'a Node, path: &[&str]) -> Option<&'a str> {
        path.iter().try_fold(node, |n, k| n.get(k))?.text()
    }

    #[test]
    fn yaml_1_1_scalars() {
        let r = root("a: yes\nb: off\nc: \"yes\"\nd: 0600\ne: '0600'\nf: 1_000\ng: ~\nh: y\n");
        assert_eq!(r.get("a").unwrap().as_bool(), Some(true));
        assert_eq!(r.get("b").unwrap().as_bool(), Some(false));
        assert_eq!(r.get("c").unwrap().as_bool(), None);
        assert_eq!(
            r.get("d").unwrap().as_scalar().unwrap().kind,
            Kind::Int(384)
        );
        assert_eq!(r.get("d").unwrap().text(), Some("0600"));
        assert_eq!(r.get("e").unwrap().as_scalar().unwrap().kind, Kind::Str);
        assert_eq!(
            r.get("f").unwrap().as_scalar().unwrap().kind,
            Kind::Int(1000)
        );
        assert!(r.get("g").unwrap().is_null());
        assert_eq!(r.get("h").unwrap().as_bool(), Some(true));
    }

    #[test]
    fn keys_after_a_merge_win_over_the_merged_ones() {
        let r = root("base: &b {type: s3, bucket: a}\nreplica:\n  <<: *b\n  bucket: mine\n");
        assert_eq!(text_at(&r, &["replica", "bucket"]), Some("mine"));
        assert_eq!(text_at(&r, &["replica", "type"]), Some("s3"));
        assert!(r.get("base").unwrap().shared);
        assert!(parse("a: &b {x: 1}\nc: {<<: *b, x: 2}\n")
            .unwrap()
            .notes
            .is_empty());
    }

    #[test]
    fn a_merge_overrides_the_keys_written_before_it_as_yaml_v2_does() {
        let doc = parse("base: &b {type: gs}\nreplica:\n  type: file\n  <<: *b\n").unwrap();
        let r = doc.root.unwrap();
        assert_eq!(text_at(&r, &["replica", "type"]), Some("gs"));
        assert_eq!(
            doc.notes,
            vec![Note::MergeOverrides {
                at: "replica".into(),
                key: "type".into(),
                line: 3
            }]
        );
    }

    #[test]
    fn a_list_of_merges_lets_the_first_win() {
        let r = root("a: &a {x: from-a}\nb: &b {x: from-b, y: from-b}\nc:\n  <<: [*a, *b]\n");
        assert_eq!(text_at(&r, &["c", "x"]), Some("from-a"));
        assert_eq!(text_at(&r, &["c", "y"]), Some("from-b"));
    }

    #[test]
    fn a_mapping_over_a_mapping_merges_into_it() {
        let r =
            root("d: &d\n  replica: {type: s3, bucket: b}\ndb:\n  <<: *d\n  replica: {path: p}\n");
        assert_eq!(text_at(&r, &["db", "replica", "bucket"]), Some("b"));
        assert_eq!(text_at(&r, &["db", "replica", "path"]), Some("p"));
    }

    #[test]
    fn duplicates_are_noted_and_the_last_wins() {
        let doc = parse("dbs:\n  - path: /a\n    path: /b\n").unwrap();
        let r = doc.root.unwrap();
        assert_eq!(
            r.get("dbs").unwrap().as_seq().unwrap()[0]
                .get("path")
                .unwrap()
                .text(),
            Some("/b")
        );
        assert_eq!(
            doc.notes,
            vec![Note::Duplicate {
                at: "dbs[0]".into(),
                key: "path".into(),
                line: 3
            }]
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "a: [1, 2\n",
            "a: *nothing\n",
            "a: &x [*x]\n",
            "a: {<<: 3}\n",
            "? [a]\n: b\n",
            "a: !!int nope\n",
            &"[".repeat(10_000),
            &format!("{}x{}", "[".repeat(500), "]".repeat(500)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("").unwrap().root.is_none());
        assert!(parse("# only a comment\n").unwrap().root.is_none());
    }

    #[test]
    fn only_the_first_document_is_read() {
        let r = root("a: 1\n---\nb: 2\n");
        assert!(r.get("a").is_some() && r.get("b").is_none());
    }
}
