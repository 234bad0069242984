//! `verify`: prove the backup restorable and current.

use restinpieces_litestream::handoff::HandoffMode;
use restinpieces_litestream::{binary, running, runtime, verify, Error};

use crate::args::{Global, VerifyArgs};
use crate::cmd::load_config;
use crate::daemon::block_on;

pub(crate) fn verify_command(g: &Global, args: VerifyArgs) -> Result<u8, Error> {
    let (config, _) = load_config(g)?;
    let db = config.database(args.database.as_deref())?;
    let bin = binary::find(args.litestream.as_deref())?;
    let control =
        g.db.as_deref()
            .and_then(|store| running::control(store, &config));
    let base = runtime::private_base()?;
    let report = block_on(verify::verify(
        &bin,
        &config,
        &db,
        control.as_ref(),
        HandoffMode::default(),
        &base,
        args.timeout,
    ))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    } else {
        let word = serde_json::to_value(report.outcome).expect("outcome serialises");
        let lag = report
            .lag_txids
            .map(|l| format!(", {l} transaction(s) behind"))
            .unwrap_or_default();
        println!(
            "{}: {}{lag}: {}",
            db.display(),
            word.as_str().unwrap_or("?"),
            report.reason
        );
    }
    Ok(report.outcome.exit_code())
}
