//! `keygen` and `init`.

use std::path::{Path, PathBuf};

use restinpieces_litestream::{init, keys, Error};

use crate::args::{need, Global};

/// `keygen`: a new age identity at `output` (default: --age-key).
pub(crate) fn keygen(g: &Global, output: Option<&Path>) -> Result<u8, Error> {
    let path = output.or(g.age_key.as_deref()).ok_or_else(|| {
        Error::Usage("say where to write the key: --output FILE (or --age-key)".into())
    })?;
    let recipient = keys::generate(path)?;
    say!("wrote a new age identity to {} (mode 0600)", path.display());
    println!("{recipient}");
    Ok(0)
}

/// `init`: key if missing, a default config, saved.
pub(crate) fn init(
    g: &Global,
    replica: &str,
    database: Option<PathBuf>,
    force: bool,
) -> Result<u8, Error> {
    let db = need(&g.db, "db")?;
    let key = need(&g.age_key, "key")?;
    let report = init::init_encrypted_to(
        db,
        database.as_deref(),
        key,
        &g.scope,
        replica,
        force,
        &g.recipients(),
    )?;
    if report.key_created {
        say!(
            "created age key {} (mode 0600): keep it secret and backed up apart from the database",
            key.display()
        );
    }
    say!(
        "saved a default config for {} in {} as scope `{}` (id {}):",
        database.as_deref().unwrap_or(db).display(),
        db.display(),
        g.scope,
        report.id
    );
    print!("{}", report.yaml);
    Ok(0)
}
