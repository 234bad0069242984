//! The supervisor's private runtime directory for one database: the lock, the injected control
//! socket and the handoff directories live there, so `status` finds them from `--db` alone.
//!
//! Base: `RIP_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/rip-litestream`, else
//! `/dev/shm/rip-litestream-UID`, else `$TMPDIR/rip-litestream-UID`; below it one 0700
//! directory per database, named by a hash of the database's absolute path.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of the private directories that hold a handoff file.
pub(crate) const HANDOFF_PREFIX: &str = "handoff-";

/// The private runtime directory of one supervised database.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// The directory for `db` (created 0700 when missing; an existing one must be ours and
    /// private).
    pub fn for_db(db: &Path) -> Result<Self> {
        Self::for_db_in(&base_dir(), db)
    }

    /// The directory for `db` under `base` instead of the default base (see `Options::runtime_base`).
    pub fn for_db_in(base: &Path, db: &Path) -> Result<Self> {
        let path = Self::path_in(base, db)?;
        ensure_private_dir(path.parent().expect("runtime dir has a parent"))?;
        crate::ops::edit::sweep_stale(path.parent().expect("runtime dir has a parent"));
        ensure_private_dir(&path)?;
        Ok(RuntimeDir { path })
    }

    /// Where the directory for `db` is, without creating anything (for `status`).
    pub fn path_for(db: &Path) -> Result<PathBuf> {
        Self::path_in(&base_dir(), db)
    }

    fn path_in(base: &Path, db: &Path) -> Result<PathBuf> {
        let abs = absolute(db)?;
        let name = format!("{:016x}", fnv1a(abs.as_os_str().as_encoded_bytes()));
        Ok(base.join(name))
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control socket the supervisor injects.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join("control.sock")
    }

    /// The status file `rip-litestream status` reads.
    pub fn status_path(&self) -> PathBuf {
        self.path.join("status.json")
    }

    /// The single-instance lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }

    /// Removes handoff directories left by a supervisor that was killed. Call with the lock
    /// held, so no running supervisor's handoff is touched.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return 0;
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(HANDOFF_PREFIX)
                && fs::remove_dir_all(entry.path()).is_ok()
            {
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(count = swept, dir = %self.path.display(), "removed handoff directories left by an earlier run");
        }
        swept
    }
}

/// A path as litestream 0.5.17 resolves one from its config (its `expand`): a `sqlite://` or
/// `sqlite3://` prefix dropped, `~` and `~/...` under the user's home directory (from the
/// password database, as Go's `user.Current`, else `$HOME`), anything else made absolute against
/// the working directory and cleaned lexically (`filepath.Abs`). Every command resolves the
/// config's paths this way, so `path: ~/x.db` means one file to all of them.
pub fn litestream_path(text: &str) -> PathBuf {
    let text = ["sqlite3://", "sqlite://"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text);
    let home = || {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
    };
    let raw = if text == "~" {
        home().unwrap_or_else(|| PathBuf::from(text))
    } else if let Some(rest) = text.strip_prefix("~/") {
        match home() {
            Some(h) => h.join(rest),
            None => PathBuf::from(text),
        }
    } else {
        PathBuf::from(text)
    };
    clean(&std::path::absolute(&raw).unwrap_or(raw))
}

/// Lexical cleaning as Go's `filepath.Clean`: no `.` parts, `..` taken back, no double slashes.
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The absolute form of `db` (canonical when it exists), so every spelling maps to one directory.
/// `~` is expanded as litestream does ([`litestream_path`]).
pub(crate) fn absolute(db: &Path) -> Result<PathBuf> {
    let db = &match db.to_str() {
        Some(t) if t == "~" || t.starts_with("~/") => litestream_path(t),
        _ => db.to_path_buf(),
    };
    if let Ok(c) = fs::canonicalize(db) {
        return Ok(c);
    }
    let abs = std::path::absolute(db).map_err(|e| Error::io("cannot resolve", db, e))?;
    // Canonicalise the parent when it exists, so a database created later maps to the same place.
    match (
        abs.parent().and_then(|p| fs::canonicalize(p).ok()),
        abs.file_name(),
    ) {
        (Some(parent), Some(name)) => Ok(parent.join(name)),
        _ => Ok(abs),
    }
}

/// The base directory under which every database gets its own.
pub(crate) fn base_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("RIP_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("rip-litestream");
    }
    let uid = nix::unistd::getuid();
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.join(format!("rip-litestream-{uid}"));
    }
    std::env::temp_dir().join(format!("rip-litestream-{uid}"))
}

/// Creates `dir` with mode 0700 when missing; refuses one that is a link, not ours, or shared.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot create the runtime directory {}: {e}: set RIP_RUNTIME_DIR to a writable directory",
                dir.display()
            )))
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::getuid().as_raw() {
        return Err(Error::Usage(format!(
            "runtime directory {} is not a directory owned by this user: remove it or set RIP_RUNTIME_DIR",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot make private", dir, e))?;
    }
    // A directory we cannot write into is bad input too (an unwritable runtime directory).
    if nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return Err(Error::Usage(format!(
            "runtime directory {} is not writable: set RIP_RUNTIME_DIR to a writable directory",
            dir.display()
        )));
    }
    Ok(())
}

/// FNV-1a: a stable hash (unlike std's), so every build maps a path to the same directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The private base directory (created 0700 when missing), for the handoffs of one-off
/// commands. The decrypted config of a `config edit` whose process was killed is removed from
/// it here ([`crate::edit::sweep_stale`]).
pub fn private_base() -> Result<PathBuf> {
    let base = base_dir();
    ensure_private_dir(&base)?;
    crate::ops::edit::sweep_stale(&base);
    Ok(base)
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn paths_resolve_as_litestream_resolves_them() {
        let home = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .dir;
        assert_eq!(litestream_path("~/x.db"), home.join("x.db"));
        assert_eq!(litestream_path("~"), home);
        assert_eq!(
            litestream_path("/a/b/../c//./x.db"),
            PathBuf::from("/a/c/x.db")
        );
        assert_eq!(
            litestream_path("sqlite:///data/x.db"),
            PathBuf::from("/data/x.db")
        );
        assert_eq!(
            litestream_path("sqlite3:///data/x.db"),
            PathBuf::from("/data/x.db")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(litestream_path("rel/x.db"), cwd.join("rel/x.db"));
        // Only a leading `~/` is the home directory.
        assert_eq!(litestream_path("/a/~/x.db"), PathBuf::from("/a/~/x.db"));
    }
}
