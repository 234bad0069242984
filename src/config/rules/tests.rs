use super::*;

fn errors(yaml: &str) -> Vec<String> {
    check(yaml, Strictness::Lenient)
        .errors
        .iter()
        .map(|p| p.to_string())
        .collect()
}

const GOOD: &str =
    "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backup\n";

#[test]
fn good_config_passes() {
    let r = check(GOOD, Strictness::Strict);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.facts.dbs, vec![DbTarget::Path("/data/app.db".into())]);
}

fn warnings(yaml: &str) -> Vec<String> {
    check(yaml, Strictness::Lenient)
        .warnings
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn a_replica_with_only_a_path_is_a_file_replica() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      path: /backup\n";
    assert!(errors(yaml).is_empty(), "{:?}", errors(yaml));
    let none = "dbs:\n  - path: /data/app.db\n    replica:\n      sync-interval: 1s\n";
    assert!(
        errors(none)[0].starts_with("dbs[0].replica.path: is missing"),
        "{:?}",
        errors(none)
    );
}

#[test]
fn yaml_1_1_booleans_and_octal_are_read_as_litestream_reads_them() {
    let yaml = "socket:\n  enabled: yes\n  path: /tmp/l.sock\n  permissions: 0600\ndbs:\n  - dir: /data\n    pattern: \"*.db\"\n    recursive: on\n    watch: y\n    replica: {path: /backup}\n";
    let r = check(yaml, Strictness::Strict);
    assert!(
        r.errors.is_empty() && r.warnings.is_empty(),
        "{:?} {:?}",
        r.errors,
        r.warnings
    );
    assert!(r.facts.socket.unwrap().enabled);
    // `watch: yes` is true to litestream, which refuses it on a `path` database.
    let watch = "dbs:\n  - path: /a.db\n    watch: yes\n    replica: {path: /b}\n";
    assert!(
        errors(watch)[0].starts_with("dbs[0].watch:"),
        "{:?}",
        errors(watch)
    );
    // Quoted, it is text: litestream refuses it for a boolean.
    let quoted =
        "dbs:\n  - dir: /d\n    pattern: \"*.db\"\n    watch: \"true\"\n    replica: {path: /b}\n";
    assert!(
        errors(quoted)[0].contains("drop the quotes"),
        "{:?}",
        errors(quoted)
    );
    let decimal =
        "socket: {enabled: true, permissions: 600}\ndbs:\n  - {path: /a, replica: {path: /b}}\n";
    assert!(
        warnings(decimal)[0].starts_with("socket.permissions:"),
        "{:?}",
        warnings(decimal)
    );
}

#[test]
fn merge_keys_resolve_with_explicit_keys_after_the_merge_winning() {
    let yaml = "x-s3: &s3\n  type: s3\n  bucket: shared\n  sync-interval: 10s\ndbs:\n  - path: /a.db\n    replica:\n      <<: *s3\n      sync-interval: 1s\n";
    let r = check(yaml, Strictness::Strict);
    // The anchor's holder is a template, not an unknown key, even with --strict.
    assert!(
        r.errors.is_empty() && r.warnings.is_empty(),
        "{:?} {:?}",
        r.errors,
        r.warnings
    );
    // What litestream uses: the replica's own 1s, not the template's 10s.
    assert_eq!(r.facts.sync_interval, Some(Duration::from_secs(1)));
    let doc = document::parse(yaml).unwrap().root.unwrap();
    let replica = doc.get("dbs").unwrap().as_seq().unwrap()[0]
        .get("replica")
        .unwrap();
    assert_eq!(replica.get("sync-interval").unwrap().text(), Some("1s"));
    assert_eq!(replica.get("bucket").unwrap().text(), Some("shared"));
}

#[test]
fn a_key_before_the_merge_loses_to_it_as_in_litestream() {
    // yaml.v2 applies keys in order: the merged `type: gs` (no bucket) replaces `type: file`.
    let yaml = "x-gs: &gs {type: gs, sync-interval: 5s}\ndbs:\n  - path: /a.db\n    replica:\n      type: file\n      path: /b\n      <<: *gs\n";
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("dbs[0].replica.bucket: is missing")),
        "{errs:?}"
    );
    assert!(
        warnings(yaml)[0].starts_with("dbs[0].replica.type: is set at line 5"),
        "{:?}",
        warnings(yaml)
    );
}

#[test]
fn a_dollar_in_a_secret_is_the_secret() {
    let yaml = "dbs:\n  - path: /a.db\n    replica:\n      url: sftp://backup@host/db\n      password: \"pa$$w0rd$ecret\"\n";
    assert!(errors(yaml).is_empty(), "{:?}", errors(yaml));
    let placeholder = "dbs:\n  - path: /a.db\n    replica:\n      url: sftp://backup@host/db\n      password: ${SFTP_PASSWORD}\n";
    let errs = errors(placeholder);
    assert!(
        errs[0].starts_with("dbs[0].replica.password: the value is shaped like"),
        "{errs:?}"
    );
    assert!(!errs[0].contains("SFTP_PASSWORD"), "{errs:?}");
    let path = "dbs:\n  - path: $HOME/a.db\n    replica: {path: /b}\n";
    assert!(
        errors(path)[0].starts_with("dbs[0].path: `$HOME` is shaped like"),
        "{:?}",
        errors(path)
    );
}

#[test]
fn litestream_rejections_are_mirrored() {
    let db = "dbs:\n  - path: /a.db\n    replica: {path: /b}\n";
    let cases: &[(&str, &str)] = &[
        ("sync-interval: 0s\n", "sync-interval:"),
        ("heartbeat-interval: 5s\n", "heartbeat-interval:"),
        ("heartbeat-url: ftp://x\n", "heartbeat-url:"),
        ("snapshot: {interval: 0s}\n", "snapshot.interval:"),
        (
            "l0-retention-check-interval: 0s\n",
            "l0-retention-check-interval:",
        ),
        ("levels: [{interval: 5m}, {}]\n", "levels[1].interval:"),
        ("age: {recipients: [age1x]}\n", "age:"),
        ("logging: {type: colour}\n", "logging.type:"),
        ("addr: localhost\n", "addr:"),
        (
            "bucket: shared\ndbs:\n  - path: /b.db\n    replica: {url: s3://mine/b}\n",
            "dbs[0].replica.url:",
        ),
    ];
    for (extra, key) in cases {
        let yaml = if extra.contains("dbs:") {
            extra.to_string()
        } else {
            format!("{extra}{db}")
        };
        let errs = errors(&yaml);
        assert!(
            errs.iter().any(|e| e.starts_with(key)),
            "{yaml:?}: expected {key}, got {errs:?}"
        );
    }
    assert!(errors(&format!(
        "l0-retention: 0s\nshutdown-sync-timeout: 0s\nlogging: {{type: pretty}}\n{db}"
    ))
    .is_empty());
}

#[test]
fn each_rule_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("dbs: []\n", "dbs:"),
        ("dbs:\n  - replica: {type: file, path: /b}\n", "dbs[0].path:"),
        ("dbs:\n  - {path: /a, dir: /d, replica: {type: file, path: /b}}\n", "dbs[0]: has both"),
        ("dbs:\n  - {dir: /d, replica: {type: file, path: /b}}\n", "dbs[0].pattern:"),
        ("dbs:\n  - {path: /a}\n", "dbs[0].replica:"),
        ("dbs:\n  - path: /a\n    replica:\n", "dbs[0].replica:"),
        ("dbs:\n  - path: /a\n    path: /b\n    replica: {type: file, path: /b}\n", "(root): duplicate key"),
        ("dbs:\n  - {path: /a, replica: {type: ftp}}\n", "dbs[0].replica.type:"),
        ("dbs:\n  - {path: /a, replica: {url: ftp://h/x}}\n", "dbs[0].replica.url:"),
        ("dbs:\n  - {path: /a, replica: {type: s3}}\n", "dbs[0].replica.bucket:"),
        ("dbs:\n  - {path: /a, replica: {path: s3://b/x}}\n", "dbs[0].replica.path:"),
        ("dbs:\n  - {path: /a, replica: {url: file:///b, path: /c}}\n", "dbs[0].replica.url:"),
        ("dbs:\n  - {path: /a, replica: {url: sftp://host/x}}\n", "dbs[0].replica.user:"),
        ("dbs:\n  - {path: /a, meta-dir: /m, replica: {path: /b}}\n", "dbs[0].meta-dir:"),
        ("dbs:\n  - {path: /a, busy-timeout: soon, replica: {path: /b}}\n", "dbs[0].busy-timeout:"),
        ("dbs:\n  - {path: /a, truncate-page-n: \"100\", replica: {path: /b}}\n", "dbs[0].truncate-page-n:"),
        ("dbs:\n  - {path: /a, replica: {path: /b, part-size: lots}}\n", "dbs[0].replica.part-size:"),
        ("dbs:\n  - {path: [/a], replica: {path: /b}}\n", "dbs[0].path:"),
        ("dbs:\n  -\n  - {path: /a, replica: {path: /b}}\n", "dbs[0]:"),
        ("dbs:\n  - {path: /a, replicas: [~]}\n", "dbs[0].replicas[0]:"),
        ("dbs:\n  - {path: /a, snapshot: {interval: 1h}, replica: {path: /b}}\n  - {path: /c, snapshot: {interval: 2h}, replica: {path: /d}}\n", "dbs[1].snapshot.interval:"),
        ("dbs:\n  - {path: /a, replicas: [{type: file, path: /b}, {type: file, path: /c}]}\n", "dbs[0].replicas:"),
        ("dbs:\n  - {path: /a, replica: {type: file, path: /b, sync-interval: 10}}\n", "dbs[0].replica.sync-interval:"),
        ("logging: {level: loud}\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "logging.level:"),
        ("logging: {type: xml}\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "logging.type:"),
        ("dbs:\n  - {path: $HOME/a, replica: {type: file, path: /b}}\n", "dbs[0].path:"),
        ("exec: myapp\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "exec:"),
        ("mcp-addr: ':3001'\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "mcp-addr:"),
    ];
    for (yaml, key) in cases {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.starts_with(key)),
            "{yaml:?}: expected {key}, got {errs:?}"
        );
    }
}

#[test]
fn unknown_keys_warn_or_fail() {
    let yaml = format!("{GOOD}    sync-intervall: 1s\n");
    let lenient = check(&yaml, Strictness::Lenient);
    assert!(lenient.errors.is_empty());
    assert_eq!(lenient.warnings[0].key, "dbs[0].sync-intervall");
    assert_eq!(
        check(&yaml, Strictness::Strict).errors[0].key,
        "dbs[0].sync-intervall"
    );
}

#[test]
fn byte_sizes_as_go_humanize_reads_them() {
    assert_eq!(parse_byte_size("5MB"), Some(5_000_000));
    assert_eq!(parse_byte_size("5 MiB"), Some(5 * 1024 * 1024));
    assert_eq!(parse_byte_size("8m"), Some(8_000_000));
    assert_eq!(parse_byte_size("1024"), Some(1024));
    assert_eq!(parse_byte_size("1.5k"), Some(1500));
    assert_eq!(parse_byte_size("lots"), None);
    assert_eq!(parse_byte_size("5 ib"), None);
}

#[test]
fn public_addr_warns() {
    let yaml = format!("addr: ':9090'\n{GOOD}");
    assert_eq!(check(&yaml, Strictness::Lenient).warnings[0].key, "addr");
    let yaml = format!("addr: '127.0.0.1:9090'\n{GOOD}");
    assert!(check(&yaml, Strictness::Lenient).warnings.is_empty());
}
