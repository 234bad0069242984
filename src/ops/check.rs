//! `config check`'s second opinion: the real litestream's own parser (`litestream databases`),
//! run on the config through the same handoff the supervisor uses.

use std::path::Path;
use std::time::Duration;

use crate::binary::LitestreamBinary;
use crate::error::Result;
use crate::handoff::HandoffMode;
use crate::oneshot;

/// What litestream said about a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LitestreamVerdict {
    /// True when `litestream databases` accepted the config.
    pub accepted: bool,
    /// Its output (the databases it would replicate, or its `Error:` lines).
    pub output: String,
}

/// Runs `litestream databases -no-expand-env -config <handoff>` on `yaml`.
pub async fn ask_litestream(
    bin: &LitestreamBinary,
    yaml: &[u8],
    private_parent: &Path,
) -> Result<LitestreamVerdict> {
    ask_litestream_with(
        bin,
        yaml,
        HandoffMode::default(),
        private_parent,
        Duration::from_secs(30),
    )
    .await
}

/// [`ask_litestream`] with the handoff the supervisor uses and a time limit.
pub async fn ask_litestream_with(
    bin: &LitestreamBinary,
    yaml: &[u8],
    mode: HandoffMode,
    private_parent: &Path,
    timeout: Duration,
) -> Result<LitestreamVerdict> {
    let out = oneshot::run(bin, "databases", yaml, mode, private_parent, &[], timeout).await?;
    Ok(LitestreamVerdict {
        accepted: out.status.success(),
        output: oneshot::text(&out, yaml),
    })
}
