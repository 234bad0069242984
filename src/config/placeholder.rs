//! Environment-variable placeholders (`$NAME`, `${NAME}`) written where a value belongs.
//!
//! litestream expands them with Go's `os.Expand` over the raw bytes of the file, before any YAML
//! parsing (so quoting protects nothing), unless it runs with `-no-expand-env`, and the supervisor
//! always runs it so. To our litestream every `$` is literal text: a placeholder would reach it as
//! a bucket named `${BUCKET}` or a path `$HOME/app.db` under the working directory. The stored
//! config must be self-contained, so what is shaped like a placeholder is refused, and only that:
//! - `${NAME}` anywhere in a value (NAME: a letter or `_`, then letters, digits and `_`); the
//!   braced form means nothing else;
//! - `$NAME` at the start of a value or after a character that cannot be part of a word (`/`,
//!   `:`, `@`, `-`, `.`, `=`, a space...): `$HOME/data`, `s3://$BUCKET/db`, `--$MODE`;
//! - in a credential (a password, secret key, token...: [`crate::redact::SECRET_KEYS`]), only a
//!   whole value `$NAME` or `${NAME}`: generated secrets often hold `$` and letters
//!   (`pa$$w0rd$ecret`, `x-$Tr0ng`), which litestream reads literally, as we do.
//!
//! Any other `$` is text: followed by something that is not a name (`$$`, `$1`, `$ `, a final
//! `$`), or inside a word (`pa$word`). Comments are not values and are never looked at.

/// The placeholder in `text`, if it has one by the rules above; `credential` for the value of a
/// secret key.
pub(super) fn find(text: &str, credential: bool) -> Option<&str> {
    if credential {
        let whole = text.trim();
        return (whole.starts_with('$') && end_at(whole, 0) == Some(whole.len())).then_some(whole);
    }
    let b = text.as_bytes();
    b.iter().enumerate().find_map(|(i, &c)| {
        if c != b'$' {
            return None;
        }
        let end = end_at(text, i)?;
        let braced = b.get(i + 1) == Some(&b'{');
        let starts_word =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'$'));
        (braced || starts_word).then(|| &text[i..end])
    })
}

/// Where the `$NAME` or `${NAME}` starting at byte `i` ends, if one does.
fn end_at(text: &str, i: usize) -> Option<usize> {
    let rest = &text.as_bytes()[i + 1..];
    if rest.first() == Some(&b'{') {
        let n = name_len(&rest[1..]);
        (n > 0 && rest.get(1 + n) == Some(&b'}')).then_some(i + n + 3)
    } else {
        let n = name_len(rest);
        (n > 0).then_some(i + 1 + n)
    }
}

fn name_len(s: &[u8]) -> usize {
    match s.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => s
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found() {
        assert_eq!(find("$HOME/app.db", false), Some("$HOME"));
        assert_eq!(find("s3://${BUCKET}/db", false), Some("${BUCKET}"));
        assert_eq!(find("s3://$BUCKET/db", false), Some("$BUCKET"));
        assert_eq!(find("prefix${ENV}", false), Some("${ENV}"));
        assert_eq!(find("a b $X", false), Some("$X"));
        assert_eq!(find("$AWS_SECRET", true), Some("$AWS_SECRET"));
        assert_eq!(find("${AWS_SECRET}", true), Some("${AWS_SECRET}"));
    }

    #[test]
    fn a_dollar_that_belongs_to_the_value_is_text() {
        for text in [
            "price $", "a $ b", "$1", "x$$y", "pa$word", "${}", "${1X}", "${OPEN",
        ] {
            assert_eq!(find(text, false), None, "{text}");
        }
        for secret in [
            "pa$$w0rd$ecret",
            "x-$Tr0ng",
            "$ecret and more",
            "abc${X}def",
        ] {
            assert_eq!(find(secret, true), None, "{secret}");
        }
    }
}
