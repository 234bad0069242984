//! What the supervised litestream does (replicate, or follow a replica into a read-only copy),
//! and the follower's copy: how it is proven ours before anything removes or replaces it.
//! Never removes a file it cannot prove is a follower copy.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::status::DbStatus;

/// What the supervised litestream does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Role {
    /// `litestream replicate`.
    #[default]
    Replicate,
    /// `litestream restore -f`: keep `output` up to date from the replica of `source`.
    Follow {
        /// The database of the config whose replica is followed, or a replica URL.
        source: FollowSource,
        /// The read-only copy it maintains.
        output: PathBuf,
        /// `-follow-interval` (Go duration), litestream's default when `None`.
        interval: Option<String>,
    },
}

impl Role {
    /// What an exit of litestream asks of this role before the next start: litestream 0.5.17
    /// cannot resume a follower's copy whose transaction is ahead of the replica's latest
    /// snapshot (after a kill) and asks for a fresh restore, so the copy (provably ours) goes.
    pub(crate) fn after_exit(&self, exit: &crate::status::ExitInfo) {
        let Role::Follow { output, .. } = self else {
            return;
        };
        if exit
            .last_lines
            .iter()
            .any(|l| l.contains("cannot resume follow mode"))
        {
            tracing::warn!(output = %output.display(), "the copy cannot be resumed: restoring it anew (readers may find it missing for a moment)");
            remove_copy(output);
        }
    }
}

/// What a follower follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowSource {
    /// A `path` database of the (stored) config: its replica settings and credentials.
    Db(PathBuf),
    /// A replica URL (credentials, if any, from the environment).
    Url(String),
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
pub(crate) fn mark(output: &Path) {
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
