//! `doctor`: checks a database for replication.

use std::path::Path;

use restinpieces_litestream::{doctor, runtime, Error};

pub(crate) fn doctor_command(db: &Path) -> Result<u8, Error> {
    // The path as litestream would read it from a config (`~`, relative, `sqlite://`).
    let db = &runtime::litestream_path(&db.to_string_lossy());
    let checks = doctor::examine(db)?;
    let mut must_change = false;
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "FIX " };
        println!("{mark} {}: {}", c.name, c.detail);
        must_change |= c.required && !c.ok;
    }
    Ok(if must_change { 1 } else { 0 })
}
