//! Keeping credentials out of everything the supervisor prints or stores: the secret values of a
//! config (keys such as `secret-access-key` and `password` in any case, the password of any
//! `scheme://user:password@host` URL and its query parameters named like credentials) are replaced in litestream's forwarded lines, in crash
//! reports and in error messages.

use std::borrow::Cow;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::config::document::{self, Node, Value};

/// Config keys whose values are credentials.
pub const SECRET_KEYS: &[&str] = &[
    "access-key-id",
    "secret-access-key",
    "password",
    "webdav-password",
    "account-key",
    "sas-token",
    "sse-customer-key",
    "token",
    "nkey",
    "jwt",
    "seed",
    "creds",
    "identities",
];

/// Whether `key` is one of [`SECRET_KEYS`] in any case (`Password` is ignored by litestream,
/// but its value is still the operator's secret).
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// Replaces known secret values in text. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<Zeroizing<String>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Collects the secrets of a litestream config (even one that does not validate).
    pub fn from_yaml(yaml: &str) -> Self {
        let mut secrets = Vec::new();
        match document::parse(yaml) {
            Ok(doc) => {
                if let Some(root) = &doc.root {
                    collect(root, None, &mut secrets);
                }
            }
            Err(_) => scan_lines(yaml, &mut secrets),
        }
        url_passwords(yaml, &mut secrets);
        secrets.retain(|s| s.len() >= 3);
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets.into_iter().map(Zeroizing::new).collect()),
        }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        out
    }
}

/// The text of every scalar under a secret key (the merged view: a secret in an anchor is
/// found through the anchor itself).
fn collect(v: &Node, key: Option<&str>, out: &mut Vec<String>) {
    match &v.value {
        Value::Scalar(_) if key.is_some_and(is_secret_key) => {
            out.extend(v.text().map(str::to_owned))
        }
        Value::Seq(items) => items.iter().for_each(|i| collect(i, key, out)),
        Value::Map(m) => {
            for (k, item) in m {
                collect(item, Some(k), out);
            }
        }
        Value::Scalar(_) => {}
    }
}

/// For text that is not YAML: `key: value` lines with a secret key.
fn scan_lines(yaml: &str, out: &mut Vec<String>) {
    for line in yaml.lines() {
        let line = line.trim_start().trim_start_matches("- ");
        if let Some((k, v)) = line.split_once(':') {
            if is_secret_key(k.trim()) {
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                out.push(v.to_string());
            }
        }
    }
}

/// The password (and the whole `user:password`) of every `scheme://user:password@` in `text`.
fn url_passwords(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        if let Some((userinfo, _host)) = authority.rsplit_once('@') {
            if let Some((_user, password)) = userinfo.split_once(':') {
                out.push(userinfo.to_string());
                out.push(password.to_string());
            }
        }
        let url_end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        if let Some((_, query)) = after[..url_end].split_once('?') {
            query_secrets(query, out);
        }
        rest = &after[end..];
    }
}

/// The values of the query parameters of a URL whose names look like credentials
/// (`?sig=...`, `secret-access-key=...`, `token=...`).
fn query_secrets(query: &str, out: &mut Vec<String>) {
    const WORDS: &[&str] = &["secret", "password", "token", "sig", "key", "credential"];
    for pair in query.split(['&', ';']) {
        if let Some((name, value)) = pair.split_once('=') {
            let name = name.to_ascii_lowercase();
            if is_secret_key(&name) || WORDS.iter().any(|w| name.contains(w)) {
                out.push(value.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_and_url_passwords() {
        let yaml = "access-key-id: AKIAEXAMPLE\nsecret-access-key: \"s3cr3t/Key+\"\ndbs:\n  - path: /a.db\n    replica:\n      url: sftp://bob:hunter22@host:22/backups\n      password: sftp-pass\n";
        let r = Redactor::from_yaml(yaml);
        let line = "level=ERROR msg=x key=s3cr3t/Key+ url=sftp://bob:hunter22@host:22/backups id=AKIAEXAMPLE p=sftp-pass";
        let out = r.redact(line);
        for secret in ["s3cr3t/Key+", "hunter22", "AKIAEXAMPLE", "sftp-pass"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("sftp://[REDACTED]@host:22/backups"), "{out}");
        assert_eq!(r.redact("nothing secret"), "nothing secret");
    }

    #[test]
    fn a_secret_key_in_another_case_is_masked() {
        let r = Redactor::from_yaml("Secret-Access-Key: casesecret1\nPASSWORD: shouted1\n");
        assert_eq!(r.redact("casesecret1 shouted1"), "[REDACTED] [REDACTED]");
        let r = Redactor::from_yaml("dbs: [\n  Password: abc123\n");
        assert_eq!(r.redact("pw abc123"), "pw [REDACTED]");
    }

    #[test]
    fn a_credential_in_a_url_query_is_masked() {
        let r = Redactor::from_yaml(
            "url: abs://acct@c/p?sig=sassecret1&sp=rw&Secret-Access-Key=qsecret2\n",
        );
        let out = r.redact("abs://acct@c/p?sig=sassecret1&sp=rw&Secret-Access-Key=qsecret2");
        assert!(
            !out.contains("sassecret1") && !out.contains("qsecret2"),
            "{out}"
        );
        assert!(out.contains("sp=rw"), "{out}");
    }

    #[test]
    fn works_on_text_that_is_not_yaml() {
        let r = Redactor::from_yaml("dbs: [\n  password: abc123\n");
        assert_eq!(r.redact("pw abc123"), "pw [REDACTED]");
    }
}
