//! Runtimes (compute-module sessions), deployed-app bindings, and the per-runtime job hand-off.
//!
//! A [`Registry`] is plain data; it lives inside the job table's mutex so that binding
//! resolution, enqueueing and session resets are one atomic step (see `jobs::JobTable`).
//!
//! **Hand-off:** each runtime owns an unbounded crossbeam channel of job ids in FIFO order.
//! Enqueue sends under the table lock; a poll (or a built-in runtime thread) receives outside
//! it, then claims the job under the lock. A session reset replaces the channel, which
//! disconnects every receiver still blocked on the old one.

pub mod builtin;
#[cfg(unix)]
mod exec;

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::auth::Secret;
use crate::error::Error;
use crate::jobs::JobId;

/// Function schemas one runtime may hold; a real module has tens.
pub(crate) const MAX_SCHEMAS: usize = 10_000;

/// How many function names an unknown-function failure lists before "and N more".
const NAMED_FUNCTIONS: usize = 20;

/// One compute-module session.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub id: Arc<str>,
    pub display_name: Option<String>,
    pub token: Secret,
    /// Function name → schema JSON, in the order first posted; a repost replaces in place.
    /// Shared, so a reader copies a pointer under the table lock, not 10,000 schemas; a post
    /// copies on write only while a reader still holds the old list.
    pub schemas: Arc<Vec<(String, serde_json::Value)>>,
    /// Position of each name in `schemas`, so storing n schemas costs O(n), not O(n²).
    schema_index: HashMap<String, usize>,
    /// Set by the first poll of this session.
    pub connected: bool,
    pub last_poll_at: Option<u64>,
    /// When this id was first created (epoch ms).
    pub created_at: u64,
    /// When this id was last reset (epoch ms); `None` for a fresh session.
    pub reset_at: Option<u64>,
    /// How many times this id was reset; 0 for a fresh session.
    pub resets: u64,
    /// Jobs of this session in state `queued` (what `--max-queued` caps); kept by the job
    /// table, since the channel may still hold ids of jobs that ended early.
    pub queued: usize,
    /// Jobs of this session in state `running`.
    pub running: usize,
    /// Polls of this session waiting for a job now (long polls and built-in runtime threads).
    pub polls_held: usize,
    queue: Queue,
}

/// Sender and receiver of a runtime's job-id channel; `None` once the emulator shuts down.
#[derive(Debug)]
struct Queue(Option<(Sender<JobId>, Receiver<JobId>)>);

impl Queue {
    fn new() -> Queue {
        Queue(Some(crossbeam_channel::unbounded()))
    }
}

impl Runtime {
    pub fn new(id: &str, display_name: Option<String>, token: Secret, now: u64) -> Runtime {
        Runtime {
            id: Arc::from(id),
            display_name,
            token,
            schemas: Arc::default(),
            schema_index: HashMap::new(),
            connected: false,
            last_poll_at: None,
            created_at: now,
            reset_at: None,
            resets: 0,
            queued: 0,
            running: 0,
            polls_held: 0,
            queue: Queue::new(),
        }
    }

    /// Starts a new session on this id: new token, no schemas, a fresh queue.
    ///
    /// Dropping the old channel disconnects pollers blocked on it, so they return at once.
    pub fn reset(&mut self, display_name: Option<String>, token: Secret, now: u64) {
        self.display_name = display_name.or(self.display_name.take());
        self.token = token;
        self.schemas = Arc::default();
        self.schema_index.clear();
        self.connected = false;
        self.last_poll_at = None;
        self.reset_at = Some(now);
        self.resets += 1;
        self.queued = 0;
        self.running = 0;
        self.polls_held = 0;
        self.queue = Queue::new();
    }

    /// The sender for enqueueing; `None` after shutdown.
    pub fn sender(&self) -> Option<&Sender<JobId>> {
        self.queue.0.as_ref().map(|(tx, _)| tx)
    }

    /// A receiver clone for a poller or a runtime thread; `None` after shutdown.
    pub fn receiver(&self) -> Option<Receiver<JobId>> {
        self.queue.0.as_ref().map(|(_, rx)| rx.clone())
    }

    /// Queues job `id` for this runtime: sends it into the channel and counts it as queued.
    /// Refuses (`overloaded`) past `max_queued` queued jobs or after shutdown. Called under the
    /// table lock; unbounded sends never block.
    pub fn hand_over(&mut self, id: &JobId, max_queued: usize) -> Result<(), Error> {
        self.check_room(max_queued)?;
        let Some(sender) = self.sender() else {
            return Err(Error::Overloaded("the emulator is shutting down".into()));
        };
        // The runtime holds the receiver, so the channel cannot be disconnected here.
        if sender.send(id.clone()).is_err() {
            return Err(Error::Internal("runtime queue is closed".into()));
        }
        self.queued += 1;
        Ok(())
    }

    /// Counts in a queued job that is not sent now (a fault rule delays, drops or fails it),
    /// under the same `--max-queued` cap as [`Runtime::hand_over`].
    pub fn hold(&mut self, max_queued: usize) -> Result<(), Error> {
        self.check_room(max_queued)?;
        self.queued += 1;
        Ok(())
    }

    fn check_room(&self, max_queued: usize) -> Result<(), Error> {
        if self.queued >= max_queued {
            return Err(Error::Overloaded(format!(
                "runtime '{}' already has {max_queued} queued jobs (--max-queued)",
                self.id
            )));
        }
        Ok(())
    }

    /// Why a job of `query_type` cannot run here: this runtime posted schemas and none names
    /// it (the TypeScript SDK never answers such a job). `None` when it can, or when no
    /// schemas were posted (nothing is known then).
    pub fn unknown_function(&self, query_type: &str) -> Option<String> {
        if self.schemas.is_empty() || self.schema_index.contains_key(query_type) {
            return None;
        }
        let names: Vec<&str> = self
            .schemas
            .iter()
            .take(NAMED_FUNCTIONS)
            .map(|(name, _)| name.as_str())
            .collect();
        let mut known = names.join(", ");
        let more = self.schemas.len() - names.len();
        if more > 0 {
            known.push_str(&format!(" and {more} more"));
        }
        Some(format!(
            "Compute-module runtime '{}' has no function '{query_type}'; its posted schemas \
             name: {known}. (Serve with --allow-unknown-query-types to hand it such jobs anyway.)",
            self.id
        ))
    }

    /// Puts `id` back at the head of the queue (a job whose delivery failed). The channel has
    /// no front, so its ids are taken out and sent again behind `id`: O(queue length), once
    /// per failed delivery. Called under the table lock; unbounded sends never block.
    pub fn push_front(&self, id: &JobId) {
        let Some((tx, rx)) = &self.queue.0 else {
            return;
        };
        let behind: Vec<JobId> = rx.try_iter().collect();
        let _ = tx.send(id.clone());
        for other in behind {
            let _ = tx.send(other);
        }
    }

    /// Drops the channel so that every blocked receiver wakes with `Disconnected`.
    pub fn close_queue(&mut self) {
        self.queue.0 = None;
    }

    /// Stores schemas by name, each replacing one of the same name; refuses (storing
    /// nothing) a post that would hold more than [`MAX_SCHEMAS`] functions.
    pub fn put_schemas(&mut self, schemas: Vec<(String, serde_json::Value)>) -> Result<(), Error> {
        let new = schemas
            .iter()
            .filter(|(name, _)| !self.schema_index.contains_key(name))
            .map(|(name, _)| name)
            .collect::<std::collections::HashSet<_>>()
            .len();
        if self.schemas.len() + new > MAX_SCHEMAS {
            return Err(Error::InvalidRequest(format!(
                "A runtime holds at most {MAX_SCHEMAS} function schemas."
            )));
        }
        let stored = Arc::make_mut(&mut self.schemas);
        for (name, schema) in schemas {
            match self.schema_index.get(&name) {
                Some(&at) => stored[at].1 = schema,
                None => {
                    self.schema_index.insert(name.clone(), stored.len());
                    stored.push((name, schema));
                }
            }
        }
        Ok(())
    }
}

/// A deployed app bound to a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub deployed_app_rid: Arc<str>,
    pub runtime_id: Arc<str>,
    pub branch: Arc<str>,
    pub display_name: Option<String>,
    pub active: bool,
}

/// All runtimes and bindings.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub runtimes: HashMap<Arc<str>, Runtime>,
    /// In creation order; resolution prefers the newest match.
    pub bindings: Vec<Binding>,
}

impl Registry {
    /// Finds the runtime serving `rid`: among active bindings of that RID, the newest on
    /// `branch` when one is given (non-empty), else the newest on any branch.
    pub fn resolve(&self, rid: &str, branch: Option<&str>) -> Option<&Binding> {
        let branch = branch.filter(|b| !b.is_empty());
        self.bindings.iter().rev().find(|b| {
            b.active && &*b.deployed_app_rid == rid && branch.is_none_or(|want| &*b.branch == want)
        })
    }

    /// The runtime of that id, or the 404 naming it.
    pub fn runtime_mut(&mut self, id: &str) -> Result<&mut Runtime, Error> {
        self.runtimes
            .get_mut(id)
            .ok_or_else(|| Error::runtime_not_found(id))
    }

    /// The bindings of one runtime, oldest first.
    pub fn bindings_of<'a>(&'a self, runtime_id: &'a str) -> impl Iterator<Item = &'a Binding> {
        self.bindings
            .iter()
            .filter(move |b| &*b.runtime_id == runtime_id)
    }

    /// Replaces every binding of `runtime_id` with `binding`.
    pub fn rebind(&mut self, runtime_id: &str, binding: Binding) {
        self.bindings.retain(|b| &*b.runtime_id != runtime_id);
        self.bindings.push(binding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(rid: &str, runtime: &str, branch: &str, active: bool) -> Binding {
        Binding {
            deployed_app_rid: rid.into(),
            runtime_id: runtime.into(),
            branch: branch.into(),
            display_name: None,
            active,
        }
    }

    #[test]
    fn resolve_prefers_branch_then_newest_and_skips_inactive() {
        let mut reg = Registry::default();
        reg.bindings
            .push(binding("app", "rt-master", "master", true));
        reg.bindings.push(binding("app", "rt-dev", "dev", true));
        reg.bindings.push(binding("app", "rt-off", "master", false));
        let pick = |branch| reg.resolve("app", branch).map(|b| b.runtime_id.to_string());
        assert_eq!(pick(Some("master")).as_deref(), Some("rt-master"));
        assert_eq!(pick(Some("dev")).as_deref(), Some("rt-dev"));
        assert_eq!(pick(Some("")).as_deref(), Some("rt-dev"));
        assert_eq!(pick(None).as_deref(), Some("rt-dev"));
        assert_eq!(pick(Some("nope")), None);
        assert!(reg.resolve("other", None).is_none());
    }
}
