//! What a scalar is, by yaml.v2's `resolve`: the YAML 1.1 rules Go's litestream reads with.

/// A scalar's type once resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// Any integer Go's `ParseInt`/`ParseUint` reads (decimal, `0x`, `0o`, `0b`, a leading `0`
    /// for octal, `_` separators).
    Int(i128),
    Float(f64),
    /// A string; also what yaml.v2 passes on unresolved (timestamps, unknown tags).
    Str,
}

/// Resolves `text` as yaml.v2 does: quoted and block scalars are strings unless tagged, plain
/// ones go through the YAML 1.1 implicit types. A tag the text does not fit (`!!int abc`) is an
/// error, as it is to litestream; the message does not repeat the text.
pub(crate) fn resolve(text: &str, plain: bool, tag: Option<&str>) -> Result<Kind, String> {
    let tag = match tag {
        None if !plain => return Ok(Kind::Str),
        None => None,
        Some(t @ ("!!bool" | "!!int" | "!!float" | "!!null")) => Some(t),
        // `!!str`, `!!binary`, `!!timestamp` and other tags: yaml.v2 hands the text on.
        Some(_) => return Ok(Kind::Str),
    };
    let kind = implicit(text);
    match (tag, kind) {
        (None, k)
        | (Some("!!bool"), k @ Kind::Bool(_))
        | (Some("!!int"), k @ Kind::Int(_))
        | (Some("!!float"), k @ Kind::Float(_))
        | (Some("!!null"), k @ Kind::Null) => Ok(k),
        (Some("!!float"), Kind::Int(i)) => Ok(Kind::Float(i as f64)),
        (Some(tag), _) => Err(format!("a value tagged {tag} is not one")),
    }
}

/// The implicit type of a plain scalar.
fn implicit(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Kind::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Kind::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match s.as_bytes()[0] {
        b'.' => s.parse().map(Kind::Float).unwrap_or(Kind::Str),
        b'0'..=b'9' | b'+' | b'-' => {
            // Timestamps (`2024-01-02`) are strings to litestream's string fields and fail every
            // other field type, as strings do: no need to tell them apart.
            let plain = s.replace('_', "");
            if let Some(i) = go_parse_int(&plain) {
                Kind::Int(i)
            } else if is_yaml_float(&plain) {
                plain.parse().map(Kind::Float).unwrap_or(Kind::Str)
            } else {
                Kind::Str
            }
        }
        _ => Kind::Str,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint(s, 0, 64)` as yaml.v2 does.
fn go_parse_int(s: &str) -> Option<i128> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()? as i128;
    let value = if negative { -magnitude } else { magnitude };
    let fits = if negative || s.starts_with('+') {
        (i64::MIN as i128..=i64::MAX as i128).contains(&value)
    } else {
        value <= u64::MAX as i128
    };
    fits.then_some(value)
}

/// yaml.v2's `yamlStyleFloat`: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_implicit_types() {
        let cases: &[(&str, Kind)] = &[
            ("yes", Kind::Bool(true)),
            ("On", Kind::Bool(true)),
            ("n", Kind::Bool(false)),
            ("OFF", Kind::Bool(false)),
            ("~", Kind::Null),
            ("", Kind::Null),
            ("0600", Kind::Int(384)),
            ("0o600", Kind::Int(384)),
            ("0x1F", Kind::Int(31)),
            ("0b101", Kind::Int(5)),
            ("1_000", Kind::Int(1000)),
            ("-12", Kind::Int(-12)),
            ("+12", Kind::Int(12)),
            ("08", Kind::Float(8.0)),
            ("1.5", Kind::Float(1.5)),
            ("1e3", Kind::Float(1000.0)),
            (".5", Kind::Float(0.5)),
            ("18446744073709551615", Kind::Int(u64::MAX as i128)),
            ("1s", Kind::Str),
            ("2024-01-02", Kind::Str),
            ("yess", Kind::Str),
            ("<<", Kind::Str),
        ];
        for (text, kind) in cases {
            assert_eq!(resolve(text, true, None), Ok(*kind), "{text}");
        }
    }

    #[test]
    fn quoted_scalars_and_tags() {
        assert_eq!(resolve("yes", false, None), Ok(Kind::Str));
        assert_eq!(resolve("0600", false, None), Ok(Kind::Str));
        assert_eq!(resolve("0600", true, Some("!!str")), Ok(Kind::Str));
        assert_eq!(resolve("12", false, Some("!!int")), Ok(Kind::Int(12)));
        assert_eq!(resolve("12", true, Some("!!float")), Ok(Kind::Float(12.0)));
        assert!(resolve("twelve", true, Some("!!int")).is_err());
        assert_eq!(resolve("x", true, Some("!custom")), Ok(Kind::Str));
    }
}
