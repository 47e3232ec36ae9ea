//! Read-only snapshots for the observing routes: one job, a runtime and its job, every
//! runtime, a page of the listing, and the totals for metrics.
//!
//! **Invariant:** each takes the table lock once, copies out only what it answers (a job's
//! payloads are `Arc`s, shared, not copied) and builds nothing else under it; a listing
//! examines at most `LIST_SCAN_MAX` jobs per hold. Nothing here changes the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Error;
use crate::jobs::table::Inner;
use crate::jobs::{JobId, JobSource, JobState, JobTable, JobView};
use crate::runtimes::Binding;

/// A runtime's public facts, for inspection and the start-up log.
#[derive(Debug, Clone)]
pub struct RuntimeView {
    pub id: Arc<str>,
    pub display_name: Option<String>,
    pub connected: bool,
    pub last_poll_at: Option<u64>,
    pub created_at: u64,
    pub reset_at: Option<u64>,
    pub resets: u64,
    pub queued: usize,
    pub running: usize,
    pub polls_held: usize,
    pub bindings: Vec<Binding>,
    pub schemas: Arc<Vec<(String, serde_json::Value)>>,
}

/// Counters since start (for metrics), kept under the table lock with the jobs they count.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Jobs created, by source.
    pub created: BTreeMap<&'static str, u64>,
    /// Jobs finished, by source and final status.
    pub finished: BTreeMap<(&'static str, &'static str), u64>,
    /// Finished jobs dropped by retention (count, bytes or TTL).
    pub evicted: u64,
    /// Jobs a fault rule hit, by effect.
    pub faults: BTreeMap<&'static str, u64>,
}

/// The table's totals, for metrics.
#[derive(Debug, Clone)]
pub struct Totals {
    pub counts: Counts,
    /// Finished jobs kept, and the bytes all jobs hold against `--max-retained-bytes`.
    pub retained_jobs: usize,
    pub held_bytes: u64,
}

/// Which jobs a listing wants; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub runtime: Option<String>,
    pub app: Option<String>,
    pub branch: Option<String>,
    pub status: Option<JobState>,
    pub source: Option<JobSource>,
    pub query_type: Option<String>,
}

impl JobFilter {
    fn matches(&self, job: &JobView) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == got)
        };
        eq(&self.runtime, Some(job.runtime_id()))
            && eq(&self.app, job.deployed_app_rid())
            && eq(&self.branch, job.branch())
            && eq(&self.query_type, Some(job.query_type()))
            && self.status.is_none_or(|s| s == job.state)
            && self.source.is_none_or(|s| s == job.source)
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Where the next page starts (`before=`), when there may be more.
    pub next_before: Option<u64>,
}

/// How many jobs one listing request examines under the lock at most: a selective filter over
/// 100,000 jobs answers a short page and a cursor instead of holding the lock for the scan.
pub const LIST_SCAN_MAX: usize = 10_000;

impl JobTable {
    /// A snapshot of one job; a 404 that says so when the job expired.
    pub fn job(&self, id: &JobId) -> Result<JobView, Error> {
        let inner = self.lock();
        match inner.jobs.get(id) {
            Some(job) => Ok(job.view.clone()),
            None => Err(inner.missing(id)),
        }
    }

    /// The runtime, one of its jobs, and its schemas (the inspection route).
    pub fn inspect(
        &self,
        runtime_id: &str,
        job_id: &JobId,
    ) -> Result<(RuntimeView, JobView), Error> {
        let inner = self.lock();
        // The job first: an unknown one costs a look-up, not a copy of the runtime.
        let job = match inner.jobs.get(job_id) {
            Some(job) if job.view.runtime_id() == runtime_id => job.view.clone(),
            _ if !inner.registry.runtimes.contains_key(runtime_id) => {
                return Err(Error::runtime_not_found(runtime_id))
            }
            _ => return Err(inner.missing(job_id)),
        };
        let runtime = inner
            .runtime_view(runtime_id)
            .ok_or_else(|| Error::runtime_not_found(runtime_id))?;
        Ok((runtime, job))
    }

    /// Public facts of every runtime, sorted by id.
    pub fn runtimes(&self) -> Vec<RuntimeView> {
        let inner = self.lock();
        let mut ids: Vec<&Arc<str>> = inner.registry.runtimes.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| inner.runtime_view(id))
            .collect()
    }

    /// Jobs matching `filter`, newest first, submitted before `before` (a `seq`), at most
    /// `limit`. Examines at most [`LIST_SCAN_MAX`] jobs under the lock; copies only the views
    /// it answers (their payloads are shared, not copied).
    pub fn list(&self, filter: &JobFilter, before: Option<u64>, limit: usize) -> JobPage {
        let inner = self.lock();
        let mut jobs = Vec::new();
        let mut next_before = None;
        let newest_first = inner.jobs.newest_first(before.unwrap_or(u64::MAX));
        for (scanned, job) in newest_first.enumerate() {
            if jobs.len() == limit || scanned == LIST_SCAN_MAX {
                next_before = Some(job.view.seq + 1);
                break;
            }
            if filter.matches(&job.view) {
                jobs.push(job.view.clone());
            }
        }
        JobPage { jobs, next_before }
    }

    /// Counters and retention figures, for metrics.
    pub fn totals(&self) -> Totals {
        let inner = self.lock();
        Totals {
            counts: inner.ledger.counts.clone(),
            retained_jobs: inner.ledger.finished_len(),
            held_bytes: inner.ledger.held_bytes(),
        }
    }
}

impl Inner {
    pub(super) fn runtime_view(&self, runtime_id: &str) -> Option<RuntimeView> {
        let rt = self.registry.runtimes.get(runtime_id)?;
        Some(RuntimeView {
            id: rt.id.clone(),
            display_name: rt.display_name.clone(),
            connected: rt.connected,
            last_poll_at: rt.last_poll_at,
            created_at: rt.created_at,
            reset_at: rt.reset_at,
            resets: rt.resets,
            queued: rt.queued,
            running: rt.running,
            polls_held: rt.polls_held,
            bindings: self.registry.bindings_of(runtime_id).cloned().collect(),
            schemas: rt.schemas.clone(),
        })
    }
}
