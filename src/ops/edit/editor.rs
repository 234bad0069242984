//! The user's editor: which one (`$VISUAL`, `$EDITOR`, `vi`, split into words as a shell
//! would), and its run on our terminal with SIGINT, SIGTERM, SIGHUP and SIGQUIT passed on to it.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The editor to run: `$VISUAL`, else `$EDITOR`, else `vi`, split into words as a shell would
/// (quotes and backslashes, no expansion), with where it came from.
pub fn editor_command() -> Result<(Vec<String>, &'static str)> {
    for var in ["VISUAL", "EDITOR"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let text = v.to_string_lossy();
            let words = split_words(&text).map_err(|why| {
                Error::Usage(format!("${var} ({text}) cannot be split into words: {why}: set it to a command such as `vi` or `code --wait`"))
            })?;
            if !words.is_empty() {
                return Ok((words, var));
            }
        }
    }
    Ok((vec!["vi".into()], "the default"))
}

/// Splits `text` into words as a POSIX shell does, without any expansion: blanks separate,
/// `'...'` is literal, `"..."` keeps `\"`, `\\`, `` \` `` and `\$` escapes, `\` quotes the next
/// character.
pub fn split_words(text: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a ' is not closed"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '`' | '$')) => w.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("a \" is not closed"),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a \" is not closed"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("it ends with a \\"),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// How the editor ended.
#[derive(Debug)]
pub enum EditorEnd {
    /// It exited by itself.
    Exited(std::process::ExitStatus),
    /// This signal came to us while it ran; it was passed on to the editor, which is gone.
    Signal(&'static str),
}

/// The signals that end an edit, listened to for the whole edit (so one that comes while the
/// config is validated or saved is noticed too).
pub struct EditSignals {
    signals: Vec<(
        tokio::signal::unix::Signal,
        nix::sys::signal::Signal,
        &'static str,
    )>,
}

impl EditSignals {
    /// Starts listening for SIGINT, SIGTERM, SIGHUP and SIGQUIT (in a tokio runtime); SIGQUIT
    /// (Ctrl-\\) would otherwise end us with a core dump, the decrypted file left behind.
    pub fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut signals = Vec::new();
        for (kind, sig, name) in [
            (SignalKind::interrupt(), nix::sys::signal::SIGINT, "SIGINT"),
            (
                SignalKind::terminate(),
                nix::sys::signal::SIGTERM,
                "SIGTERM",
            ),
            (SignalKind::hangup(), nix::sys::signal::SIGHUP, "SIGHUP"),
            (SignalKind::quit(), nix::sys::signal::SIGQUIT, "SIGQUIT"),
        ] {
            let s = signal(kind).map_err(|e| Error::io("cannot listen for", name, e))?;
            signals.push((s, sig, name));
        }
        Ok(EditSignals { signals })
    }

    /// The next signal.
    async fn next(&mut self) -> (nix::sys::signal::Signal, &'static str) {
        let [a, b, c, d] = &mut self.signals[..] else {
            unreachable!("four signals")
        };
        tokio::select! {
            _ = a.0.recv() => (a.1, a.2),
            _ = b.0.recv() => (b.1, b.2),
            _ = c.0.recv() => (c.1, c.2),
            _ = d.0.recv() => (d.1, d.2),
        }
    }

    /// A signal that came and was not handled yet, if any.
    pub async fn pending(&mut self) -> Option<&'static str> {
        tokio::select! {
            biased;
            (_, name) = self.next() => Some(name),
            _ = std::future::ready(()) => None,
        }
    }
}

/// Runs `argv` with `file` as its last argument on our terminal, until it exits or a signal
/// comes: the signal is passed on to the editor, which gets 2 s to exit before it is killed.
pub async fn run_editor(
    argv: &[String],
    file: &Path,
    signals: &mut EditSignals,
) -> Result<EditorEnd> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Usage(format!(
                "cannot start the editor `{}`: {e}: set VISUAL or EDITOR to an editor command",
                argv.join(" ")
            ))
        })?;
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| Error::io("cannot wait for the editor", &argv[0], e))?;
            Ok(EditorEnd::Exited(status))
        }
        (sig, name) = signals.next() => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
            }
            if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            Ok(EditorEnd::Signal(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_commands_split_as_a_shell_splits_them() {
        let ok = |t: &str| split_words(t).unwrap();
        assert_eq!(ok("code --wait"), ["code", "--wait"]);
        assert_eq!(ok("  vi  "), ["vi"]);
        assert_eq!(
            ok("'/opt/my editor/bin/ed' -n"),
            ["/opt/my editor/bin/ed", "-n"]
        );
        assert_eq!(
            ok(r#""a \"b\" \$c \x" d\ e ''"#),
            [r#"a "b" $c \x"#, "d e", ""]
        );
        assert_eq!(ok("emacs -nw"), ["emacs", "-nw"]);
        assert!(split_words("vi 'x").is_err());
        assert!(split_words("vi \"x").is_err());
        assert!(split_words("vi \\").is_err());
    }
}
