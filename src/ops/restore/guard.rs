//! The fresh-database guard: before replication starts, no database may be replicated that
//! would replace a good backup with a new empty file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::binary::LitestreamBinary;
use crate::config::{DbTarget, LitestreamConfig, Strictness};
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;

use super::{replica_has_backup, restore, restored_marker, RestoreRequest};

/// Before replication starts, for each `path` database of `config`, and each file found in a
/// `dir` (file by file; `restore_missing` does not apply there: which files are missing is not
/// known):
/// - missing: restored from its replica when `restore_missing` (no backup yet: a fresh start);
///   otherwise refused while its replica holds backups (the application would create an empty
///   database and replace the latest backup with it), unless `allow_fresh_db`;
/// - present without litestream state while its replica holds backups: accepted when
///   `rip-litestream restore` put it there ([`restored_marker`]) or when its content equals the
///   replica's latest backup (restored by hand); refused otherwise, unless `allow_fresh_db`.
///
/// Every database is looked at in its own task, at most [`AT_ONCE`] at a time, each asking
/// litestream with a config naming it alone (with the whole config when that one fails); a
/// database whose replica is a local directory that does not exist (or is empty) holds no
/// backup, and litestream is not asked. Every refusal is reported, in config order.
pub async fn prepare_databases(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    restore_missing: bool,
    allow_fresh_db: bool,
) -> Result<()> {
    // The whole config, owned by the tasks (the fallback when a config of one fails).
    let whole = Arc::new(LitestreamConfig::parse(
        config.yaml().as_bytes(),
        Strictness::Lenient,
    )?);
    let mut single: HashMap<PathBuf, LitestreamConfig> =
        if config.dbs().iter().any(|t| matches!(t, DbTarget::Path(_))) {
            config.for_each_path_db().into_iter().collect()
        } else {
            HashMap::new()
        };
    let mut jobs: Vec<Job> = Vec::new();
    for target in config.dbs() {
        match target {
            DbTarget::Path(db) => jobs.push(Job {
                db: db.clone(),
                one: single.remove(db).map(Arc::new),
                whole: Some(whole.clone()),
                restore_missing,
            }),
            DbTarget::Dir { dir, pattern } => {
                // litestream replicates each file of the directory to its own place in the
                // replica, and its one-off commands do not know the files of a `dir:` entry: each
                // is asked about through a config naming that file alone.
                for db in crate::wal_guard::files_in(dir, pattern) {
                    let Some(one) = config.for_dir_file(dir, &db) else {
                        continue;
                    };
                    jobs.push(Job {
                        db,
                        one: Some(Arc::new(one)),
                        whole: None,
                        restore_missing: false,
                    });
                }
            }
        }
    }
    let bound = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let (bin, parent, bound) = (bin.clone(), private_parent.to_path_buf(), bound.clone());
        tasks.spawn(async move {
            let _permit = bound.acquire_owned().await;
            (i, job.run(&bin, mode, &parent, allow_fresh_db).await)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => return Err(Error::LitestreamFailed(format!("the guard failed: {e}"))),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut refusals = Vec::new();
    for (_, result) in results {
        match result {
            Ok(()) => {}
            Err(Error::Usage(why)) => refusals.push(why),
            Err(other) => return Err(other),
        }
    }
    match refusals.len() {
        0 => Ok(()),
        _ => Err(Error::Usage(refusals.join("\n"))),
    }
}

/// How many databases the guard looks at at once (each may run a litestream).
pub const AT_ONCE: usize = 8;

/// One database for the guard, with the configs to ask litestream about it.
struct Job {
    db: PathBuf,
    /// A config naming it alone.
    one: Option<Arc<LitestreamConfig>>,
    /// The whole config (a `path` database): for restores, and for the listing when `one` is
    /// missing or fails.
    whole: Option<Arc<LitestreamConfig>>,
    restore_missing: bool,
}

impl Job {
    async fn run(
        self,
        bin: &LitestreamBinary,
        mode: HandoffMode,
        parent: &Path,
        allow_fresh_db: bool,
    ) -> Result<()> {
        // Restores and comparisons with the config litestream replicates with; the listing
        // (the one step every database needs) with the config of one database first.
        let Some(config) = self.whole.as_deref().or(self.one.as_deref()) else {
            return Ok(());
        };
        let has_backup = || async {
            let Some(one) = self.one.as_deref() else {
                return replica_has_backup(bin, config, mode, parent, &self.db).await;
            };
            if one.local_replica_dir().is_some_and(|d| holds_nothing(&d)) {
                return Ok(false);
            }
            match replica_has_backup(bin, one, mode, parent, &self.db).await {
                Err(e) if self.whole.is_some() => {
                    tracing::debug!(db = %self.db.display(), error = %e, "listing with a config of one database failed: asking with the whole config");
                    replica_has_backup(bin, config, mode, parent, &self.db).await
                }
                other => other,
            }
        };
        let via = Via { bin, mode, parent };
        guard_one(
            via,
            config,
            &self.db,
            self.restore_missing,
            allow_fresh_db,
            has_backup,
        )
        .await
    }
}

/// How litestream is run for the guard.
#[derive(Clone, Copy)]
struct Via<'a> {
    bin: &'a LitestreamBinary,
    mode: HandoffMode,
    parent: &'a Path,
}

/// True when the local replica directory `dir` does not exist or is empty: no backup there
/// for certain. Anything else (files, an error) is for litestream to judge.
fn holds_nothing(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(mut entries) => entries.next().is_none(),
    }
}

/// [`prepare_databases`] for one database file, asking litestream with `config`.
async fn guard_one(
    via: Via<'_>,
    config: &LitestreamConfig,
    db: &Path,
    restore_missing: bool,
    allow_fresh_db: bool,
    has_backup: impl AsyncFnOnce() -> Result<bool>,
) -> Result<()> {
    if !db.exists() && restore_missing {
        let req = RestoreRequest {
            db: db.to_path_buf(),
            if_replica_exists: true,
            ..RestoreRequest::default()
        };
        let restoring = super::RestoringOnBoot::begin();
        let done = restore(via.bin, config, via.mode, via.parent, &req).await;
        drop(restoring);
        let done = done?;
        if done.restored {
            tracing::info!(db = %db.display(), "restored from the replica");
        } else {
            tracing::info!(db = %db.display(), "no backup in the replica yet: fresh start");
        }
        return Ok(());
    }
    let marker = restored_marker(db);
    if config.state_dir(db).exists() {
        let _ = std::fs::remove_file(&marker);
        return Ok(());
    }
    if allow_fresh_db || (db.exists() && marker.exists()) {
        return Ok(());
    }
    let has_backup = match has_backup().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(db = %db.display(), error = %e, "cannot tell whether the replica already holds backups; replicating anyway");
            false
        }
    };
    if !has_backup {
        return Ok(());
    }
    if !db.exists() {
        return Err(Error::Usage(format!(
            "refusing to start: {db} does not exist but its replica already holds backups, and the application would create an empty database that replaces the latest backup. Restore it first (run --restore-if-missing, or `rip-litestream restore`), or pass --allow-fresh-db to start anew on purpose",
            db = db.display()
        )));
    }
    if equals_latest_backup(via.bin, config, via.mode, via.parent, db).await {
        tracing::info!(db = %db.display(), "no litestream state beside it, but it equals the replica's latest backup (restored by hand): replicating it");
        return Ok(());
    }
    Err(Error::Usage(format!(
        "refusing to replicate {db}: it has no litestream state beside it ({state}) and differs from the latest backup its replica holds, so it is probably a new file that would replace a good backup. Move it away and start with --restore-if-missing (or `rip-litestream restore`), or pass --allow-fresh-db if this file is really the one to keep",
        db = db.display(),
        state = config.state_dir(db).display()
    )))
}

/// True when `db`'s content equals the replica's latest backup (restored into a private
/// temporary directory and compared table by table).
async fn equals_latest_backup(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    db: &Path,
) -> bool {
    let Ok(dir) = tempfile::Builder::new()
        .prefix("latest-")
        .tempdir_in(private_parent)
    else {
        return false;
    };
    let copy = dir.path().join("latest.db");
    let req = RestoreRequest {
        db: db.to_path_buf(),
        output: Some(copy.clone()),
        ..RestoreRequest::default()
    };
    // Before ready too: systemd's start timeout is extended while this copy is restored.
    let restoring = super::RestoringOnBoot::begin();
    let restored = restore(bin, config, mode, private_parent, &req).await;
    drop(restoring);
    if restored.is_err() {
        return false;
    }
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let same = match (
            crate::content::content_hash(&db),
            crate::content::content_hash(&copy),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        drop(dir);
        same
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_database_gets_a_config_of_its_own() {
        let yaml = "access-key-id: AK\nsocket:\n  enabled: true\n  path: /run/x.sock\ndbs:\n  - path: /d/a.db\n    replica:\n      type: file\n      path: /r/a/\n  - path: /d/b.db\n    replica:\n      url: file:///r/b\n  - path: /d/c.db\n    replica:\n      url: s3://bucket/c\n  - path: /d/e.db\n    replica:\n      path: rel/e\n  - dir: /d/t\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: /r/t\n";
        let config = LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).unwrap();
        let each = config.for_each_path_db();
        let names: Vec<&Path> = each.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            names,
            ["/d/a.db", "/d/b.db", "/d/c.db", "/d/e.db"].map(Path::new)
        );
        for (db, one) in &each {
            assert_eq!(one.dbs(), [DbTarget::Path(db.clone())]);
            assert!(
                one.socket().is_none(),
                "no control socket for a one-off command"
            );
            assert!(one.yaml().contains("access-key-id"), "{}", one.yaml());
        }
        let dirs: Vec<Option<PathBuf>> = each.iter().map(|(_, c)| c.local_replica_dir()).collect();
        assert_eq!(
            dirs,
            [Some("/r/a".into()), Some("/r/b".into()), None, None],
            "only local replicas at an absolute path"
        );
        let tenant = config
            .for_dir_file(Path::new("/d/t"), Path::new("/d/t/x.db"))
            .unwrap();
        assert_eq!(tenant.local_replica_dir(), Some("/r/t/x.db".into()));
    }

    #[test]
    fn only_a_missing_or_empty_directory_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(holds_nothing(&dir.path().join("absent")));
        assert!(holds_nothing(dir.path()));
        std::fs::create_dir(dir.path().join("ltx")).unwrap();
        assert!(!holds_nothing(dir.path()));
    }
}
