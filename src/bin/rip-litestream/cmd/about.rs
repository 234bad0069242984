//! What the binary says about itself: `--version` (ours and the litestream it would run),
//! `completions SHELL` and `man`, all generated from the one clap definition in `args`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use restinpieces_litestream::{binary, Error};

use crate::args::Cli;

/// `--version`/`-V`: our version, then the litestream found the way every command finds it
/// (LITESTREAM_BIN, PATH, then .tools/). Exit 0 whether or not it is found.
pub(crate) fn print_version() {
    let theirs = match binary::locate(None) {
        Err(_) => "litestream: not found (install with scripts/install-litestream.sh or set LITESTREAM_BIN)".to_string(),
        Ok(path) => match binary::find(Some(&path)) {
            Ok(bin) => format!("litestream {} ({})", bin.version, bin.path.display()),
            Err(e) => format!("litestream: unusable ({e})"),
        },
    };
    println!("rip-litestream {}\n{theirs}", env!("CARGO_PKG_VERSION"));
}

/// `completions SHELL`: the completion script on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rip-litestream", &mut out);
    if shell == clap_complete::Shell::Bash {
        // clap_complete (4.6.12) spells the state of a subcommand of a hyphenated binary two
        // ways: `rip__litestream__subcmd__config` where it tracks the words typed, but
        // `rip__subcmd__litestream__subcmd__config` in the branch that lists the completions,
        // so nothing after the first word ever completes (upstream issue clap-rs/clap#6421).
        // The branches are renamed to the spelling that is tracked; a fixed clap_complete makes
        // this a no-op.
        let text =
            String::from_utf8_lossy(&out).replace("rip__subcmd__litestream", "rip__litestream");
        out = text.into_bytes();
    }
    write_stdout(&out)
}

/// `man`: the top-level page on stdout; with `--output DIR`, a page per command and subcommand
/// written into DIR (`rip-litestream.1`, `rip-litestream-config-save.1`, ...), each file named
/// on stderr. Pages of the same name from an earlier run are replaced (by a rename: a symlink of
/// that name is replaced, never the file it points to); nothing else is touched.
pub(crate) fn man(output: Option<&Path>) -> Result<u8, Error> {
    let Some(dir) = output else {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .map_err(|e| Error::io("cannot render the man page", "stdout", e))?;
        return write_stdout(&out);
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory: pass the directory to write the pages into",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    for page in written {
        say!("wrote {}", page.display());
    }
    Ok(0)
}

/// Writes the page of `cmd` and of each of its subcommands into `dir`.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), Error> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let tmp = dir.join(format!(".{}.tmp{}", man.get_filename(), std::process::id()));
    let mut page = Vec::new();
    man.render(&mut page)
        .and_then(|_| std::fs::write(&tmp, &page))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("cannot write the man page", &path, e)
        })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<u8, Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("cannot write", "stdout", e))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command, and every argument of every command, without a help text (clap's own
    /// `help`/`version` flags and `help` subcommand aside), as `rip-litestream config save FILE`.
    fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
            missing.push(format!("{path} (the command itself)"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = match (arg.get_long(), arg.get_value_names()) {
                    (Some(long), _) => format!("--{long}"),
                    (None, Some(names)) => names[0].to_string().to_uppercase(),
                    (None, None) => id.to_uppercase(),
                };
                missing.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            undocumented(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_command_and_argument_has_a_help_text() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        undocumented(&cmd, "rip-litestream", &mut missing);
        assert!(missing.is_empty(), "without a help text: {missing:#?}");
    }

    #[test]
    fn the_walk_finds_an_undocumented_argument_deep_down() {
        let mut cmd = clap::Command::new("x").about("x").subcommand(
            clap::Command::new("y").about("y").subcommand(
                clap::Command::new("z")
                    .about("z")
                    .arg(clap::Arg::new("file"))
                    .arg(clap::Arg::new("json").long("json").help("documented"))
                    .arg(clap::Arg::new("quiet").long("quiet")),
            ),
        );
        cmd.build();
        let mut missing = Vec::new();
        undocumented(&cmd, "x", &mut missing);
        assert_eq!(missing, ["x y z FILE", "x y z --quiet"]);
    }

    #[test]
    fn clap_accepts_the_definition() {
        Cli::command().debug_assert();
    }
}
