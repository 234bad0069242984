//! Running a one-off litestream command (`databases`, `restore`, `ltx`) on the stored config,
//! through the same handoff as the supervisor, so no plaintext is left behind.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::binary::LitestreamBinary;
use crate::error::{Error, Result};
use crate::handoff::{inherit_in_child, Handoff, HandoffMode};

/// Runs `litestream SUBCOMMAND -no-expand-env -config <handoff> ARGS...` on `yaml`, with its
/// output captured, killed after `timeout`.
pub async fn run(
    bin: &LitestreamBinary,
    subcommand: &str,
    yaml: &[u8],
    mode: HandoffMode,
    private_parent: &Path,
    args: &[OsString],
    timeout: Duration,
) -> Result<Output> {
    let handoff = Handoff::create(mode, yaml, private_parent)?;
    let mut std_cmd = std::process::Command::new(&bin.path);
    std_cmd
        .arg(subcommand)
        .arg("-no-expand-env")
        .arg("-config")
        .arg(handoff.config_arg())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in crate::binary::withheld_env(true) {
        std_cmd.env_remove(name);
    }
    if let Some(fd) = handoff.inherited_fd() {
        // SAFETY: the closure only calls `inherit_in_child`, which is async-signal-safe.
        unsafe {
            std_cmd.pre_exec(move || inherit_in_child(fd));
        }
    }
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        Error::LitestreamFailed(format!("{} cannot be run: {e}", bin.path.display()))
    })?;
    let pid = child.id();
    if let Some(pid) = pid {
        crate::reaper::register(pid);
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if let Some(pid) = pid {
        crate::reaper::unregister(pid);
    }
    drop(handoff);
    match output {
        Ok(out) => out.map_err(|e| Error::io("cannot wait for", &bin.path, e)),
        Err(_) => Err(Error::LitestreamFailed(format!(
            "{subcommand} did not finish within {timeout:?}"
        ))),
    }
}

/// stdout and stderr of `out`, joined, trimmed, with the credentials of `yaml` masked.
pub fn text(out: &Output, yaml: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    let redactor = crate::redact::Redactor::from_yaml(&String::from_utf8_lossy(yaml));
    redactor.redact(s.trim_end()).into_owned()
}
