//! litestream 0.5's config keys and the Go type each one is read into (`Config`, `DBConfig`,
//! `ReplicaConfig` and `ReplicaSettings` in its `cmd/litestream/main.go`): the type decides what
//! yaml.v2 accepts for it, and litestream refuses the whole config on a mismatch.

/// The sections of the config.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Section {
    Root,
    Socket,
    Level,
    Snapshot,
    Validation,
    Retention,
    Logging,
    Db,
    Replica,
    Age,
}

/// The Go type of a key, as far as reading the YAML goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Type {
    /// `string`: any scalar, by its text.
    Str,
    /// `bool`: a YAML 1.1 boolean (`true`, `yes`, `on`, ... unquoted).
    Bool,
    /// `int`/`int64`: an integer (a float is truncated).
    Int,
    /// `uint32` (socket permissions): a non-negative integer, `0600` being octal.
    Mode,
    /// `time.Duration`: a Go duration string (a bare number would be nanoseconds).
    Duration,
    /// litestream's `ByteSize`: `5MB`, `8MiB`, `1024`.
    Bytes,
    /// `[]string`.
    List,
    Map(Section),
    Maps(Section),
}

/// Replica types litestream 0.5 knows.
pub const REPLICA_TYPES: &[&str] = &["file", "s3", "gs", "abs", "sftp", "nats", "oss", "webdav"];

/// Settings allowed on each replica, and globally as defaults for all replicas
/// (`ReplicaSettings`), with their types.
const REPLICA_SETTINGS: &[(&str, Type)] = &[
    ("sync-interval", Type::Duration),
    ("validation-interval", Type::Duration),
    ("max-sync-ltx-files", Type::Int),
    ("auto-recover", Type::Bool),
    ("access-key-id", Type::Str),
    ("secret-access-key", Type::Str),
    ("region", Type::Str),
    ("bucket", Type::Str),
    ("endpoint", Type::Str),
    ("force-path-style", Type::Bool),
    ("sign-payload", Type::Bool),
    ("require-content-md5", Type::Bool),
    ("skip-verify", Type::Bool),
    ("storage-class", Type::Str),
    ("part-size", Type::Bytes),
    ("concurrency", Type::Int),
    ("sse-customer-algorithm", Type::Str),
    ("sse-customer-key", Type::Str),
    ("sse-customer-key-path", Type::Str),
    ("sse-kms-key-id", Type::Str),
    ("account-name", Type::Str),
    ("account-key", Type::Str),
    ("sas-token", Type::Str),
    ("host", Type::Str),
    ("user", Type::Str),
    ("password", Type::Str),
    ("key-path", Type::Str),
    ("concurrent-writes", Type::Bool),
    ("host-key", Type::Str),
    ("webdav-url", Type::Str),
    ("webdav-username", Type::Str),
    ("webdav-password", Type::Str),
    ("jwt", Type::Str),
    ("seed", Type::Str),
    ("creds", Type::Str),
    ("nkey", Type::Str),
    ("username", Type::Str),
    ("token", Type::Str),
    ("tls", Type::Bool),
    ("root-cas", Type::List),
    ("client-cert", Type::Str),
    ("client-key", Type::Str),
    ("max-reconnects", Type::Int),
    ("reconnect-wait", Type::Duration),
    ("timeout", Type::Duration),
    ("age", Type::Map(Section::Age)),
];

/// The type of `key` in `section`, or `None` for a key litestream does not know.
pub(super) fn type_of(section: Section, key: &str) -> Option<Type> {
    use Section as S;
    use Type::*;
    let setting = || {
        REPLICA_SETTINGS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| *t)
    };
    Some(match (section, key) {
        (S::Root, "addr" | "heartbeat-url" | "exec" | "mcp-addr") => Str,
        (S::Root, "verify-compaction") => Bool,
        (S::Root, "socket") => Map(S::Socket),
        (S::Root, "levels") => Maps(S::Level),
        (S::Root | S::Db, "snapshot") => Map(S::Snapshot),
        (S::Root, "validation") => Map(S::Validation),
        (S::Root, "retention") => Map(S::Retention),
        (S::Root, "logging") => Map(S::Logging),
        (S::Root, "dbs") => Maps(S::Db),
        (
            S::Root,
            "l0-retention"
            | "l0-retention-check-interval"
            | "heartbeat-interval"
            | "shutdown-sync-timeout"
            | "shutdown-sync-interval",
        ) => Duration,
        (S::Root | S::Replica, _) if setting().is_some() => setting()?,
        (S::Socket, "enabled") => Bool,
        (S::Socket, "path") => Str,
        (S::Socket, "permissions") => Mode,
        (S::Level | S::Validation, "interval") => Duration,
        (S::Snapshot, "interval" | "retention") => Duration,
        (S::Retention, "enabled") => Bool,
        (S::Logging, "level" | "type") => Str,
        (S::Logging, "stderr" | "source") => Bool,
        (S::Db, "path" | "dir" | "pattern" | "meta-path" | "meta-dir") => Str,
        (S::Db, "recursive" | "watch" | "restore-if-db-not-exists") => Bool,
        (S::Db, "min-checkpoint-page-count" | "truncate-page-n" | "max-sync-wal-bytes") => Int,
        (S::Db, "monitor-interval" | "checkpoint-interval" | "busy-timeout") => Duration,
        (S::Db, "replica") => Map(S::Replica),
        (S::Db, "replicas") => Maps(S::Replica),
        (S::Replica, "type" | "name" | "path" | "url") => Str,
        (S::Age, "identities" | "recipients") => List,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_go_types() {
        assert_eq!(type_of(Section::Root, "bucket"), Some(Type::Str));
        assert_eq!(type_of(Section::Replica, "part-size"), Some(Type::Bytes));
        assert_eq!(type_of(Section::Socket, "permissions"), Some(Type::Mode));
        assert_eq!(type_of(Section::Db, "watch"), Some(Type::Bool));
        assert_eq!(type_of(Section::Db, "bucket"), None);
        assert_eq!(type_of(Section::Replica, "dbs"), None);
        assert_eq!(type_of(Section::Root, "path"), None);
    }
}
