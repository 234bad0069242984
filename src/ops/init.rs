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

/// Creates `key` if missing, then saves into the store `db` a default config replicating
/// `database` (default: `db` itself) to `replica` (a URL or a local directory) as the newest
/// generation of `scope`. Refuses when the scope already has a config, unless `force`.
///
/// A `database` apart from the store is the layout for restore on boot: the store (and the key)
/// stay on the machine while the database can be restored from its replica.
pub fn init(
    db: &Path,
    database: Option<&Path>,
    key: &Path,
    scope: &str,
    replica: &str,
    force: bool,
) -> Result<InitReport> {
    init_encrypted_to(
        db,
        database,
        key,
        scope,
        replica,
        force,
        &Default::default(),
    )
}

/// [`init`], the config encrypted to `recipients` too (besides the key's own recipient).
pub fn init_encrypted_to(
    db: &Path,
    database: Option<&Path>,
    key: &Path,
    scope: &str,
    replica: &str,
    force: bool,
    recipients: &crate::keys::Recipients,
) -> Result<InitReport> {
    if replica.contains('@') && replica.contains("://") {
        return Err(Error::Usage(
            "the replica URL holds credentials: they would end up in the shell history; use `config save` with a config file that holds them".into(),
        ));
    }
    let store = ConfigStore::open_or_create(db, key)?.encrypt_to(recipients.clone());
    if !force && db.exists() && !store.list(scope)?.is_empty() {
        return Err(Error::Usage(format!(
            "{} already has a config for scope `{scope}`: edit it with `config show` + `config save`, or pass --force to save a new default",
            db.display()
        )));
    }
    let db_abs = crate::runtime::absolute(database.unwrap_or(db))?;
    if database.is_some_and(|d| d.is_dir()) {
        return Err(Error::Usage(format!(
            "{} is a directory: --database names the SQLite file to replicate",
            db_abs.display()
        )));
    }
    let replica: String = if replica.contains("://") {
        replica.to_string()
    } else {
        let abs: PathBuf =
            std::path::absolute(replica).map_err(|e| Error::io("cannot resolve", replica, e))?;
        abs.to_string_lossy().into_owned()
    };
    let yaml = default_yaml(&db_abs, &replica);
    LitestreamConfig::parse(yaml.as_bytes(), Strictness::Strict)?;
    if !key.exists() && db.exists() && !store.list(scope)?.is_empty() {
        // --force over generations of another key: a new key could not read them, and the
        // save would be refused after the key was written. Nothing is written.
        return Err(Error::Usage(format!(
            "{} already holds generations of `{scope}` encrypted to another key, and {} does not exist: pass the key the store uses with --age-key (or save with `config save --new-key` to change keys)",
            db.display(),
            key.display()
        )));
    }
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
