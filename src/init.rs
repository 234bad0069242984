//! One-step setup: a key when missing, a default config for the database, validated and saved.

use std::path::{Path, PathBuf};

use crate::config::{default_yaml, LitestreamConfig, Strictness};
use crate::error::{Error, Result};
use crate::store::ConfigStore;

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// True when a new key file was written.
    pub key_created: bool,
    /// The new config's row id.
    pub id: i64,
    /// The config that was saved (no secrets: it names paths and a replica URL).
    pub yaml: String,
}

/// Creates `key` if missing, then saves a default config replicating `db` to `replica` (a URL or
/// a local directory) as the newest generation of `scope`. Refuses when the scope already has a
/// config, unless `force`.
pub fn init(db: &Path, key: &Path, scope: &str, replica: &str, force: bool) -> Result<InitReport> {
    if replica.contains('@') && replica.contains("://") {
        return Err(Error::Usage(
            "the replica URL holds credentials: they would end up in the shell history; use `config save` with a config file that holds them".into(),
        ));
    }
    let store = ConfigStore::open_or_create(db, key)?;
    if !force && db.exists() && !store.list(scope)?.is_empty() {
        return Err(Error::Usage(format!(
            "{} already has a config for scope `{scope}`: edit it with `config show` + `config save`, or pass --force to save a new default",
            db.display()
        )));
    }
    let db_abs = crate::runtime::absolute(db)?;
    let replica: String = if replica.contains("://") {
        replica.to_string()
    } else {
        let abs: PathBuf =
            std::path::absolute(replica).map_err(|e| Error::io("cannot resolve", replica, e))?;
        abs.to_string_lossy().into_owned()
    };
    let yaml = default_yaml(&db_abs, &replica);
    LitestreamConfig::parse(yaml.as_bytes(), Strictness::Strict)?;
    let key_created = if key.exists() {
        false
    } else {
        crate::keys::generate(key)?;
        true
    };
    let id = store.save(
        scope,
        yaml.as_bytes(),
        "yml",
        "default config from rip-litestream init",
    )?;
    Ok(InitReport {
        key_created,
        id,
        yaml,
    })
}
