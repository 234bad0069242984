//! The config store: age-encrypted litestream configs in the `app_config` table, exactly as the
//! Go framework restinpieces keeps them, so a database prepared by either side works with the
//! other.
//!
//! The store is often the very database litestream replicates, so every operation opens a
//! connection, does its work and closes it: nothing is held open across the daemon's life.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::KeyRing;

mod rekey;
mod rows;

pub use rekey::CheckedSave;

use rows::{check_format, content_bytes, has_table, Row};

/// The scope litestream configs are saved under unless told otherwise.
pub const DEFAULT_SCOPE: &str = "litestream";

/// restinpieces' schema, byte for byte.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS app_config (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    content BLOB NOT NULL,
    format TEXT NOT NULL DEFAULT 'toml',
    description TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS idx_app_config_created ON app_config(created_at DESC);";

const SELECT_GENERATION: &str = "SELECT id, content, format, created_at FROM app_config \
     WHERE scope = ? ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?";

/// A decrypted config as stored: the plaintext lives in a zeroizing buffer.
pub struct StoredConfig {
    /// The row's id.
    pub id: i64,
    /// Which generation this is (0 = newest).
    pub generation: u32,
    /// `yml` or `yaml`.
    pub format: String,
    /// When it was saved (UTC, as the table holds it).
    pub created_at: String,
    /// The decrypted YAML.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for StoredConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredConfig")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("format", &self.format)
            .field("created_at", &self.created_at)
            .field(
                "plaintext",
                &format_args!("<{} bytes redacted>", self.plaintext.len()),
            )
            .finish()
    }
}

/// One row of `config list`: everything but the content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generation {
    /// The generation (0 = newest).
    pub generation: u32,
    /// The row id.
    pub id: i64,
    /// When it was saved (UTC, as the table holds it).
    pub created_at: String,
    /// The format found.
    pub format: String,
    /// The description saved with it.
    pub description: String,
    /// The recipient of the key file's identity that opens this generation (only its header is
    /// read), or `None` when no identity of the key file opens it (or the key is unreadable).
    pub recipient: Option<String>,
}

/// The encrypted config store inside an application's SQLite database.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    db: PathBuf,
    key: PathBuf,
    new_key: bool,
    recipients: crate::keys::Recipients,
}

impl ConfigStore {
    /// A store in the existing SQLite database `db`, with the age key file `key`. Checks that
    /// `db` exists and is SQLite; writes nothing.
    pub fn open(db: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self> {
        let store = ConfigStore {
            db: db.into(),
            key: key.into(),
            new_key: false,
            recipients: Default::default(),
        };
        let conn = store.connect_read()?;
        drop(conn);
        Ok(store)
    }

    /// Like [`ConfigStore::open`], but the database is created on the first save when missing.
    pub fn open_or_create(db: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self> {
        let db = db.into();
        if db.exists() {
            return Self::open(db, key);
        }
        Ok(ConfigStore {
            db,
            key: key.into(),
            new_key: false,
            recipients: Default::default(),
        })
    }

    /// Lets [`ConfigStore::save`] and [`ConfigStore::rollback`] encrypt to a key other than the
    /// one the newest generation is encrypted to (a key change: every reader of the store then
    /// needs the new key). Without it they refuse ([`Error::KeyChanged`]).
    pub fn allow_new_key(mut self) -> Self {
        self.new_key = true;
        self
    }

    /// Encrypts new generations (saves, rollbacks) to these recipients too, beside the key
    /// file's first identity.
    pub fn encrypt_to(mut self, recipients: crate::keys::Recipients) -> Self {
        self.recipients = recipients;
        self
    }

    /// The database path.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// The key file path.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// Encrypts `plaintext` to the key file's first identity (and [`ConfigStore::encrypt_to`]'s
    /// recipients) and saves it as the newest
    /// generation of `scope`. Returns the new row id. Refuses a key change (the newest
    /// generation encrypted to another recipient) unless [`ConfigStore::allow_new_key`].
    pub fn save(
        &self,
        scope: &str,
        plaintext: &[u8],
        format: &str,
        description: &str,
    ) -> Result<i64> {
        check_format(format)?;
        let keys = KeyRing::read(&self.key)?;
        self.same_key_as_newest(scope, &keys)?;
        let content = crate::keys::encrypt(&keys, &self.recipients, plaintext)?;
        self.insert(scope, &content, format, description)
    }

    /// Decrypts generation `generation` (0 = newest) of `scope`.
    pub fn load(&self, scope: &str, generation: u32) -> Result<StoredConfig> {
        let keys = KeyRing::read(&self.key)?;
        let conn = self.connect_read()?;
        let row = self.fetch(&conn, scope, generation)?;
        drop(conn);
        let content = self.usable(&row, scope)?;
        let plaintext = self.decrypt(&keys, scope, generation, row.id, content)?;
        Ok(StoredConfig {
            id: row.id,
            generation,
            format: row.format,
            created_at: row.created_at,
            plaintext,
        })
    }

    /// Decrypts generation `generation` of `scope` and validates it (lenient: unknown keys are
    /// warnings, left for the caller to log). Returns the config and its row id.
    pub fn load_config(
        &self,
        scope: &str,
        generation: u32,
    ) -> Result<(crate::config::LitestreamConfig, i64)> {
        let stored = self.load(scope, generation)?;
        let config = crate::config::LitestreamConfig::parse(
            &stored.plaintext,
            crate::config::Strictness::Lenient,
        )?;
        Ok((config, stored.id))
    }

    /// The id of the newest row of `scope`, without decrypting: a cheap check for changes.
    pub fn newest_id(&self, scope: &str) -> Result<Option<i64>> {
        let conn = self.connect_read()?;
        if !has_table(&conn, &self.db)? {
            return Ok(None);
        }
        conn.query_row(
            "SELECT id FROM app_config WHERE scope = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            [scope],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.sqlite("cannot read app_config", e))
    }

    /// The generations of `scope`, newest first, without decrypting anything.
    pub fn list(&self, scope: &str) -> Result<Vec<Generation>> {
        let conn = self.connect_read()?;
        if !has_table(&conn, &self.db)? {
            return Ok(Vec::new());
        }
        let keys = KeyRing::read(&self.key).ok();
        let mut stmt = conn
            .prepare(
                "SELECT id, created_at, format, COALESCE(description, ''), content FROM app_config \
                 WHERE scope = ? ORDER BY created_at DESC, id DESC",
            )
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        let rows = stmt
            .query_map([scope], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    content_bytes(r.get_ref(4)?),
                ))
            })
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        let mut out = Vec::new();
        for (generation, row) in rows.enumerate() {
            let (id, created_at, format, description, content) =
                row.map_err(|e| self.sqlite("cannot read app_config", e))?;
            let recipient = match (&keys, content) {
                (Some(keys), Ok(content)) => match crate::keys::opened_by(&content, keys) {
                    crate::keys::Opened::By(recipient) => Some(recipient),
                    crate::keys::Opened::NotByThisKey | crate::keys::Opened::NotAge => None,
                },
                _ => None,
            };
            out.push(Generation {
                generation: generation as u32,
                id,
                created_at,
                format,
                description,
                recipient,
            });
        }
        Ok(out)
    }

    /// Re-saves generation `generation` of `scope` as the newest, encrypted anew to the key
    /// file's first identity and [`ConfigStore::encrypt_to`]'s recipients (after a key rotation the newest row is then readable with the new
    /// key, as restinpieces expects). Returns the new row id.
    pub fn rollback(&self, scope: &str, generation: u32) -> Result<i64> {
        self.rollback_row(scope, generation, None)
    }

    /// [`ConfigStore::rollback`] of the row `expected_id` that generation `generation` was when
    /// the caller checked it: refused (bad input, nothing written) when a save in between made
    /// generation `generation` another row.
    pub fn rollback_checked(&self, scope: &str, generation: u32, expected_id: i64) -> Result<i64> {
        self.rollback_row(scope, generation, Some(expected_id))
    }

    fn rollback_row(&self, scope: &str, generation: u32, expected: Option<i64>) -> Result<i64> {
        let keys = KeyRing::read(&self.key)?;
        let conn = self.connect_read()?;
        let row = self.fetch(&conn, scope, generation)?;
        drop(conn);
        if let Some(expected) = expected.filter(|id| *id != row.id) {
            return Err(Error::Usage(format!(
                "generation {generation} of `{scope}` was row id {expected} when it was checked and is row id {} now (saved meanwhile): look at `config list` and roll back again",
                row.id
            )));
        }
        let content = self.usable(&row, scope)?;
        let plaintext = self.decrypt(&keys, scope, generation, row.id, content)?;
        self.same_key_as_newest(scope, &keys)?;
        let content = crate::keys::encrypt(&keys, &self.recipients, &plaintext)?;
        let description = format!("rollback to generation {generation} (id {})", row.id);
        self.insert(scope, &content, &row.format, &description)
    }

    fn insert(&self, scope: &str, content: &[u8], format: &str, description: &str) -> Result<i64> {
        self.not_a_directory()?;
        let conn = Connection::open_with_flags(
            &self.db,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.classify(e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.sqlite("cannot configure connection", e))?;
        conn.execute_batch(SCHEMA).map_err(|e| self.classify(e))?;
        conn.execute(
            "INSERT INTO app_config (scope, content, format, description) VALUES (?, ?, ?, ?)",
            rusqlite::params![scope, content, format, description],
        )
        .map_err(|e| self.classify(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Refuses (unless [`ConfigStore::allow_new_key`]) when the newest generation of `scope` is
    /// encrypted to another key than the key ring's first identity, the one a save encrypts
    /// to. A newest generation that is not an age file at all does not count: saving a good
    /// one is its fix.
    fn same_key_as_newest(&self, scope: &str, keys: &KeyRing) -> Result<()> {
        if self.new_key || !self.db.exists() {
            return Ok(());
        }
        self.same_key_as_newest_in(&self.connect_read()?, scope, keys)
    }

    /// [`Self::same_key_as_newest`] on `conn` (inside a write transaction: no rekey between the
    /// check and the write).
    pub(crate) fn same_key_as_newest_in(
        &self,
        conn: &Connection,
        scope: &str,
        keys: &KeyRing,
    ) -> Result<()> {
        if self.new_key {
            return Ok(());
        }
        let newest = match self.fetch(conn, scope, 0) {
            Ok(row) => row,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Ok(content) = &newest.content else {
            return Ok(());
        };
        let first = KeyRing::from_identities(vec![keys.first().clone()]);
        match crate::keys::opened_by(content, &first) {
            crate::keys::Opened::By(_) | crate::keys::Opened::NotAge => Ok(()),
            crate::keys::Opened::NotByThisKey => Err(Error::KeyChanged {
                key: self.key.clone(),
                recipient: keys.recipient().to_string(),
                db: self.db.clone(),
                scope: scope.into(),
                id: newest.id,
            }),
        }
    }

    /// The row's content, once its format says it is a litestream config.
    fn usable<'r>(&self, row: &'r Row, scope: &str) -> Result<&'r [u8]> {
        if !matches!(row.format.as_str(), "yml" | "yaml") {
            return Err(Error::RowFormat {
                db: self.db.clone(),
                scope: scope.into(),
                id: row.id,
                why: if row.format == "toml" {
                    " (the table's default, which a row inserted without `format` gets)"
                } else {
                    ""
                },
                format: row.format.clone(),
            });
        }
        match &row.content {
            Ok(content) => Ok(content),
            Err(kind) => Err(Error::RowContent {
                db: self.db.clone(),
                scope: scope.into(),
                id: row.id,
                kind,
            }),
        }
    }

    fn not_a_directory(&self) -> Result<()> {
        if self.db.is_dir() {
            return Err(Error::Usage(format!(
                "{} is a directory: pass the SQLite database file with --db",
                self.db.display()
            )));
        }
        Ok(())
    }

    fn connect_read(&self) -> Result<Connection> {
        self.not_a_directory()?;
        if !self.db.exists() {
            return Err(Error::StoreMissing {
                path: self.db.clone(),
            });
        }
        let conn = Connection::open_with_flags(
            &self.db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.classify(e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.sqlite("cannot configure connection", e))?;
        // Reading the schema is what tells a SQLite file from anything else.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| self.classify(e))?;
        Ok(conn)
    }

    fn fetch(&self, conn: &Connection, scope: &str, generation: u32) -> Result<Row> {
        let not_found = |count: usize| {
            let what = if count == 0 {
                format!("no config saved for scope `{scope}`")
            } else {
                format!("scope `{scope}` has {count} generation(s), so there is no generation {generation}")
            };
            let hint = if count == 0 {
                "save one with `rip-litestream config save litestream.yml` (or `rip-litestream init`)".to_string()
            } else {
                format!("pick 0..={} (see `rip-litestream config list`)", count - 1)
            };
            Error::NotFound {
                db: self.db.clone(),
                what,
                hint,
            }
        };
        if !has_table(conn, &self.db)? {
            return Err(not_found(0));
        }
        let row = conn
            .query_row(
                SELECT_GENERATION,
                rusqlite::params![scope, generation],
                |r| {
                    Ok(Row {
                        id: r.get(0)?,
                        content: content_bytes(r.get_ref(1)?),
                        format: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        match row {
            Some(row) => Ok(row),
            None => {
                let count: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM app_config WHERE scope = ?",
                        [scope],
                        |r| r.get(0),
                    )
                    .map_err(|e| self.sqlite("cannot read app_config", e))?;
                Err(not_found(count as usize))
            }
        }
    }

    fn decrypt(
        &self,
        keys: &KeyRing,
        scope: &str,
        generation: u32,
        id: i64,
        content: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let corrupt = |reason: String| Error::Corrupt {
            db: self.db.clone(),
            scope: scope.into(),
            generation,
            id,
            reason,
        };
        crate::keys::decrypt(keys, content).map_err(|e| match e {
            crate::keys::DecryptFailure::NoMatchingKey => Error::WrongKey {
                key: self.key.clone(),
                db: self.db.clone(),
                scope: scope.into(),
                generation,
            },
            crate::keys::DecryptFailure::Unreadable(reason) => corrupt(reason),
        })
    }

    fn sqlite(&self, op: &'static str, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            op,
            path: self.db.clone(),
            source,
        }
    }

    /// Maps SQLite errors that mean "the user pointed us at the wrong thing" to bad input.
    fn classify(&self, e: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::NotADatabase) => Error::NotSqlite {
                path: self.db.clone(),
            },
            Some(C::ReadOnly) | Some(C::CannotOpen) | Some(C::PermissionDenied) => {
                Error::StoreReadOnly {
                    path: self.db.clone(),
                    reason: e.to_string(),
                }
            }
            _ => self.write_failed("cannot use database", e),
        }
    }

    /// `op` failed with `e`; a write lock held by another process for longer than the busy
    /// timeout is said as such (nothing was changed: the transaction rolls back).
    pub(crate) fn write_failed(&self, op: &'static str, e: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => self.sqlite(
                "nothing was changed, try again once the other writer is done: for 5 s another process held the write lock",
                e,
            ),
            _ => self.sqlite(op, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_checked_against_a_row_that_moved_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, key) = (dir.path().join("s.db"), dir.path().join("k"));
        crate::keys::generate(&key).unwrap();
        let store = ConfigStore::open_or_create(&db, &key).unwrap();
        let first = store.save("litestream", b"# one\n", "yml", "").unwrap();
        store.save("litestream", b"# two\n", "yml", "").unwrap();
        // Generation 1 is `first` now; a save in between makes it the second row.
        store.save("litestream", b"# three\n", "yml", "").unwrap();
        let err = store.rollback_checked("litestream", 1, first).unwrap_err();
        assert!(
            err.is_bad_input() && err.to_string().contains("saved meanwhile"),
            "{err}"
        );
        assert_eq!(
            store.list("litestream").unwrap().len(),
            3,
            "nothing written"
        );
        let again = store.rollback_checked("litestream", 2, first).unwrap();
        assert_eq!(&*store.load("litestream", 0).unwrap().plaintext, b"# one\n");
        assert_eq!(store.newest_id("litestream").unwrap(), Some(again));
    }
}
