//! Continuous SQLite backup with [litestream], its config kept age-encrypted inside the
//! application's own database.
//!
//! The `litestream.yml` lives in the `app_config` table that the Go framework restinpieces uses
//! (a database prepared by either side works with the other), encrypted to an age X25519 key.
//! This crate loads and validates it, hands it to the real `litestream` binary without leaving
//! plaintext on disk, and supervises that process.
//!
//! ```no_run
//! use restinpieces_litestream::{ConfigStore, LitestreamConfig, Strictness, DEFAULT_SCOPE};
//!
//! # fn main() -> Result<(), restinpieces_litestream::Error> {
//! let store = ConfigStore::open("app.db", "age.key")?;
//! let stored = store.load(DEFAULT_SCOPE, 0)?;
//! let config = LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient)?;
//! config.log_warnings();
//! # Ok(()) }
//! ```
//!
//! Modules:
//! - [`store`]: the encrypted `app_config` store (save, load, list, rollback);
//! - [`keys`]: age key files (read, generate);
//! - [`config`]: the litestream config model and its validation rules;
//! - [`binary`]: finding litestream and checking its version;
//! - [`handoff`]: giving the decrypted config to litestream (memfd or private file);
//! - [`runtime`]: the per-database private runtime directory;
//! - [`init`]: one-step setup (key, default config, save);
//! - [`oneshot`]: one-off litestream commands on the stored config;
//! - [`restore`]: restores (on demand and on boot) and the fresh-database guard;
//! - [`check`]: asking the real litestream's parser about a config;
//! - [`render`]: the bytes litestream reads (the user's, plus an injected control socket);
//! - [`supervisor`]: the [`Litestream`] daemon: start, restart with [`backoff`], stop, status;
//! - [`child_logs`]: litestream's log lines, kept and forwarded without blocking it;
//! - [`control`]: litestream's control-socket client;
//! - [`follow`]: read replicas (`litestream restore -f`, supervised);
//! - [`framework_logs`]: JSON log lines and the SQLite `logs` sink for the binary;
//! - [`entrypoint`]: `run -- APP`: litestream and the application side by side;
//! - [`redact`]: keeping credentials out of logs and messages;
//! - [`reaper`]: collecting orphaned zombies as PID 1;
//! - [`lock`]: the single-instance guard;
//! - [`health`]: the HTTP health endpoint and systemd notifications;
//! - [`doctor`]: checks a database for replication; [`pragmas`]: recommended connection settings;
//! - [`status`]: the published [`Status`] and its health;
//! - [`verify`]: proving a backup restorable and current;
//! - `wal_guard`: the read transaction that keeps the WAL whole while no litestream runs.
//!
//! [litestream]: https://litestream.io

pub mod backoff;
pub mod binary;
pub mod check;
pub mod child_logs;
pub mod config;
mod content;
pub mod control;
pub mod doctor;
pub mod entrypoint;
mod error;
pub mod follow;
#[cfg(feature = "cli")]
pub mod framework_logs;
pub mod handoff;
pub mod health;
pub mod init;
pub mod keys;
pub mod lock;
pub mod oneshot;
pub mod pragmas;
pub mod reaper;
pub mod redact;
pub mod render;
pub mod restore;
pub mod running;
pub mod runtime;
pub mod status;
pub mod store;
pub mod supervisor;
mod timestamps;
pub mod verify;
mod wal_guard;

pub use config::{LitestreamConfig, Problem, Strictness};
pub use error::{Error, Result};
pub use status::{State, Status};
pub use store::{ConfigStore, Generation, StoredConfig, DEFAULT_SCOPE};
pub use supervisor::{
    Daemon, FollowSource, Litestream, Options, ReloadHandle, ReloadOutcome, ReloadSource, Role,
    StopHandle,
};
