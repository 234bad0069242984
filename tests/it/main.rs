//! The integration tests: the real `rip-litestream` binary, the real `litestream` 0.5.17, real
//! SQLite files and real age keys. `support` holds the shared harness.

mod config_cli;
mod corpus;
mod deploy;
mod entrypoint;
mod follow;
mod fuzz;
mod logging;
mod no_row_lost;
mod operations;
mod packaging;
mod reliability;
mod reload;
mod replication;
mod s3;
mod separate_store;
mod signals;
mod supervise;
mod support;
mod verify_busy;
