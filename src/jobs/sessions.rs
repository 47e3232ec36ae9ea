//! Runtime sessions as the table sees them: creating and resetting a session (its token),
//! bindings of deployed apps, posted schemas, the restart notification, and the token check
//! every runtime route goes through (`Inner::authorized`).
//!
//! **Invariant:** each method here takes the table lock once and releases it before it returns;
//! a session reset fails the old session's open jobs (through `turn_terminal`) before the
//! runtime gets its new token and queue, all under one hold of the table lock, so no job of the
//! old session is counted in the new one. A poll remembers the session it began in
//! (`begin_poll`) so that it never counts itself out of a later one. The registry itself
//! (`runtimes::Registry`) is plain data; only these methods, under the lock, change it.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::auth::Secret;
use crate::error::Error;
use crate::jobs::lifecycle::{turn_terminal, Target};
use crate::jobs::table::Inner;
use crate::jobs::{now_millis, JobId, JobState, JobTable};
use crate::runtimes::{Binding, Runtime};

/// Failure message of jobs ended by `POST /runtimes` on an existing id.
pub const RESET_MESSAGE: &str = "runtime session was reset";

/// Failure message of jobs ended by a restart notification.
pub const RESTART_MESSAGE: &str = "compute module restarted";

/// What creating a runtime session produced.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: Secret,
    /// True when the id already existed and was reset.
    pub was_reset: bool,
    /// Jobs that the reset ended as failed.
    pub failed_jobs: Vec<JobId>,
}

/// A runtime session to create or reset.
#[derive(Debug, Clone, Default)]
pub struct SessionSpec {
    pub runtime_id: String,
    pub display_name: Option<String>,
    /// Bind this deployed app (on `branch`) to the runtime, replacing its bindings.
    pub deployed_app_rid: Option<String>,
    pub branch: Option<String>,
    /// A fixed token (seed config); a random one otherwise.
    pub token: Option<Secret>,
}

/// Where a new job goes: its runtime, and the deployed app and branch that led there.
pub(super) struct Resolved {
    pub(super) runtime_id: Arc<str>,
    pub(super) rid: Option<Arc<str>>,
    pub(super) branch: Option<Arc<str>>,
}

impl JobTable {
    /// Creates the runtime session, or resets it when the id exists (SPEC: new token, schemas
    /// cleared, bindings replaced when a RID is given, queued and running jobs failed).
    pub fn create_runtime(&self, spec: SessionSpec) -> Session {
        let now = now_millis();
        let token = spec.token.unwrap_or_else(Secret::random_module_token);
        let mut inner = self.lock();
        let id: Arc<str> = Arc::from(spec.runtime_id.as_str());
        let was_reset = inner.registry.runtimes.contains_key(&id);
        // Old jobs fail first, so they are counted out of the old session's queue.
        let failed_jobs = if was_reset {
            inner.fail_open_jobs(&id, RESET_MESSAGE, |_| true)
        } else {
            Vec::new()
        };
        match inner.registry.runtimes.get_mut(&id) {
            Some(rt) => rt.reset(spec.display_name.clone(), token.clone(), now),
            None => {
                let rt = Runtime::new(&id, spec.display_name.clone(), token.clone(), now);
                inner.registry.runtimes.insert(id.clone(), rt);
            }
        }
        inner.evict(&self.limits, Instant::now());
        if let Some(rid) = spec.deployed_app_rid {
            let binding = Binding {
                deployed_app_rid: Arc::from(rid),
                runtime_id: id.clone(),
                branch: Arc::from(spec.branch.as_deref().unwrap_or("master")),
                display_name: spec.display_name,
                active: true,
            };
            inner.registry.rebind(&id, binding);
        }
        Session {
            token,
            was_reset,
            failed_jobs,
        }
    }

    /// Adds a binding (seed config). The runtime must exist.
    pub fn add_binding(&self, binding: Binding) -> Result<(), Error> {
        let mut inner = self.lock();
        if !inner.registry.runtimes.contains_key(&binding.runtime_id) {
            return Err(Error::runtime_not_found(&binding.runtime_id));
        }
        inner.registry.bindings.push(binding);
        Ok(())
    }

    /// Stores schemas by function name; a name already present is replaced.
    pub fn put_schemas(
        &self,
        runtime_id: &str,
        token: Option<&str>,
        schemas: Vec<(String, serde_json::Value)>,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let runtime = inner.authorized(runtime_id, token)?;
        runtime.put_schemas(schemas)
    }

    /// The schemas posted by the runtime that serves deployed app `rid` (on `branch` when
    /// given), in the order first posted; empty when none were posted yet.
    pub fn app_schemas(
        &self,
        rid: &str,
        branch: Option<&str>,
    ) -> Result<Arc<Vec<(String, Value)>>, Error> {
        let inner = self.lock();
        let binding = inner
            .registry
            .resolve(rid, branch)
            .ok_or_else(|| Error::app_not_bound(rid))?;
        let runtime = inner.registry.runtimes.get(&binding.runtime_id);
        Ok(runtime.map(|rt| rt.schemas.clone()).unwrap_or_default())
    }

    /// The restart notification: every `running` job of the runtime ends as `failed`.
    pub fn restart(&self, runtime_id: &str, token: Option<&str>) -> Result<Vec<JobId>, Error> {
        let mut inner = self.lock();
        inner.authorized(runtime_id, token)?;
        let failed = inner.fail_open_jobs(runtime_id, RESTART_MESSAGE, |s| s == JobState::Running);
        inner.evict(&self.limits, Instant::now());
        Ok(failed)
    }
}

impl Inner {
    /// The runtime a new job goes to, with the deployed app and branch it was resolved by.
    pub(super) fn resolve_target(&self, target: &Target) -> Result<Resolved, Error> {
        match target {
            Target::App { rid, branch } => {
                let binding = self
                    .registry
                    .resolve(rid, branch.as_deref())
                    .ok_or_else(|| Error::app_not_bound(rid))?;
                Ok(Resolved {
                    runtime_id: binding.runtime_id.clone(),
                    rid: Some(binding.deployed_app_rid.clone()),
                    branch: Some(binding.branch.clone()),
                })
            }
            Target::Runtime(id) => match self.registry.runtimes.get_key_value(id.as_str()) {
                Some((id, _)) => Ok(Resolved {
                    runtime_id: id.clone(),
                    rid: None,
                    branch: None,
                }),
                None => Err(Error::runtime_not_found(id)),
            },
        }
    }

    /// The runtime, if it exists and `token` is its current module auth token.
    pub(super) fn authorized(
        &mut self,
        runtime_id: &str,
        token: Option<&str>,
    ) -> Result<&mut Runtime, Error> {
        let runtime = self
            .registry
            .runtimes
            .get_mut(runtime_id)
            .ok_or_else(|| Error::runtime_not_found(runtime_id))?;
        match token {
            Some(token) if runtime.token.matches(token) => Ok(runtime),
            _ => Err(Error::InvalidModuleAuthToken),
        }
    }

    /// Authorizes a poll, records it, and returns a receiver of the runtime's channel.
    pub(super) fn poll_receiver(
        &mut self,
        runtime_id: &str,
        token: Option<&str>,
    ) -> Result<crossbeam_channel::Receiver<JobId>, Error> {
        let runtime = self.authorized(runtime_id, token)?;
        runtime.connected = true;
        runtime.last_poll_at = Some(now_millis());
        // After shutdown the queue is gone: a disconnected channel makes pollers return at once.
        Ok(runtime
            .receiver()
            .unwrap_or_else(|| crossbeam_channel::unbounded().1))
    }

    /// A poll of the runtime starts waiting; returns its session (the reset count), so that
    /// a poll of an earlier session does not count itself out of a new one.
    pub(super) fn begin_poll(&mut self, runtime_id: &str) -> u64 {
        match self.registry.runtimes.get_mut(runtime_id) {
            Some(runtime) => {
                runtime.polls_held += 1;
                runtime.resets
            }
            None => u64::MAX,
        }
    }

    /// A poll of `session` stopped waiting (with a job or without): recorded as its last poll.
    pub(super) fn end_poll(&mut self, runtime_id: &str, session: u64) {
        if let Some(runtime) = self.registry.runtimes.get_mut(runtime_id) {
            if runtime.resets == session {
                runtime.polls_held = runtime.polls_held.saturating_sub(1);
                runtime.last_poll_at = Some(now_millis());
            }
        }
    }

    /// Fails the runtime's non-terminal jobs whose state passes `which`; returns their ids.
    pub(super) fn fail_open_jobs(
        &mut self,
        runtime_id: &str,
        message: &str,
        which: impl Fn(JobState) -> bool,
    ) -> Vec<JobId> {
        let mut failed = Vec::new();
        for job in self.jobs.values_mut() {
            let open = !job.view.state.is_terminal() && which(job.view.state);
            if open && job.view.runtime_id() == runtime_id {
                turn_terminal(
                    job,
                    JobState::Failed,
                    Some(message.to_string()),
                    &mut self.ledger,
                    &mut self.registry,
                );
                failed.push(job.view.id.clone());
            }
        }
        failed.sort_by_key(|id| id.clone());
        failed
    }
}
