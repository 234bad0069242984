//! `config diff`: a unified line diff of two configs with every secret masked. The lines are
//! compared as they are (a changed secret is a changed line) and printed masked: the value of a
//! secret key (and everything indented below one, e.g. the list of `identities:`), URL passwords
//! and any secret value met elsewhere are replaced by [`MASK`]; a changed line that looks the
//! same once masked is marked `(changed)`.

use crate::redact::{is_secret_key, Redactor, MASK};

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The diff of `old` and `new` under the headers `--- old_label` / `+++ new_label`, or `None`
/// when they are equal.
pub fn masked_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let redactors = [Redactor::from_yaml(old), Redactor::from_yaml(new)];
    let (ma, mb) = (mask_lines(&a, &redactors), mask_lines(&b, &redactors));
    let ops = line_ops(&a, &b);
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    if a == b {
        // Only line endings differ (`lines()` hides a final newline or `\r`).
        out.push_str("(the two differ only in line endings or the final newline)\n");
        return Some(out);
    }
    for hunk in hunks(&ops) {
        let ops = &ops[hunk.clone()];
        let (a0, b0) = match ops[0] {
            Op::Same(i, j) => (i, j),
            Op::Del(i) => (i, next_b(ops)),
            Op::Ins(j) => (next_a(ops), j),
        };
        let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
        let (na, nb) = (
            count(|o| !matches!(o, Op::Ins(_))),
            count(|o| !matches!(o, Op::Del(_))),
        );
        let start = |s: usize, n: usize| if n == 0 { s } else { s + 1 };
        out.push_str(&format!(
            "@@ -{},{na} +{},{nb} @@\n",
            start(a0, na),
            start(b0, nb)
        ));
        for (k, op) in ops.iter().enumerate() {
            match *op {
                Op::Same(i, _) => out.push_str(&format!(" {}\n", ma[i])),
                Op::Del(i) => out.push_str(&format!("-{}\n", ma[i])),
                Op::Ins(j) => {
                    // Masked alike but not alike: a secret changed.
                    let block = ops[..k]
                        .iter()
                        .rev()
                        .take_while(|o| !matches!(o, Op::Same(..)));
                    let hidden = block
                        .filter_map(|o| match o {
                            Op::Del(i) => Some(*i),
                            _ => None,
                        })
                        .any(|i| ma[i] == mb[j] && a[i] != b[j]);
                    let mark = if hidden { " (changed)" } else { "" };
                    out.push_str(&format!("+{}{mark}\n", mb[j]));
                }
            }
        }
    }
    Some(out)
}

/// The first old-side line index at or after the start of `ops` (for an insertion-only start).
fn next_a(ops: &[Op]) -> usize {
    ops.iter()
        .find_map(|o| match o {
            Op::Same(i, _) | Op::Del(i) => Some(*i),
            Op::Ins(_) => None,
        })
        .unwrap_or(0)
}

fn next_b(ops: &[Op]) -> usize {
    ops.iter()
        .find_map(|o| match o {
            Op::Same(_, j) | Op::Ins(j) => Some(*j),
            Op::Del(_) => None,
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Del(usize),
    Ins(usize),
}

/// The edit script of a longest common subsequence (deletions before insertions in a change).
fn line_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(Op::Del(i));
            i += 1;
        } else {
            ops.push(Op::Ins(j));
            j += 1;
        }
    }
    ops
}

/// Ranges of `ops` to print: each change with up to [`CONTEXT`] same lines around it, changes
/// closer than twice that merged.
fn hunks(ops: &[Op]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        if matches!(op, Op::Same(..)) {
            continue;
        }
        let start = k.saturating_sub(CONTEXT);
        let end = (k + 1 + CONTEXT).min(ops.len());
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

/// Each line masked: a secret key's value, the lines indented below a secret key, then every
/// secret value and URL password either config holds.
fn mask_lines(lines: &[&str], redactors: &[Redactor]) -> Vec<String> {
    // The indent of the secret key whose block we are in, and whether a `- ` item at that
    // indent belongs to it (only when the key's value starts on the next line).
    let mut below: Option<(usize, bool)> = None;
    lines
        .iter()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let blank = line.trim().is_empty();
            if let Some((key_indent, items)) = below {
                if blank {
                    return line.to_string();
                }
                if indent > key_indent
                    || items && line.trim_start().starts_with("- ") && indent == key_indent
                {
                    return format!("{}{MASK}", &line[..indent]);
                }
                below = None;
            }
            if let Some((prefix, value)) = secret_value(line) {
                let value = value.trim();
                // Every line indented below the key is its value: a block scalar, a list, or
                // a plain or quoted scalar continued on the next lines.
                below = Some((indent_of_key(prefix), value.is_empty()));
                if value.is_empty() {
                    return line.to_string();
                }
                return format!("{prefix} {MASK}");
            }
            let mut text = line.to_string();
            for r in redactors {
                text = r.redact(&text).into_owned();
            }
            text
        })
        .collect()
}

/// `(prefix up to and including the colon, value)` when `line` is `key: value` (possibly after
/// `- `) with a secret key.
fn secret_value(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let key = line[..colon].trim_start();
    let key = key.trim_start_matches("- ").trim();
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    let after = &line[colon + 1..];
    if !is_secret_key(key) || !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    Some((&line[..=colon], after))
}

/// The column of the key in `prefix` (after any `- `).
fn indent_of_key(prefix: &str) -> usize {
    let rest = prefix.trim_start();
    let lead = prefix.len() - rest.len();
    lead + (rest.len() - rest.trim_start_matches("- ").len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_configs_have_no_diff() {
        assert_eq!(masked_diff("a: 1\n", "a: 1\n", "x", "y"), None);
    }

    #[test]
    fn a_change_shows_in_a_hunk_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let d = masked_diff(old, new, "old", "new").unwrap();
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
        let d = masked_diff("", "x\n", "o", "n").unwrap();
        assert!(d.contains("@@ -0,0 +1,1 @@\n+x\n"), "{d}");
    }

    #[test]
    fn secrets_are_masked_and_a_changed_one_is_marked() {
        let old = "access-key-id: AKIAOLDKEY\nsecret-access-key: oldsecret1\ndbs:\n  - path: /a.db\n    replica:\n      url: sftp://bob:hunter22@h/x\n      identities:\n        - AGE-SECRET-KEY-OLDIDENT\n      password: |\n        blockpw1\n";
        let new = old
            .replace("oldsecret1", "newsecret2")
            .replace("hunter22", "hunter33")
            .replace("OLDIDENT", "NEWIDENT")
            .replace("blockpw1", "blockpw2");
        let d = masked_diff(old, &new, "o", "n").unwrap();
        for secret in [
            "AKIAOLDKEY",
            "oldsecret1",
            "newsecret2",
            "hunter22",
            "hunter33",
            "OLDIDENT",
            "NEWIDENT",
            "blockpw1",
            "blockpw2",
        ] {
            assert!(!d.contains(secret), "{secret} in\n{d}");
        }
        assert!(
            d.contains(
                "-secret-access-key: [REDACTED]\n+secret-access-key: [REDACTED] (changed)\n"
            ),
            "{d}"
        );
        assert!(
            d.contains("+      url: sftp://[REDACTED]@h/x (changed)"),
            "{d}"
        );
        assert!(d.contains("+        [REDACTED] (changed)"), "{d}");
        assert!(d.contains(" access-key-id: [REDACTED]\n"), "{d}");
    }

    #[test]
    fn continued_secrets_and_secret_keys_in_any_case_are_masked() {
        let old = "secret-access-key: plainfirst\n  plaincontinued\nSecret-Access-Key: casesecret1\ndbs:\n  - path: /a.db\n    replica:\n      password: \"quoted first\n        quotedcontinued\"\n      type: sftp\n";
        let new = old
            .replace("plaincontinued", "plaincont2")
            .replace("casesecret1", "casesecret2")
            .replace("quotedcontinued", "quotedcont2");
        let d = masked_diff(old, &new, "o", "n").unwrap();
        for secret in [
            "plainfirst",
            "plaincontinued",
            "plaincont2",
            "casesecret",
            "quoted first",
            "quotedcontinued",
            "quotedcont2",
        ] {
            assert!(!d.contains(secret), "{secret} in\n{d}");
        }
        assert!(d.contains("+  [REDACTED] (changed)\n"), "{d}");
        assert!(
            d.contains("+Secret-Access-Key: [REDACTED] (changed)\n"),
            "{d}"
        );
        assert!(
            d.contains("       type: sftp\n"),
            "the block ends at its key's indent: {d}"
        );
    }
}
