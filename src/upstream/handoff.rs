//! Handing the decrypted config to litestream without leaving plaintext behind.
//!
//! - `Memfd` (Linux default): an anonymous memory file, close-on-exec in this process; only the
//!   litestream child inherits it, and reads it as `/dev/fd/N`. Nothing ever touches a disk.
//! - `File` (fallback, and the only mode off Linux): a 0600 file, created exclusively without
//!   following links, in a fresh 0700 directory; removed as soon as litestream is ready and on
//!   every exit path (`Drop`). Directories left by a killed supervisor are swept at the next
//!   start ([`crate::runtime::RuntimeDir::sweep`]).

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::runtime::HANDOFF_PREFIX;

/// How the config reaches litestream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffMode {
    /// An anonymous memory file passed as `/dev/fd/N` (Linux).
    Memfd,
    /// A 0600 file in a private 0700 directory, deleted once litestream is ready.
    File,
}

impl Default for HandoffMode {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            HandoffMode::Memfd
        } else {
            HandoffMode::File
        }
    }
}

impl std::str::FromStr for HandoffMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memfd" => Ok(HandoffMode::Memfd),
            "file" => Ok(HandoffMode::File),
            other => Err(format!("unknown handoff `{other}`: use memfd or file")),
        }
    }
}

/// The config, ready to be handed to one litestream process.
#[derive(Debug)]
pub struct Handoff {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    #[cfg(target_os = "linux")]
    Memfd(OwnedFd),
    File {
        dir: PathBuf,
        path: PathBuf,
    },
    Gone,
}

impl Handoff {
    /// Puts `yaml` where litestream can read it. `private_parent` is where a `File` handoff makes
    /// its private directory.
    pub fn create(mode: HandoffMode, yaml: &[u8], private_parent: &Path) -> Result<Self> {
        match mode {
            #[cfg(target_os = "linux")]
            HandoffMode::Memfd => Self::memfd(yaml),
            #[cfg(not(target_os = "linux"))]
            HandoffMode::Memfd => Self::file(yaml, private_parent),
            HandoffMode::File => Self::file(yaml, private_parent),
        }
    }

    #[cfg(target_os = "linux")]
    fn memfd(yaml: &[u8]) -> Result<Self> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"rip-litestream-config", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| Error::io("cannot create memfd", "<memfd>", e.into()))?;
        let mut file = fs::File::from(fd);
        file.write_all(yaml)
            .map_err(|e| Error::io("cannot write memfd", "<memfd>", e))?;
        Ok(Handoff {
            inner: Inner::Memfd(OwnedFd::from(file)),
        })
    }

    fn file(yaml: &[u8], private_parent: &Path) -> Result<Self> {
        let dir = private_parent.join(format!(
            "{HANDOFF_PREFIX}{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create private directory", &dir, e))?;
        let path = dir.join("litestream.yml");
        let handoff = Handoff {
            inner: Inner::File {
                dir: dir.clone(),
                path: path.clone(),
            },
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("cannot create handoff file", &path, e))?;
        file.write_all(yaml)
            .and_then(|_| file.flush())
            .map_err(|e| Error::io("cannot write handoff file", &path, e))?;
        Ok(handoff)
    }

    /// The `-config` argument for litestream.
    pub fn config_arg(&self) -> OsString {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Inner::Memfd(fd) => format!("/dev/fd/{}", fd.as_raw_fd()).into(),
            Inner::File { path, .. } => path.clone().into_os_string(),
            Inner::Gone => OsString::from("/dev/null"),
        }
    }

    /// The descriptor the child must inherit (memfd only).
    pub fn inherited_fd(&self) -> Option<RawFd> {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Inner::Memfd(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    /// The handoff file's path, when there is one on disk.
    pub fn file_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Removes every trace: empties and closes the memfd (litestream keeps its descriptor
    /// open, and `/proc/PID/fd/N` would otherwise still show the config to the same user), or
    /// deletes the file and its private directory. Called once litestream has read the config;
    /// idempotent.
    pub fn remove(&mut self) {
        match std::mem::replace(&mut self.inner, Inner::Gone) {
            #[cfg(target_os = "linux")]
            Inner::Memfd(fd) => {
                let _ = nix::unistd::ftruncate(&fd, 0);
            }
            Inner::File { dir, path } => {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_dir(&dir);
            }
            Inner::Gone => {}
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Clears close-on-exec on `fd` in a forked child, so the program it executes inherits it.
///
/// # Safety
/// Call only between fork and exec (a `pre_exec` closure): it makes one async-signal-safe
/// system call and does not allocate.
pub(crate) unsafe fn inherit_in_child(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl is async-signal-safe; `fd` is open in the child (inherited from the parent).
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
