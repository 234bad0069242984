//! rip-litestream's own logs: text or JSON lines on stderr, filtered by RUST_LOG or
//! --log-level, plus the SQLite `logs` sink.

use restinpieces_litestream::{framework_logs, Error};

use crate::args::Global;

/// stderr in text or JSON lines, filtered by RUST_LOG or --log-level; plus the SQLite sink.
pub(crate) fn install_subscriber(
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
        // The fatal error's event: the `error:` line says it already.
        let not_fatal =
            tracing_subscriber::filter::filter_fn(|m| m.target() != framework_logs::FATAL_TARGET);
        tracing_subscriber::fmt::layer()
            .with_writer(stderr)
            .with_ansi(false)
            .with_filter(not_fatal)
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
