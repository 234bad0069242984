//! `rip-litestream`: parses arguments, installs the log subscriber, calls the library and maps
//! the result to an exit code (0 success, 1 runtime failure, 2 bad input).
//!
//! A command given `--json` keeps stdout for JSON alone: when an error ends it, stdout gets
//! `{"error": "...", "exit_code": N}` (and stderr the usual `error: ...` line). Mistakes clap
//! finds while parsing (an unknown flag, a missing argument) come before any command runs: they
//! print clap's usage on stderr only, exit 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use restinpieces_litestream::framework_logs::{self, Style};
use restinpieces_litestream::Error;

/// Like `eprintln!`, but a closed stderr is no reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod cmd;
mod daemon;
mod logging;
mod trim;

use args::{Cli, Command};

fn main() -> ExitCode {
    // A one-shot command whose reader went away (`config list | head -1`) ends quietly, as any
    // Unix tool does: SIGPIPE keeps its default action. The daemons (`run`, `follow`) ignore it,
    // so a closed log pipe never takes down a supervisor and its litestream.
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {
            cmd::about::print_version();
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    if matches!(cli.command, Command::Run(_) | Command::Follow(_)) {
        set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    }
    let stderr = framework_logs::queued_stderr(1024);
    stderr.set_style(if cli.global.log_format == "json" {
        Style::Json
    } else if restinpieces_litestream::journal::stderr_is_journal() {
        Style::Journald
    } else {
        Style::Text
    });
    let guard = match logging::install_subscriber(&cli.global, stderr.clone()) {
        Ok(g) => g,
        Err(e) => {
            report(&e, &stderr);
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let json = cli.command.json();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = %e, "command failed");
            let line = report(&e, &stderr);
            if json {
                cmd::print_json(&serde_json::json!({
                    "error": line,
                    "exit_code": e.exit_code(),
                }));
            }
            e.exit_code() as u8
        }
    };
    drop(guard); // drains the log database queue
    stderr.flush(Duration::from_secs(2));
    ExitCode::from(code)
}

fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: no other thread runs yet, and both actions are plain dispositions.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler);
    }
}

/// Prints the error and its sources once, as `error: outer: inner` (`<3>error: ...` when stderr
/// is the journal), and logs it as an ERROR event (target [`framework_logs::FATAL_TARGET`]) for
/// the JSON and database sinks. With `--log-format json` stderr stays all JSON: the event is the
/// only line (written directly when no subscriber takes it). Returns the chain (without `error: `).
fn report(e: &Error, stderr: &framework_logs::QueuedStderr) -> String {
    use framework_logs::FATAL_TARGET;
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    let code = e.exit_code() as u8;
    let logged = tracing::enabled!(target: FATAL_TARGET, tracing::Level::ERROR);
    if logged {
        tracing::error!(target: FATAL_TARGET, exit_code = code, "{line}");
    }
    stderr.flush(Duration::from_secs(2)); // our logs before our last words
    match stderr.style() {
        Style::Json if logged => {}
        Style::Json => {
            let mut fields = serde_json::Map::new();
            fields.insert("exit_code".into(), code.into());
            fields.insert("target".into(), FATAL_TARGET.into());
            let json = framework_logs::json_line(
                std::time::SystemTime::now(),
                &tracing::Level::ERROR,
                &line,
                &fields,
            );
            say!("{}", json.trim_end());
        }
        Style::Journald => say!("<3>error: {line}"),
        Style::Text => say!("error: {line}"),
    }
    line
}

/// Calls the command.
fn run(mut cli: Cli) -> Result<u8, Error> {
    cli.global.resolve_key()?;
    let g = &cli.global;
    match cli.command {
        Command::Keygen { output } => cmd::keys::keygen(g, output.as_deref()),
        Command::Init {
            replica,
            database,
            force,
        } => cmd::keys::init(g, &replica, database, force),
        Command::Config(c) => cmd::config::config_command(g, c),
        Command::Run(args) => cmd::run::run_command(g, args),
        Command::Restore(args) => cmd::restore::restore_command(g, args),
        Command::Verify(args) => cmd::verify::verify_command(g, args),
        Command::Status { json, output } => cmd::status::status_command(g, json, output.as_deref()),
        Command::Follow(args) => cmd::follow::follow_command(g, args),
        Command::Doctor { database, json } => cmd::doctor::doctor_command(&database, json),
        Command::Completions { shell } => cmd::about::completions(shell),
        Command::Man { output } => cmd::about::man(output.as_deref()),
    }
}
