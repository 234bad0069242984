//! The replica of a database, checked as litestream's `NewReplicaFromConfig` and its per-type
//! constructors build it: after the top-level replica settings have been copied into every
//! replica that does not set its own (`propagateGlobalSettings`), so a top-level `bucket` meets
//! each replica's `url`.

use super::{join, Checker};
use crate::config::document::Node;
use crate::config::duration::parse_go_duration;
use crate::config::schema::REPLICA_TYPES;

/// The parts of a replica URL that decide whether litestream takes it.
struct Url<'a> {
    scheme: String,
    user: Option<&'a str>,
    host: &'a str,
    query: &'a str,
}

/// litestream's `IsURL` (`^\w+://`) then the parts Go's `url.Parse` gives.
fn parse_url(url: &str) -> Option<Url<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let rest = rest.split('#').next().unwrap_or(rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo.split(':').next().unwrap_or("")), host),
        None => (None, authority),
    };
    Some(Url {
        scheme: scheme.to_ascii_lowercase(),
        user: user.filter(|u| !u.is_empty()),
        host,
        query,
    })
}

/// Checks the replica `replica` at `at`, with the top-level settings of `root`.
// Long on purpose: the replica rule table, one rule per key or replica type, in litestream's order.
pub(super) fn check(c: &mut Checker, replica: &Node, root: &Node, at: &str) {
    let own = |key: &str| {
        replica
            .get(key)
            .and_then(Node::text)
            .filter(|s| !s.is_empty())
    };
    let global = |key: &str| root.get(key).and_then(Node::text).filter(|s| !s.is_empty());
    // Where a setting comes from, for the message: the replica, or the top level.
    let setting = |key: &str| match own(key) {
        Some(v) => Some((v, format!("`{key}`"))),
        None => global(key).map(|v| (v, format!("the top-level `{key}`"))),
    };
    let path = own("path");
    let url_text = own("url");
    if path.is_some_and(|p| parse_url(p).is_some()) {
        c.error(
            &join(at, "path"),
            "holds a URL: put it in `url` (`path` is a directory, or a prefix inside the bucket)",
        );
        return;
    }
    let url = match url_text {
        Some(text) => match parse_url(text) {
            Some(url) => Some(url),
            None => {
                c.error(
                    &join(at, "url"),
                    "is not a replica URL: litestream needs a scheme, such as s3://bucket/path or file:///backups/app",
                );
                return;
            }
        },
        None => None,
    };
    // `ReplicaType()`: the URL's scheme, else `type`, else a file replica.
    let kind = match (&url, own("type")) {
        (Some(u), _) if u.scheme == "webdavs" => "webdav".to_string(),
        (Some(u), _) => u.scheme.clone(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "file".to_string(),
    };
    if !REPLICA_TYPES.contains(&kind.as_str()) {
        let (key, what) = match url {
            Some(_) => (
                "url",
                format!("`{kind}://` is not a replica scheme litestream knows"),
            ),
            None => ("type", format!("`{kind}` is not a replica type")),
        };
        c.error(
            &join(at, key),
            format!("{what}: use one of {}", REPLICA_TYPES.join(", ")),
        );
        return;
    }
    age(c, replica, root, at);
    sync_interval(c, replica, root, at);
    let url_key = join(at, "url");
    let conflict = |c: &mut Checker, with: Option<(&str, String)>| {
        if let (Some(_), Some((_, from))) = (&url, with) {
            c.error(
                &url_key,
                format!("is set together with {from}: litestream refuses both for a {kind} replica; put everything in the URL, or drop `url` and use the separate settings"),
            );
        }
    };
    if kind != "nats" {
        conflict(c, path.map(|p| (p, "`path`".to_string())));
    }
    let needs = |c: &mut Checker, key: &str, what: &str| {
        c.error(
            &join(at, key),
            format!("is missing: a {kind} replica needs {what}"),
        )
    };
    match kind.as_str() {
        "file" if url.is_none() && path.is_none() => needs(
            c,
            "path",
            "`path`, the directory it writes to (or a file:// `url`)",
        ),
        "s3" | "gs" | "abs" | "oss" => {
            let bucket = setting("bucket");
            conflict(c, bucket.clone());
            let from_url = url.as_ref().is_some_and(|u| {
                let host = if kind == "s3" {
                    s3_bucket(u.host)
                } else {
                    u.host
                };
                !host.is_empty()
            });
            if bucket.is_none() && !from_url {
                needs(
                    c,
                    "bucket",
                    &format!("a `bucket`, or a url such as {kind}://bucket/path"),
                );
            }
            if kind == "s3" {
                if let Some(u) = &url {
                    query_integers(c, &url_key, u.query);
                }
            }
        }
        "sftp" => {
            let host = setting("host");
            conflict(c, host.clone());
            if host.is_none() && url.as_ref().is_none_or(|u| u.host.is_empty()) {
                needs(
                    c,
                    "host",
                    "a `host`, or a url such as sftp://user@host/path",
                );
            }
            if setting("user").is_none() && url.as_ref().and_then(|u| u.user).is_none() {
                needs(
                    c,
                    "user",
                    "a `user`, or a url such as sftp://user@host/path",
                );
            }
        }
        "webdav" => {
            let webdav_url = setting("webdav-url");
            conflict(c, webdav_url.clone());
            if webdav_url.is_none() && url.as_ref().is_none_or(|u| u.host.is_empty()) {
                needs(
                    c,
                    "webdav-url",
                    "a `webdav-url`, or a url such as webdavs://host/path",
                );
            }
        }
        "nats" => {
            // Any nats:// URL names a bucket to litestream (its path, "." when empty).
            if url.is_none() && setting("bucket").is_none() {
                needs(
                    c,
                    "bucket",
                    "a `bucket`, or a url such as nats://host/bucket",
                );
            }
            if setting("client-cert").is_some() != setting("client-key").is_some() {
                c.error(
                    at,
                    "has only one of `client-cert` and `client-key`: mutual TLS needs both",
                );
            }
        }
        _ => {}
    }
}

/// litestream refuses a zero `sync-interval`, the replica's own or the top-level one it inherits.
fn sync_interval(c: &mut Checker, replica: &Node, root: &Node, at: &str) {
    let set = |n: &Node| n.get("sync-interval").filter(|v| !v.is_null()).cloned();
    let zero = |v: &Node| {
        v.text()
            .and_then(parse_go_duration)
            .is_some_and(|d| d.is_zero())
    };
    let message = "must be greater than 0 (litestream refuses 0): remove it for the default of 1s";
    match set(replica) {
        Some(v) if zero(&v) => c.error(&join(at, "sync-interval"), message),
        Some(_) => {}
        None if set(root).is_some_and(|v| zero(&v))
            && !c.report.errors.iter().any(|e| e.key == "sync-interval") =>
        {
            c.error("sync-interval", message)
        }
        None => {}
    }
}

/// litestream 0.5 removed age encryption and refuses a replica that asks for it (rather than
/// write plaintext where ciphertext is expected).
fn age(c: &mut Checker, replica: &Node, root: &Node, at: &str) {
    let listed = |node: &Node| {
        ["identities", "recipients"].iter().any(|k| {
            node.get("age")
                .and_then(|a| a.get(k))
                .and_then(Node::as_seq)
                .is_some_and(|s| !s.is_empty())
        })
    };
    let message = "asks for age encryption, which litestream 0.5 removed (it refuses the config): remove `age`, and encrypt at the storage side instead (bucket encryption, sse-customer-key)";
    if listed(replica) {
        c.error(&join(at, "age"), message);
    } else if listed(root) && !c.report.errors.iter().any(|e| e.key == "age") {
        c.error("age", message);
    }
}

/// The bucket s3's `ParseHost` finds in a URL host: none in a MinIO-style `host:port`.
fn s3_bucket(host: &str) -> &str {
    if host.contains(':') && !host.contains(".com") {
        return match host.split_once('.') {
            Some((bucket, _)) => bucket,
            None => "",
        };
    }
    host
}

/// `partSize`/`part-size` and `concurrency` in an s3 URL's query must be positive integers.
fn query_integers(c: &mut Checker, key: &str, query: &str) {
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if matches!(name, "partSize" | "part-size" | "concurrency")
            && !value.is_empty()
            && !value.parse::<i64>().is_ok_and(|n| n > 0)
        {
            c.error(
                key,
                format!("its `{name}` query parameter must be a positive integer"),
            );
        }
    }
}
