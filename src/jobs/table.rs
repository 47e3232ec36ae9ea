//! The job table: one mutex over every job and the runtime registry, and all blocking waits.
//!
//! **Invariant:** code under the lock does no I/O, builds no JSON, never blocks on a channel,
//! and leaves the state consistent at every step, so a poisoned lock (a panic elsewhere while
//! holding it) is recovered with `into_inner` instead of wedging every later request.
//!
//! **Invariant:** `wait_timeout` and blocking channel receives appear only in this file and
//! in `stream.rs` (a streamed result's reader, on a connection thread, on the stream's own
//! leaf lock). Each blocking fn documents who wakes it, its deadline, and what reset and
//! shutdown do to it.
//!
//! Long (about 1,500 lines) because every state change of a job happens under the one lock,
//! and that lock lives here: sessions, the lifecycle, the waits, retention, faults and reset
//! are all methods on it. Its unit tests are in `table/tests.rs`. Splitting the concerns
//! into modules over the shared `Inner` is the planned next step (issue 15).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::select;
use serde_json::Value;

use crate::auth::Secret;
use crate::error::Error;
use crate::jobs::faults::{Effect, FaultRule, Faults};
use crate::jobs::stream::{ResultStream, StreamEnd, StreamReader};
use crate::jobs::{
    now_millis, Cancellation, JobId, JobSource, JobState, JobView, DEFAULT_FAILURE, RESULT_PREVIEW,
};
use crate::runtimes::{Binding, Registry, Runtime};

/// Failure message of jobs ended by `POST /runtimes` on an existing id.
pub const RESET_MESSAGE: &str = "runtime session was reset";
/// Failure message of jobs ended by a restart notification.
pub const RESTART_MESSAGE: &str = "compute module restarted";
/// Failure message of jobs still open when the emulator stops.
pub const SHUTDOWN_MESSAGE: &str = "the emulator shut down";

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

/// Where a new job goes: its runtime, and the deployed app and branch that led there.
struct Resolved {
    runtime_id: Arc<str>,
    rid: Option<Arc<str>>,
    branch: Option<Arc<str>>,
}

/// What a non-blocking poll found.
#[derive(Debug)]
pub struct Taken {
    /// The job now `running`, if one was queued.
    pub job: Option<Dispatched>,
    /// True for the first poll of this session.
    pub first_poll: bool,
}

/// A registered interest in one job's end; see [`JobTable::wait_terminal`].
pub struct Watch {
    id: JobId,
    waiters: Arc<Waiters>,
}

impl Watch {
    /// The watched job.
    pub fn id(&self) -> &JobId {
        &self.id
    }
}

/// How a wait for a terminal job ended.
#[derive(Debug)]
pub enum WaitOutcome {
    /// The job is `succeeded` or `failed`.
    Finished(Box<JobView>),
    /// The deadline passed first; the job stays and may still finish.
    TimedOut,
    /// The waiter's caller gave up (its client left); the job stays and may still finish.
    Abandoned,
    /// The job's result is being posted chunked: read it as it comes (only from
    /// [`JobTable::wait_answer`]). The stream ends whole once the job succeeded, and broken
    /// if it fails.
    Streaming(StreamReader),
}

/// Lets a waiter's caller end a blocking wait early, e.g. because the HTTP client it waits
/// for has closed its connection. The table only asks; it knows nothing of connections.
pub trait Abandon {
    fn is_abandoned(&self) -> bool;
    /// Runs `waker` once when abandoned (at once if already abandoned). The waker must not
    /// block: it takes the table lock briefly.
    fn on_abandon(&self, waker: Box<dyn FnOnce() + Send>);
    /// Drops a waker that has not run: the wait is over.
    fn clear(&self);
}

/// A wait nobody abandons (built-in runtimes, unit tests).
pub struct NeverAbandon;

impl Abandon for NeverAbandon {
    fn is_abandoned(&self) -> bool {
        false
    }
    fn on_abandon(&self, _waker: Box<dyn FnOnce() + Send>) {}
    fn clear(&self) {}
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
        eq(&self.runtime, Some(&job.runtime_id))
            && eq(&self.app, job.deployed_app_rid.as_deref())
            && eq(&self.branch, job.branch.as_deref())
            && eq(&self.query_type, Some(&job.query_type))
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

/// Limits the table enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Queued jobs per runtime beyond which enqueue answers `overloaded`.
    pub max_queued: usize,
    /// Terminal jobs kept; the oldest finished go first.
    pub max_retained_jobs: usize,
    /// Bytes of queries (of every job) and results (of terminal jobs) kept: finished jobs
    /// are evicted oldest first to stay under it; past it a submit is refused, a result
    /// larger than all of it is refused.
    pub max_retained_bytes: u64,
    /// How long a terminal job is kept after it finished.
    pub job_ttl: Duration,
    /// A running job without a result after this fails.
    pub max_job_runtime: Duration,
    /// Hand a runtime jobs of query types its posted schemas do not name (by default such a
    /// job fails at submit, since the TypeScript SDK would never answer it).
    pub allow_unknown_query_types: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_queued: 10_000,
            max_retained_jobs: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            job_ttl: Duration::from_secs(3600),
            max_job_runtime: Duration::from_secs(15 * 60),
            allow_unknown_query_types: false,
        }
    }
}

/// Distinct interned query types and content types, and the longest one interned.
const MAX_NAMES: usize = 4096;
const MAX_NAME_BYTES: usize = 128;

/// How many evicted ids are remembered so their 404 can say "expired".
const REMEMBERED_EXPIRED: usize = 10_000;

struct Job {
    view: JobView,
    auth_header: Option<Arc<str>>,
    /// Created by the first waiter; filled, notified and dropped when the job turns terminal.
    waker: Option<Arc<Waiters>>,
    /// Its key in `Ledger::running` while the job runs.
    run_deadline: Option<Instant>,
    /// Running, but the poll answer that carries it is still being written: if that write
    /// fails, the job goes back to `queued` (see [`JobTable::delivered`]).
    delivering: bool,
}

/// The waiters of one job: they sleep on `wake` with the table lock, and `finish` leaves the
/// terminal snapshot in `done` first, so a waiter gets its answer even if the job is evicted
/// before it runs again.
#[derive(Default)]
struct Waiters {
    wake: Condvar,
    done: OnceLock<Box<JobView>>,
    /// Set by `enqueue_streamed`, cleared (under the table lock) when its wait ends: a
    /// chunked result post meanwhile streams to the waiter.
    accepts_stream: AtomicBool,
    /// The job's streamed result, set by `open_stream` (which notifies `wake`).
    stream: OnceLock<Arc<ResultStream>>,
}

/// Jobs ordered for the two time limits; both are kept so expiry never scans the table.
#[derive(Default)]
struct Ledger {
    /// Terminal jobs in the order they finished, with when: eviction pops the front, O(1).
    finished: VecDeque<(JobId, Instant)>,
    /// Running jobs by runtime deadline; `finish` removes its entry (O(log n)), so only
    /// jobs still running are here.
    running: BTreeSet<(Instant, JobId)>,
    /// Query and result bytes of the jobs in `finished`.
    finished_bytes: u64,
    /// Query bytes of the queued and running jobs.
    open_bytes: u64,
    counts: Counts,
    /// Where finished jobs are reported (the `--journal` writer); sends never block.
    journal: Option<crossbeam_channel::Sender<Box<JobView>>>,
}

impl Ledger {
    /// What the jobs hold against `max_retained_bytes`.
    fn held_bytes(&self) -> u64 {
        self.finished_bytes + self.open_bytes
    }
}

struct Inner {
    /// Boxed so the map's slots stay small; a job is a few hundred bytes.
    jobs: HashMap<JobId, Box<Job>>,
    registry: Registry,
    shutting_down: bool,
    ledger: Ledger,
    /// Query types and content types, shared by every job that uses them (bounded).
    names: HashSet<Arc<str>>,
    /// The last evicted ids (bounded), for a 404 that says the job expired.
    expired: VecDeque<JobId>,
    expired_set: HashSet<JobId>,
    /// Every job by submission order, for listings.
    by_seq: BTreeMap<u64, JobId>,
    last_seq: u64,
    faults: Faults,
    /// Jobs a fault rule delays, by when (and seq) they are handed out.
    delayed: BTreeMap<(Instant, u64), JobId>,
    /// The runtimes and bindings right after seeding, for `reset_to_seed`.
    seeded: Option<SeedState>,
}

/// What `reset_to_seed` puts back.
#[derive(Debug, Clone)]
struct SeedState {
    runtimes: Vec<(Arc<str>, Option<String>, Secret)>,
    bindings: Vec<Binding>,
}

/// What `reset_to_seed` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetCounts {
    pub jobs_failed: usize,
    pub jobs_dropped: usize,
    pub runtimes_removed: usize,
    pub runtimes_restored: usize,
    pub faults_cleared: usize,
}

/// Failure message of jobs ended by `POST /_emulate/reset`.
pub const EMULATOR_RESET_MESSAGE: &str = "the emulator was reset";

/// The shared table. Cheap to share behind an `Arc`; every method takes the lock briefly.
pub struct JobTable {
    inner: Mutex<Inner>,
    limits: Limits,
    /// Wakes the delay clock (`run_delays`): a new delayed job, a reset, shutdown.
    delays_changed: Condvar,
}

impl JobTable {
    pub fn new(limits: Limits) -> JobTable {
        JobTable {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                registry: Registry::default(),
                shutting_down: false,
                ledger: Ledger::default(),
                names: HashSet::new(),
                expired: VecDeque::new(),
                expired_set: HashSet::new(),
                by_seq: BTreeMap::new(),
                last_seq: 0,
                faults: Faults::new(crate::jobs::faults::DEFAULT_SEED),
                delayed: BTreeMap::new(),
                seeded: None,
            }),
            limits,
            delays_changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

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

    /// Creates a queued job and hands its id to the runtime's channel.
    pub fn enqueue(&self, req: EnqueueRequest) -> Result<JobId, Error> {
        self.enqueue_inner(req, None)
    }

    /// Enqueues and registers a waiter in the same step, so the job's end is seen however
    /// soon it comes (even if the job is evicted before the waiter first runs).
    pub fn enqueue_watched(&self, req: EnqueueRequest) -> Result<Watch, Error> {
        let waiters = Arc::new(Waiters::default());
        let id = self.enqueue_inner(req, Some(waiters.clone()))?;
        Ok(Watch { id, waiters })
    }

    /// [`JobTable::enqueue_watched`] for a waiter that will read a chunked result post as
    /// it arrives ([`JobTable::wait_answer`]): from this moment until that wait ends, such a
    /// post opens a stream to it ([`JobTable::open_stream`]), however soon it comes.
    pub fn enqueue_streamed(&self, req: EnqueueRequest) -> Result<Watch, Error> {
        let waiters = Arc::new(Waiters {
            accepts_stream: AtomicBool::new(true),
            ..Waiters::default()
        });
        let id = self.enqueue_inner(req, Some(waiters.clone()))?;
        Ok(Watch { id, waiters })
    }

    /// A watch on an existing job (already terminal or not).
    pub fn watch(&self, id: &JobId) -> Result<Watch, Error> {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(id) else {
            return Err(inner.missing(id));
        };
        let waiters = if job.view.state.is_terminal() {
            let done = Waiters::default();
            let _ = done.done.set(Box::new(job.view.clone()));
            Arc::new(done)
        } else {
            job.waker.get_or_insert_with(Default::default).clone()
        };
        Ok(Watch {
            id: id.clone(),
            waiters,
        })
    }

    fn enqueue_inner(
        &self,
        req: EnqueueRequest,
        waker: Option<Arc<Waiters>>,
    ) -> Result<JobId, Error> {
        // Minted before locking: it may refill the id pool (a getrandom call).
        let id = JobId::random();
        let mut guard = self.lock();
        let inner = &mut *guard;
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
            // `finish` counts it out.
            (Some(_), _) => runtime.queued += 1,
            // Dropped, delayed or failed by a fault rule: held as queued, not sent now.
            (None, _) => runtime.hold(self.limits.max_queued)?,
        }
        inner.last_seq += 1;
        let seq = inner.last_seq;
        inner.by_seq.insert(seq, id.clone());
        *inner
            .ledger
            .counts
            .created
            .entry(req.source.as_str())
            .or_default() += 1;
        let view = JobView {
            id: id.clone(),
            seq,
            runtime_id,
            deployed_app_rid: rid,
            branch,
            query_type: inner.intern(&req.query_type),
            query: req.query,
            source: req.source,
            state: JobState::Queued,
            submitted_at: now_millis(),
            dispatched_at: None,
            finished_at: None,
            error_message: None,
            result: None,
            result_preview_of: None,
            result_content_type: None,
            fault: None,
            canceled: None,
        };
        inner.ledger.open_bytes += query_bytes;
        let mut job = Box::new(Job {
            view,
            auth_header: req.auth_header.map(Arc::from),
            waker,
            run_deadline: None,
            delivering: false,
        });
        if let Some(message) = unknown {
            // Failed at submit: its waiter (a sync execute) hears it at once.
            finish(
                &mut job,
                JobState::Failed,
                Some(message),
                &mut inner.ledger,
                &mut inner.registry,
            );
        }
        inner.jobs.insert(id.clone(), job);
        self.apply(inner, &id, effect);
        // Finished jobs make room for the new query.
        inner.evict(&self.limits, Instant::now());
        Ok(id)
    }

    /// Hands a new job to its runtime, or does what a fault rule decided instead.
    fn apply(&self, inner: &mut Inner, id: &JobId, effect: Effect) {
        let note = match &effect {
            Effect::None | Effect::Reject(_) => None,
            Effect::Fail { rule, .. } => Some(rule.clone()),
            Effect::Drop(note) | Effect::Delay(_, note) => Some(note.clone()),
        };
        if let Some(job) = inner.jobs.get_mut(id) {
            job.view.fault = note.map(Arc::from);
        }
        match effect {
            // Already handed over (`Runtime::hand_over`).
            Effect::None | Effect::Reject(_) => {}
            Effect::Fail { message, .. } => {
                if let Some(job) = inner.jobs.get_mut(id) {
                    finish(
                        job,
                        JobState::Failed,
                        Some(message),
                        &mut inner.ledger,
                        &mut inner.registry,
                    );
                }
            }
            // Never handed out: it stays queued until canceled, reset or shut down.
            Effect::Drop(_) => {}
            Effect::Delay(delay, _) => {
                let seq = inner.jobs.get(id).map_or(0, |job| job.view.seq);
                inner
                    .delayed
                    .insert((Instant::now() + delay, seq), id.clone());
                self.delays_changed.notify_all();
            }
        }
    }

    /// The delay clock: hands each delayed job to its runtime when its time comes. Runs on
    /// its own thread until `shutdown`.
    ///
    /// # Blocking
    /// Waits on `delays_changed` with the table lock, until the earliest delayed job is due
    /// (or a second, whichever is sooner); woken by a newly delayed job and by shutdown.
    pub fn run_delays(&self) {
        let mut inner = self.lock();
        while !inner.shutting_down {
            let now = Instant::now();
            while let Some((&(due, seq), _)) = inner.delayed.first_key_value() {
                if due > now {
                    break;
                }
                let Some(id) = inner.delayed.remove(&(due, seq)) else {
                    break;
                };
                inner.hand_out_delayed(&id);
            }
            let wait = inner
                .delayed
                .first_key_value()
                .map_or(Duration::from_secs(1), |(&(due, _), _)| due - now)
                .min(Duration::from_secs(1));
            inner = self
                .delays_changed
                .wait_timeout(inner, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The fault rules in force.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.rules()
    }

    /// Replaces the fault rules (jobs already delayed keep their time); returns the old count.
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> usize {
        let mut inner = self.lock();
        let old = inner.faults.rules().len();
        inner.faults.replace(rules);
        old
    }

    /// Seeds the fault PRNG (`--fault-seed`); the rules restart their sequence.
    pub fn seed_faults(&self, seed: u64) {
        let mut inner = self.lock();
        let rules = inner.faults.rules();
        inner.faults = Faults::new(seed);
        inner.faults.replace(rules);
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
        job.view.canceled = Some(Cancellation {
            by,
            was: job.view.state,
        });
        finish(
            job,
            JobState::Failed,
            Some(canceled_message(id)),
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
        Ok(())
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

    /// Waits for the runtime's next job and takes it for `taker`.
    ///
    /// # Blocking
    /// Blocks on the runtime's channel (and on `abandon`'s wake-up) until an id arrives,
    /// `abandon` fires, or `deadline` passes; the lock is not held while blocked. Woken by
    /// `enqueue` and by an undelivered job's requeue (a send), or by `abandon` (the module's
    /// connection closed). On deadline or abandon: `Ok(None)` (→ 204). A session reset or
    /// shutdown drops the channel, which wakes it with `Ok(None)` at once. Ids of jobs no
    /// longer takeable (failed by a reset, canceled, completed early, reserved by another
    /// poll) are skipped.
    pub fn next_job(
        &self,
        runtime_id: &str,
        token: Option<&str>,
        deadline: Instant,
        taker: Taker,
        abandon: &dyn Abandon,
    ) -> Result<Option<Dispatched>, Error> {
        let (rx, session) = {
            let mut inner = self.lock();
            let rx = inner.poll_receiver(runtime_id, token)?;
            (rx, inner.begin_poll(runtime_id))
        };
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        // Kept here too, so a `Abandon` that drops its waker cannot disconnect `wake_rx`.
        let _keep = wake_tx.clone();
        abandon.on_abandon(Box::new(move || {
            let _ = wake_tx.try_send(());
        }));
        let taken = loop {
            if abandon.is_abandoned() {
                break None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // `None`: woken by `abandon`, checked at the top of the loop.
            let woke = select! {
                recv(rx) -> id => Some(id.ok()),
                recv(wake_rx) -> _ => None,
                default(left) => Some(None),
            };
            let Some(received) = woke else {
                continue;
            };
            let Some(id) = received else {
                break None; // deadline, or the queue was dropped by a reset or shutdown
            };
            let mut inner = self.lock();
            if let Some(dispatched) = inner.claim(&id, taker, &self.limits) {
                inner.end_poll(runtime_id, session);
                break Some(dispatched);
            }
        };
        if taken.is_none() {
            self.lock().end_poll(runtime_id, session);
        }
        abandon.clear();
        Ok(taken)
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
        if job.view.state != JobState::Running || !job.delivering {
            return;
        }
        job.delivering = false;
        if ok {
            return;
        }
        job.view.state = JobState::Queued;
        job.view.dispatched_at = None;
        if let Some(deadline) = job.run_deadline.take() {
            inner.ledger.running.remove(&(deadline, id.clone()));
        }
        if let Some(runtime) = inner.registry.runtimes.get_mut(&job.view.runtime_id) {
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
            Some(job) if &*job.view.runtime_id == runtime_id => job,
            _ => return Err(inner.missing(job_id)),
        };
        if job.view.canceled.is_some() {
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
            finish(
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
        job.view.result_content_type = content_type;
        finish(
            job,
            JobState::Succeeded,
            None,
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
        Ok(())
    }

    /// A sync execute answered with the result of job `id`: the job keeps only its first
    /// [`RESULT_PREVIEW`] bytes (for inspection). No one else can ask for the bytes (the
    /// execute never told its caller the id), so a full copy would only hold memory until
    /// eviction.
    pub fn keep_preview(&self, id: &JobId) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get_mut(id) else {
            return;
        };
        let Some(result) = &job.view.result else {
            return;
        };
        if job.view.result_preview_of.is_some() || result.len() <= RESULT_PREVIEW {
            return;
        }
        let full = result.len();
        job.view.result = Some(Arc::from(&result[..RESULT_PREVIEW]));
        job.view.result_preview_of = Some(full as u64);
        inner.ledger.finished_bytes -= (full - RESULT_PREVIEW) as u64;
    }

    /// A chunked result post for job `job_id` has begun (its head was read, on the runtime's
    /// connection thread): if a sync execute waits on the job in [`JobTable::wait_answer`],
    /// the stream it will read, which the post's chunks are pushed into. `None` (the post is
    /// only stored whole, as any other) for a wrong runtime or token, a job that is unknown,
    /// finished or canceled, one nobody waits on that way, or one already streamed.
    /// Checks the token in constant time (`Secret::matches`), so an unauthenticated post
    /// never reaches an application.
    pub fn open_stream(
        &self,
        runtime_id: &str,
        token: Option<&str>,
        job_id: &JobId,
    ) -> Option<Arc<ResultStream>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.authorized(runtime_id, token).ok()?;
        let job = inner.jobs.get(job_id)?;
        if &*job.view.runtime_id != runtime_id
            || job.view.state.is_terminal()
            || job.view.canceled.is_some()
        {
            return None;
        }
        let waiters = job.waker.as_ref()?;
        if !waiters.accepts_stream.load(Ordering::SeqCst) || waiters.stream.get().is_some() {
            return None;
        }
        let stream = ResultStream::new();
        let _ = waiters.stream.set(stream.clone());
        waiters.wake.notify_all();
        Some(stream)
    }

    /// The chunked post feeding `stream` broke off before its end (its connection closed, a
    /// chunk could not be decoded, it passed `--max-body` or its `--io-timeout`): the job
    /// fails, since part of its result may already have reached the application, whose
    /// answer then ends truncated. `reason` is a sentence. Nothing happens if the job ended
    /// meanwhile or another stream is its own.
    pub fn stream_broke(&self, job_id: &JobId, stream: &Arc<ResultStream>, reason: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return;
        };
        let ours = job
            .waker
            .as_ref()
            .and_then(|w| w.stream.get())
            .is_some_and(|s| Arc::ptr_eq(s, stream));
        if !ours || job.view.state.is_terminal() {
            return;
        }
        let message = stream_broke_message(job_id, reason);
        finish(
            job,
            JobState::Failed,
            Some(message),
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
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
            Some(job) if &*job.view.runtime_id == runtime_id => {
                if job.view.state.is_terminal() {
                    return Err(Error::result_conflict(job_id));
                }
                finish(
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

    /// The restart notification: every `running` job of the runtime ends as `failed`.
    pub fn restart(&self, runtime_id: &str, token: Option<&str>) -> Result<Vec<JobId>, Error> {
        let mut inner = self.lock();
        inner.authorized(runtime_id, token)?;
        let failed = inner.fail_open_jobs(runtime_id, RESTART_MESSAGE, |s| s == JobState::Running);
        inner.evict(&self.limits, Instant::now());
        Ok(failed)
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

    /// A snapshot of one job; a 404 that says so when the job expired.
    pub fn job(&self, id: &JobId) -> Result<JobView, Error> {
        let inner = self.lock();
        match inner.jobs.get(id) {
            Some(job) => Ok(job.view.clone()),
            None => Err(inner.missing(id)),
        }
    }

    /// Fails running jobs past `max_job_runtime` and evicts terminal jobs past the retention
    /// limits. Called about once a second by the janitor thread, so expiry happens even when
    /// no request arrives; costs O(1) per expired job.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        while let Some((deadline, id)) = inner.ledger.running.first().cloned() {
            if deadline > now {
                break;
            }
            match inner.jobs.get_mut(&id) {
                Some(job) => {
                    let message = format!(
                        "the compute module posted no result within {}s (--max-job-runtime)",
                        self.limits.max_job_runtime.as_secs_f64()
                    );
                    // Removes the entry from `running`.
                    finish(
                        job,
                        JobState::Failed,
                        Some(message),
                        &mut inner.ledger,
                        &mut inner.registry,
                    );
                }
                None => {
                    inner.ledger.running.remove(&(deadline, id));
                }
            }
        }
        inner.evict(&self.limits, now);
    }

    /// Waits until the watched job is terminal.
    ///
    /// # Blocking
    /// Waits on the job's own condvar with the table lock, so a completion wakes only the
    /// waiters of that job. The watch was registered with the job (`enqueue_watched`) or on
    /// it (`watch`), and `finish` leaves the terminal snapshot in it before notifying, so no
    /// end can be missed, not even one followed at once by eviction. Woken by `complete`,
    /// `fail`, `cancel`, `restart`, a session reset (`create_runtime`), the runtime limit
    /// (`sweep`) and `shutdown`, all through `finish`; and by `abandon` (the caller's client
    /// left), whose waker notifies under the lock so the wake cannot fall between check and
    /// wait.
    /// Re-checks after every wake (wakes can be spurious). On deadline: `TimedOut`; on
    /// abandon: `Abandoned`; in both the job stays. Holds no lock on return.
    pub fn wait_terminal(
        self: &Arc<Self>,
        watch: &Watch,
        deadline: Instant,
        abandon: &dyn Abandon,
    ) -> WaitOutcome {
        self.wait_inner(watch, deadline, abandon, false)
    }

    /// [`JobTable::wait_terminal`] for a caller that can pass a result on as it arrives (a
    /// sync execute over HTTP/1.1, whose watch came from `enqueue_streamed`): it also ends,
    /// with `Streaming`, when the job's runtime starts posting its result chunked
    /// ([`JobTable::open_stream`]).
    ///
    /// # Blocking
    /// As `wait_terminal`, and also woken by `open_stream` (the runtime's connection thread,
    /// once the head of a chunked result post was read), which notifies the same condvar
    /// under the lock. A job that ended first is answered whole (`Finished`). A stream cut
    /// off before this waiter took it is not taken; the wait goes on for the job's end.
    pub fn wait_answer(
        self: &Arc<Self>,
        watch: &Watch,
        deadline: Instant,
        abandon: &dyn Abandon,
    ) -> WaitOutcome {
        self.wait_inner(watch, deadline, abandon, true)
    }

    fn wait_inner(
        self: &Arc<Self>,
        watch: &Watch,
        deadline: Instant,
        abandon: &dyn Abandon,
        streams: bool,
    ) -> WaitOutcome {
        let waiters = &watch.waiters;
        {
            let (table, waiters) = (self.clone(), waiters.clone());
            abandon.on_abandon(Box::new(move || {
                let _locked = table.lock();
                waiters.wake.notify_all();
            }));
        }
        let mut inner = self.lock();
        let outcome = loop {
            // `finish` fills `done` before it notifies: no lookup needed, none can miss.
            if let Some(view) = waiters.done.get() {
                break WaitOutcome::Finished(view.clone());
            }
            if let Some(reader) = waiters
                .stream
                .get()
                .filter(|_| streams)
                .and_then(|s| s.reader())
            {
                break WaitOutcome::Streaming(reader);
            }
            if abandon.is_abandoned() {
                break WaitOutcome::Abandoned;
            }
            // No shutdown check: `shutdown` fails every open job, which fills `done`.
            let now = Instant::now();
            if now >= deadline {
                break WaitOutcome::TimedOut;
            }
            inner = waiters
                .wake
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        // Nobody reads a stream that starts from now on.
        waiters.accepts_stream.store(false, Ordering::SeqCst);
        drop(inner);
        // The waker holds an `Arc` of the table; it must not outlive the wait.
        abandon.clear();
        outcome
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
            Some(job) if &*job.view.runtime_id == runtime_id => job.view.clone(),
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
        let newest_first = inner.by_seq.range(..before.unwrap_or(u64::MAX)).rev();
        for (scanned, (&seq, id)) in newest_first.enumerate() {
            if jobs.len() == limit || scanned == LIST_SCAN_MAX {
                next_before = Some(seq + 1);
                break;
            }
            if let Some(job) = inner.jobs.get(id).filter(|j| filter.matches(&j.view)) {
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
            retained_jobs: inner.ledger.finished.len(),
            held_bytes: inner.ledger.held_bytes(),
        }
    }

    /// Reports every job that finishes from now on to `journal` (the `--journal` writer).
    pub fn report_finished_to(&self, journal: crossbeam_channel::Sender<Box<JobView>>) {
        self.lock().ledger.journal = Some(journal);
    }

    /// Stops reporting finished jobs (dropping the sender ends the journal writer).
    pub fn stop_reporting(&self) {
        self.lock().ledger.journal = None;
    }

    /// True once `shutdown` ran; built-in runtime threads check it to exit.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Stops the table: open jobs fail, every waiter and poller wakes, enqueue is refused.
    pub fn shutdown(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.shutting_down = true;
        for job in inner.jobs.values_mut() {
            if !job.view.state.is_terminal() {
                let message = Some(SHUTDOWN_MESSAGE.to_string());
                finish(
                    job,
                    JobState::Failed,
                    message,
                    &mut inner.ledger,
                    &mut inner.registry,
                );
            }
        }
        for runtime in inner.registry.runtimes.values_mut() {
            runtime.close_queue();
        }
        inner.delayed.clear();
        self.delays_changed.notify_all();
    }

    /// Remembers the runtimes (with their tokens) and bindings as they are now: the state
    /// `reset_to_seed` restores. Called once, right after seeding.
    pub fn mark_seeded(&self) {
        let mut inner = self.lock();
        let mut runtimes: Vec<_> = inner
            .registry
            .runtimes
            .values()
            .map(|rt| (rt.id.clone(), rt.display_name.clone(), rt.token.clone()))
            .collect();
        runtimes.sort_by(|a, b| a.0.cmp(&b.0));
        let bindings = inner.registry.bindings.clone();
        inner.seeded = Some(SeedState { runtimes, bindings });
    }

    /// Puts the table back to its seeded state: every open job fails (so every waiter is
    /// answered at once), then all jobs are dropped; runtimes created since are removed
    /// (their tokens stop working, their pollers get 204); seeded runtimes get their seed
    /// token back with no schemas and a fresh queue (built-in runtime threads pick it up on
    /// their next wait); bindings, fault rules and counters are as at start.
    pub fn reset_to_seed(&self) -> ResetCounts {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut jobs_failed = 0;
        for job in inner.jobs.values_mut() {
            if !job.view.state.is_terminal() {
                jobs_failed += 1;
                let message = Some(EMULATOR_RESET_MESSAGE.to_string());
                finish(
                    job,
                    JobState::Failed,
                    message,
                    &mut inner.ledger,
                    &mut inner.registry,
                );
            }
        }
        let jobs_dropped = inner.jobs.len();
        inner.jobs.clear();
        inner.by_seq.clear();
        inner.delayed.clear();
        inner.expired.clear();
        inner.expired_set.clear();
        let journal = inner.ledger.journal.take();
        inner.ledger = Ledger {
            journal,
            ..Ledger::default()
        };
        let seeded = inner.seeded.clone().unwrap_or(SeedState {
            runtimes: Vec::new(),
            bindings: Vec::new(),
        });
        let before = inner.registry.runtimes.len();
        inner.registry.runtimes.retain(|id, runtime| {
            let keep = seeded.runtimes.iter().any(|(seed_id, ..)| seed_id == id);
            if !keep {
                runtime.close_queue();
            }
            keep
        });
        let runtimes_removed = before - inner.registry.runtimes.len();
        let now = now_millis();
        for (id, display_name, token) in &seeded.runtimes {
            if let Some(runtime) = inner.registry.runtimes.get_mut(id) {
                runtime.reset(display_name.clone(), token.clone(), now);
            }
        }
        inner.registry.bindings = seeded.bindings;
        let faults_cleared = inner.faults.rules().len();
        inner.faults.replace(Vec::new());
        self.delays_changed.notify_all();
        ResetCounts {
            jobs_failed,
            jobs_dropped,
            runtimes_removed,
            runtimes_restored: seeded.runtimes.len(),
            faults_cleared,
        }
    }
}

impl Inner {
    /// The runtime a new job goes to, with the deployed app and branch it was resolved by.
    fn resolve_target(&self, target: &Target) -> Result<Resolved, Error> {
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
    fn authorized(&mut self, runtime_id: &str, token: Option<&str>) -> Result<&mut Runtime, Error> {
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
    fn poll_receiver(
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

    /// A delayed job's time came: to its runtime's channel, if it is still queued there.
    fn hand_out_delayed(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if job.view.state != JobState::Queued {
            return;
        }
        if let Some(sender) = self
            .registry
            .runtimes
            .get(&job.view.runtime_id)
            .and_then(|rt| rt.sender())
        {
            let _ = sender.send(id.clone());
        }
    }

    /// A poll of the runtime starts waiting; returns its session (the reset count), so that
    /// a poll of an earlier session does not count itself out of a new one.
    fn begin_poll(&mut self, runtime_id: &str) -> u64 {
        match self.registry.runtimes.get_mut(runtime_id) {
            Some(runtime) => {
                runtime.polls_held += 1;
                runtime.resets
            }
            None => u64::MAX,
        }
    }

    /// A poll of `session` stopped waiting (with a job or without): recorded as its last poll.
    fn end_poll(&mut self, runtime_id: &str, session: u64) {
        if let Some(runtime) = self.registry.runtimes.get_mut(runtime_id) {
            if runtime.resets == session {
                runtime.polls_held = runtime.polls_held.saturating_sub(1);
                runtime.last_poll_at = Some(now_millis());
            }
        }
    }

    /// Takes a queued job for `taker`; `None` if it is no longer takeable (skip its stale id).
    fn claim(&mut self, id: &JobId, taker: Taker, limits: &Limits) -> Option<Dispatched> {
        let job = self.jobs.get_mut(id)?;
        if job.view.state != JobState::Queued {
            return None;
        }
        start_running(job, &mut self.ledger, limits);
        job.delivering = taker == Taker::Module;
        if let Some(runtime) = self.registry.runtimes.get_mut(&job.view.runtime_id) {
            runtime.queued -= 1;
            runtime.running += 1;
        }
        Some(Dispatched {
            job_id: id.clone(),
            query_type: job.view.query_type.clone(),
            query: job.view.query.clone(),
            auth_header: job.auth_header.clone(),
        })
    }

    /// Fails the runtime's non-terminal jobs whose state passes `which`; returns their ids.
    fn fail_open_jobs(
        &mut self,
        runtime_id: &str,
        message: &str,
        which: impl Fn(JobState) -> bool,
    ) -> Vec<JobId> {
        let mut failed = Vec::new();
        for job in self.jobs.values_mut() {
            let open = !job.view.state.is_terminal() && which(job.view.state);
            if open && &*job.view.runtime_id == runtime_id {
                finish(
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

    /// Drops terminal jobs beyond `max_retained_jobs`, past the byte budget, or older than
    /// `job_ttl`, oldest first. The byte budget never evicts the newest finished job: its
    /// result (at most the whole budget, see `complete`) stays readable until another ends.
    fn evict(&mut self, limits: &Limits, now: Instant) {
        while let Some((_, finished_at)) = self.ledger.finished.front() {
            let over_bytes = self.ledger.held_bytes() > limits.max_retained_bytes
                && self.ledger.finished.len() > 1;
            let over = self.ledger.finished.len() > limits.max_retained_jobs || over_bytes;
            let expired = finished_at
                .checked_add(limits.job_ttl)
                .is_some_and(|end| end <= now);
            if !over && !expired {
                break;
            }
            let Some((id, _)) = self.ledger.finished.pop_front() else {
                break;
            };
            if let Some(job) = self.jobs.remove(&id) {
                self.ledger.finished_bytes -= retained_bytes(&job.view);
                self.by_seq.remove(&job.view.seq);
                self.ledger.counts.evicted += 1;
            }
            if self.expired.len() >= REMEMBERED_EXPIRED {
                if let Some(old) = self.expired.pop_front() {
                    self.expired_set.remove(&old);
                }
            }
            self.expired_set.insert(id.clone());
            self.expired.push_back(id);
        }
    }

    /// A shared copy of a short string that many jobs repeat (query types, content types),
    /// so 100,000 retained jobs do not hold 100,000 copies. Past [`MAX_NAMES`] distinct
    /// values, a fresh copy is made instead.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let fresh: Arc<str> = Arc::from(name);
        // Only short names: a long one is not a name, and would outlive its job here.
        if self.names.len() < MAX_NAMES && name.len() <= MAX_NAME_BYTES {
            self.names.insert(fresh.clone());
        }
        fresh
    }

    /// The 404 for a job id not in the table.
    fn missing(&self, id: &JobId) -> Error {
        if self.expired_set.contains(id) {
            Error::NotFound(format!(
                "Compute-module job '{id}' expired: finished jobs are kept for --job-ttl, up to --max-retained-jobs."
            ))
        } else {
            Error::job_not_found(&id.to_string())
        }
    }

    fn runtime_view(&self, runtime_id: &str) -> Option<RuntimeView> {
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

/// The failure message of a job whose streamed result post broke off; `reason` is the
/// connection layer's sentence.
pub fn stream_broke_message(id: &JobId, reason: &str) -> String {
    format!("The result stream of compute-module job '{id}' broke off before its end: {reason}")
}

/// The failure message of a job an application canceled.
pub fn canceled_message(id: &JobId) -> String {
    format!("Compute-module job '{id}' was canceled.")
}

/// What a finished job costs against `max_retained_bytes`.
fn retained_bytes(view: &JobView) -> u64 {
    (view.query.len() + view.result.as_ref().map_or(0, |r| r.len())) as u64
}

/// A queued job turns `running`: stamped, and entered in the runtime-limit ledger.
fn start_running(job: &mut Job, ledger: &mut Ledger, limits: &Limits) {
    job.view.state = JobState::Running;
    job.view.dispatched_at = Some(now_millis());
    // A limit too large for an Instant means "never": no entry.
    if let Some(deadline) = Instant::now().checked_add(limits.max_job_runtime) {
        job.run_deadline = Some(deadline);
        ledger.running.insert((deadline, job.view.id.clone()));
    }
}

/// The one place a job turns terminal: sets the state, stamps the time, counts it out of its
/// runtime's queue if it was queued, queues it for eviction, and wakes its waiters.
fn finish(
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
    if let Some(runtime) = registry.runtimes.get_mut(&job.view.runtime_id) {
        match job.view.state {
            JobState::Queued => runtime.queued = runtime.queued.saturating_sub(1),
            JobState::Running => runtime.running = runtime.running.saturating_sub(1),
            _ => {}
        }
    }
    job.delivering = false;
    job.view.state = state;
    job.view.finished_at = Some(now_millis());
    // The credential was only needed for the envelope; a finished job does not keep it.
    job.auth_header = None;
    if state == JobState::Failed {
        job.view.error_message = Some(message.unwrap_or_else(|| DEFAULT_FAILURE.to_string()));
    }
    if let Some(deadline) = job.run_deadline.take() {
        ledger.running.remove(&(deadline, job.view.id.clone()));
    }
    ledger
        .finished
        .push_back((job.view.id.clone(), Instant::now()));
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
    if let Some(waiters) = job.waker.take() {
        // A streamed answer ends whole only now that the result is stored.
        if let Some(stream) = waiters.stream.get() {
            stream.end(match state {
                JobState::Succeeded => StreamEnd::Whole,
                _ => StreamEnd::Broken,
            });
        }
        let _ = waiters.done.set(Box::new(job.view.clone()));
        waiters.wake.notify_all();
    }
}

#[cfg(test)]
mod tests;
