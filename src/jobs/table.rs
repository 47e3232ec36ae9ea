//! The job table: one mutex (`JobTable::inner`) over every job and the runtime registry.
//!
//! This file holds the shared state (`Inner`, `Job`), the table's `Limits`, and what acts on
//! the whole table at once: shutdown, the reset to the seed, the journal hook. The other
//! `impl JobTable` blocks are split by concern across sibling modules of `jobs`:
//! `sessions.rs` (runtime sessions, tokens, bindings), `lifecycle.rs` (enqueue, claim and
//! delivery, complete, fail, cancel, and `turn_terminal`, the one place a job turns terminal),
//! `waits.rs` (the watch slot and the blocking waits on jobs and runtime channels),
//! `retention.rs` (eviction, the byte budget, the sweep, expired-id memory, interning),
//! `delays.rs` (fault decisions applied, and the delay clock), `inspect.rs` (snapshots,
//! listings, totals). Other modules reach all of them through `crate::jobs`' re-exports.
//!
//! **Invariant:** code under the lock does no I/O, builds no JSON, never blocks on a channel,
//! and leaves the state consistent at every step, so a poisoned lock (a panic elsewhere while
//! holding it) is recovered with `into_inner` instead of wedging every later request.
//!
//! **Invariant:** only `JobTable` methods take the lock (`JobTable::lock`), each briefly, and
//! none returns holding it; the helpers on `Inner` run under a lock their caller holds and
//! never lock again. A method that waits releases the lock while it sleeps (a condvar wait,
//! or a channel receive after dropping the guard): those are `next_job`, `wait_terminal` and
//! `wait_answer` (`waits.rs`) and `run_delays` (`delays.rs`). ARCHITECTURE.md's waits table
//! lists every blocking place of the program, these and the others.
//!
//! Its unit tests are in `table/tests.rs`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::Secret;
use crate::jobs::faults::Faults;
use crate::jobs::lifecycle::turn_terminal;
use crate::jobs::retention::{Interner, Ledger};
use crate::jobs::waits::WatchSlot;
use crate::jobs::{now_millis, JobId, JobLabels, JobState, JobView};
use crate::runtimes::{Binding, Registry};

/// Failure message of jobs still open when the emulator stops.
pub const SHUTDOWN_MESSAGE: &str = "the emulator shut down";

/// Failure message of jobs ended by `POST /_emulate/reset`.
pub const EMULATOR_RESET_MESSAGE: &str = "the emulator was reset";

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
    /// How long a terminal job is kept after it finished (up to two seconds more, never
    /// less: the ledger keeps finish times per second, see `retention::FINISH_MARK_SPAN`, and
    /// the janitor sweeps once a second).
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

/// One job as the table keeps it: its snapshot, and what only the table needs.
pub(super) struct Job {
    pub(super) view: JobView,
    /// `Some` while the job is queued or running, `None` once it is terminal: a retained
    /// job does not carry what only an open one needs (100,000 of them are kept by default).
    pub(super) open: Option<Box<Open>>,
}

/// What a queued or running job needs and a terminal one does not.
#[derive(Default)]
pub(super) struct Open {
    /// The submitter's `Authorization` header, for the envelope.
    pub(super) auth_header: Option<Arc<str>>,
    /// Its watch slot: created by the first waiter; filled, notified and dropped when the job
    /// turns terminal.
    pub(super) watch_slot: Option<Arc<WatchSlot>>,
    /// Its key in `Ledger::running` while the job runs.
    pub(super) run_deadline: Option<Instant>,
    /// Running, but the poll answer that carries it is still being written: if that write
    /// fails, the job goes back to `queued` (see [`JobTable::delivered`]).
    pub(super) delivering: bool,
}

/// The shared table. Cheap to share behind an `Arc`; every method takes the lock briefly.
pub struct JobTable {
    pub(super) inner: Mutex<Inner>,
    pub(super) limits: Limits,
    /// Wakes the delay clock (`run_delays`): a new delayed job, a reset, shutdown.
    pub(super) delays_changed: Condvar,
}

/// What the lock guards: the jobs, the registry, and the indexes kept beside them.
pub(super) struct Inner {
    pub(super) jobs: Jobs,
    pub(super) registry: Registry,
    pub(super) shutting_down: bool,
    pub(super) ledger: Ledger,
    /// Query types and content types, shared by every job that uses them (bounded).
    pub(super) names: Interner<str>,
    /// Jobs' labels (runtime, app, branch, query type), shared likewise (bounded).
    pub(super) labels: Interner<JobLabels>,
    /// The last evicted ids (bounded), for a 404 that says the job expired.
    pub(super) expired: VecDeque<JobId>,
    pub(super) expired_set: HashSet<JobId>,
    /// The seq of the newest job; never goes back (not even at reset), so ids never repeat.
    pub(super) last_seq: u64,
    pub(super) faults: Faults,
    /// Jobs a fault rule delays, by when (and seq) they are handed out.
    pub(super) delayed: BTreeMap<(Instant, u64), JobId>,
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

impl JobTable {
    pub fn new(limits: Limits) -> JobTable {
        JobTable {
            inner: Mutex::new(Inner {
                jobs: Jobs::new(),
                registry: Registry::default(),
                shutting_down: false,
                ledger: Ledger::default(),
                names: Interner::default(),
                labels: Interner::default(),
                expired: VecDeque::new(),
                expired_set: HashSet::new(),
                last_seq: 0,
                faults: Faults::new(crate::jobs::faults::DEFAULT_SEED),
                delayed: BTreeMap::new(),
                seeded: None,
            }),
            limits,
            delays_changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every job by submission number (`seq`), the listing's order. An id carries its seq (see
/// [`JobId::mint`]), so this one list also finds a job by id: no second index to keep in step.
///
/// Seqs only grow, so a new job goes at the back and the list stays sorted: a look-up is a
/// binary search. A removed job leaves a hole that keeps its seq (so the list stays
/// searchable); holes at the front go at once (eviction is oldest-finished first, mostly the
/// front), the others when they outnumber half the jobs ([`Jobs::compact`], amortized O(1)
/// per removal). A slot is 16 bytes, about a third of what a `BTreeMap` entry cost here
/// (its nodes run half full under this insert-at-the-back, remove-at-the-front use).
pub(super) struct Jobs {
    slots: VecDeque<Slot>,
    /// How many slots hold a job.
    live: usize,
    /// The mask of the seq in this table's ids (random, fixed for the table's life).
    pub(super) id_key: u64,
}

/// A job (boxed: the list moves slots, and a job is a hundred bytes) or the hole it left.
type Slot = (u64, Option<Box<Job>>);

/// Holes tolerated before [`Jobs::compact`], beyond half the live jobs.
const SLACK_HOLES: usize = 64;

impl Jobs {
    fn new() -> Jobs {
        let mut key = [0u8; 8];
        key.copy_from_slice(&crate::ids::random_bytes()[..8]);
        Jobs {
            slots: VecDeque::new(),
            live: 0,
            id_key: u64::from_le_bytes(key),
        }
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&seq, |slot| slot.0).ok()
    }

    /// The job with this id, if the table holds it.
    pub(super) fn get(&self, id: &JobId) -> Option<&Job> {
        let at = self.position(id.seq(self.id_key)?)?;
        let job = self.slots[at].1.as_deref()?;
        (job.view.id == *id).then_some(job)
    }

    /// The job with this id, if the table holds it, to change.
    pub(super) fn get_mut(&mut self, id: &JobId) -> Option<&mut Job> {
        let at = self.position(id.seq(self.id_key)?)?;
        let job = self.slots[at].1.as_deref_mut()?;
        (job.view.id == *id).then_some(job)
    }

    /// The job numbered `seq` (the ledgers keep jobs by seq), to change.
    pub(super) fn by_seq_mut(&mut self, seq: u64) -> Option<&mut Job> {
        let at = self.position(seq)?;
        self.slots[at].1.as_deref_mut()
    }

    /// Adds a job minted by this table (its id carries `job.view.seq`), newer than every
    /// job it holds.
    pub(super) fn insert(&mut self, job: Box<Job>) {
        let seq = job.view.seq;
        debug_assert_eq!(job.view.id.seq(self.id_key), Some(seq));
        debug_assert!(self.slots.back().is_none_or(|last| last.0 < seq));
        self.slots.push_back((seq, Some(job)));
        self.live += 1;
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<Box<Job>> {
        let at = self.position(seq)?;
        let job = self.slots[at].1.take()?;
        self.live -= 1;
        while self.slots.front().is_some_and(|slot| slot.1.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() - self.live > self.live / 2 + SLACK_HOLES {
            self.compact();
        }
        Some(job)
    }

    /// Drops every hole: O(slots), run only after more than `live / 2` removals since the
    /// last time. Gives memory back when the list holds a quarter of what it has room for.
    fn compact(&mut self) {
        self.slots.retain(|slot| slot.1.is_some());
        if self.slots.capacity() > 4 * self.slots.len() {
            self.slots.shrink_to(2 * self.slots.len());
        }
    }

    /// Jobs with a seq below `before`, newest first.
    pub(super) fn newest_first(&self, before: u64) -> impl Iterator<Item = &Job> {
        let end = self.slots.partition_point(|slot| slot.0 < before);
        self.slots
            .range(..end)
            .rev()
            .filter_map(|slot| slot.1.as_deref())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.slots
            .iter_mut()
            .filter_map(|slot| slot.1.as_deref_mut())
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Drops every job, and the list's memory with them.
    pub(super) fn clear(&mut self) {
        self.slots = VecDeque::new();
        self.live = 0;
    }
}

impl JobTable {
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
                turn_terminal(
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
                turn_terminal(
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

#[cfg(test)]
mod tests;
