//! The corpus (`tests/configs/*.yml`): litestream.yml files written like real ones, each run
//! through the real litestream (`databases -no-expand-env`, as `config check` asks it) and through
//! our own validation. The two verdicts must agree, but for the few files we refuse on purpose;
//! each file's first line also says what litestream 0.5.17 does with it, so a litestream that
//! changes its mind is caught too. Every disagreement is reported at once.

use std::path::Path;
use std::process::Command;

use restinpieces_litestream::{Error, LitestreamConfig, Strictness};

use crate::support::{litestream, run_cmd};

/// Files litestream accepts and we refuse by our own policy, each with the reason.
const REFUSED_ON_PURPOSE: &[(&str, &str)] = &[
    (
        "policy-exec.yml",
        "rip-litestream is the process manager (`run -- APP`), not litestream's `exec`",
    ),
    (
        "policy-mcp-addr.yml",
        "the MCP server re-reads the config from disk and exposes control over HTTP",
    ),
    (
        "policy-placeholder-path.yml",
        "litestream runs with -no-expand-env: `$HOME` would be a directory named so",
    ),
    (
        "policy-placeholder-secret.yml",
        "the same for credentials: litestream would sign with the text `${AWS_SECRET_ACCESS_KEY}`",
    ),
    (
        "policy-bare-number-duration.yml",
        "a bare number is nanoseconds to litestream: `sync-interval: 10` is 10ns",
    ),
    (
        "policy-duplicate-key.yml",
        "litestream silently keeps the last of two equal keys",
    ),
    (
        "policy-unknown-log-level.yml",
        "litestream silently logs at INFO for a level it does not know",
    ),
    (
        "policy-addr-without-port.yml",
        "`databases` does not look at `addr`, but `replicate` refuses to start without a port",
    ),
];

/// Where corpus files point their paths: replaced by a temporary directory.
const DIR_PLACEHOLDER: &str = "__DIR__";

#[test]
fn corpus_verdicts_agree_with_litestream() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    let work = tempfile::tempdir().unwrap();
    // What `s3-sse-key-path.yml` names: litestream reads it while loading the config.
    std::fs::write(
        work.path().join("sse.key"),
        "c2VjcmV0LWtleS1mb3Itc3NlLWMtMzItYnl0ZXMhIQ==\n",
    )
    .unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 50, "only {} corpus files", files.len());
    for (name, _) in REFUSED_ON_PURPOSE {
        assert!(corpus.join(name).exists(), "{name} is listed but missing");
    }

    let mut disagreements = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let expected = match text.lines().next() {
            Some("# expect: accept") => true,
            Some("# expect: refuse") => false,
            _ => panic!("{name}: the first line must be `# expect: accept` or `# expect: refuse`"),
        };
        let yaml = text.replace(DIR_PLACEHOLDER, &work.path().to_string_lossy());
        let config = work.path().join(&name);
        std::fs::write(&config, &yaml).unwrap();

        let mut cmd = Command::new(litestream());
        cmd.args(["databases", "-no-expand-env", "-config"])
            .arg(&config)
            .current_dir(work.path())
            .env_remove("LOG_LEVEL");
        let run = run_cmd(cmd);
        let theirs = run.output.status.success();
        let said = format!("{}{}", run.stdout(), run.stderr());
        let ours = match LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient) {
            Ok(_) => Vec::new(),
            Err(Error::InvalidConfig(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        };
        let verdict = |accepted: bool| if accepted { "accepts" } else { "refuses" };
        let mut disagree = |why: String| {
            disagreements.push(format!(
                "{name}: {why}\n  litestream (exit {}): {}\n  ours: {}",
                run.code(),
                said.trim().replace('\n', "\n    "),
                if ours.is_empty() {
                    "accepted".to_string()
                } else {
                    ours.join("\n    ")
                },
            ))
        };
        if theirs != expected {
            disagree(format!(
                "the file says litestream {}, it {}",
                verdict(expected),
                verdict(theirs)
            ));
        }
        match REFUSED_ON_PURPOSE.iter().find(|(n, _)| *n == name) {
            Some((_, reason)) if !theirs || ours.is_empty() => disagree(format!(
                "listed as refused on purpose ({reason}), but litestream {} and we {}",
                verdict(theirs),
                verdict(ours.is_empty())
            )),
            Some(_) => {}
            None if theirs != ours.is_empty() => disagree(format!(
                "litestream {} it, we {} it",
                verdict(theirs),
                verdict(ours.is_empty())
            )),
            None => {}
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} corpus files disagree:\n\n{}",
        disagreements.len(),
        files.len(),
        disagreements.join("\n\n")
    );
}
