//! Property tests (the fuzz targets): the config validation and the log-line parsing never
//! panic, whatever they are given. The default suite runs a few hundred cases each;
//! `scripts/fuzz.sh` runs many more for a bounded time.

use proptest::prelude::*;
use restinpieces_litestream::child_logs::{line_level, split_line};
use restinpieces_litestream::redact::Redactor;
use restinpieces_litestream::{LitestreamConfig, Strictness};

/// YAML-ish text built from the pieces a litestream config is made of.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "dbs",
        "path",
        "dir",
        "pattern",
        "replica",
        "replicas",
        "type",
        "url",
        "sync-interval",
        "logging",
        "level",
        "socket",
        "enabled",
        "exec",
        "mcp-addr",
        "addr",
        "snapshot",
        "retention",
        "password",
        "secret-access-key",
        "meta-path",
        "levels",
        "interval",
        "x",
    ]);
    let value = prop_oneof![
        Just("".to_string()),
        Just("1s".to_string()),
        Just("10".to_string()),
        Just("$HOME".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("file".to_string()),
        Just("s3://b/p".to_string()),
        Just("sftp://u:p@h/x".to_string()),
        "[ -~]{0,12}",
    ];
    let line = (0usize..4, key, prop::bool::ANY, value).prop_map(|(indent, k, dash, v)| {
        format!(
            "{}{}{k}: {v}",
            "  ".repeat(indent),
            if dash { "- " } else { "" }
        )
    });
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn validation_never_panics_on_structured_input(yaml in yamlish()) {
        for strict in [Strictness::Lenient, Strictness::Strict] {
            let _ = LitestreamConfig::parse(yaml.as_bytes(), strict);
        }
        let _ = Redactor::from_yaml(&yaml).redact(&yaml);
    }

    #[test]
    fn validation_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = LitestreamConfig::parse(&bytes, Strictness::Lenient);
        let _ = Redactor::from_yaml(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn log_line_parsing_never_panics(line in prop_oneof![
        "\\PC{0,200}",
        "time=[0-9T:.Z-]{0,30} level=[A-Z]{0,6} msg=\"[^\"]{0,20}\"( [a-z]{1,5}=(\"[^\"]{0,10}|[a-z0-9]{0,8}))*",
        "\\{\"time\":\"[^\"]{0,10}\",\"level\":\"[A-Z]{0,6}\",\"msg\":\"[^\"]{0,10}\"(,\"[a-z]{1,4}\":[0-9]{1,3})*\\}?",
    ]) {
        let _ = line_level(&line);
        let _ = split_line(&line);
    }
}
