//! `config check`'s second opinion: the real litestream's own parser, run on the config through
//! the same handoff the supervisor uses.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::binary::LitestreamBinary;
use crate::error::{Error, Result};
use crate::handoff::{inherit_in_child, Handoff, HandoffMode};

/// What litestream said about a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LitestreamVerdict {
    /// True when `litestream databases` accepted the config.
    pub accepted: bool,
    /// Its output (the databases it would replicate, or its `Error:` lines).
    pub output: String,
}

/// Runs `litestream databases -no-expand-env -config <handoff>` on `yaml`.
pub fn ask_litestream(
    bin: &LitestreamBinary,
    yaml: &[u8],
    private_parent: &Path,
) -> Result<LitestreamVerdict> {
    let handoff = Handoff::create(HandoffMode::default(), yaml, private_parent)?;
    let mut cmd = Command::new(&bin.path);
    cmd.arg("databases")
        .arg("-no-expand-env")
        .arg("-config")
        .arg(handoff.config_arg())
        .stdin(Stdio::null());
    if let Some(fd) = handoff.inherited_fd() {
        // SAFETY: the closure only calls `inherit_in_child`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || inherit_in_child(fd));
        }
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Litestream(format!("{} cannot be run: {e}", bin.path.display())))?;
    drop(handoff);
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(LitestreamVerdict {
        accepted: out.status.success(),
        output: output.trim_end().to_string(),
    })
}
