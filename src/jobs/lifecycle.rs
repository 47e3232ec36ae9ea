//! A job's life: enqueue, claim and delivery to a runtime, the result, a failure, a cancel,
//! and `turn_terminal`, the one place a job turns terminal.
//!
//! **Invariant:** each `JobTable` method here takes the table lock once and releases it before
//! it returns (`turn_terminal`, `claim` and `start_running` run under their caller's hold);
//! every end of a job goes through `turn_terminal`, under the table lock: it counts the job out
//! of its runtime's queue, queues it for eviction, reports it to the journal, ends its result
//! stream, and leaves the terminal snapshot in the watch slot *before* it notifies, so no
//! waiter misses an end (not even one followed at once by eviction). A job is `running` from
//! its claim on; a module's claim stays `delivering` until `JobTable::delivered` says whether
//! the envelope reached it (if not, the job is `queued` again at the head of its queue). When
//! the lock is released, the runtime's `queued` and `running` counts, the ledger's byte counts
//! and the running-deadline set agree with the jobs' states.

use std::sync::Arc;
use std::time::Instant;

use crate::error::Error;
use crate::jobs::faults::Effect;
use crate::jobs::retention::{retained_bytes, share_labels, Ledger};
use crate::jobs::sessions::Resolved;
use crate::jobs::stream::StreamEnd;
use crate::jobs::table::{Inner, Job, Limits, Open};
use crate::jobs::waits::WatchSlot;
use crate::jobs::{
    now_millis, stamp_now, Cancellation, JobId, JobLabels, JobSource, JobState, JobTable, JobView,
    DEFAULT_FAILURE,
};
use crate::runtimes::Registry;

/// Where a new job goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Resolve an active binding of this deployed app (Contour routes).
    App { rid: String, branch: Option<String> },
    /// Straight to a runtime by id (`runtime-direct`).
    Runtime(String),
}

/// Everything needed to create a job.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub target: Target,
    pub query_type: String,
    /// JSON text; the caller has validated it.
    pub query: Arc<str>,
    pub source: JobSource,
    /// The submitting request's `Authorization` header, handed to the module in the envelope.
    pub auth_header: Option<String>,
}

/// A job handed to a runtime: what the job envelope carries.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub job_id: JobId,
    pub query_type: Arc<str>,
    pub query: Arc<str>,
    pub auth_header: Option<Arc<str>>,
}

/// What a non-blocking poll found.
#[derive(Debug)]
pub struct Taken {
    /// The job now `running`, if one was queued.
    pub job: Option<Dispatched>,
    /// True for the first poll of this session.
    pub first_poll: bool,
}

/// Who takes a job off a runtime's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taker {
    /// A module's poll: the job is `running` at once (so whoever reads its status after the
    /// module got it sees `running`), but if [`JobTable::delivered`] then says the envelope
    /// never reached the module, it goes back to `queued` at the head of its queue.
    Module,
    /// A built-in runtime thread: the job is `running` at once.
    Builtin,
}

impl JobTable {
    /// Creates a queued job and hands its id to the runtime's channel.
    pub fn enqueue(&self, req: EnqueueRequest) -> Result<JobId, Error> {
        self.enqueue_inner(req, None)
    }

    pub(super) fn enqueue_inner(
        &self,
        req: EnqueueRequest,
        watch_slot: Option<Arc<WatchSlot>>,
    ) -> Result<JobId, Error> {
        // Drawn before locking: it may refill the id pool (a getrandom call).
        let random = crate::ids::random_bytes();
        let mut guard = self.lock();
        let inner = &mut *guard;
        // The seq is taken (`last_seq`) only once the job is created; a refused submit
        // leaves no trace.
        let seq = inner.last_seq + 1;
        let id = JobId::mint(random, seq, inner.jobs.id_key);
        if inner.shutting_down {
            return Err(Error::Overloaded("the emulator is shutting down".into()));
        }
        let Resolved {
            runtime_id,
            rid,
            branch,
        } = inner.resolve_target(&req.target)?;
        let query_bytes = req.query.len() as u64;
        if inner.ledger.open_bytes + query_bytes > self.limits.max_retained_bytes {
            return Err(Error::Overloaded(format!(
                "queued and running jobs hold {} bytes of queries; this {query_bytes}-byte query \
                 would pass the {}-byte budget (--max-retained-bytes)",
                inner.ledger.open_bytes, self.limits.max_retained_bytes
            )));
        }
        let unknown = match self.limits.allow_unknown_query_types {
            true => None,
            false => inner
                .registry
                .runtime_mut(&runtime_id)?
                .unknown_function(&req.query_type),
        };
        // Faults apply to jobs of a deployed app (a runtime-direct job names no app) that
        // its runtime can run at all.
        let effect = match (&unknown, &rid, &branch) {
            (None, Some(rid), Some(branch)) => inner.faults.decide(rid, branch, &req.query_type),
            _ => Effect::None,
        };
        if effect != Effect::None {
            *inner.ledger.counts.faults.entry(effect.name()).or_default() += 1;
        }
        if let Effect::Reject(why) = &effect {
            return Err(Error::Overloaded(why.clone()));
        }
        let runtime = inner.registry.runtime_mut(&runtime_id)?;
        match (&unknown, &effect) {
            (None, Effect::None) => runtime.hand_over(&id, self.limits.max_queued)?,
            // Failed at submit: never handed out; counted in as queued only so that
            // `turn_terminal` counts it out.
            (Some(_), _) => runtime.queued += 1,
            // Dropped, delayed or failed by a fault rule: held as queued, not sent now.
            (None, _) => runtime.hold(self.limits.max_queued)?,
        }
        inner.last_seq = seq;
        *inner
            .ledger
            .counts
            .created
            .entry(req.source.as_str())
            .or_default() += 1;
        let query_type = inner.intern(&req.query_type);
        let view = JobView {
            id: id.clone(),
            seq,
            labels: share_labels(
                &mut inner.labels,
                JobLabels {
                    runtime_id,
                    deployed_app_rid: rid,
                    branch,
                    query_type,
                    result_content_type: None,
                },
            ),
            query: req.query,
            source: req.source,
            state: JobState::Queued,
            submitted_at: now_millis(),
            dispatched: None,
            finished: None,
            result: None,
            notes: None,
        };
        inner.ledger.open_bytes += query_bytes;
        let mut job = Box::new(Job {
            view,
            open: Some(Box::new(Open {
                auth_header: req.auth_header.map(Arc::from),
                watch_slot,
                ..Open::default()
            })),
        });
        if let Some(message) = unknown {
            // Failed at submit: its waiter (a sync execute) hears it at once.
            turn_terminal(
                &mut job,
                JobState::Failed,
                Some(message),
                &mut inner.ledger,
                &mut inner.registry,
            );
        }
        inner.jobs.insert(job);
        self.apply(inner, &id, effect);
        // Finished jobs make room for the new query.
        inner.evict(&self.limits, Instant::now());
        Ok(id)
    }

    /// Takes the oldest queued job of the runtime without waiting, for a module's poll (see
    /// [`Taker::Module`]). Also records the poll (`connected`, `last_poll_at`).
    pub fn try_take(&self, runtime_id: &str, token: Option<&str>) -> Result<Taken, Error> {
        let mut inner = self.lock();
        let first_poll = !inner.authorized(runtime_id, token)?.connected;
        let rx = inner.poll_receiver(runtime_id, token)?;
        while let Ok(id) = rx.try_recv() {
            if let Some(job) = inner.claim(&id, Taker::Module, &self.limits) {
                return Ok(Taken {
                    job: Some(job),
                    first_poll,
                });
            }
        }
        Ok(Taken {
            job: None,
            first_poll,
        })
    }

    /// The answer to a module's poll that carried job `id` was written (`true`) or not
    /// (`false`: the module's connection was gone, the write failed, or it was `HEAD`).
    /// Undelivered, the job goes back from `running` to `queued`, at the head of its
    /// runtime's queue for the next poll. A job that ended meanwhile (an early result, a
    /// cancel, a reset, a restart) is left as it is.
    pub fn delivered(&self, id: &JobId, ok: bool) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get_mut(id) else {
            return;
        };
        let Some(open) = job.open.as_deref_mut() else {
            return;
        };
        if job.view.state != JobState::Running || !open.delivering {
            return;
        }
        open.delivering = false;
        if ok {
            return;
        }
        job.view.state = JobState::Queued;
        job.view.dispatched = None;
        if let Some(deadline) = open.run_deadline.take() {
            inner.ledger.running.remove(&(deadline, job.view.seq));
        }
        if let Some(runtime) = inner.registry.runtimes.get_mut(job.view.runtime_id()) {
            runtime.queued += 1;
            runtime.running -= 1;
            log::debug!("job {id} was not delivered; back at the head of its queue");
            runtime.push_front(id);
        }
    }

    /// Stores a result: the job turns `succeeded` and its waiters wake.
    pub fn complete(
        &self,
        runtime_id: &str,
        token: Option<&str>,
        job_id: &JobId,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<(), Error> {
        let too_large = body.len() as u64 > self.limits.max_retained_bytes;
        // The copy into an `Arc` (up to --max-body bytes) happens before taking the lock.
        let result: Arc<[u8]> = match too_large {
            false => Arc::from(body),
            true => Arc::from(Vec::new()),
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.authorized(runtime_id, token)?;
        let content_type = content_type.map(|ct| inner.intern(&ct));
        let job = match inner.jobs.get_mut(job_id) {
            Some(job) if job.view.runtime_id() == runtime_id => job,
            _ => return Err(inner.missing(job_id)),
        };
        if job.view.canceled().is_some() {
            return Err(Error::result_after_cancel(job_id));
        }
        if job.view.state.is_terminal() {
            return Err(Error::result_conflict(job_id));
        }
        if too_large {
            // Kept, it would be evicted the same instant and no one could read it: say so
            // to the module, and end the job so its waiters hear why.
            let message = format!(
                "The result of job '{job_id}' is larger than the {}-byte budget for kept queries \
                 and results (--max-retained-bytes).",
                self.limits.max_retained_bytes
            );
            let ledger = &mut inner.ledger;
            turn_terminal(
                job,
                JobState::Failed,
                Some(message.clone()),
                ledger,
                &mut inner.registry,
            );
            inner.evict(&self.limits, Instant::now());
            return Err(Error::PayloadTooLarge(message));
        }
        job.view.result = Some(result);
        if content_type.is_some() {
            let labels = JobLabels {
                result_content_type: content_type,
                ..JobLabels::clone(&job.view.labels)
            };
            job.view.labels = share_labels(&mut inner.labels, labels);
        }
        turn_terminal(
            job,
            JobState::Succeeded,
            None,
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
        Ok(())
    }

    /// Ends a job as `failed` with `message` unless it is already terminal (built-in runtimes).
    pub fn fail(
        &self,
        runtime_id: &str,
        token: Option<&str>,
        job_id: &JobId,
        message: String,
    ) -> Result<(), Error> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.authorized(runtime_id, token)?;
        match inner.jobs.get_mut(job_id) {
            Some(job) if job.view.runtime_id() == runtime_id => {
                if job.view.state.is_terminal() {
                    return Err(Error::result_conflict(job_id));
                }
                turn_terminal(
                    job,
                    JobState::Failed,
                    Some(message),
                    &mut inner.ledger,
                    &mut inner.registry,
                );
                inner.evict(&self.limits, Instant::now());
                Ok(())
            }
            _ => Err(inner.missing(job_id)),
        }
    }

    /// Cancels an open job for an application: a queued job leaves its runtime's queue (its
    /// id still in the channel is skipped by `claim`), a running job ends at once; both end
    /// `failed` with [`canceled_message`], which wakes their waiters, and the runtime's later
    /// result post gets `conflict`. `by` is recorded for inspection. A finished job is left
    /// as it is: `conflict`.
    pub fn cancel(&self, id: &JobId, by: &'static str) -> Result<(), Error> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get_mut(id) else {
            return Err(inner.missing(id));
        };
        if job.view.state.is_terminal() {
            return Err(Error::cancel_conflict(id, job.view.state.as_str()));
        }
        let was = job.view.state;
        job.view.notes_mut().canceled = Some(Cancellation { by, was });
        turn_terminal(
            job,
            JobState::Failed,
            Some(canceled_message(id)),
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
        Ok(())
    }
}

impl Inner {
    /// Takes a queued job for `taker`; `None` if it is no longer takeable (skip its stale id).
    pub(super) fn claim(
        &mut self,
        id: &JobId,
        taker: Taker,
        limits: &Limits,
    ) -> Option<Dispatched> {
        let job = self.jobs.get_mut(id)?;
        // A queued job always has its open part; checked before anything changes.
        if job.view.state != JobState::Queued || job.open.is_none() {
            return None;
        }
        start_running(job, &mut self.ledger, limits);
        let open = job.open.as_deref_mut()?;
        open.delivering = taker == Taker::Module;
        if let Some(runtime) = self.registry.runtimes.get_mut(job.view.runtime_id()) {
            runtime.queued -= 1;
            runtime.running += 1;
        }
        Some(Dispatched {
            job_id: id.clone(),
            query_type: job.view.labels.query_type.clone(),
            query: job.view.query.clone(),
            auth_header: open.auth_header.clone(),
        })
    }
}

/// The failure message of a job whose streamed result post broke off; `reason` is the
/// connection layer's sentence.
pub fn stream_broke_message(id: &JobId, reason: &str) -> String {
    format!("The result stream of compute-module job '{id}' broke off before its end: {reason}")
}

/// The failure message of a job an application canceled.
pub fn canceled_message(id: &JobId) -> String {
    format!("Compute-module job '{id}' was canceled.")
}

/// A queued job turns `running`: stamped, and entered in the runtime-limit ledger.
pub(super) fn start_running(job: &mut Job, ledger: &mut Ledger, limits: &Limits) {
    job.view.state = JobState::Running;
    job.view.dispatched = Some(stamp_now());
    // A limit too large for an Instant means "never": no entry.
    let deadline = Instant::now().checked_add(limits.max_job_runtime);
    if let (Some(deadline), Some(open)) = (deadline, job.open.as_deref_mut()) {
        open.run_deadline = Some(deadline);
        ledger.running.insert((deadline, job.view.seq));
    }
}

/// The one place a job turns terminal: sets the state, stamps the time, counts it out of its
/// runtime's queue if it was queued, queues it for eviction, and wakes its waiters.
pub(super) fn turn_terminal(
    job: &mut Job,
    state: JobState,
    message: Option<String>,
    ledger: &mut Ledger,
    registry: &mut Registry,
) {
    debug_assert!(state.is_terminal());
    debug_assert!(ledger.open_bytes >= job.view.query.len() as u64);
    ledger.open_bytes = ledger
        .open_bytes
        .saturating_sub(job.view.query.len() as u64);
    if let Some(runtime) = registry.runtimes.get_mut(job.view.runtime_id()) {
        match job.view.state {
            JobState::Queued => runtime.queued = runtime.queued.saturating_sub(1),
            JobState::Running => runtime.running = runtime.running.saturating_sub(1),
            _ => {}
        }
    }
    // What only an open job needs goes, the credential (needed only for the envelope)
    // with it.
    let open = job.open.take().map(|open| *open).unwrap_or_default();
    job.view.state = state;
    job.view.finished = Some(stamp_now());
    if state == JobState::Failed {
        let message = message.unwrap_or_else(|| DEFAULT_FAILURE.to_string());
        job.view.notes_mut().error_message = Some(message.into_boxed_str());
    }
    if let Some(deadline) = open.run_deadline {
        ledger.running.remove(&(deadline, job.view.seq));
    }
    ledger.push_finished(job.view.seq, Instant::now());
    ledger.finished_bytes += retained_bytes(&job.view);
    *ledger
        .counts
        .finished
        .entry((job.view.source.as_str(), state.as_str()))
        .or_default() += 1;
    if let Some(journal) = &ledger.journal {
        // Unbounded: never blocks under the lock. The view's payloads are shared, not copied.
        let _ = journal.send(Box::new(job.view.clone()));
    }
    if let Some(slot) = open.watch_slot {
        // A streamed answer ends whole only now that the result is stored.
        if let Some(stream) = slot.stream.get() {
            stream.end(match state {
                JobState::Succeeded => StreamEnd::Whole,
                _ => StreamEnd::Broken,
            });
        }
        let _ = slot.done.set(Box::new(job.view.clone()));
        slot.wake.notify_all();
    }
}
