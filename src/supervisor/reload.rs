//! Reloading the config: noticing a newer generation, validating it (ours, then litestream's
//! own parser) and switching to it. Never stops a running litestream for a generation that
//! cannot replace it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::ReloadOutcome;
use crate::config::LitestreamConfig;
use crate::lock::InstanceLock;
use crate::render::render;
use crate::wal_guard::databases_now;

use super::run::{lock_databases, targets_of, Supervisor};

impl Supervisor {
    /// True when the store's newest generation is not the one in use (a cheap id read).
    pub(super) async fn newer_generation(&self) -> bool {
        let Some(source) = self.options.reload.clone() else {
            return false;
        };
        let (current, refused) = {
            let s = self.status.borrow();
            let refused = s.rejected_generation.as_ref().filter(|r| r.refused);
            (s.config_id, refused.map(|r| r.id))
        };
        let newest =
            tokio::task::spawn_blocking(move || source.store.newest_id(&source.scope)).await;
        match newest {
            Ok(Ok(Some(id))) => {
                if self
                    .status
                    .borrow()
                    .rejected_generation
                    .as_ref()
                    .map(|r| r.id)
                    != Some(id)
                {
                    // The rejected row is no longer the newest (deleted, or shadowed): forget it.
                    self.set(|s| s.rejected_generation = None);
                }
                // A generation whose content was refused is not tried again here (SIGHUP does).
                Some(id) != current && Some(id) != refused
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot check the store for a new config");
                false
            }
            Err(_) => false,
        }
    }

    /// Loads and validates the newest generation (our rules, then litestream's own parser),
    /// and takes the locks of its databases. Any reason not to switch comes back as the outcome
    /// to report, is logged, and shows in the status as the rejected generation: the running
    /// litestream is never stopped for a config that cannot replace it.
    pub(super) async fn prepare_reload(&mut self) -> std::result::Result<Prepared, ReloadOutcome> {
        let status = self.status.clone();
        // `refused`: the content itself was refused (not tried again by the periodic check).
        let reject = move |id: Option<i64>, reason: String, refused: bool| {
            tracing::error!(id, reason = %reason, "config not reloaded; the config in use stays");
            if let Some(id) = id {
                let reason = reason.clone();
                status.send_modify(|s| {
                    s.rejected_generation = Some(crate::status::RejectedGeneration {
                        id,
                        reason,
                        refused,
                    });
                    s.updated_at = std::time::SystemTime::now();
                });
            }
            ReloadOutcome::Rejected { reason }
        };
        let Some(source) = self.options.reload.clone() else {
            return Err(reject(None, "no config store to reload from".into(), false));
        };
        let loaded = tokio::task::spawn_blocking(move || {
            let newest = source.store.newest_id(&source.scope).ok().flatten();
            (newest, source.store.load(&source.scope, 0))
        })
        .await;
        let stored = match loaded {
            Ok((_, Ok(stored))) => stored,
            Ok((newest, Err(e))) => {
                // A row that is not a litestream config is its content's fault; a busy store or
                // a key file not yet updated is tried again at the next check.
                let refused = matches!(
                    e,
                    crate::Error::RowFormat { .. }
                        | crate::Error::RowContent { .. }
                        | crate::Error::Corrupt { .. }
                );
                return Err(reject(newest, e.to_string(), refused));
            }
            Err(e) => return Err(reject(None, e.to_string(), false)),
        };
        if *stored.plaintext == *self.config.yaml().as_bytes() {
            let id = stored.id;
            tracing::info!(id, "config unchanged: litestream left alone");
            self.set(|s| {
                s.config_id = Some(id);
                s.rejected_generation = None;
            });
            return Err(ReloadOutcome::Unchanged { id });
        }
        let id = stored.id;
        let config = LitestreamConfig::parse(&stored.plaintext, crate::config::Strictness::Lenient)
            .map_err(|e| {
                reject(
                    Some(id),
                    format!("generation id {id} is not usable: {e}"),
                    true,
                )
            })?;
        match self.litestream_verdict(id, &stored.plaintext).await {
            Verdict::Accepted => {}
            Verdict::Stopped => {
                return Err(ReloadOutcome::Rejected {
                    reason: "a stop was requested during the reload".into(),
                })
            }
            Verdict::Refused(reason) => return Err(reject(Some(id), reason, true)),
            Verdict::Unknown(reason) => return Err(reject(Some(id), reason, false)),
        }
        let held: Vec<PathBuf> = self.db_locks.iter().map(|(p, _)| p.clone()).collect();
        let new_locks = lock_databases(&config, &self.runtime_base, &self.runtime, &held)
            .map_err(|e| reject(None, e.to_string(), false))?;
        config.log_warnings();
        Ok(Prepared {
            config,
            id: stored.id,
            new_locks,
        })
    }

    /// litestream's own verdict on generation `id` (`databases -no-expand-env`, through the
    /// supervisor's handoff). litestream answers in tens of milliseconds; a stop requested
    /// meanwhile ends the wait and is remembered.
    async fn litestream_verdict(&mut self, id: i64, yaml: &[u8]) -> Verdict {
        let ask = crate::check::ask_litestream_with(
            &self.binary,
            yaml,
            self.options.handoff,
            &self.runtime_base,
            Duration::from_secs(10),
        );
        let answer = tokio::select! {
            v = ask => v,
            Some(()) = self.stop_rx.recv() => {
                self.stop_requested = true;
                return Verdict::Stopped;
            }
        };
        match answer {
            Ok(verdict) if verdict.accepted => Verdict::Accepted,
            Ok(verdict) => {
                let said = verdict
                    .output
                    .trim()
                    .lines()
                    .collect::<Vec<_>>()
                    .join(" / ");
                Verdict::Refused(format!(
                    "litestream {} rejects generation id {id}: {said}",
                    self.binary.version
                ))
            }
            Err(e) => Verdict::Unknown(format!(
                "cannot ask litestream about generation id {id}: {e}"
            )),
        }
    }

    /// Switches to a prepared config (no litestream runs at this point).
    pub(super) fn apply(&mut self, prepared: Prepared) -> ReloadOutcome {
        let Prepared {
            config,
            id,
            new_locks,
        } = prepared;
        let wanted = targets_of(&config);
        if let Some(g) = &self.guard {
            g.release_except(&databases_now(&config));
        }
        self.db_locks.retain(|(p, _)| wanted.contains(p));
        self.db_locks.extend(new_locks);
        self.rendered = render(&config, &self.runtime.socket_path());
        self.logs.set_redactor(config.redactor());
        let stall_after = (config.sync_interval().unwrap_or(Duration::from_secs(1)) * 3)
            .max(Duration::from_secs(10));
        self.config = Arc::new(config);
        self.set(|s| {
            s.config_id = Some(id);
            s.rejected_generation = None;
            s.stall_after = stall_after;
            s.databases.clear();
        });
        tracing::info!(id, "config reloaded");
        ReloadOutcome::Applied { id }
    }
}

/// A validated new config, with the locks of its databases already held.
pub(super) struct Prepared {
    pub(super) config: LitestreamConfig,
    pub(super) id: i64,
    pub(super) new_locks: Vec<(PathBuf, InstanceLock)>,
}

/// What litestream said of a generation.
enum Verdict {
    Accepted,
    /// It refused the content, saying why.
    Refused(String),
    /// It could not be asked (or did not answer in time).
    Unknown(String),
    /// A stop was requested while it was being asked.
    Stopped,
}
