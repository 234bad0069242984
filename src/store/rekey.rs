//! Writes that must see the table as it was read: a save refused when another generation was
//! saved meanwhile (`config edit`), and the re-encryption of every generation of a scope to a
//! new key in one transaction (`config rekey`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use super::rows::{check_format, content_bytes, has_table};
use super::ConfigStore;
use crate::error::{Error, Result};
use crate::keys::KeyRing;

/// What [`ConfigStore::save_if_newest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedSave {
    /// Saved as this row id.
    Saved(i64),
    /// Not saved: the newest row of the scope is this one now, not the one expected.
    Superseded(Option<i64>),
}

/// A row's id and its content (or the kind of value `content` holds instead of bytes).
type IdContent = (i64, std::result::Result<Vec<u8>, &'static str>);

const NEWEST_ID: &str =
    "SELECT id FROM app_config WHERE scope = ? ORDER BY created_at DESC, id DESC LIMIT 1";

impl ConfigStore {
    /// [`ConfigStore::save`], but only while the newest row of `scope` is still `expected` (the
    /// one the caller started from; `None`: no row). The check and the insert are one write
    /// transaction, so no save in between is silently overtaken.
    pub fn save_if_newest(
        &self,
        scope: &str,
        plaintext: &[u8],
        format: &str,
        description: &str,
        expected: Option<i64>,
    ) -> Result<CheckedSave> {
        check_format(format)?;
        let keys = KeyRing::read(&self.key)?;
        self.same_key_as_newest(scope, &keys)?;
        let content = crate::keys::encrypt(&keys, &self.recipients, plaintext)?;
        let mut conn = self.connect_write()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.classify(e))?;
        let newest: Option<i64> = tx
            .query_row(NEWEST_ID, [scope], |r| r.get(0))
            .optional()
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        if newest != expected {
            return Ok(CheckedSave::Superseded(newest));
        }
        // Again inside the transaction: a rekey since the first look would leave this row the
        // only one under the old key.
        self.same_key_as_newest_in(&tx, scope, &keys)?;
        tx.execute(
            "INSERT INTO app_config (scope, content, format, description) VALUES (?, ?, ?, ?)",
            rusqlite::params![scope, content, format, description],
        )
        .map_err(|e| self.classify(e))?;
        let id = tx.last_insert_rowid();
        tx.commit()
            .map_err(|e| self.write_failed("cannot commit to app_config", e))?;
        Ok(CheckedSave::Saved(id))
    }

    /// Re-encrypts every generation of `scope` to the first identity of the key file `new_key`,
    /// in one transaction. Each row keeps its id, `created_at`, `format` and `description` (a
    /// running supervisor sees no new generation); only `content` changes. Before the commit
    /// every new ciphertext is decrypted with `new_key` and compared byte for byte with the
    /// plaintext; any failure rolls everything back. Neither key file is written. Returns the
    /// number of generations re-encrypted.
    pub fn rekey(&self, scope: &str, new_key: &Path) -> Result<usize> {
        self.rekey_with(scope, new_key, &|_, _| {})
    }

    /// [`ConfigStore::rekey`] with `tamper` applied to each new ciphertext before it is
    /// verified (the tests' way to make a verification fail).
    pub(crate) fn rekey_with(
        &self,
        scope: &str,
        new_key: &Path,
        tamper: &dyn Fn(usize, &mut Vec<u8>),
    ) -> Result<usize> {
        let old = KeyRing::read(&self.key)?;
        let new = KeyRing::read(new_key).map_err(|e| match e {
            e if e.is_bad_input() => Error::Usage(format!("--new-key {}: {e}", new_key.display())),
            e => e,
        })?;
        if new.recipient().to_string() == old.recipient().to_string() {
            return Err(Error::Usage(format!(
                "{} holds the same key as --age-key {} ({}): pass the new key file with --new-key (create one with `rip-litestream keygen --output new.key`)",
                new_key.display(),
                self.key.display(),
                new.recipient()
            )));
        }
        let mut conn = self.connect_write()?;
        if !has_table(&conn, &self.db)? {
            return Err(self.nothing_to_rekey(scope));
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.classify(e))?;
        let rows = self.rows_of(&tx, scope)?;
        if rows.is_empty() {
            return Err(self.nothing_to_rekey(scope));
        }
        for (generation, (id, content)) in rows.iter().enumerate() {
            let content = content.as_ref().map_err(|kind| Error::RowContent {
                db: self.db.clone(),
                scope: scope.into(),
                id: *id,
                kind,
            })?;
            let plaintext = self
                .decrypt(&old, scope, generation as u32, *id, content)
                .map_err(|e| {
                    let already = crate::keys::decrypt(&new, content).is_ok();
                    let why = if already {
                        format!("it is already encrypted to the key in {} (an earlier rekey?)", new_key.display())
                    } else {
                        e.to_string()
                    };
                    Error::Usage(format!(
                        "nothing was re-encrypted: generation {generation} (row id {id}) cannot be decrypted with --age-key: {why}"
                    ))
                })?;
            let mut fresh = crate::keys::encrypt(&new, &self.recipients, &plaintext)?;
            tamper(generation, &mut fresh);
            let verified: Option<Zeroizing<Vec<u8>>> = crate::keys::decrypt(&new, &fresh).ok();
            if verified.as_deref().map(|v| &v[..]) != Some(&plaintext[..]) {
                return Err(Error::Usage(format!(
                    "nothing was re-encrypted: generation {generation} (row id {id}) encrypted to {} does not decrypt back to its config with {}: check that the key file is a good age key",
                    new.recipient(),
                    new_key.display()
                )));
            }
            tx.execute(
                "UPDATE app_config SET content = ? WHERE id = ?",
                rusqlite::params![fresh, id],
            )
            .map_err(|e| self.classify(e))?;
        }
        tx.commit()
            .map_err(|e| self.write_failed("cannot commit to app_config", e))?;
        Ok(rows.len())
    }

    /// The other scopes than `scope` with rows the store's key (`--age-key`) opens, and how
    /// many: what still needs that key after `scope` is rekeyed (restinpieces keeps its own
    /// config in the same table, encrypted to the same key).
    pub fn other_scopes_under_this_key(&self, scope: &str) -> Result<Vec<(String, usize)>> {
        let keys = KeyRing::read(&self.key)?;
        let conn = self.connect_read()?;
        if !has_table(&conn, &self.db)? {
            return Ok(Vec::new());
        }
        let mut stmt = conn
            .prepare("SELECT scope, content FROM app_config WHERE scope <> ? ORDER BY scope, id")
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        let rows = stmt
            .query_map([scope], |r| {
                Ok((r.get::<_, String>(0)?, content_bytes(r.get_ref(1)?)))
            })
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        let mut out: Vec<(String, usize)> = Vec::new();
        for row in rows {
            let (other, content) = row.map_err(|e| self.sqlite("cannot read app_config", e))?;
            let Ok(content) = content else { continue };
            if !matches!(
                crate::keys::opened_by(&content, &keys),
                crate::keys::Opened::By(_)
            ) {
                continue;
            }
            match out.last_mut() {
                Some((s, n)) if *s == other => *n += 1,
                _ => out.push((other, 1)),
            }
        }
        Ok(out)
    }

    /// Every row of `scope` (id, content), newest first.
    fn rows_of(&self, conn: &Connection, scope: &str) -> Result<Vec<IdContent>> {
        let mut stmt = conn
            .prepare(
                "SELECT id, content FROM app_config WHERE scope = ? ORDER BY created_at DESC, id DESC",
            )
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        let rows = stmt
            .query_map([scope], |r| Ok((r.get(0)?, content_bytes(r.get_ref(1)?))))
            .map_err(|e| self.sqlite("cannot read app_config", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sqlite("cannot read app_config", e))
    }

    fn nothing_to_rekey(&self, scope: &str) -> Error {
        Error::NotFound {
            db: self.db.clone(),
            what: format!("no config saved for scope `{scope}`"),
            hint: "nothing to re-encrypt: check --db and --scope".into(),
        }
    }

    /// A read-write connection to the existing database, with the schema in place.
    fn connect_write(&self) -> Result<Connection> {
        self.connect_read()?;
        let conn = Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.classify(e))?;
        // Polled every millisecond for 5 s (SQLite's own timeout sleeps up to 100 ms between
        // tries, so an application committing back to back always has the lock again).
        conn.busy_handler(Some(|tries| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            tries < 5000
        }))
        .map_err(|e| self.sqlite("cannot configure connection", e))?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row: id, scope, content, format, description, created_at.
    type Row = (i64, String, Vec<u8>, String, Option<String>, String);

    /// Every row of the table, in id order: what "byte-identical" is checked against.
    fn table(db: &Path) -> Vec<Row> {
        let conn = Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, scope, content, format, description, created_at FROM app_config ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    fn store_with_three() -> (tempfile::TempDir, ConfigStore) {
        let dir = tempfile::tempdir().unwrap();
        let (db, key) = (dir.path().join("s.db"), dir.path().join("k"));
        crate::keys::generate(&key).unwrap();
        let store = ConfigStore::open_or_create(&db, &key).unwrap();
        for text in ["# one\n", "# two\n", "# three\n"] {
            store
                .save("litestream", text.as_bytes(), "yml", "d")
                .unwrap();
        }
        store.save("other", b"# other\n", "yml", "").unwrap();
        (dir, store)
    }

    #[test]
    fn a_verification_failure_rolls_every_row_back() {
        let (dir, store) = store_with_three();
        let new_key = dir.path().join("new");
        crate::keys::generate(&new_key).unwrap();
        let before = table(store.db_path());
        // The first two rows are updated inside the transaction before the third fails.
        let err = store
            .rekey_with("litestream", &new_key, &|generation, c| {
                if generation == 2 {
                    let last = c.len() - 1;
                    c[last] ^= 1;
                }
            })
            .unwrap_err();
        assert!(
            err.is_bad_input() && err.to_string().contains("generation 2"),
            "{err}"
        );
        assert_eq!(table(store.db_path()), before, "nothing changed");
        assert_eq!(&*store.load("litestream", 2).unwrap().plaintext, b"# one\n");
    }

    #[test]
    fn a_rekey_keeps_ids_dates_formats_descriptions_and_other_scopes() {
        let (dir, store) = store_with_three();
        let new_key = dir.path().join("new");
        crate::keys::generate(&new_key).unwrap();
        let before = table(store.db_path());
        assert_eq!(store.rekey("litestream", &new_key).unwrap(), 3);
        let after = table(store.db_path());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((b.0, &b.1, &b.3, &b.4, &b.5), (a.0, &a.1, &a.3, &a.4, &a.5));
            assert_eq!(
                b.2 == a.2,
                b.1 == "other",
                "only the scope's content changes"
            );
        }
        let rekeyed = ConfigStore::open(store.db_path(), &new_key).unwrap();
        assert_eq!(
            &*rekeyed.load("litestream", 0).unwrap().plaintext,
            b"# three\n"
        );
        assert!(
            store.load("litestream", 0).is_err(),
            "the old key no longer opens it"
        );
    }

    #[test]
    fn a_checked_save_behind_a_newer_row_writes_nothing() {
        let (_dir, store) = store_with_three();
        let newest = store.newest_id("litestream").unwrap();
        store.save("litestream", b"# four\n", "yml", "").unwrap();
        let before = table(store.db_path());
        let got = store
            .save_if_newest("litestream", b"# five\n", "yml", "edited", newest)
            .unwrap();
        assert_eq!(
            got,
            CheckedSave::Superseded(store.newest_id("litestream").unwrap())
        );
        assert_eq!(table(store.db_path()), before);
        let now = store.newest_id("litestream").unwrap();
        let CheckedSave::Saved(id) = store
            .save_if_newest("litestream", b"# five\n", "yml", "edited", now)
            .unwrap()
        else {
            panic!("not saved")
        };
        assert_eq!(store.newest_id("litestream").unwrap(), Some(id));
    }
}
