//! `follow`: a read-only copy kept up to date from a replica.

use std::path::Path;

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::follow::Follower;
use restinpieces_litestream::{health, Error, Options};
use tokio::sync::mpsc;

use crate::args::{FollowArgs, Global};
use crate::cmd::load_config;
use crate::daemon::{daemon_runtime, listen_for_signals, supervise_only};

pub(crate) fn follow_command(g: &Global, args: FollowArgs) -> Result<u8, Error> {
    use restinpieces_litestream::follow;
    let options = {
        let mut options = Options::default();
        options.litestream = args.litestream;
        options.handoff = args.handoff.unwrap_or_default();
        options.backoff = Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
            ..Backoff::default()
        };
        // Restarts during start-up are needed (a copy litestream cannot resume is restored
        // anew on the next start); without --keep-retrying, `never_ready` below gives up.
        options.retry_start = true;
        options
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
            let db = config.database(source.map(Path::new))?;
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
