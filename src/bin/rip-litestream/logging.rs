//! rip-litestream's own logs: text or JSON lines on stderr, filtered by RUST_LOG or
//! --log-level, plus the SQLite `logs` sink.

use restinpieces_litestream::{framework_logs, Error};
use tracing_subscriber::filter::Targets;

use crate::args::Global;

/// stderr in text or JSON lines, filtered by RUST_LOG or --log-level; plus the SQLite sink.
pub(crate) fn install_subscriber(
    g: &Global,
    stderr: framework_logs::QueuedStderr,
) -> Result<Option<framework_logs::LogDbGuard>, Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => parse_filter("RUST_LOG", &v)?,
        _ => parse_filter("--log-level", &g.log_level)?,
    };
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

/// `level` or `target=level` directives, comma-separated (RUST_LOG's syntax without span and
/// field filters); empty directives (`info,`) are skipped, as RUST_LOG readers do, and a bare
/// word must be a level.
fn parse_filter(source: &str, value: &str) -> Result<Targets, Error> {
    let directives: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(Error::Usage(format!(
            "{source} {value:?} names no level: use a level (error, warn, info, debug, trace, off) \
             or target=level directives, comma-separated"
        )));
    }
    // A bare word is a level here: `--log-level verbose` (or `warning`) must not silently turn
    // every log off by naming a target that does not exist.
    if let Some(word) = directives.iter().find(|d| {
        !d.contains('=')
            && d.parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
    }) {
        return Err(Error::Usage(format!(
            "{source} {value:?}: {word:?} is not a level: use error, warn, info, debug, trace or \
             off, or TARGET=LEVEL for one target's logs"
        )));
    }
    directives.join(",").parse().map_err(|e| {
        Error::Usage(format!(
            "{source} {value:?}: {e}; use a level (error, warn, info, debug, trace, off) or \
             target=level directives, comma-separated (e.g. info,restinpieces_litestream=debug)"
        ))
    })
}
