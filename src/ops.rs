//! The one-off operations, each a command of the binary and a function an application can
//! call: set up ([`init`]), ask litestream about a config ([`check`]), restore and the
//! fresh-database guard ([`restore`]), prove a backup ([`verify`], comparing it with the live database at one of litestream's
//! transactions: [`pinned`]), examine a database
//! ([`doctor`]), connection settings ([`pragmas`]), and find a supervisor running elsewhere
//! ([`running`]), and the config's own tools: [`diff`] two generations, [`edit`] one in the
//! user's editor. None of them supervises anything.

pub mod check;
pub(crate) mod content;
pub mod diff;
pub mod doctor;
pub mod edit;
pub mod init;
pub mod pinned;
pub mod pragmas;
pub mod restore;
pub mod running;
pub mod verify;
