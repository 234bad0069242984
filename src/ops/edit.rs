//! `config edit`: a generation decrypted into a private file for the user's editor, and taken
//! away again whatever happens. The file is 0600 inside its own 0700 directory under the
//! private runtime base (tmpfs when the base is `XDG_RUNTIME_DIR` or `/dev/shm`); dropping the
//! [`PrivateFile`] zeroes every file of that directory (the editor's swap and backup files
//! too) and removes it, so an error, an editor that fails, a signal or a panic leaves nothing.
//! A directory left by a `rip-litestream` killed outright is swept by the next one
//! ([`sweep_stale`]): only a directory proven ours (its name, our uid, mode 0700, its owner
//! file) whose owner process is gone.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

mod editor;

pub use editor::{editor_command, run_editor, split_words, EditSignals, EditorEnd};

/// Prefix of the private directories of an edit.
pub const EDIT_PREFIX: &str = "edit-";
const OWNER_FILE: &str = "owner";
const OWNER_TAG: &str = "rip-litestream config edit";
/// What starts every line of the errors written at the top of the file.
pub const ERROR_PREFIX: &str = "# rip-litestream: ";

/// A decrypted config in a private file, removed (its bytes zeroed first) when dropped.
#[derive(Debug)]
pub struct PrivateFile {
    dir: PathBuf,
    file: PathBuf,
}

impl PrivateFile {
    /// Creates `<base>/edit-<pid>-<random>/config.<extension>` holding `content`.
    pub fn create(base: &Path, extension: &str, content: &[u8]) -> Result<Self> {
        let pid = std::process::id();
        let start = start_time(pid).unwrap_or_default();
        let dir = base.join(format!("{EDIT_PREFIX}{pid}-{:08x}", fastrand::u32(..)));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create", &dir, e))?;
        let this = PrivateFile {
            file: dir.join(format!("config.{extension}")),
            dir,
        };
        write_new(
            &this.dir.join(OWNER_FILE),
            format!("{OWNER_TAG}\npid {pid}\nstart {start}\n").as_bytes(),
        )?;
        write_new(&this.file, content)?;
        #[cfg(target_os = "linux")]
        if !on_tmpfs(&this.dir) {
            tracing::warn!(dir = %this.dir.display(), "the decrypted config is on a disk, not tmpfs: set XDG_RUNTIME_DIR or RIP_RUNTIME_DIR to a tmpfs directory");
        }
        Ok(this)
    }

    /// The file the editor gets.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Its private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its bytes now (the editor may have replaced the file by another one, by rename). A
    /// symbolic link or anything but a regular file put in its place is refused, never
    /// followed: what it points to is not what the user edited.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        use std::io::Read;
        let file = &self.file;
        let refused = |what: &str| {
            Error::Usage(format!(
                "the editor left {what} in place of {}: nothing saved (edit the file itself)",
                file.display()
            ))
        };
        let meta = match fs::symlink_metadata(file) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Usage(format!(
                    "the editor removed {}: nothing saved",
                    file.display()
                )))
            }
            Err(e) => return Err(Error::io("cannot read the edited config", file, e)),
        };
        if meta.file_type().is_symlink() {
            return Err(refused("a symbolic link"));
        }
        if !meta.is_file() {
            return Err(refused("something that is not a regular file"));
        }
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(file)
            .map_err(|e| Error::io("cannot read the edited config", file, e))?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(refused("something that is not a regular file"));
        }
        let mut out = Zeroizing::new(Vec::new());
        f.read_to_end(&mut out)
            .map_err(|e| Error::io("cannot read the edited config", file, e))?;
        Ok(out)
    }

    /// Replaces its bytes (zeroing the old ones first).
    pub fn write(&self, content: &[u8]) -> Result<()> {
        zero(&self.file);
        let _ = fs::remove_file(&self.file);
        write_new(&self.file, content)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        remove_zeroed(&self.dir);
    }
}

fn write_new(path: &Path, content: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))?;
    f.write_all(content)
        .map_err(|e| Error::io("cannot write", path, e))
}

/// Overwrites a regular file (never through a link) with zeros of its length.
fn zero(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_file() {
        return;
    }
    if let Ok(mut f) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    {
        let zeros = vec![0u8; meta.len() as usize];
        let _ = f.write_all(&zeros).and_then(|_| f.sync_data());
    }
}

/// Zeroes every regular file directly in `dir`, then removes it all.
fn remove_zeroed(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            zero(&entry.path());
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), which tells it from a later
/// process given the same pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn on_tmpfs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

/// Removes the edit directories under `base` left by a `rip-litestream` that was killed
/// outright: a directory named `edit-PID-...`, owned by this user with mode 0700, holding our
/// owner file naming that pid, whose process is gone (or is another process now). Returns how
/// many were removed.
pub fn sweep_stale(base: &Path) -> usize {
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let uid = nix::unistd::getuid().as_raw();
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(EDIT_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o777 != 0o700 {
            continue;
        }
        let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let mut lines = owner.lines();
        let (Some(OWNER_TAG), Some(p), Some(s)) = (lines.next(), lines.next(), lines.next()) else {
            continue;
        };
        if p != format!("pid {pid}") {
            continue;
        }
        let alive = start_time(pid).is_some_and(|now| s == format!("start {now}"));
        if alive {
            continue;
        }
        remove_zeroed(&dir);
        if !dir.exists() {
            swept += 1;
        }
    }
    if swept > 0 {
        tracing::warn!(count = swept, base = %base.display(), "removed the decrypted config of an edit whose rip-litestream was killed");
    }
    swept
}

/// `text` with `errors` written above it as [`ERROR_PREFIX`] comment lines.
pub fn with_errors(text: &[u8], errors: &[String]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    let mut line = |s: &str| {
        out.extend_from_slice(ERROR_PREFIX.as_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
    };
    line("NOT SAVED: fix what follows and save to try again (these lines are removed);");
    line("save it unchanged, or quit the editor with an error (`:cq` in vi), to give up.");
    for e in errors {
        for l in e.lines() {
            line(&format!("  {l}"));
        }
    }
    out.extend_from_slice(text);
    out
}

/// `text` without the [`ERROR_PREFIX`] lines at its top.
pub fn strip_errors(text: &[u8]) -> &[u8] {
    let mut rest = text;
    while rest.starts_with(ERROR_PREFIX.as_bytes()) {
        rest = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => &rest[i + 1..],
            None => &[],
        };
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_lines_are_stripped_again() {
        let text = b"# mine\ndbs: []\n";
        let with = with_errors(text, &["bad: one\ntwo".into()]);
        assert!(with.starts_with(ERROR_PREFIX.as_bytes()));
        assert_eq!(strip_errors(&with), text);
        assert_eq!(strip_errors(text), text);
    }

    #[test]
    fn a_panic_zeroes_and_removes_the_plaintext() {
        let base = tempfile::tempdir().unwrap();
        let link = base.path().join("link");
        let dir = std::panic::catch_unwind(|| {
            let f =
                PrivateFile::create(base.path(), "yml", b"secret-access-key: s3cr3t\n").unwrap();
            // A second name for the inode: what it holds after the drop is what was left.
            fs::hard_link(f.path(), &link).unwrap();
            let dir = f.dir().to_path_buf();
            if dir.exists() {
                std::panic::resume_unwind(Box::new(dir));
            }
            unreachable!()
        })
        .unwrap_err()
        .downcast::<PathBuf>()
        .unwrap();
        assert!(!dir.exists(), "removed during the unwind");
        let left = fs::read(&link).unwrap();
        assert_eq!(left.len(), 26);
        assert!(left.iter().all(|b| *b == 0), "zeroed: {left:?}");
    }

    #[test]
    fn only_a_dead_owners_directory_is_swept() {
        let base = tempfile::tempdir().unwrap();
        let live = PrivateFile::create(base.path(), "yml", b"secret").unwrap();
        // A dead owner: the owner file names a process start that is not this pid's.
        let dead = base
            .path()
            .join(format!("{EDIT_PREFIX}{}-dead", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dead).unwrap();
        write_new(
            &dead.join(OWNER_FILE),
            format!("{OWNER_TAG}\npid {}\nstart 1\n", std::process::id()).as_bytes(),
        )
        .unwrap();
        write_new(&dead.join("config.yml"), b"secret").unwrap();
        // Not ours: no owner file, or another name.
        let stranger = base.path().join(format!("{EDIT_PREFIX}1-x"));
        fs::DirBuilder::new().mode(0o700).create(&stranger).unwrap();
        let other = base.path().join("keep");
        fs::create_dir(&other).unwrap();
        assert_eq!(sweep_stale(base.path()), 1);
        assert!(!dead.exists() && live.path().exists() && stranger.exists() && other.exists());
        let dir = live.dir().to_path_buf();
        drop(live);
        assert!(!dir.exists(), "dropped: removed");
    }
}
