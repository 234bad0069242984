//! journald's view of a service's stderr: whether our stderr is the journal stream systemd
//! connected (`JOURNAL_STREAM`), and the sd-daemon priority prefixes (`<3>` ... `<7>`) it reads
//! each line's priority from. Used for our own text lines (binary) and litestream's verbatim
//! lines ([`crate::child_logs`]).

use tracing::Level;

/// The sd-daemon prefix journald reads a line's priority from: `<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug (and trace).
pub fn journal_priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// True when our stderr is the journal stream systemd connected: `JOURNAL_STREAM` (`dev:inode`)
/// names the file stderr is. False when stderr was redirected elsewhere (the variable is
/// inherited, the stream is not).
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // dev_t and ino_t are u64 on Linux, other widths elsewhere.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => journal_matches(&var.to_string_lossy(), st.st_dev as u64, st.st_ino as u64),
        Err(_) => false,
    }
}

fn journal_matches(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_matches("8:12345", 8, 12345));
        assert!(!journal_matches("8:12345", 8, 1));
        assert!(!journal_matches("9:12345", 8, 12345));
        assert!(!journal_matches("garbage", 8, 12345));
    }
}
