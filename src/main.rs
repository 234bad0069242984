//! `rip-litestream`: parses arguments, installs the log subscriber, calls the library and maps
//! the result to an exit code (0 success, 1 runtime failure, 2 bad input).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::child_logs::LogMode;
use restinpieces_litestream::handoff::HandoffMode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use restinpieces_litestream::config::DbTarget;
use restinpieces_litestream::control::ControlClient;
use restinpieces_litestream::entrypoint::{self, App, HostSignal};
use restinpieces_litestream::follow::Follower;
use restinpieces_litestream::restore::{self, RestoreRequest};
use restinpieces_litestream::status::state_word;
use restinpieces_litestream::{
    binary, check, doctor, framework_logs, health, init, keys, lock, reaper, render, runtime,
    verify, ConfigStore, Error, Litestream, LitestreamConfig, Options, ReloadSource, Strictness,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "rip-litestream",
    version,
    about = "Continuous SQLite backup: litestream supervised, its config age-encrypted in your database"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The SQLite database holding the encrypted config (the app_config table).
    #[arg(long, global = true, env = "RIP_DB")]
    db: Option<PathBuf>,
    /// The age key file (age-keygen format).
    #[arg(long, global = true, env = "RIP_AGE_KEY")]
    age_key: Option<PathBuf>,
    /// The config scope in app_config.
    #[arg(long, global = true, env = "RIP_SCOPE", default_value = restinpieces_litestream::DEFAULT_SCOPE)]
    scope: String,
    /// Level of rip-litestream's own logs (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Format of rip-litestream's own logs.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Also write rip-litestream's own logs to the `logs` table of this SQLite database
    /// (restinpieces' schema; created when missing).
    #[arg(long, global = true)]
    log_db: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new age X25519 identity (mode 0600; never overwrites).
    Keygen {
        /// Where to write it (default: --age-key).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// One-step setup: key if missing, a default config replicating --database (default: --db)
    /// to --replica, saved in --db.
    Init {
        /// Replica: a URL (s3://bucket/path, ...) or a local directory.
        #[arg(long)]
        replica: String,
        /// The database to replicate, when the config store (--db) is a database of its own
        /// (the layout for restore on boot).
        #[arg(long, value_name = "PATH")]
        database: Option<PathBuf>,
        /// Save a new default even if the scope already has a config.
        #[arg(long)]
        force: bool,
    },
    /// Manage the stored litestream config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Supervise litestream with the stored config until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Restore a database from its replica with the stored config.
    Restore(RestoreArgs),
    /// Prove the backup restorable and current: ok (0), failed (1) or inconclusive (3).
    Verify(VerifyArgs),
    /// State of the supervisor running for --db: exit 0 when healthy, 1 otherwise.
    Status {
        #[arg(long)]
        json: bool,
        /// The status of the follower writing this copy, instead of the supervisor for --db.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check a database for replication (WAL mode, other users, litestream state, size).
    Doctor {
        /// The database to examine.
        #[arg(value_name = "DB_PATH")]
        database: PathBuf,
    },
    /// Keep a read-only copy up to date from a replica (supervised `litestream restore -f`).
    Follow(FollowArgs),
}

#[derive(Args)]
struct FollowArgs {
    /// The read-only copy to maintain (open it read-only).
    #[arg(long, short)]
    output: PathBuf,
    /// How often litestream polls the replica (Go duration, e.g. 1s).
    #[arg(long)]
    follow_interval: Option<String>,
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    litestream: Option<PathBuf>,
    /// How the decrypted config reaches litestream: memfd (Linux default) or file.
    #[arg(long)]
    handoff: Option<HandoffMode>,
    /// First restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    backoff_initial: Duration,
    /// Longest restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    backoff_max: Duration,
    /// Serve GET /healthz and /readyz on this address.
    #[arg(long)]
    health_addr: Option<std::net::SocketAddr>,
    /// Keep retrying (with backoff) while litestream cannot start, e.g. for a follower started
    /// before the primary's first backup; by default it gives up (exit 1) after 5 attempts.
    #[arg(long)]
    keep_retrying: bool,
    /// A database of the stored config (its replica is followed), or a replica URL
    /// (s3://bucket/path, file:///dir, ...). Default: the config's only database.
    source: Option<String>,
}

#[derive(Args)]
struct RestoreArgs {
    /// Where to write it (default: the database's own path).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Point in time (RFC 3339), e.g. 2026-11-25T12:00:00Z.
    #[arg(long, value_parser = rfc3339)]
    timestamp: Option<String>,
    /// Transaction id (16 hex digits).
    #[arg(long, value_parser = txid)]
    txid: Option<String>,
    /// No backup is not an error.
    #[arg(long)]
    if_replica_exists: bool,
    /// Do nothing when the output already exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    litestream: Option<PathBuf>,
    /// The database, as named in the config (the config store is `--db`).
    #[arg(value_name = "DB_PATH")]
    database: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    /// How long the replica may take to catch up before the verdict is inconclusive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    litestream: Option<PathBuf>,
    /// The database (default: the config's only one; the config store is `--db`).
    #[arg(value_name = "DB_PATH")]
    database: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    litestream: Option<PathBuf>,
    /// How the decrypted config reaches litestream: memfd (Linux default) or file.
    #[arg(long)]
    handoff: Option<HandoffMode>,
    /// Time litestream gets to exit after SIGTERM (default: shutdown-sync-timeout + 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// First restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    backoff_initial: Duration,
    /// Longest restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    backoff_max: Duration,
    /// Give up (exit 1) after this many litestream exits within 10 minutes.
    #[arg(long)]
    max_restarts: Option<u32>,
    /// Keep retrying (with backoff) when the first start fails, instead of exiting 1.
    #[arg(long)]
    retry_start: bool,
    /// Where litestream's own log lines go: verbatim (to stderr), tracing, or inherit.
    #[arg(long, default_value = "verbatim")]
    litestream_logs: LogMode,
    /// Before starting, restore each database that does not exist from its replica.
    #[arg(long)]
    restore_if_missing: bool,
    /// Replicate a database without litestream state even though its replica holds backups.
    #[arg(long)]
    allow_fresh_db: bool,
    /// Reap orphaned processes as a child subreaper (automatic when running as PID 1).
    #[arg(long)]
    subreaper: bool,
    /// Serve GET /healthz and /readyz on this address (e.g. 127.0.0.1:8089).
    #[arg(long)]
    health_addr: Option<std::net::SocketAddr>,
    /// Verify the backup this often (e.g. 1h); the last result shows in `status`.
    #[arg(long, value_parser = positive_duration)]
    verify_every: Option<Duration>,
    /// How often to look for a newly saved config generation and apply it (0 turns it off;
    /// SIGHUP reloads at once either way).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    reload_check: Duration,
    /// How often each database's replica is listed to check it can still be restored from (0
    /// turns the check off).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    replica_check: Duration,
    /// The application to run once litestream is ready (after `--`).
    #[arg(last = true)]
    app: Vec<std::ffi::OsString>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE ('-' for stdin), encrypt it and save it as the newest generation.
    Save {
        file: PathBuf,
        /// yml or yaml (default: from the file name, else yml).
        #[arg(long)]
        format: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Unknown keys are errors, not warnings.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        save: SaveArgs,
    },
    /// Print a generation's decrypted YAML on stdout.
    Show {
        #[arg(long, short, default_value_t = 0)]
        generation: u32,
    },
    /// List the generations (nothing is decrypted).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Validate a generation, and ask the real litestream's parser too when it is found.
    Check {
        #[arg(long, short, default_value_t = 0)]
        generation: u32,
        /// Unknown keys are errors, not warnings.
        #[arg(long)]
        strict: bool,
        /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
        #[arg(long)]
        litestream: Option<PathBuf>,
    },
    /// Save generation N again as the newest.
    Rollback {
        generation: u32,
        #[command(flatten)]
        save: SaveArgs,
    },
}

/// What `config save` and `config rollback` check before a generation is written.
#[derive(Args)]
struct SaveArgs {
    /// Save without asking litestream whether it accepts the config (e.g. no binary installed
    /// here); a running supervisor then keeps its litestream if the new generation is rejected.
    #[arg(long)]
    no_check: bool,
    /// Encrypt to this --age-key although the newest generation is encrypted to another key
    /// (a key change: every reader of the store then needs this key).
    #[arg(long)]
    new_key: bool,
    /// The litestream binary asked (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    litestream: Option<PathBuf>,
}

/// Like `eprintln!`, but a closed stderr is no reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    // A one-shot command whose reader went away (`config list | head -1`) ends quietly, as any
    // Unix tool does: SIGPIPE keeps its default action. The daemons (`run`, `follow`) ignore it,
    // so a closed log pipe never takes down a supervisor and its litestream.
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Follow(_)) {
        set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    }
    let stderr = framework_logs::queued_stderr(1024);
    let guard = match install_subscriber(&cli.global, stderr.clone()) {
        Ok(g) => g,
        Err(e) => {
            report(&e);
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = %e, "command failed");
            stderr.flush(Duration::from_secs(2)); // our logs before our last words
            report(&e);
            e.exit_code() as u8
        }
    };
    drop(guard); // drains the log database queue
    stderr.flush(Duration::from_secs(2));
    ExitCode::from(code)
}

/// stderr in text or JSON lines, filtered by RUST_LOG or --log-level; plus the SQLite sink.
fn install_subscriber(
    g: &Global,
    stderr: framework_logs::QueuedStderr,
) -> Result<Option<framework_logs::LogDbGuard>, Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&g.log_level));
    let stderr = if g.log_format == "json" {
        framework_logs::JsonStderrLayer(stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(stderr)
            .with_ansi(false)
            .boxed()
    };
    let (db_layer, guard) = match &g.log_db {
        Some(path) => {
            let (layer, guard) = framework_logs::log_db(path)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(db_layer)
        .init();
    Ok(guard)
}

fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: no other thread runs yet, and both actions are plain dispositions.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler);
    }
}

/// Prints the error and its sources once, as `error: outer: inner`.
fn report(e: &Error) {
    let mut line = format!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    say!("{line}");
}

fn need<'a>(value: &'a Option<PathBuf>, what: &str) -> Result<&'a Path, Error> {
    value.as_deref().ok_or_else(|| {
        Error::Usage(match what {
            "db" => "no database given: pass --db PATH (or set RIP_DB)".into(),
            _ => "no age key given: pass --age-key PATH (or set RIP_AGE_KEY); create one with `rip-litestream keygen --output age.key`".into(),
        })
    })
}

fn run(cli: Cli) -> Result<u8, Error> {
    let g = &cli.global;
    match cli.command {
        Command::Keygen { output } => {
            let path = output.as_deref().or(g.age_key.as_deref()).ok_or_else(|| {
                Error::Usage("say where to write the key: --output FILE (or --age-key)".into())
            })?;
            let recipient = keys::generate(path)?;
            say!("wrote a new age identity to {} (mode 0600)", path.display());
            println!("{recipient}");
            Ok(0)
        }
        Command::Init {
            replica,
            database,
            force,
        } => {
            let db = need(&g.db, "db")?;
            let key = need(&g.age_key, "key")?;
            let report = init::init(db, database.as_deref(), key, &g.scope, &replica, force)?;
            if report.key_created {
                say!("created age key {} (mode 0600): keep it secret and backed up apart from the database", key.display());
            }
            say!(
                "saved a default config for {} in {} as scope `{}` (id {}):",
                database.as_deref().unwrap_or(db).display(),
                db.display(),
                g.scope,
                report.id
            );
            print!("{}", report.yaml);
            Ok(0)
        }
        Command::Config(cmd) => config_command(g, cmd),
        Command::Run(args) => run_command(g, args),
        Command::Restore(args) => restore_command(g, args),
        Command::Verify(args) => verify_command(g, args),
        Command::Status { json, output } => status_command(g, json, output.as_deref()),
        Command::Follow(args) => follow_command(g, args),
        Command::Doctor { database } => doctor_command(&database),
    }
}

fn config_command(g: &Global, cmd: ConfigCommand) -> Result<u8, Error> {
    let db = need(&g.db, "db")?;
    let key = need(&g.age_key, "key")?;
    match cmd {
        ConfigCommand::Save {
            file,
            format,
            description,
            strict,
            save,
        } => {
            let bytes = read_input(&file)?;
            let format =
                format.unwrap_or_else(|| match file.extension().and_then(|e| e.to_str()) {
                    Some("yaml") => "yaml".into(),
                    _ => "yml".into(),
                });
            let config = LitestreamConfig::parse(&bytes, strictness(strict))?;
            config.log_warnings();
            let store = save.store(ConfigStore::open_or_create(db, key)?);
            save.litestream_accepts(&bytes)?;
            let id = store.save(&g.scope, &bytes, &format, &description)?;
            say_saved(&store, &g.scope, id, "saved")
        }
        ConfigCommand::Show { generation } => {
            let stored = ConfigStore::open(db, key)?.load(&g.scope, generation)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&stored.plaintext)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("cannot write", "stdout", e))?;
            Ok(0)
        }
        ConfigCommand::List { json } => {
            let rows = ConfigStore::open(db, key)?.list(&g.scope)?;
            let mut out = std::io::stdout().lock();
            if rows.is_empty() {
                say!(
                    "no config saved for scope `{}` in {}",
                    g.scope,
                    db.display()
                );
            }
            for r in rows {
                let line = if json {
                    serde_json::to_string(&r).expect("plain struct serialises")
                } else {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        r.generation,
                        r.id,
                        r.created_at,
                        r.format,
                        r.recipient
                            .as_deref()
                            .unwrap_or("not decryptable with this key"),
                        r.description
                    )
                };
                writeln!(out, "{line}").map_err(|e| Error::io("cannot write", "stdout", e))?;
            }
            Ok(0)
        }
        ConfigCommand::Check {
            generation,
            strict,
            litestream,
        } => {
            let stored = ConfigStore::open(db, key)?.load(&g.scope, generation)?;
            let ours = LitestreamConfig::parse(&stored.plaintext, strictness(strict));
            let mut ok = true;
            match &ours {
                Ok(config) => {
                    config.log_warnings();
                    println!(
                        "rip-litestream: valid ({} warning(s))",
                        config.warnings().len()
                    );
                }
                Err(e) => {
                    ok = false;
                    println!("rip-litestream: {e}");
                }
            }
            match binary::find(litestream.as_deref()) {
                Ok(bin) => {
                    let base = runtime::base_dir();
                    runtime::ensure_private_dir(&base)?;
                    let verdict = block_on(check::ask_litestream(&bin, &stored.plaintext, &base))?;
                    ok &= verdict.accepted;
                    let word = if verdict.accepted {
                        "accepted"
                    } else {
                        "rejected"
                    };
                    println!("litestream {}: {word}", bin.version);
                    for line in verdict.output.lines() {
                        println!("  {line}");
                    }
                }
                Err(e) => println!("litestream: not asked ({e})"),
            }
            if ok {
                Ok(0)
            } else {
                say!("error: generation {generation} of `{}` is not a valid litestream config: fix it and `config save` it again", g.scope);
                Ok(2)
            }
        }
        ConfigCommand::Rollback { generation, save } => {
            let store = save.store(ConfigStore::open(db, key)?);
            let stored = store.load(&g.scope, generation)?;
            LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient)?.log_warnings();
            save.litestream_accepts(&stored.plaintext)?;
            let id = store.rollback(&g.scope, generation)?;
            say_saved(
                &store,
                &g.scope,
                id,
                &format!("generation {generation} saved again"),
            )
        }
    }
}

impl SaveArgs {
    fn store(&self, store: ConfigStore) -> ConfigStore {
        if self.new_key {
            store.allow_new_key()
        } else {
            store
        }
    }

    /// Asks the real litestream (`databases -no-expand-env`) whether it accepts `yaml`; its
    /// refusal is ours (exit 2), so no generation it rejects reaches a running supervisor.
    fn litestream_accepts(&self, yaml: &[u8]) -> Result<(), Error> {
        if self.no_check {
            tracing::warn!("saving without asking litestream (--no-check): a running supervisor keeps its litestream if litestream rejects this generation");
            return Ok(());
        }
        let bin = binary::find(self.litestream.as_deref()).map_err(|e| {
            Error::Usage(format!(
                "cannot ask litestream whether it accepts this config ({e}); pass --litestream PATH, or --no-check to save without asking"
            ))
        })?;
        let base = runtime::base_dir();
        runtime::ensure_private_dir(&base)?;
        let verdict = block_on(check::ask_litestream(&bin, yaml, &base))?;
        if verdict.accepted {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "litestream {} rejects this config, so it was not saved:\n  {}\nfix it and save again (or --no-check to save anyway)",
            bin.version,
            verdict.output.trim().lines().collect::<Vec<_>>().join("\n  ")
        )))
    }
}

/// Says where the new row landed; warns when rows dated after it still come first.
fn say_saved(store: &ConfigStore, scope: &str, id: i64, what: &str) -> Result<u8, Error> {
    let rows = store.list(scope)?;
    let position = rows.iter().position(|r| r.id == id).unwrap_or(0);
    let db = store.db_path().display();
    if position == 0 {
        say!("{what} as the newest generation of `{scope}` in {db} (id {id})");
        return Ok(0);
    }
    for newer in &rows[..position] {
        tracing::warn!(
            id = newer.id,
            created_at = %newer.created_at,
            "a row dated after now still comes first: generations are ordered by created_at, so it stays the newest until then; correct its created_at or delete it"
        );
    }
    say!(
        "{what} as generation {position} of `{scope}` in {db} (id {id}), NOT the newest: {} row(s) dated in the future come first",
        position
    );
    Ok(0)
}

fn strictness(strict: bool) -> Strictness {
    if strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    }
}

fn read_input(file: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let result = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut buf).map(|_| ()))
    };
    result.map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(buf)
}

fn run_command(g: &Global, args: RunArgs) -> Result<u8, Error> {
    let db = need(&g.db, "db")?;
    if !db.exists() {
        return Err(Error::Usage(format!(
            "the config store {} does not exist. It cannot be restored from the backup it describes: keep the config in its own small store (--db config.db, safe to ship in the image since it is encrypted) and let --restore-if-missing restore the application database; or recreate it with `rip-litestream init` or `rip-litestream config save`",
            db.display()
        )));
    }
    let (config, config_id) = load_config(g)?;
    let grace = args
        .grace
        .unwrap_or_else(|| config.shutdown_sync_timeout() + Duration::from_secs(10));
    let options = Options {
        litestream: args.litestream,
        handoff: args.handoff.unwrap_or_default(),
        grace: args.grace,
        backoff: Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
            ..Backoff::default()
        },
        max_restarts: args.max_restarts,
        retry_start: args.retry_start,
        logs: args.litestream_logs,
        instance: Some(db.to_path_buf()),
        restore_if_missing: args.restore_if_missing,
        allow_fresh_db: args.allow_fresh_db,
        verify_every: args.verify_every,
        replica_check: Some(args.replica_check).filter(|d| !d.is_zero()),
        config_id: Some(config_id),
        reload: Some(ReloadSource {
            store: ConfigStore::open(db, need(&g.age_key, "key")?)?,
            scope: g.scope.clone(),
            check_every: (!args.reload_check.is_zero()).then_some(args.reload_check),
        }),
        ..Options::default()
    };
    if args.subreaper {
        reaper::become_subreaper()
            .map_err(|e| Error::io("cannot become a child subreaper", "prctl", e))?;
    }
    let reap = args.subreaper || reaper::is_pid1();
    let app = (!args.app.is_empty()).then(|| App {
        program: args.app[0].clone(),
        args: args.app[1..].to_vec(),
    });
    let runtime = daemon_runtime()?;
    runtime.block_on(async move {
        let mut daemon = Litestream::new(config, options);
        let (tx, mut signals) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen_for_signals(tx));
        let app_pid = Arc::new(AtomicU32::new(0));
        let health = match args.health_addr {
            Some(addr) => Some(health::serve(addr, daemon.status()).await?),
            None => None,
        };
        tokio::spawn(health::notify_systemd(daemon.status()));
        if reap {
            let (chld_tx, chld_rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                if let Ok(mut chld) = signal(SignalKind::child()) {
                    while chld.recv().await.is_some() && chld_tx.send(()).is_ok() {}
                }
            });
            let status = daemon.status();
            let app_pid = app_pid.clone();
            tokio::spawn(reaper::reap_orphans(chld_rx, move || {
                let mut ours: Vec<u32> = status.borrow().pid.into_iter().collect();
                ours.push(app_pid.load(Ordering::Relaxed));
                ours
            }));
        }
        let stop_deadline = grace + Duration::from_secs(5);
        let result = match app {
            Some(app) => entrypoint::run(&mut daemon, app, &mut signals, &app_pid, stop_deadline)
                .await
                .map(|code| code.clamp(0, 255) as u8),
            None => supervise_only(&mut daemon, db, &mut signals)
                .await
                .map(|()| 0),
        };
        listener.abort();
        if let Some(h) = health {
            h.abort();
        }
        result
    })
}

/// `run` without an application: supervise until SIGTERM/SIGINT (a second one escalates).
async fn supervise_only(
    daemon: &mut Litestream,
    db: &Path,
    signals: &mut mpsc::UnboundedReceiver<HostSignal>,
) -> Result<(), Error> {
    let stop = daemon.stop_handle();
    let reload = daemon.reload_handle();
    let forward = async {
        while let Some(sig) = signals.recv().await {
            match sig {
                HostSignal::Hangup => entrypoint::spawn_reload(reload.clone()),
                _ => {
                    tracing::info!(?sig, "stopping");
                    stop.request();
                }
            }
        }
        std::future::pending::<()>().await
    };
    let run = async {
        daemon.start().await?;
        tracing::info!(db = %db.display(), "replicating; SIGTERM or SIGINT stops with a final sync");
        daemon.wait().await
    };
    tokio::select! {
        r = run => r,
        _ = forward => unreachable!("forwarding never ends"),
    }
}

/// Passes SIGTERM, SIGINT and SIGHUP on as [`HostSignal`]s.
async fn listen_for_signals(tx: mpsc::UnboundedSender<HostSignal>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = term.recv() => HostSignal::Terminate,
            _ = int.recv() => HostSignal::Interrupt,
            _ = hup.recv() => HostSignal::Hangup,
        };
        if tx.send(sig).is_err() {
            return;
        }
    }
}

/// Runs one future to completion on a small runtime (for the commands that are not `run`).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
        .block_on(f)
}

/// The stored config (generation 0), validated, with its warnings logged.
fn load_config(g: &Global) -> Result<(LitestreamConfig, i64), Error> {
    let db = need(&g.db, "db")?;
    let key = need(&g.age_key, "key")?;
    let stored = ConfigStore::open(db, key)?.load(&g.scope, 0)?;
    let config = LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient)?;
    config.log_warnings();
    Ok((config, stored.id))
}

/// The database of the config that `arg` names (or the only one when `arg` is absent).
fn pick_db(config: &LitestreamConfig, arg: Option<&Path>) -> Result<PathBuf, Error> {
    let paths: Vec<&PathBuf> = config
        .dbs()
        .iter()
        .filter_map(|d| match d {
            DbTarget::Path(p) => Some(p),
            DbTarget::Dir { .. } => None,
        })
        .collect();
    let listed = || {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match arg {
        None if paths.len() == 1 => Ok(paths[0].clone()),
        None => Err(Error::Usage(format!(
            "name the database: the config replicates {}",
            listed()
        ))),
        Some(a) => {
            let want = runtime::absolute(a)?;
            let in_dir = config.dbs().iter().any(|d| {
                matches!(d, DbTarget::Dir { dir, .. } if runtime::absolute(dir).is_ok_and(|d| want.starts_with(d)))
            });
            paths
                .iter()
                .find(|p| runtime::absolute(p).is_ok_and(|p| p == want))
                .map(|p| (*p).clone())
                .or_else(|| in_dir.then(|| a.to_path_buf()))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} is not in the stored config (it replicates {})",
                        a.display(),
                        listed()
                    ))
                })
        }
    }
}

/// A private directory for handoffs of one-off commands.
fn private_base() -> Result<PathBuf, Error> {
    let base = runtime::base_dir();
    runtime::ensure_private_dir(&base)?;
    Ok(base)
}

fn restore_command(g: &Global, args: RestoreArgs) -> Result<u8, Error> {
    let (config, _) = load_config(g)?;
    let db = pick_db(&config, Some(&args.database))?;
    let output = args.output.clone().unwrap_or_else(|| db.clone());
    // A database a supervisor replicates or a follower keeps: restoring under it would replace
    // the live data and the replica's latest state with an older one, with or without --force.
    if let Some(holder) = runtime::RuntimeDir::path_for(&output)
        .ok()
        .and_then(|dir| lock::holder(&dir.join("lock")))
    {
        return Err(Error::Usage(format!(
            "{} is in use ({holder}): stop that supervisor or follower first, or restore to another path with --output",
            output.display()
        )));
    }
    if args.if_db_not_exists && output.exists() {
        say!("{} exists: nothing restored", output.display());
        return Ok(0);
    }
    let bin = binary::find(args.litestream.as_deref())?;
    let req = RestoreRequest {
        db,
        output: Some(output.clone()),
        timestamp: args.timestamp,
        txid: args.txid,
        if_replica_exists: args.if_replica_exists,
        force: args.force,
    };
    let base = private_base()?;
    let done = block_on(restore::restore(
        &bin,
        &config,
        HandoffMode::default(),
        &base,
        &req,
    ))?;
    if !done.restored {
        say!("no backup found in the replica: nothing restored");
        return Ok(0);
    }
    verify::integrity(&output).map_err(|why| Error::RestoreFailed {
        db: output.clone(),
        reason: format!("integrity_check: {why}"),
    })?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    let point = match (&req.timestamp, done.txid) {
        (Some(t), Some(x)) => format!("as of {t} (txid {x:016x})"),
        (Some(t), None) => format!("as of {t}"),
        (None, Some(x)) => format!("txid {x:016x}"),
        (None, None) => "latest".into(),
    };
    println!(
        "restored {} to {}: {point}, {size} bytes, integrity_check ok",
        req.db.display(),
        output.display()
    );
    Ok(0)
}

/// The control socket of a supervisor running for the store `--db`, when one runs.
fn running_control(g: &Global, config: &LitestreamConfig) -> Option<ControlClient> {
    let store = g.db.as_deref()?;
    let dir = runtime::RuntimeDir::path_for(store).ok()?;
    lock::holder(&dir.join("lock"))?;
    let rendered = render::render(config, &dir.join("control.sock"));
    rendered
        .socket
        .filter(|s| s.exists())
        .map(ControlClient::new)
}

fn verify_command(g: &Global, args: VerifyArgs) -> Result<u8, Error> {
    let (config, _) = load_config(g)?;
    let db = pick_db(&config, args.database.as_deref())?;
    let bin = binary::find(args.litestream.as_deref())?;
    let control = running_control(g, &config);
    let base = private_base()?;
    let report = block_on(verify::verify(
        &bin,
        &config,
        &db,
        control.as_ref(),
        HandoffMode::default(),
        &base,
        args.timeout,
    ))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    } else {
        let word = serde_json::to_value(report.outcome).expect("outcome serialises");
        let lag = report
            .lag_txids
            .map(|l| format!(", {l} transaction(s) behind"))
            .unwrap_or_default();
        println!(
            "{}: {}{lag}: {}",
            db.display(),
            word.as_str().unwrap_or("?"),
            report.reason
        );
    }
    Ok(report.outcome.exit_code())
}

fn status_command(g: &Global, json: bool, output: Option<&Path>) -> Result<u8, Error> {
    let store = match output {
        Some(o) => o,
        None => need(&g.db, "db")?,
    };
    let dir = runtime::RuntimeDir::path_for(store)?;
    if lock::holder(&dir.join("lock")).is_none() {
        say!(
            "no rip-litestream is running for {} (nothing holds {})",
            store.display(),
            dir.join("lock").display()
        );
        return Ok(1);
    }
    let text = std::fs::read_to_string(dir.join("status.json")).map_err(|e| {
        Error::io(
            "cannot read the supervisor's status",
            dir.join("status.json"),
            e,
        )
    })?;
    let status: restinpieces_litestream::Status = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("unreadable status file: {e}")))?;
    let now = std::time::SystemTime::now();
    let health = status.health(now);
    if json {
        let mut v = serde_json::to_value(&status).expect("status serialises");
        v["healthy"] = health.is_ok().into();
        if let Err(why) = &health {
            v["reason"] = why.clone().into();
        }
        println!("{v}");
    } else {
        let pid = status.pid.map(|p| format!("pid {p}, ")).unwrap_or_default();
        println!(
            "state: {} ({pid}{} restart(s))",
            state_word(&status.state),
            status.restarts
        );
        if let Some(id) = status.config_id {
            println!("config: row id {id}");
        }
        if let Some(r) = &status.rejected_generation {
            println!("newest generation rejected: row id {}: {}", r.id, r.reason);
        }
        if let Some(exit) = &status.last_exit {
            println!("last exit: pid {} {exit}", exit.pid);
        }
        for d in &status.databases {
            let lag = d
                .lag(now)
                .map(|l| format!("last sync {:.1}s ago", l.as_secs_f64()))
                .unwrap_or_else(|| "never synced".into());
            let txid = d.txid.map(|t| format!(", txid {t}")).unwrap_or_default();
            let replicated = d
                .replicated_txid
                .map(|t| format!(", replicated {t}"))
                .unwrap_or_default();
            let lock = match d.read_lock {
                Some(true) => ", WAL read lock held",
                Some(false) => ", WAL read lock NOT held",
                None => "",
            };
            println!("{}: {}, {lag}{txid}{replicated}{lock}", d.path, d.status);
        }
        if let Some(v) = &status.last_verify {
            println!("last verify: {:?}: {}", v.outcome, v.reason);
        }
        match &health {
            Ok(()) => println!("healthy"),
            Err(why) => println!("unhealthy: {why}"),
        }
    }
    Ok(if health.is_ok() { 0 } else { 1 })
}

fn doctor_command(db: &Path) -> Result<u8, Error> {
    // The path as litestream would read it from a config (`~`, relative, `sqlite://`).
    let db = &runtime::litestream_path(&db.to_string_lossy());
    let checks = doctor::examine(db)?;
    let mut must_change = false;
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "FIX " };
        println!("{mark} {}: {}", c.name, c.detail);
        must_change |= c.required && !c.ok;
    }
    Ok(if must_change { 1 } else { 0 })
}

fn follow_command(g: &Global, args: FollowArgs) -> Result<u8, Error> {
    use restinpieces_litestream::follow;
    let options = Options {
        litestream: args.litestream,
        handoff: args.handoff.unwrap_or_default(),
        backoff: Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
            ..Backoff::default()
        },
        // Restarts during start-up are needed (a copy litestream cannot resume is restored
        // anew on the next start); without --keep-retrying, `never_ready` below gives up.
        retry_start: true,
        ..Options::default()
    };
    let output = std::path::absolute(&args.output)
        .map_err(|e| Error::Usage(format!("bad --output: {e}")))?;
    // Never replace a file a follower did not make (exit 2, nothing changed): before the store
    // is even opened (the output may be the primary's own database). The constructors check
    // again, with the source.
    follow::check_output(&output)?;
    let mut daemon = match args.source.as_deref() {
        Some(url) if url.contains("://") => Follower::from_url(
            url.to_string(),
            output.clone(),
            args.follow_interval,
            options,
        )?,
        source => {
            let (config, _) = load_config(g)?;
            let db = pick_db(&config, source.map(Path::new))?;
            Follower::from_config(config, db, output.clone(), args.follow_interval, options)?
        }
    };
    let runtime = daemon_runtime()?;
    runtime.block_on(async move {
        let (tx, mut signals) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen_for_signals(tx));
        let health = match args.health_addr {
            Some(addr) => Some(health::serve(addr, daemon.status()).await?),
            None => None,
        };
        tokio::spawn(health::notify_systemd(daemon.status()));
        let marker = tokio::spawn(follow::mark_copies(output, daemon.status()));
        let stop = daemon.stop_handle();
        let never_ready = follow::never_ready(daemon.status(), follow::START_ATTEMPTS);
        let path = args.output.clone();
        let result = tokio::select! {
            biased;
            r = supervise_only(&mut daemon, &path, &mut signals) => r,
            last = never_ready, if !args.keep_retrying => {
                // No litestream runs in a backoff; one that is starting is stopped at once.
                stop.request();
                stop.request();
                let _ = daemon.wait().await;
                Err(Error::StartFailed {
                    exit: format!(
                        "{last}; gave up after {} attempts: pass --keep-retrying to keep trying, e.g. before the primary's first backup",
                        follow::START_ATTEMPTS
                    ),
                    last_lines: last.last_lines,
                })
            }
        };
        listener.abort();
        marker.abort();
        if let Some(h) = health {
            h.abort();
        }
        result.map(|()| 0)
    })
}

/// The runtime `run` and `follow` supervise on.
fn daemon_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", "tokio", e))
}

/// A duration above zero (`--verify-every 0s` would mean "all the time").
fn positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0, e.g. 1h".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 30s, 1h)")),
    }
}

/// litestream's `-txid`: up to 16 hex digits, given as 16.
fn txid(text: &str) -> std::result::Result<String, String> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "must be a transaction id of up to 16 hex digits, e.g. 000000000000002a".into(),
        );
    }
    Ok(format!("{:0>16}", text.to_ascii_lowercase()))
}

/// An RFC 3339 time as litestream's `-timestamp` takes it: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn rfc3339(text: &str) -> std::result::Result<String, String> {
    let bad = || format!("must be an RFC 3339 time, e.g. 2026-11-25T12:00:00Z (got {text:?})");
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(bad());
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        rest = &frac[n..];
    }
    let zone_ok = matches!(rest, "Z" | "z")
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest[1..3].bytes().all(|c| c.is_ascii_digit())
            && rest[4..6].bytes().all(|c| c.is_ascii_digit()));
    let field = |r: std::ops::Range<usize>| text[r].parse::<u32>().unwrap_or(99);
    let ranges_ok = (1..=12).contains(&field(5..7))
        && (1..=31).contains(&field(8..10))
        && field(11..13) < 24
        && field(14..16) < 60
        && field(17..19) < 61;
    if zone_ok && ranges_ok {
        Ok(text.to_string())
    } else {
        Err(bad())
    }
}
