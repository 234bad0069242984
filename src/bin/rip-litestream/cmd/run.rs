//! `run`: supervise litestream (and the application after `--`) until SIGTERM/SIGINT.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::entrypoint::{self, App};
use restinpieces_litestream::{
    health, reaper, ConfigStore, Error, Litestream, Options, ReloadSource,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::args::{need, Global, RunArgs};
use crate::cmd::load_config;
use crate::daemon::{daemon_runtime, listen_for_signals, supervise_only};

// Long on purpose: one flag after the other becomes an option, then one runtime serves it all.
pub(crate) fn run_command(g: &Global, args: RunArgs) -> Result<u8, Error> {
    let db = need(&g.db, "db")?;
    if !db.exists() {
        return Err(Error::Usage(format!(
            "the config store {} does not exist. It cannot be restored from the backup it describes: keep the config in its own small store (--db config.db, safe to ship in the image since it is encrypted) and let --restore-if-missing restore the application database; or recreate it with `rip-litestream init` or `rip-litestream config save`",
            db.display()
        )));
    }
    let (config, config_id) = load_config(g)?;
    let options = {
        let mut options = Options::default();
        options.litestream = args.litestream;
        options.handoff = args.handoff.unwrap_or_default();
        options.grace = args.grace;
        options.backoff = Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
            ..Backoff::default()
        };
        options.max_restarts = args.max_restarts;
        options.retry_start = args.retry_start;
        options.logs = args.litestream_logs;
        options.instance = Some(db.to_path_buf());
        options.restore_if_missing = args.restore_if_missing;
        options.allow_fresh_db = args.allow_fresh_db;
        options.verify_every = args.verify_every;
        options.replica_check = Some(args.replica_check).filter(|d| !d.is_zero());
        options.config_id = Some(config_id);
        options.reload = Some(ReloadSource {
            store: ConfigStore::open(db, need(&g.age_key, "key")?)?,
            scope: g.scope.clone(),
            check_every: (!args.reload_check.is_zero()).then_some(args.reload_check),
        });
        options
    };
    let grace = options.grace_for(&config);
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
        tokio::spawn(crate::trim::after_ready(daemon.status()));
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
