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
//! Modules, in the order the data flows (store -> config -> the litestream binary -> the
//! supervisor -> status and health), then the one-off operations and the host side:
//! - [`Error`] and its exit classes (`error`), time helpers (`timestamps`);
//! - [`store`]: the encrypted `app_config` store (save, load, list, rollback, rekey); [`keys`]: age key
//!   files and the encryption;
//! - [`config`]: the litestream config: read as litestream reads YAML, every rule, the facts;
//! - the litestream binary: [`binary`] (finding it, its version, the environment it gets),
//!   `render` (the user's bytes plus the injected control socket), [`handoff`] (memfd or a
//!   private file), `oneshot` (one-off commands), [`control`] (its control socket),
//!   [`child_logs`] (its log lines);
//! - [`runtime`] (the private per-database directory), `lock` (the single-instance guard),
//!   [`running`] (a supervisor found from another process), `wal_guard` (the read transaction
//!   that keeps the WAL whole while no litestream runs);
//! - [`supervisor`]: the [`Litestream`] daemon: start, restart with [`backoff`], reload, stop,
//!   status; [`status`]: the published [`Status`] and its health; [`health`]: the HTTP
//!   endpoints (or [`health::answer`] and [`health::metrics`] to mount them), [`metrics`] (the
//!   status in Prometheus' text format), systemd notifications and [`journal`] (journald's
//!   priority prefixes);
//! - read replicas ([`follow`]) and `run -- APP` ([`entrypoint`], with [`reaper`] as PID 1);
//! - one-off operations: [`init`], [`check`] (litestream's own verdict), [`restore`] (and the
//!   fresh-database guard), [`verify`], [`doctor`], [`pragmas`], [`diff`] and [`edit`] (the
//!   config's `diff` and `edit` commands);
//! - `framework_logs` (feature `cli`): JSON log lines and the SQLite `logs` sink for binaries.
//!
//! [litestream]: https://litestream.io

mod error;
mod timestamps;

pub mod keys;
pub mod store;

pub mod config;

pub mod upstream;
pub use upstream::{binary, child_logs, control, handoff};
pub(crate) use upstream::{oneshot, render};
#[doc(hidden)] // the redactor is internal; public only for the property tests
pub mod redact;

pub(crate) mod lock;
pub mod runtime;
mod wal_guard;

pub mod backoff;
pub mod health;
pub mod journal;
pub mod metrics;
pub mod status;
pub mod supervisor;

pub mod entrypoint;
pub mod follow;
pub mod reaper;

pub mod ops;
pub(crate) use ops::content;
pub use ops::{check, diff, doctor, edit, init, pragmas, restore, running, verify};

#[cfg(feature = "cli")]
pub mod framework_logs;

pub use config::{LitestreamConfig, Problem, Strictness};
pub use error::{Error, Result};
pub use status::{State, Status};
pub use store::{CheckedSave, ConfigStore, Generation, StoredConfig, DEFAULT_SCOPE};
pub use supervisor::{
    Daemon, FollowSource, Litestream, Options, ReloadHandle, ReloadOutcome, ReloadSource, Role,
    StopHandle,
};
