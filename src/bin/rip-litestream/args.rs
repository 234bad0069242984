//! The command line: every command, its arguments and their value parsers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use restinpieces_litestream::child_logs::LogMode;
use restinpieces_litestream::handoff::HandoffMode;
use restinpieces_litestream::{Error, Strictness};

#[derive(Parser)]
#[command(
    name = "rip-litestream",
    version,
    about = "Continuous SQLite backup: litestream supervised, its config age-encrypted in your database"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct Global {
    /// The SQLite database holding the encrypted config (the app_config table).
    #[arg(long, global = true, env = "RIP_DB")]
    pub(crate) db: Option<PathBuf>,
    /// The age key file (age-keygen format). Else env RIP_AGE_KEY or RIP_AGE_KEY_FILE (the
    /// same; both set must agree), else $CREDENTIALS_DIRECTORY/age.key when that file exists
    /// (systemd LoadCredential=/LoadCredentialEncrypted=). Never passed on to litestream or the
    /// application.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) age_key: Option<PathBuf>,
    /// Also encrypt what is saved (config save, rollback, edit and rekey, and init) to this age recipient,
    /// e.g. an offline recovery key (age1...; repeatable; env RIP_RECIPIENTS, comma-separated).
    /// The key file's first identity is always a recipient as well, so that what is saved stays
    /// readable with --age-key.
    #[arg(long = "recipient", global = true, env = "RIP_RECIPIENTS", value_name = "AGE1...",
          value_delimiter = ',', value_parser = recipient)]
    pub(crate) recipients: Vec<String>,
    /// Encrypt what is saved to every identity of the key file, not only its first (e.g. the
    /// old and the new key during a rotation).
    #[arg(long, global = true)]
    pub(crate) encrypt_to_all_identities: bool,
    /// The config scope in app_config.
    #[arg(long, global = true, env = "RIP_SCOPE", default_value = restinpieces_litestream::DEFAULT_SCOPE)]
    pub(crate) scope: String,
    /// Level of rip-litestream's own logs (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, default_value = "info")]
    pub(crate) log_level: String,
    /// Format of rip-litestream's own logs.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    /// Also write rip-litestream's own logs to the `logs` table of this SQLite database
    /// (restinpieces' schema; created when missing).
    #[arg(long, global = true)]
    pub(crate) log_db: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// State of the supervisor running for --db (or the follower writing --output).
    ///
    /// Exit codes: 0 healthy; 1 running but unhealthy (backoff, a database not synced lately,
    /// litestream's WAL read lock not held, a rejected config generation, ...); 3 nothing runs
    /// for it (no supervisor, or no follower with --output). With --json, that last case prints
    /// {"running": false, ...} naming what was looked for.
    Status {
        /// Print the status as one JSON object on stdout ("running", "healthy", "reason", the
        /// supervisor's state and its databases).
        #[arg(long)]
        json: bool,
        /// The status of the follower writing this copy, instead of the supervisor for --db.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check a database for replication (WAL mode, other users, litestream state, size).
    Doctor {
        /// The database to examine (opened read-only, nothing is changed).
        #[arg(value_name = "DB_PATH")]
        database: PathBuf,
        /// Print the findings as one JSON object on stdout: database, checks (name, level,
        /// message) and verdict. The exit code is the same: 1 when something must change.
        #[arg(long)]
        json: bool,
    },
    /// Keep a read-only copy up to date from a replica (supervised `litestream restore -f`).
    Follow(FollowArgs),
    /// Print a completion script for SHELL on stdout, e.g. `rip-litestream completions bash >
    /// /etc/bash_completion.d/rip-litestream`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, e.g. `rip-litestream man | man -l -`; with
    /// --output, write one page per command into DIR instead.
    Man {
        /// Write rip-litestream.1 and a page per subcommand (rip-litestream-config-save.1, ...)
        /// into this directory (created when missing).
        #[arg(long, short, value_name = "DIR")]
        output: Option<PathBuf>,
    },
}

impl Command {
    /// Whether the command was asked for JSON on stdout (`--json`): then an error that ends it
    /// is printed there as JSON too.
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Status { json, .. } | Command::Doctor { json, .. } => *json,
            Command::Restore(args) => args.json,
            Command::Verify(args) => args.json,
            Command::Config(ConfigCommand::Check { json, .. } | ConfigCommand::List { json }) => {
                *json
            }
            _ => false,
        }
    }
}

#[derive(Args)]
pub(crate) struct FollowArgs {
    /// The read-only copy to maintain (open it read-only).
    #[arg(long, short)]
    pub(crate) output: PathBuf,
    /// How often litestream polls the replica (Go duration, e.g. 1s).
    #[arg(long)]
    pub(crate) follow_interval: Option<String>,
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    pub(crate) litestream: Option<PathBuf>,
    /// How the decrypted config reaches litestream: memfd (Linux default) or file.
    #[arg(long)]
    pub(crate) handoff: Option<HandoffMode>,
    /// First restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub(crate) backoff_initial: Duration,
    /// Longest restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) backoff_max: Duration,
    /// Serve GET /healthz and /readyz on this address.
    #[arg(long)]
    pub(crate) health_addr: Option<std::net::SocketAddr>,
    /// Keep retrying (with backoff) while litestream cannot start, e.g. for a follower started
    /// before the primary's first backup; by default it gives up (exit 1) after 5 attempts.
    #[arg(long)]
    pub(crate) keep_retrying: bool,
    /// A database of the stored config (its replica is followed), or a replica URL
    /// (s3://bucket/path, file:///dir, ...). Default: the config's only database.
    pub(crate) source: Option<String>,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// Where to write it (default: the database's own path).
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
    /// Point in time (RFC 3339), e.g. 2026-11-25T12:00:00Z.
    #[arg(long, value_parser = rfc3339)]
    pub(crate) timestamp: Option<String>,
    /// Transaction id (16 hex digits).
    #[arg(long, value_parser = txid)]
    pub(crate) txid: Option<String>,
    /// No backup is not an error.
    #[arg(long)]
    pub(crate) if_replica_exists: bool,
    /// Do nothing when the output already exists.
    #[arg(long)]
    pub(crate) if_db_not_exists: bool,
    /// Overwrite an existing output.
    #[arg(long)]
    pub(crate) force: bool,
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    pub(crate) litestream: Option<PathBuf>,
    /// Print one JSON object on stdout at the end: database, output, restored (with the reason
    /// when nothing was), txid, size and duration.
    #[arg(long)]
    pub(crate) json: bool,
    /// The database, as named in the config (the config store is `--db`).
    #[arg(value_name = "DB_PATH")]
    pub(crate) database: PathBuf,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// How long the replica may take to catch up before the verdict is inconclusive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) timeout: Duration,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    pub(crate) litestream: Option<PathBuf>,
    /// The database (default: the config's only one; the config store is `--db`).
    #[arg(value_name = "DB_PATH")]
    pub(crate) database: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    pub(crate) litestream: Option<PathBuf>,
    /// How the decrypted config reaches litestream: memfd (Linux default) or file.
    #[arg(long)]
    pub(crate) handoff: Option<HandoffMode>,
    /// Time litestream gets to exit after SIGTERM (default: shutdown-sync-timeout + 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) grace: Option<Duration>,
    /// First restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub(crate) backoff_initial: Duration,
    /// Longest restart delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) backoff_max: Duration,
    /// Give up (exit 1) after this many litestream exits within 10 minutes.
    #[arg(long)]
    pub(crate) max_restarts: Option<u32>,
    /// Keep retrying (with backoff) when the first start fails, instead of exiting 1.
    #[arg(long)]
    pub(crate) retry_start: bool,
    /// Where litestream's own log lines go: verbatim (to stderr), tracing, or inherit.
    #[arg(long, default_value = "verbatim")]
    pub(crate) litestream_logs: LogMode,
    /// Before starting, restore each database that does not exist from its replica.
    #[arg(long)]
    pub(crate) restore_if_missing: bool,
    /// Replicate a database without litestream state even though its replica holds backups.
    #[arg(long)]
    pub(crate) allow_fresh_db: bool,
    /// Reap orphaned processes as a child subreaper (automatic when running as PID 1).
    #[arg(long)]
    pub(crate) subreaper: bool,
    /// Serve GET /healthz and /readyz on this address (e.g. 127.0.0.1:8089).
    #[arg(long)]
    pub(crate) health_addr: Option<std::net::SocketAddr>,
    /// Verify the backup this often (e.g. 1h); the last result shows in `status`.
    #[arg(long, value_parser = positive_duration)]
    pub(crate) verify_every: Option<Duration>,
    /// How often to look for a newly saved config generation and apply it (0 turns it off;
    /// SIGHUP reloads at once either way).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub(crate) reload_check: Duration,
    /// How often each database's replica is listed to check it can still be restored from (0
    /// turns the check off).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub(crate) replica_check: Duration,
    /// The application to run once litestream is ready (after `--`).
    #[arg(last = true)]
    pub(crate) app: Vec<std::ffi::OsString>,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate FILE ('-' for stdin), encrypt it and save it as the newest generation.
    Save {
        /// The litestream.yml to save ('-' reads it from stdin).
        file: PathBuf,
        /// yml or yaml (default: from the file name, else yml).
        #[arg(long)]
        format: Option<String>,
        /// A note stored with the generation, shown by `config list`.
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
        /// Which generation: 0 is the newest, 1 the one before, ...
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
        /// Which generation: 0 is the newest, 1 the one before, ...
        #[arg(long, short, default_value_t = 0)]
        generation: u32,
        /// Unknown keys are errors, not warnings.
        #[arg(long)]
        strict: bool,
        /// The litestream binary (default: LITESTREAM_BIN, PATH, then .tools/).
        #[arg(long)]
        litestream: Option<PathBuf>,
        /// Print the verdict as one JSON object on stdout: generation, id, valid, warnings,
        /// errors, litestream (accepted, rejected, not found or unusable).
        #[arg(long)]
        json: bool,
    },
    /// Save generation N again as the newest.
    Rollback {
        /// The generation to save again (0 is the newest, 1 the one before, ...; see `config list`).
        generation: u32,
        #[command(flatten)]
        save: SaveArgs,
    },
    /// Edit the newest generation in $VISUAL, else $EDITOR, else vi (decrypted into a private
    /// file, removed afterwards) and save it as a new generation once it validates.
    Edit {
        /// Saved with the new generation.
        #[arg(long, default_value = "edited")]
        description: String,
        /// Unknown keys are errors, not warnings.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        save: SaveArgs,
    },
    /// Show how generation A became generation B (default: 1 and 0, the previous and the
    /// newest), secrets masked. Exit 0 when equal, 1 when they differ.
    Diff {
        /// The generation diffed from (as `config show -g A`).
        #[arg(default_value_t = 1)]
        a: u32,
        /// The generation diffed to.
        #[arg(default_value_t = 0)]
        b: u32,
    },
    /// Re-encrypt every generation of the scope to the key in FILE, in one transaction (then
    /// pass FILE as --age-key everywhere).
    Rekey {
        /// The new key file (`rip-litestream keygen --output FILE` or age-keygen); neither it nor
        /// --age-key is written.
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
    },
}

/// What `config save` and `config rollback` check before a generation is written.
#[derive(Args)]
pub(crate) struct SaveArgs {
    /// Save without asking litestream whether it accepts the config (e.g. no binary installed
    /// here); a running supervisor then keeps its litestream if the new generation is rejected.
    #[arg(long)]
    pub(crate) no_check: bool,
    /// Encrypt to this --age-key although the newest generation is encrypted to another key
    /// (a key change: every reader of the store then needs this key).
    #[arg(long)]
    pub(crate) new_key: bool,
    /// The litestream binary asked (default: LITESTREAM_BIN, PATH, then .tools/).
    #[arg(long)]
    pub(crate) litestream: Option<PathBuf>,
}

impl Global {
    /// Who saves encrypt to, besides the key file's first identity.
    pub(crate) fn recipients(&self) -> restinpieces_litestream::keys::Recipients {
        restinpieces_litestream::keys::Recipients {
            extra: self
                .recipients
                .iter()
                .filter(|r| !r.is_empty())
                .cloned()
                .collect(),
            all_identities: self.encrypt_to_all_identities,
        }
    }

    /// Fills in --age-key from the environment when it was not given: RIP_AGE_KEY or its alias
    /// RIP_AGE_KEY_FILE (both set and different is bad input), else a systemd credential
    /// `$CREDENTIALS_DIRECTORY/age.key` that exists.
    pub(crate) fn resolve_key(&mut self) -> Result<(), Error> {
        if self.age_key.is_some() {
            return Ok(());
        }
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        self.age_key = match (var("RIP_AGE_KEY"), var("RIP_AGE_KEY_FILE")) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Usage(format!(
                    "RIP_AGE_KEY ({}) and RIP_AGE_KEY_FILE ({}) name different key files: set only one of them",
                    Path::new(&a).display(),
                    Path::new(&b).display()
                )))
            }
            (Some(a), _) | (None, Some(a)) => Some(PathBuf::from(a)),
            (None, None) => var("CREDENTIALS_DIRECTORY")
                .map(|dir| Path::new(&dir).join("age.key"))
                .filter(|p| p.exists()),
        };
        Ok(())
    }
}

/// An `age1...` recipient given with --recipient; an empty one (`RIP_RECIPIENTS=`, a trailing
/// comma) is no recipient.
fn recipient(text: &str) -> std::result::Result<String, String> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    restinpieces_litestream::keys::Recipients::check(text)
}

pub(crate) fn need<'a>(value: &'a Option<PathBuf>, what: &str) -> Result<&'a Path, Error> {
    value.as_deref().ok_or_else(|| {
        Error::Usage(match what {
            "db" => "no database given: pass --db PATH (or set RIP_DB)".into(),
            _ => "no age key given: pass --age-key PATH (or set RIP_AGE_KEY or RIP_AGE_KEY_FILE, or give systemd a credential named age.key: LoadCredential=age.key:PATH); create one with `rip-litestream keygen --output age.key`".into(),
        })
    })
}

pub(crate) fn strictness(strict: bool) -> Strictness {
    if strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    }
}

/// A duration above zero (`--verify-every 0s` would mean "all the time").
pub(crate) fn positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0, e.g. 1h".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 30s, 1h)")),
    }
}

/// litestream's `-txid`: up to 16 hex digits, given as 16.
pub(crate) fn txid(text: &str) -> std::result::Result<String, String> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "must be a transaction id of up to 16 hex digits, e.g. 000000000000002a".into(),
        );
    }
    Ok(format!("{:0>16}", text.to_ascii_lowercase()))
}

/// An RFC 3339 time as litestream's `-timestamp` takes it: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub(crate) fn rfc3339(text: &str) -> std::result::Result<String, String> {
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
