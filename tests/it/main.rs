//! The integration tests: the real `rip-litestream` binary, the real `litestream` 0.5.17, real
//! SQLite files and real age keys. `support` holds the shared harness.

mod cli;
mod cli_json;
mod config_cli;
mod config_edit;
mod config_review;
mod corpus;
mod deploy;
mod entrypoint;
mod follow;
mod fuzz;
mod keys;
mod log_formats;
mod logging;
mod metrics;
mod no_row_lost;
mod notify;
mod operations;
mod packaging;
mod reliability;
mod reload;
mod replication;
mod s3;
mod scale;
mod separate_store;
mod signals;
mod supervise;
mod support;
mod verify_busy;
