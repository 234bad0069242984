//! Everything about the litestream binary itself: finding it and its version ([`binary`]), the
//! bytes it reads (`render`: the user's config plus the injected control socket), how they
//! reach it ([`handoff`]: a memfd or a private file), one-off commands (`oneshot`), its control
//! socket ([`control`]) and its log lines ([`child_logs`]). Never re-serialises the user's
//! config for `replicate`.

pub mod binary;
pub mod child_logs;
pub mod control;
pub mod handoff;
pub(crate) mod oneshot;
pub(crate) mod render;
