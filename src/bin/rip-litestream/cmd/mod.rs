//! One module per command, and what several of them share: the stored config, the database a
//! command acts on, a running supervisor's control socket.

pub(crate) mod about;
pub(crate) mod config;
pub(crate) mod config_edit;
pub(crate) mod doctor;
pub(crate) mod follow;
pub(crate) mod keys;
pub(crate) mod restore;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod verify;

use restinpieces_litestream::{ConfigStore, Error, LitestreamConfig};

use crate::args::{need, Global};

/// The stored config (generation 0), validated, with its warnings logged.
pub(crate) fn load_config(g: &Global) -> Result<(LitestreamConfig, i64), Error> {
    let store = ConfigStore::open(need(&g.db, "db")?, need(&g.age_key, "key")?)?;
    let (config, id) = store.load_config(&g.scope, 0)?;
    config.log_warnings();
    Ok((config, id))
}

/// Prints `value` as one line of JSON on stdout (the whole output of a command given `--json`).
pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("plain values serialise")
    );
}
