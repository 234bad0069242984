//! Writing a [`Node`] tree back as YAML, for the one-off configs the supervisor builds itself
//! (never for the user's own config, which litestream reads as saved).
//!
//! Strings are written double-quoted, so no YAML reader can take them for anything else; other
//! scalars keep their text, which yaml.v2 resolves again to the same value.

use zeroize::Zeroizing;

use super::{Kind, Node, Value};
use crate::config::yaml_quote;

/// `node` as a YAML document.
pub(crate) fn to_yaml(node: &Node) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => map(entries, 0, &mut out),
        Value::Seq(items) if !items.is_empty() => seq(items, 0, &mut out),
        _ => {
            inline(node, &mut out);
            out.push('\n');
        }
    }
    out
}

fn map(entries: &[(String, Node)], indent: usize, out: &mut String) {
    for (i, (key, value)) in entries.iter().enumerate() {
        // The first entry of a list item continues the `- ` line.
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            push_indent(indent, out);
        }
        push_key(key, out);
        out.push(':');
        block(value, indent, out);
    }
}

fn seq(items: &[Node], indent: usize, out: &mut String) {
    for item in items {
        push_indent(indent, out);
        out.push_str("- ");
        match &item.value {
            Value::Map(entries) if !entries.is_empty() => map(entries, indent + 2, out),
            Value::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(inner, indent + 2, out);
            }
            _ => {
                inline(item, out);
                out.push('\n');
            }
        }
    }
}

/// The value after `key:`: on the same line when it is a scalar or empty, below it otherwise.
fn block(value: &Node, indent: usize, out: &mut String) {
    match &value.value {
        Value::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            map(entries, indent + 2, out);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push('\n');
            seq(items, indent + 2, out);
        }
        _ => {
            out.push(' ');
            inline(value, out);
            out.push('\n');
        }
    }
}

fn inline(node: &Node, out: &mut String) {
    match &node.value {
        Value::Map(_) => out.push_str("{}"),
        Value::Seq(_) => out.push_str("[]"),
        Value::Scalar(s) => match s.kind {
            Kind::Str => out.push_str(&yaml_quote(&s.text)),
            Kind::Null => out.push('~'),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => out.push_str(&s.text),
        },
    }
}

fn push_key(key: &str, out: &mut String) {
    let simple = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && key.starts_with(|c: char| c.is_ascii_alphabetic());
    if simple {
        out.push_str(key);
    } else {
        out.push_str(&yaml_quote(key));
    }
}

fn push_indent(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    /// Same values, ignoring lines.
    fn same(a: &Node, b: &Node) -> bool {
        match (&a.value, &b.value) {
            (Value::Scalar(x), Value::Scalar(y)) => x.text == y.text && x.kind == y.kind,
            (Value::Seq(x), Value::Seq(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
            }
            _ => false,
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let yaml = "a: yes\nb: '0600'\nc: 0600\n\"<<\": x\nd:\n  - {p: \"x\\ny\\u2028\", q: [1, [2]]}\n  - []\n  - {}\ne: ~\n";
        let doc = parse(yaml).unwrap().root.unwrap();
        let written = to_yaml(&doc);
        let back = parse(&written).unwrap().root.unwrap();
        assert!(same(&doc, &back), "{}", &*written);
        assert_eq!(
            back.get("c").unwrap().as_scalar().unwrap().kind,
            Kind::Int(384)
        );
        assert_eq!(back.get("b").unwrap().text(), Some("0600"));
        assert!(back.get("<<").is_some());
    }
}
