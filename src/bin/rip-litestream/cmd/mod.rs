//! One module per command, and what several of them share: the stored config, the database a
//! command acts on, a running supervisor's control socket.

pub(crate) mod config;
pub(crate) mod doctor;
pub(crate) mod follow;
pub(crate) mod keys;
pub(crate) mod restore;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod verify;

use std::path::{Path, PathBuf};

use restinpieces_litestream::config::DbTarget;
use restinpieces_litestream::control::ControlClient;
use restinpieces_litestream::{
    lock, render, runtime, ConfigStore, Error, LitestreamConfig, Strictness,
};

use crate::args::{need, Global};

/// The stored config (generation 0), validated, with its warnings logged.
pub(crate) fn load_config(g: &Global) -> Result<(LitestreamConfig, i64), Error> {
    let db = need(&g.db, "db")?;
    let key = need(&g.age_key, "key")?;
    let stored = ConfigStore::open(db, key)?.load(&g.scope, 0)?;
    let config = LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient)?;
    config.log_warnings();
    Ok((config, stored.id))
}

/// The database of the config that `arg` names (or the only one when `arg` is absent).
pub(crate) fn pick_db(config: &LitestreamConfig, arg: Option<&Path>) -> Result<PathBuf, Error> {
    let paths: Vec<&PathBuf> = config
        .dbs()
        .iter()
        .filter_map(|d| match d {
            DbTarget::Path(p) => Some(p),
            DbTarget::Dir { .. } => None,
        })
        .collect();
    let listed = || {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match arg {
        None if paths.len() == 1 => Ok(paths[0].clone()),
        None => Err(Error::Usage(format!(
            "name the database: the config replicates {}",
            listed()
        ))),
        Some(a) => {
            let want = runtime::absolute(a)?;
            let in_dir = config.dbs().iter().any(|d| {
                matches!(d, DbTarget::Dir { dir, .. } if runtime::absolute(dir).is_ok_and(|d| want.starts_with(d)))
            });
            paths
                .iter()
                .find(|p| runtime::absolute(p).is_ok_and(|p| p == want))
                .map(|p| (*p).clone())
                .or_else(|| in_dir.then(|| a.to_path_buf()))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} is not in the stored config (it replicates {})",
                        a.display(),
                        listed()
                    ))
                })
        }
    }
}

/// A private directory for handoffs of one-off commands.
pub(crate) fn private_base() -> Result<PathBuf, Error> {
    let base = runtime::base_dir();
    runtime::ensure_private_dir(&base)?;
    Ok(base)
}

/// The control socket of a supervisor running for the store `--db`, when one runs.
pub(crate) fn running_control(g: &Global, config: &LitestreamConfig) -> Option<ControlClient> {
    let store = g.db.as_deref()?;
    let dir = runtime::RuntimeDir::path_for(store).ok()?;
    lock::holder(&dir.join("lock"))?;
    let rendered = render::render(config, &dir.join("control.sock"));
    rendered
        .socket
        .filter(|s| s.exists())
        .map(ControlClient::new)
}
