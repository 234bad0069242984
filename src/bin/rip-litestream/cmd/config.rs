//! `config save|show|list|check|rollback|diff|rekey` (`edit` in `config_edit`).

use std::io::{Read, Write};
use std::path::Path;

use restinpieces_litestream::{
    binary, check, runtime, ConfigStore, Error, LitestreamConfig, Problem, Strictness,
};

use crate::args::{need, strictness, ConfigCommand, Global, SaveArgs};
use crate::cmd::print_json;
use crate::daemon::block_on;

pub(crate) fn config_command(g: &Global, cmd: ConfigCommand) -> Result<u8, Error> {
    let db = need(&g.db, "db")?;
    let key = need(&g.age_key, "key")?;
    match cmd {
        ConfigCommand::Save {
            file,
            format,
            description,
            strict,
            save,
        } => {
            let bytes = read_input(&file)?;
            let format =
                format.unwrap_or_else(|| match file.extension().and_then(|e| e.to_str()) {
                    Some("yaml") => "yaml".into(),
                    _ => "yml".into(),
                });
            let config = parse_redacted(&bytes, strictness(strict))?;
            config.log_warnings();
            let store =
                save.store(ConfigStore::open_or_create(db, key)?.encrypt_to(g.recipients()));
            save.litestream_accepts(&bytes)?;
            let id = store.save(&g.scope, &bytes, &format, &description)?;
            say_saved(&store, &g.scope, id, "saved")
        }
        ConfigCommand::Show { generation } => {
            let stored = ConfigStore::open(db, key)?.load(&g.scope, generation)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&stored.plaintext)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("cannot write", "stdout", e))?;
            Ok(0)
        }
        ConfigCommand::List { json } => list(&ConfigStore::open(db, key)?, &g.scope, json),
        ConfigCommand::Check {
            generation,
            strict,
            litestream,
            json,
        } => {
            let store = ConfigStore::open(db, key)?;
            let bin = litestream.as_deref();
            check_generation(&store, &g.scope, generation, strict, bin, json)
        }
        ConfigCommand::Rollback { generation, save } => {
            let store = save.store(ConfigStore::open(db, key)?.encrypt_to(g.recipients()));
            let stored = store.load(&g.scope, generation)?;
            parse_redacted(&stored.plaintext, Strictness::Lenient)?.log_warnings();
            save.litestream_accepts(&stored.plaintext)?;
            let id = store.rollback_checked(&g.scope, generation, stored.id)?;
            say_saved(
                &store,
                &g.scope,
                id,
                &format!("generation {generation} saved again"),
            )
        }
        ConfigCommand::Edit {
            description,
            strict,
            save,
        } => {
            let store = save.store(ConfigStore::open(db, key)?.encrypt_to(g.recipients()));
            super::config_edit::edit(&store, &g.scope, &description, strict, &save)
        }
        ConfigCommand::Diff { a, b } => diff(&ConfigStore::open(db, key)?, &g.scope, a, b),
        ConfigCommand::Rekey { new_key } => {
            let store = ConfigStore::open(db, key)?.encrypt_to(g.recipients());
            let count = store.rekey(&g.scope, &new_key)?;
            say!(
                "re-encrypted {count} generation(s) of `{}` in {} to the key in {} (ids, dates and descriptions kept; {} is unchanged)",
                g.scope,
                store.db_path().display(),
                new_key.display(),
                key.display()
            );
            // The rekey is committed: a failure to look at the other scopes is only warned of.
            let others = store
                .other_scopes_under_this_key(&g.scope)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot tell whether other scopes still need the old key: check them with `config list --scope`");
                    Vec::new()
                });
            if others.is_empty() {
                say!(
                    "now pass --age-key {} (RIP_AGE_KEY) everywhere this store is read: supervisors, restinpieces, scripts; {} no longer opens it",
                    new_key.display(),
                    key.display()
                );
                return Ok(0);
            }
            let list: Vec<String> = others
                .iter()
                .map(|(scope, n)| format!("`{scope}` ({n} row(s))"))
                .collect();
            tracing::warn!(
                scopes = %list.join(", "),
                "other scopes of this store are still encrypted to the old key, and restinpieces reads its own config with the same key file"
            );
            say!(
                "other scopes are still under the old key {}: {}; do not replace it by {} alone: give readers a key file holding the new identity first and the old one after it (`cat {} {} > both.key`), or rekey those scopes too (--scope)",
                key.display(),
                list.join(", "),
                new_key.display(),
                new_key.display(),
                key.display()
            );
            Ok(0)
        }
    }
}

/// `config diff A B`: a unified diff of generation A to B, secrets masked; 0 equal, 1 not.
fn diff(store: &ConfigStore, scope: &str, a: u32, b: u32) -> Result<u8, Error> {
    let (old, new) = (store.load(scope, a)?, store.load(scope, b)?);
    let label = |s: &restinpieces_litestream::StoredConfig| {
        format!(
            "generation {} (id {}, {})",
            s.generation, s.id, s.created_at
        )
    };
    let text = |s: &restinpieces_litestream::StoredConfig| {
        zeroize::Zeroizing::new(String::from_utf8_lossy(&s.plaintext).into_owned())
    };
    let (old_text, new_text) = (text(&old), text(&new));
    let Some(out) = restinpieces_litestream::diff::masked_diff(
        &old_text,
        &new_text,
        &label(&old),
        &label(&new),
    ) else {
        say!("generations {a} and {b} of `{scope}` are the same config");
        return Ok(0);
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|e| Error::io("cannot write", "stdout", e))?;
    Ok(1)
}

/// `config list`: a line (or a JSON object) per generation, newest first.
fn list(store: &ConfigStore, scope: &str, json: bool) -> Result<u8, Error> {
    let rows = store.list(scope)?;
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        say!(
            "no config saved for scope `{scope}` in {}",
            store.db_path().display()
        );
    }
    for r in rows {
        let line = if json {
            serde_json::to_string(&r).expect("plain struct serialises")
        } else {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.generation,
                r.id,
                r.created_at,
                r.format,
                r.recipient
                    .as_deref()
                    .unwrap_or("not decryptable with this key"),
                r.description
            )
        };
        writeln!(out, "{line}").map_err(|e| Error::io("cannot write", "stdout", e))?;
    }
    Ok(0)
}

/// `config check`: our verdict, then litestream's own parser when it is found; exit 2 when
/// either rejects the generation. With `json`, the verdict is one JSON object on stdout.
fn check_generation(
    store: &ConfigStore,
    scope: &str,
    generation: u32,
    strict: bool,
    litestream: Option<&Path>,
    json: bool,
) -> Result<u8, Error> {
    let stored = store.load(scope, generation)?;
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    let ours = match parse_redacted(&stored.plaintext, strictness(strict)) {
        Ok(config) => {
            config.log_warnings();
            warnings.extend(config.warnings().iter().cloned());
            format!("valid ({} warning(s))", warnings.len())
        }
        Err(e) => {
            match &e {
                Error::InvalidConfig(problems) => errors.clone_from(problems),
                _ => errors.push(Problem {
                    key: "(root)".into(),
                    message: e.to_string(),
                }),
            }
            e.to_string()
        }
    };
    let mut ok = errors.is_empty();
    if !json {
        println!("rip-litestream: {ours}");
    }
    let mut verdict = serde_json::json!({
        "scope": scope,
        "generation": generation,
        "id": stored.id,
    });
    match binary::locate(litestream).and_then(|path| binary::find(Some(&path))) {
        Ok(bin) => {
            let base = runtime::private_base()?;
            let answer = block_on(check::ask_litestream(&bin, &stored.plaintext, &base))?;
            ok &= answer.accepted;
            let word = if answer.accepted {
                "accepted"
            } else {
                "rejected"
            };
            if !json {
                println!("litestream {}: {word}", bin.version);
                for line in answer.output.lines() {
                    println!("  {line}");
                }
            }
            verdict["litestream"] = word.into();
            verdict["litestream_version"] = bin.version.into();
            verdict["litestream_output"] = answer.output.trim().into();
        }
        Err(e) => {
            if !json {
                println!("litestream: not asked ({e})");
            }
            let found = binary::locate(litestream).is_ok();
            verdict["litestream"] = if found { "unusable" } else { "not found" }.into();
            verdict["litestream_error"] = e.to_string().into();
        }
    }
    if json {
        let list = |problems: &[Problem]| -> Vec<serde_json::Value> {
            problems
                .iter()
                .map(|p| serde_json::json!({"key": p.key, "message": p.message}))
                .collect()
        };
        verdict["valid"] = ok.into();
        verdict["warnings"] = list(&warnings).into();
        verdict["errors"] = list(&errors).into();
        print_json(&verdict);
    }
    if ok {
        Ok(0)
    } else {
        say!("error: generation {generation} of `{scope}` is not a valid litestream config: fix it and `config save` it again");
        Ok(2)
    }
}

/// [`LitestreamConfig::parse`], its problems redacted: a secret pasted under the wrong key
/// (`sync-interval: <the secret key>`) is not echoed in the message that rejects it.
pub(crate) fn parse_redacted(
    yaml: &[u8],
    strictness: Strictness,
) -> Result<LitestreamConfig, Error> {
    LitestreamConfig::parse(yaml, strictness).map_err(|e| match e {
        Error::InvalidConfig(problems) => {
            let redactor = restinpieces_litestream::redact::Redactor::from_yaml(
                &String::from_utf8_lossy(yaml),
            );
            Error::InvalidConfig(
                problems
                    .into_iter()
                    .map(|p| Problem {
                        message: redactor.redact(&p.message).into_owned(),
                        key: p.key,
                    })
                    .collect(),
            )
        }
        other => other,
    })
}

impl SaveArgs {
    fn store(&self, store: ConfigStore) -> ConfigStore {
        if self.new_key {
            store.allow_new_key()
        } else {
            store
        }
    }

    /// Asks the real litestream (`databases -no-expand-env`) whether it accepts `yaml`; its
    /// refusal is ours (exit 2), so no generation it rejects reaches a running supervisor.
    fn litestream_accepts(&self, yaml: &[u8]) -> Result<(), Error> {
        let Some(bin) = self.checker()? else {
            return Ok(());
        };
        match block_on(litestream_refusal(&bin, yaml))? {
            None => Ok(()),
            Some(refusal) => Err(Error::Usage(format!(
                "{refusal}\nfix it and save again (or --no-check to save anyway)"
            ))),
        }
    }

    /// The litestream to ask, or `None` with --no-check (warned about).
    pub(crate) fn checker(&self) -> Result<Option<binary::LitestreamBinary>, Error> {
        if self.no_check {
            tracing::warn!("saving without asking litestream (--no-check): a running supervisor keeps its litestream if litestream rejects this generation");
            return Ok(None);
        }
        binary::find(self.litestream.as_deref()).map(Some).map_err(|e| {
            Error::Usage(format!(
                "cannot ask litestream whether it accepts this config ({e}); pass --litestream PATH, or --no-check to save without asking"
            ))
        })
    }
}

/// What litestream says against `yaml` (`None`: it accepts it).
pub(crate) async fn litestream_refusal(
    bin: &binary::LitestreamBinary,
    yaml: &[u8],
) -> Result<Option<String>, Error> {
    let base = runtime::private_base()?;
    let verdict = check::ask_litestream(bin, yaml, &base).await?;
    if verdict.accepted {
        return Ok(None);
    }
    Ok(Some(format!(
        "litestream {} rejects this config, so it was not saved:\n  {}",
        bin.version,
        verdict
            .output
            .trim()
            .lines()
            .collect::<Vec<_>>()
            .join("\n  ")
    )))
}

/// Says where the new row landed; warns when rows dated after it still come first.
pub(crate) fn say_saved(
    store: &ConfigStore,
    scope: &str,
    id: i64,
    what: &str,
) -> Result<u8, Error> {
    let db = store.db_path().display();
    if store.newest_id(scope)? == Some(id) {
        say!("{what} as the newest generation of `{scope}` in {db} (id {id})");
        return Ok(0);
    }
    // Shadowed: only now is every generation listed, to name the rows that come first.
    let rows = store.list(scope)?;
    let position = rows.iter().position(|r| r.id == id).unwrap_or(0);
    for newer in &rows[..position] {
        tracing::warn!(
            id = newer.id,
            created_at = %newer.created_at,
            "a row dated after now still comes first: generations are ordered by created_at, so it stays the newest until then; correct its created_at or delete it"
        );
    }
    say!(
        "{what} as generation {position} of `{scope}` in {db} (id {id}), NOT the newest: {} row(s) dated in the future come first",
        position
    );
    Ok(0)
}

pub(crate) fn read_input(file: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let result = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut buf).map(|_| ()))
    };
    result.map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(buf)
}
