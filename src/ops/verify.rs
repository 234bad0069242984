//! `verify`: proves a backup is restorable and current without touching the application's data.
//! A backup is restored into a private temporary directory (litestream's `-integrity-check full`
//! runs `PRAGMA integrity_check` on it) and compared with the live database.
//!
//! With litestream running under rip-litestream (its control socket), the comparison is pinned
//! to one of litestream's transactions, so a database that never stops being written still gets
//! a verdict ([`crate::ops::pinned`]): a read transaction on the live database, a sync naming
//! transaction T, every page of the live database at T hashed (the read transaction ends here),
//! then, once the replica holds T, `litestream restore -txid T` and the same hash of the copy.
//! Without it, the latest backup is compared with the live database as it is.
//!
//! Outcomes: `ok` (the restored pages equal the live database's at the same transaction),
//! `failed` (the restore fails, or the replica says it holds T and the restore of T is not the
//! live database at T), `inconclusive` (the replica did not reach T within the timeout, or
//! without litestream under rip-litestream the two differ: lag, not breakage).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::binary::LitestreamBinary;
use crate::config::LitestreamConfig;
pub use crate::content::{content_hash, integrity};
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;
use crate::ops::pinned::{file_image, Image};
use crate::restore::{restore, RestoreRequest};
pub use crate::status::{Outcome, VerifyReport};

/// Verifies `db` (a `path` database of `config`) against its replica.
pub async fn verify(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    db: &Path,
    control: Option<&ControlClient>,
    mode: HandoffMode,
    private_parent: &Path,
    timeout: Duration,
) -> Result<VerifyReport> {
    let ctx = Ctx {
        bin,
        config,
        db,
        mode,
        private_parent,
        timeout,
        deadline: Instant::now() + timeout,
    };
    match control {
        Some(control) => pinned(&ctx, control).await,
        None => unsupervised(&ctx).await,
    }
}

struct Ctx<'a> {
    bin: &'a LitestreamBinary,
    config: &'a LitestreamConfig,
    db: &'a Path,
    mode: HandoffMode,
    private_parent: &'a Path,
    timeout: Duration,
    deadline: Instant,
}

impl Ctx<'_> {
    fn report(
        &self,
        outcome: Outcome,
        reason: String,
        restored: Option<u64>,
        live: Option<u64>,
    ) -> VerifyReport {
        VerifyReport {
            outcome,
            db: self.db.to_path_buf(),
            reason,
            restored_txid: restored,
            live_txid: live,
            lag_txids: match (restored, live) {
                (Some(r), Some(l)) => Some(l.saturating_sub(r)),
                _ => None,
            },
            at: SystemTime::now(),
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The comparison at one of litestream's transactions (see the module docs).
async fn pinned(ctx: &Ctx<'_>, control: &ControlClient) -> Result<VerifyReport> {
    let path = crate::runtime::absolute(ctx.db)?;
    let name = path.to_string_lossy().into_owned();
    let state_dir = ctx.config.state_dir(ctx.db);
    // 1. The live database at a transaction litestream names.
    let mut pause = Duration::from_millis(20);
    let Pinned {
        txid,
        image: live,
        replicated: already,
    } = loop {
        let why = match pin_once(ctx.db, &state_dir, control, &name, ctx.left()).await? {
            Ok(pinned) => break pinned,
            Err(why) => why,
        };
        if ctx.left() <= pause {
            return Ok(ctx.report(
                Outcome::Inconclusive,
                format!(
                    "could not read the live database at one of litestream's transactions within {:?}: {why}",
                    ctx.timeout
                ),
                None,
                None,
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    };
    tracing::debug!(db = %ctx.db.display(), txid, pages = live.pages, "verify: the live database pinned");
    // 2. The replica holds it.
    // (litestream's `/sync` is not free: 0.4-0.9 s on an idle 110 MB database.)
    let waited = match already {
        true => Ok(()),
        false => replicated(control, &name, txid, ctx.deadline).await,
    };
    if let Err(reached) = waited {
        return Ok(ctx.report(
            Outcome::Inconclusive,
            format!(
                "the replica is behind the live database: it did not reach transaction {txid:016x} within {:?}",
                ctx.timeout
            ),
            reached,
            Some(txid),
        ));
    }
    tracing::debug!(db = %ctx.db.display(), txid, "verify: the replica holds the pinned transaction");
    // 3. Restored exactly there, the same pages.
    let (got, image) = match restored_copy(ctx, Some(txid), live.page_size).await? {
        Copy::Restored {
            txid: got,
            print: Print::Pages(image),
        } => (got, image),
        Copy::Restored { .. } => unreachable!("a page size asks for the pages"),
        Copy::Failed { reason, txid: got } => {
            return Ok(ctx.report(Outcome::Failed, reason, got, Some(txid)))
        }
    };
    tracing::debug!(db = %ctx.db.display(), txid, "verify: restored and hashed");
    if got != Some(txid) {
        return Ok(ctx.report(
            Outcome::Failed,
            format!(
                "litestream reports the replica holds transaction {txid:016x}, yet its restore reached {}",
                got.map(|t| format!("{t:016x}")).unwrap_or_else(|| "no transaction".into())
            ),
            got,
            Some(txid),
        ));
    }
    if image != live {
        return Ok(ctx.report(
            Outcome::Failed,
            format!(
                "the restore of transaction {txid:016x} differs from the live database at that transaction ({} pages restored, {} live)",
                image.pages, live.pages
            ),
            got,
            Some(txid),
        ));
    }
    Ok(ctx.report(
        Outcome::Ok,
        format!(
            "the restored copy equals the live database at transaction {txid:016x} ({} pages)",
            live.pages
        ),
        got,
        Some(txid),
    ))
}

/// A transaction of litestream's and the live database's pages at it.
struct Pinned {
    txid: u64,
    image: Image,
    /// The same sync answered that the replica already holds it.
    replicated: bool,
}

/// One try at [`crate::ops::pinned`]: a read transaction, a sync, the live pages at its transaction.
/// `Ok(Err(why))` when this try could not pin one (try again).
async fn pin_once(
    db: &Path,
    state_dir: &Path,
    control: &ControlClient,
    name: &str,
    left: Duration,
) -> Result<std::result::Result<Pinned, String>> {
    let owned = db.to_path_buf();
    let held = blocking(move || crate::ops::pinned::hold(&owned)).await?;
    // Without `wait`: litestream keeps its own WAL read lock (docs/litestream-0.5.md).
    let synced = control
        .sync_local(
            name,
            left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
        )
        .await;
    let txid = match synced {
        Ok(s) => s
            .txid
            .map(|t| (t, s.replicated_txid))
            .ok_or_else(|| "litestream's sync named no transaction".to_string()),
        Err(e) => Err(format!("litestream did not sync: {e}")),
    };
    let (txid, replicated) = match txid {
        Ok(t) => t,
        Err(why) => {
            // Closing a connection is SQLite work too: not on an async worker.
            drop(tokio::task::spawn_blocking(move || drop(held)));
            return Ok(Err(why));
        }
    };
    let dir = state_dir.to_path_buf();
    let image = blocking(move || held.image_at(&dir, txid)).await?;
    Ok(image.map(|image| Pinned {
        txid,
        image,
        replicated: replicated.is_some_and(|r| r >= txid),
    }))
}

/// Waits until the replica of `name` holds `txid`; `Err` with the transaction it reached when it
/// did not by `deadline`. Polls `/sync` without `wait` (which would end litestream's read lock).
async fn replicated(
    control: &ControlClient,
    name: &str,
    txid: u64,
    deadline: Instant,
) -> std::result::Result<(), Option<u64>> {
    let mut pause = Duration::from_millis(20);
    let mut reached = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(s) = control
            .sync_local(
                name,
                left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
            )
            .await
        {
            reached = s.replicated_txid.or(reached);
            if s.replicated_txid.is_some_and(|r| r >= txid) {
                return Ok(());
            }
        }
        if deadline.saturating_duration_since(Instant::now()) <= pause {
            return Err(reached);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Without litestream under rip-litestream: the latest backup against the live database as it
/// is now (equal is `ok`; different may be lag, so `inconclusive`).
async fn unsupervised(ctx: &Ctx<'_>) -> Result<VerifyReport> {
    let owned = ctx.db.to_path_buf();
    let live = blocking(move || content_hash(&owned)).await?;
    let (txid, print) = match restored_copy(ctx, None, 0).await? {
        Copy::Restored { txid, print } => (txid, print),
        Copy::Failed { reason, txid } => {
            return Ok(ctx.report(Outcome::Failed, reason, txid, None))
        }
    };
    if print == Print::Content(live) {
        return Ok(ctx.report(
            Outcome::Ok,
            "the restored copy equals the live database".into(),
            txid,
            None,
        ));
    }
    Ok(ctx.report(
        Outcome::Inconclusive,
        format!(
            "the restored copy differs from the live database, and litestream is not running under rip-litestream for it: the replica may simply be behind (within {:?})",
            ctx.timeout
        ),
        txid,
        None,
    ))
}

/// A backup of `db`, restored into a private temporary directory and checked.
enum Copy {
    /// It restored (and passed litestream's integrity check): its transaction and hash.
    Restored { txid: Option<u64>, print: Print },
    /// The restore or the check failed.
    Failed { reason: String, txid: Option<u64> },
}

/// Restores `txid` (or the latest) and hashes the copy: its pages in `page_size` when not 0,
/// else its content.
async fn restored_copy(ctx: &Ctx<'_>, txid: Option<u64>, page_size: u32) -> Result<Copy> {
    let dir = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(ctx.private_parent)
        .map_err(|e| {
            Error::io(
                "cannot create a temporary directory in",
                ctx.private_parent,
                e,
            )
        })?;
    let copy = dir.path().join("restored.db");
    let req = RestoreRequest {
        db: ctx.db.to_path_buf(),
        output: Some(copy.clone()),
        txid: txid.map(|t| format!("{t:016x}")),
        ..RestoreRequest::default()
    };
    // `restore` runs litestream's `-integrity-check full`: a copy failing it fails the restore.
    let restored = match restore(ctx.bin, ctx.config, ctx.mode, ctx.private_parent, &req).await {
        Ok(r) => r,
        Err(Error::RestoreFailed { reason, .. }) => {
            return Ok(Copy::Failed {
                reason: format!("restore failed: {reason}"),
                txid: None,
            })
        }
        Err(e) => return Err(e),
    };
    let copied: PathBuf = copy.clone();
    let print = if page_size == 0 {
        Print::Content(blocking(move || content_hash(&copied)).await?)
    } else {
        Print::Pages(blocking(move || file_image(&copied, page_size)).await?)
    };
    drop(dir);
    Ok(Copy::Restored {
        txid: restored.txid,
        print,
    })
}

/// How a copy is compared.
#[derive(Debug, PartialEq, Eq)]
enum Print {
    /// Its pages ([`file_image`]).
    Pages(Image),
    /// Its schema and rows ([`content_hash`]).
    Content(u64),
}

/// `work` on a blocking thread: whole-database reads must not hold up the async workers (the
/// daemon's are few, and an embedding host's are not ours).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::LitestreamFailed(format!("verify's read did not finish: {e}")))?
}
