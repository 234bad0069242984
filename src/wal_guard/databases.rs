//! Which databases of a config exist now: each `path`, and each file of a `dir:` entry that
//! matches its `pattern`, as litestream finds them at its start.

use std::path::{Path, PathBuf};

use crate::config::{DbTarget, LitestreamConfig};

/// The databases of `config` that exist now: each `path`, and each file in a `dir` that
/// matches its `pattern` (the files litestream finds at its start).
pub(crate) fn databases_now(config: &LitestreamConfig) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for target in config.dbs() {
        match target {
            DbTarget::Path(p) => {
                if p.is_file() {
                    out.push(p.clone());
                }
            }
            DbTarget::Dir { dir, pattern } => out.extend(files_in(dir, pattern)),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The files of `dir` whose name matches `pattern`, sorted.
pub(crate) fn files_in(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|name| glob_match(pattern, name))
                && e.path().is_file()
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `filepath.Match` as litestream uses it for `pattern:` (`*`, `?`, `[...]`), on one name.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().position(|&c| c == ']') else {
                    return false;
                };
                let Some(&c) = n.first() else { return false };
                let class = &p[1..close];
                let (negate, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[close + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}
