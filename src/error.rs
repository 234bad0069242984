//! The crate's error type, and the line between a user's mistake (exit 2) and a failure at run
//! time (exit 1).

use std::path::PathBuf;

/// One validation finding: the key it is about and what is wrong or what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the config, e.g. `dbs[1].replica.type` (`(root)` for the whole document).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything that can go wrong in this crate.
///
/// Messages are lowercase, say what to do when the user can fix it, and never contain secrets
/// (the config's plaintext, credentials or key material).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The age key file does not exist.
    #[error("age key file {path} does not exist: create one with `rip-litestream keygen --output {path}` or pass the right one with --age-key")]
    KeyMissing {
        /// The file or directory concerned.
        path: PathBuf,
    },

    /// The age key file exists but could not be read (permissions, a directory, I/O).
    #[error("cannot read age key file {path}: {reason}: pass a readable key file with --age-key")]
    KeyUnreadable {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong, in a line.
        reason: String,
    },

    /// The key file holds no `AGE-SECRET-KEY-1...` line, or a malformed one.
    #[error("age key file {path} {reason}: it must hold lines `AGE-SECRET-KEY-1...` as written by `rip-litestream keygen` or `age-keygen`")]
    KeyInvalid {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong, in a line.
        reason: String,
    },

    /// `keygen` (or `init`) would overwrite an existing key.
    #[error("{path} already exists: refusing to overwrite a key (move it away or choose another --output)")]
    KeyExists {
        /// The file or directory concerned.
        path: PathBuf,
    },

    /// No identity in the key file can decrypt the stored config.
    #[error("the age key {key} cannot decrypt {scope} generation {generation} in {db}: it was saved for another key (or the stored row was altered); pass the key it was saved with (--age-key)")]
    WrongKey {
        /// The age key file.
        key: PathBuf,
        /// The database concerned.
        db: PathBuf,
        /// The config scope.
        scope: String,
        /// The generation (0 = newest).
        generation: u32,
    },

    /// The stored ciphertext is not a valid age file, or it was altered.
    #[error("the stored config ({scope} generation {generation}, row id {id}) in {db} is corrupt ({reason}): save a good config with `rip-litestream config save` or roll back with `rip-litestream config rollback N`")]
    Corrupt {
        /// The database concerned.
        db: PathBuf,
        /// The config scope.
        scope: String,
        /// The generation (0 = newest).
        generation: u32,
        /// The row id.
        id: i64,
        /// What went wrong, in a line.
        reason: String,
    },

    /// The store database does not exist.
    #[error("database {path} does not exist: create it with `rip-litestream --db {path} init --replica DIR` or pass the right path with --db")]
    StoreMissing {
        /// The file or directory concerned.
        path: PathBuf,
    },

    /// The store path exists but is not a SQLite database.
    #[error("{path} is not a SQLite database: pass the application's database with --db")]
    NotSqlite {
        /// The file or directory concerned.
        path: PathBuf,
    },

    /// The store cannot be written (read-only file or directory).
    #[error("database {path} is read-only: {reason}: make it writable or use another --db")]
    StoreReadOnly {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong, in a line.
        reason: String,
    },

    /// No row for this scope (or not that many generations).
    #[error("{what} in {db}: {hint}")]
    NotFound {
        /// The database concerned.
        db: PathBuf,
        /// What is missing.
        what: String,
        /// What to do.
        hint: String,
    },

    /// The config failed validation; each problem names the key and what to do.
    #[error("invalid litestream config:\n{}", list_problems(.0))]
    InvalidConfig(Vec<Problem>),

    /// A requested save has a format other than yml/yaml.
    #[error("format `{format}` is not a litestream config: use `yml` or `yaml`")]
    WrongFormat {
        /// The format found.
        format: String,
    },

    /// A stored row (written by another tool) has a format other than yml/yaml.
    #[error("row id {id} of scope `{scope}` in {db} has format `{format}`{why}: a litestream config has format `yml` or `yaml`; if the row is one, set it with `UPDATE app_config SET format = 'yml' WHERE id = {id}`, else save one with `rip-litestream config save`")]
    RowFormat {
        /// The database concerned.
        db: PathBuf,
        /// The config scope.
        scope: String,
        /// The row id.
        id: i64,
        /// The format found.
        format: String,
        /// Why the row may have it (e.g. the table's default for rows inserted without one).
        why: &'static str,
    },

    /// A stored row's `content` is neither BLOB nor TEXT.
    #[error("row id {id} of scope `{scope}` in {db} holds {kind} in `content`, not an age file: save the config again with `rip-litestream config save`")]
    RowContent {
        /// The database concerned.
        db: PathBuf,
        /// The config scope.
        scope: String,
        /// The row id.
        id: i64,
        /// What the column holds instead.
        kind: &'static str,
    },

    /// A save would encrypt the newest generation to another key than the one before it.
    #[error("the newest generation of `{scope}` in {db} (id {id}) is not encrypted to {recipient}, the key in {key}: whoever reads this store with the earlier key (a running supervisor, restinpieces) could not read what you save. Pass the key the store already uses with --age-key, or --new-key to change keys (then every reader of this store needs {key})")]
    KeyChanged {
        /// The age key file.
        key: PathBuf,
        /// The recipient the key file encrypts to.
        recipient: String,
        /// The database concerned.
        db: PathBuf,
        /// The config scope.
        scope: String,
        /// The row id.
        id: i64,
    },

    /// A command-line argument or combination that makes no sense.
    #[error("{0}")]
    Usage(String),

    /// The litestream binary cannot be found, is not executable, or is too old.
    #[error("litestream {0}")]
    Litestream(String),

    /// Running litestream failed at run time (spawn failure, a command that timed out).
    #[error("litestream {0}")]
    LitestreamFailed(String),

    /// Another supervisor (or its orphaned litestream) holds this database.
    #[error("another rip-litestream already supervises {db} ({holder}): stop it first")]
    AlreadyRunning {
        /// The database concerned.
        db: PathBuf,
        /// Who holds it.
        holder: String,
    },

    /// litestream exited before it became ready.
    #[error("litestream exited during start-up ({exit}):\n{}", .last_lines.join("\n"))]
    StartFailed {
        /// How litestream exited.
        exit: String,
        /// litestream's last log lines.
        last_lines: Vec<String>,
    },

    /// `litestream restore` failed.
    #[error("restore of {db} failed:\n{reason}")]
    RestoreFailed {
        /// The database concerned.
        db: PathBuf,
        /// What went wrong, in a line.
        reason: String,
    },

    /// The supervisor gave up restarting litestream.
    #[error("gave up after {restarts} restarts: {reason}")]
    GaveUp {
        /// How many restarts were allowed.
        restarts: u32,
        /// What went wrong, in a line.
        reason: String,
    },

    /// The final sync on stop did not complete.
    #[error("final sync failed: {0}")]
    FinalSync(String),

    /// SQLite failed while doing `op`.
    #[error("{op} in {path}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: rusqlite::Error,
    },

    /// A file-system or process operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: std::io::Error,
    },
}

fn list_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// True when the user can fix this by changing the input (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Error::StartFailed { .. }
                | Error::LitestreamFailed(_)
                | Error::RestoreFailed { .. }
                | Error::GaveUp { .. }
                | Error::FinalSync(_)
                | Error::Sqlite { .. }
                | Error::Io { .. }
                | Error::AlreadyRunning { .. }
        )
    }

    /// The process exit code for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.is_bad_input() {
            2
        } else {
            1
        }
    }

    /// An [`Error::Io`] of `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Short for `Result<T, restinpieces_litestream::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
