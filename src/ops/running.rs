//! A supervisor (or follower) running in another process, found from the file it holds: its
//! instance lock, its status file and its control socket in the private runtime directory.
//! Only reads; never signals or changes anything of the running process.

use std::path::Path;

use crate::config::LitestreamConfig;
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::runtime::RuntimeDir;
use crate::status::Status;

/// Who holds the instance lock for `path` (a config store, a replicated database or a
/// follower's copy), when anyone does.
pub fn holder(path: &Path) -> Option<String> {
    let dir = RuntimeDir::path_for(path).ok()?;
    crate::lock::holder(&dir.join("lock"))
}

/// The published status of the supervisor running for `path`; `None` when none runs.
pub fn status(path: &Path) -> Result<Option<Status>> {
    let dir = RuntimeDir::path_for(path)?;
    if crate::lock::holder(&dir.join("lock")).is_none() {
        return Ok(None);
    }
    let file = dir.join("status.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::io("cannot read the supervisor's status", &file, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Usage(format!("unreadable status file {}: {e}", file.display())))
}

/// The control socket of the litestream a supervisor runs for the store `store`, when one runs.
pub fn control(store: &Path, config: &LitestreamConfig) -> Option<ControlClient> {
    let dir = RuntimeDir::path_for(store).ok()?;
    crate::lock::holder(&dir.join("lock"))?;
    let rendered = crate::render::render(config, &dir.join("control.sock"));
    rendered
        .socket
        .filter(|s| s.exists())
        .map(ControlClient::new)
}
