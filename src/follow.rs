//! Read replicas on other machines: a follower keeps a read-only copy of a database up to date
//! from its replica (`litestream restore -f`), supervised like `replicate` (restart with backoff,
//! stop, status). Readers must open the copy read-only.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{LitestreamConfig, Strictness};
use crate::error::Result;
use crate::status::DbStatus;
use crate::supervisor::{FollowSource, Litestream, Options, Role};

/// A supervised `litestream restore -f`: a [`Litestream`] daemon in the follow role.
pub struct Follower;

impl Follower {
    /// Follows the replica of `db` as described by `config` (settings and credentials from the
    /// stored config), into `output`.
    pub fn from_config(
        config: LitestreamConfig,
        db: PathBuf,
        output: PathBuf,
        interval: Option<String>,
        options: Options,
    ) -> Litestream {
        Litestream::new(
            config,
            Options {
                role: Role::Follow {
                    source: FollowSource::Db(db),
                    output,
                    interval,
                },
                ..options
            },
        )
    }

    /// Follows the replica at `url` into `output`.
    pub fn from_url(
        url: String,
        output: PathBuf,
        interval: Option<String>,
        options: Options,
    ) -> Result<Litestream> {
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

/// Ready: the output exists and opens as a SQLite database.
pub fn output_opens(output: &Path) -> bool {
    output.is_file()
        && rusqlite::Connection::open_with_flags(output, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)))
            .is_ok()
}

/// The follower's position: the transaction it reached (litestream's `OUTPUT-txid` file) and
/// when it last applied one (that file's modification time).
pub fn follower_status(output: &Path) -> DbStatus {
    let txid_file = PathBuf::from(format!("{}-txid", output.display()));
    let txid = std::fs::read_to_string(&txid_file)
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    let applied: Option<SystemTime> = std::fs::metadata(&txid_file)
        .and_then(|m| m.modified())
        .ok();
    DbStatus {
        path: output.display().to_string(),
        status: "following".into(),
        last_sync_at: applied,
        txid,
        replicated_txid: None,
        read_lock: None,
    }
}

/// Removes a copy and litestream's files beside it (`-txid`, `-wal`, `-shm`), for a fresh
/// restore.
pub fn remove_copy(output: &Path) {
    for suffix in ["", "-txid", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", output.display()));
    }
}
