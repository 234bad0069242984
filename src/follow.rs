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

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{DbTarget, LitestreamConfig, Strictness};
use crate::error::{Error, Result};
use crate::status::{DbStatus, ExitInfo, Status};
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

/// Removes a copy, litestream's files beside it (`-txid`, `-wal`, `-shm`) and our marker, for a
/// fresh restore; only when the copy is provably a follower's ([`is_follower_copy`]). Anything
/// else is left in place (logged), and litestream keeps refusing it.
pub fn remove_copy(output: &Path) {
    if let Err(why) = proof(output) {
        tracing::error!(output = %output.display(), reason = %why, "not removing the file at the follower's output: it is not a follower copy");
        return;
    }
    for suffix in ["", "-wal", "-shm", "-txid", MARKER_SUFFIX] {
        let _ = std::fs::remove_file(format!("{}{suffix}", output.display()));
    }
}

/// The suffix of our marker beside a follower copy.
const MARKER_SUFFIX: &str = "-rip-follower";

/// The first line of our marker.
const MARKER_HEADER: &str = "rip-litestream follower copy";

/// How many times litestream may exit before a follower that was never ready gives up (without
/// `--keep-retrying`).
pub const START_ATTEMPTS: u32 = 5;

/// Our marker beside the copy `output`: `OUTPUT-rip-follower`, holding the line
/// `rip-litestream follower copy`, the copy's path and the file's identity (`inode: N`, and
/// `born: SECS.NANOS` where the file system records birth times).
pub fn marker_path(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}{MARKER_SUFFIX}", output.display()))
}

fn txid_path(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}-txid", output.display()))
}

/// Which file this is: its inode, and its birth time when the file system records it.
#[derive(Debug, PartialEq, Eq)]
struct FileId {
    inode: u64,
    born: Option<String>,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()));
        FileId {
            inode: meta.ino(),
            born,
        }
    }
}

/// The file the marker names, or `None` when `marker` is not a marker of ours.
fn marker_id(marker: &Path) -> Option<FileId> {
    let text = std::fs::read_to_string(marker).ok()?;
    if text.lines().next()? != MARKER_HEADER {
        return None;
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    Some(FileId {
        inode: field("inode: ")?.parse().ok()?,
        born: field("born: "),
    })
}

/// True when litestream's `OUTPUT-txid` beside `output` holds a transaction id.
fn has_txid(output: &Path) -> bool {
    std::fs::read_to_string(txid_path(output))
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
        .is_some()
}

/// `Ok` when `output` exists and is provably a follower copy; else why not.
fn proof(output: &Path) -> std::result::Result<(), String> {
    let meta = match std::fs::metadata(output) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err("it is not a regular file".into()),
        Err(e) => return Err(format!("it cannot be read ({e})")),
    };
    let marker = marker_path(output);
    match std::fs::symlink_metadata(&marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if has_txid(output) {
                Ok(())
            } else {
                Err(format!(
                    "neither our marker {} nor litestream's {} is beside it",
                    marker.display(),
                    txid_path(output).display()
                ))
            }
        }
        _ => match marker_id(&marker) {
            Some(id) if id == FileId::of(&meta) => Ok(()),
            Some(_) => Err(format!(
                "it is not the file {} names: it was replaced since{}",
                marker.display(),
                if has_txid(output) {
                    format!(
                        "; if it is the follower copy moved here, remove {} to adopt it",
                        marker.display()
                    )
                } else {
                    String::new()
                }
            )),
            None => Err(format!(
                "{} is not a marker written by rip-litestream",
                marker.display()
            )),
        },
    }
}

/// True when `output` is provably a copy a follower made (see the module documentation).
pub fn is_follower_copy(output: &Path) -> bool {
    proof(output).is_ok()
}

/// Before a follower starts: `Ok` when nothing is at `output`, or a follower copy (see the module
/// documentation); otherwise [`Error::Usage`] naming the file and what to do. Changes nothing.
pub fn check_output(output: &Path) -> Result<()> {
    match std::fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot look at --output {}: {e}: choose another --output",
                output.display()
            )))
        }
        Ok(_) => {}
    }
    proof(output).map_err(|why| {
        Error::Usage(format!(
            "--output {} exists and is not a follower copy made by rip-litestream follow ({why}): refusing to replace it, nothing was changed. Choose another --output, or move that file away if this path is meant for the copy",
            output.display()
        ))
    })
}

/// Records the file now at `output` as a follower copy, in its marker (unless the marker already
/// names it). A marker that is not ours is never overwritten.
fn mark(output: &Path) {
    let Ok(meta) = std::fs::metadata(output) else {
        return;
    };
    if !meta.is_file() {
        return;
    }
    let marker = marker_path(output);
    let id = FileId::of(&meta);
    let current = marker_id(&marker);
    if current.as_ref() == Some(&id) {
        return;
    }
    if current.is_none() && std::fs::symlink_metadata(&marker).is_ok() {
        return;
    }
    let mut text = format!(
        "{MARKER_HEADER}\npath: {}\ninode: {}\n",
        output.display(),
        id.inode
    );
    if let Some(born) = &id.born {
        text.push_str(&format!("born: {born}\n"));
    }
    match std::fs::write(&marker, text) {
        Ok(()) => {
            tracing::debug!(output = %output.display(), inode = id.inode, "follower copy marked")
        }
        Err(e) => {
            tracing::warn!(marker = %marker.display(), error = %e, "cannot write the follower marker: the next start may refuse the copy")
        }
    }
}

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
