//! A small application that writes to its database while the embedded daemon replicates it,
//! and stops cleanly on Ctrl-C (the daemon's final sync included).
//!
//! ```sh
//! rip-litestream --db app.db --age-key age.key init --replica ./replica
//! cargo run --example embed -- app.db age.key
//! ```

use std::time::Duration;

use restinpieces_litestream::{
    ConfigStore, Litestream, LitestreamConfig, Options, Strictness, DEFAULT_SCOPE,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (db, key) = match (args.next(), args.next()) {
        (Some(db), Some(key)) => (db, key),
        _ => return Err("usage: embed APP_DB AGE_KEY".into()),
    };

    let stored = ConfigStore::open(&db, &key)?.load(DEFAULT_SCOPE, 0)?;
    let config = LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient)?;
    let mut daemon = Litestream::new(config, {
        let mut options = Options::default();
        options.instance = Some(db.clone().into());
        options
    });
    daemon.start().await?;
    tracing::info!("replicating {db}; Ctrl-C stops");

    // The application: one row every 100 ms, with the recommended connection settings.
    let conn = rusqlite::Connection::open(&db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at TEXT NOT NULL)",
    )?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut written = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                conn.execute("INSERT INTO events (at) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ'))", [])?;
                written += 1;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(conn);
    tracing::info!(written, "stopping: final sync");
    let grace = daemon.grace();
    daemon.stop(grace).await?;
    tracing::info!("stopped; every row is in the replica");
    Ok(())
}
