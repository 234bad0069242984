//! Read replicas on other machines: a follower keeps a read-only copy of a database up to date
//! from its replica (`litestream restore -f`), supervised like `replicate` (restart with backoff,
//! stop, status). Readers must open the copy read-only.
//!
//! A follower never deletes or overwrites a file it did not create. Before it starts,
//! [`check_output`] accepts the output path only when nothing is there, or when what is there is
//! provably a copy a follower made:
//! - our marker `OUTPUT-rip-follower` ([`marker_path`]) names the copy's file (its inode and,
//!   where the file system records it, its birth time: an inode number alone is reused at once
//!   by the next file created), and the file at the output is that one. A follower writes the
//!   marker as soon as a copy appears at its output ([`mark_copies`]), and again after a fresh
//!   restore (a new file). litestream applies updates to the copy in place: the file stays the
//!   same while it follows. A copy moved to another file system or restored from a file backup
//!   is a new file: it is refused until its marker is removed (then the next rule applies);
//! - without a marker (a copy made before markers existed), litestream's own `OUTPUT-txid`
//!   beside it, holding a transaction id: only `litestream restore -f` writes that file.
//!
//! Anything else (an unrelated database, a text file, the primary's own database, a copy
//! replaced since its marker was written) is refused with [`Error::Usage`] and left untouched.
//! The [`Follower`] constructors check the output; `rip-litestream follow` also checks it before
//! it opens the config store, and runs [`mark_copies`] beside the daemon (a host application can
//! do the same; without markers, its copies are recognised by their `-txid`). [`remove_copy`],
//! the fresh restore litestream asks for when it cannot resume a copy, checks the same proof
//! again before it deletes anything.
//!
//! A follower that cannot start (no backup in the replica yet, no credentials, an argument
//! litestream refuses) gives up after [`START_ATTEMPTS`] exits of litestream without ever being
//! ready ([`never_ready`]), unless told to keep retrying.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{DbTarget, LitestreamConfig, Strictness};
use crate::error::{Error, Result};
use crate::status::{ExitInfo, Status};
pub(crate) use crate::supervisor::role::mark;
pub use crate::supervisor::role::{
    check_output, follower_status, is_follower_copy, marker_path, output_opens, remove_copy,
};
use crate::supervisor::{FollowSource, Litestream, Options, Role};

/// A supervised `litestream restore -f`: a [`Litestream`] daemon in the follow role.
pub struct Follower;

impl Follower {
    /// Follows the replica of `db`, a `path` database of `config` ([`check_source`]; settings
    /// and credentials from the stored config), into `output` ([`check_output`]).
    pub fn from_config(
        config: LitestreamConfig,
        db: PathBuf,
        output: PathBuf,
        interval: Option<String>,
        options: Options,
    ) -> Result<Litestream> {
        check_source(&config, &db)?;
        check_output(&output)?;
        Ok(Litestream::new(
            config,
            Options {
                role: Role::Follow {
                    source: FollowSource::Db(db),
                    output,
                    interval,
                },
                ..options
            },
        ))
    }

    /// Follows the replica at `url` into `output` ([`check_output`]).
    pub fn from_url(
        url: String,
        output: PathBuf,
        interval: Option<String>,
        options: Options,
    ) -> Result<Litestream> {
        check_output(&output)?;
        // Only the daemon's bookkeeping reads this config; litestream gets the URL itself.
        let yaml = format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {}\n",
            crate::config::yaml_quote(&output.to_string_lossy()),
            crate::config::yaml_quote(&url)
        );
        let config = LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient)?;
        Ok(Litestream::new(
            config,
            Options {
                role: Role::Follow {
                    source: FollowSource::Url(url),
                    output,
                    interval,
                },
                ..options
            },
        ))
    }
}

/// How many times litestream may exit before a follower that was never ready gives up (without
/// `--keep-retrying`).
pub const START_ATTEMPTS: u32 = 5;

/// Runs beside a follower: once its litestream was spawned (the output's lock is held), marks
/// every copy that appears at `output` ([`marker_path`]), looking every 100 ms. Ends when the
/// status channel closes.
pub async fn mark_copies(output: PathBuf, mut status: watch::Receiver<Status>) {
    while status.borrow_and_update().pid.is_none() {
        if status.changed().await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if status.has_changed().is_err() {
            return;
        }
        mark(&output);
    }
}

/// Resolves with the last exit once litestream has exited `attempts` times without ever being
/// ready; never resolves once it has been ready.
pub async fn never_ready(mut status: watch::Receiver<Status>, attempts: u32) -> ExitInfo {
    let mut seen: Option<(u32, SystemTime)> = None;
    let mut exits = 0u32;
    loop {
        {
            let s = status.borrow_and_update();
            if s.ready_since.is_some() {
                break;
            }
            if let Some(e) = &s.last_exit {
                if seen != Some((e.pid, e.at)) {
                    seen = Some((e.pid, e.at));
                    exits += 1;
                    if exits >= attempts {
                        return e.clone();
                    }
                }
            }
        }
        if status.changed().await.is_err() {
            break;
        }
    }
    std::future::pending().await
}

/// A follower follows one `path` database of the config: `db` (as picked from the config) must
/// be one, not a file of a `dir` database.
pub fn check_source(config: &LitestreamConfig, db: &Path) -> Result<()> {
    let is_path = config
        .dbs()
        .iter()
        .any(|d| matches!(d, DbTarget::Path(p) if p == db));
    if is_path {
        return Ok(());
    }
    let abs = |p: &Path| crate::runtime::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = config.dbs().iter().find_map(|d| match d {
        DbTarget::Dir { dir, .. } if abs(db).starts_with(abs(dir)) => {
            Some(dir.display().to_string())
        }
        _ => None,
    });
    Err(Error::Usage(match dir {
        Some(dir) => format!(
            "{} belongs to the `dir:` database {dir} of the stored config: a follower follows one `path:` database (litestream restore -f cannot follow a directory); follow its replica by URL instead: the `dir:` replica's URL followed by the database's path inside {dir} (follow -o PATH REPLICA_URL/NAME)",
            db.display()
        ),
        None => format!("{} is not a `path:` database of the stored config", db.display()),
    }))
}
