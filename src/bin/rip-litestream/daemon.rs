//! The runtime the daemons (`run`, `follow`) live on, their signals, and supervising without an
//! application.

use std::path::Path;

use restinpieces_litestream::entrypoint::{self, HostSignal};
use restinpieces_litestream::{Error, Litestream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// The runtime `run` and `follow` supervise on: one worker (the supervisor's tasks mostly wait;
/// SQLite and file work goes to the blocking pool), glibc's allocator capped at two arenas.
/// Both are for the idle daemon's memory (BENCHMARKS.md, "Footprint").
pub(crate) fn daemon_runtime() -> Result<tokio::runtime::Runtime, Error> {
    // Each thread that allocates would otherwise get an arena of its own (up to 8 per core),
    // every one holding pages of its own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is thread-safe and only sets an allocator parameter.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", "tokio", e))
}

/// Passes SIGTERM, SIGINT and SIGHUP on as [`HostSignal`]s.
pub(crate) async fn listen_for_signals(tx: mpsc::UnboundedSender<HostSignal>) {
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

/// `run` without an application: supervise until SIGTERM/SIGINT (a second one escalates).
pub(crate) async fn supervise_only(
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

/// Runs one future to completion on a small runtime (for the commands that are not `run`).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
        .block_on(f)
}
