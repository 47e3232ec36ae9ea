//! The table's side of fault rules: the rules in force, applying a rule's decision to a new
//! job, and the delay clock that hands delayed jobs to their runtimes when their time comes.
//! The rules, their matching and the seeded PRNG are in `faults.rs`.
//!
//! **Invariant:** the rule accessors take the table lock once each, `apply` runs under
//! `enqueue`'s hold, and `run_delays` holds the lock except while it sleeps on
//! `delays_changed`; a delayed job stays `queued` and counted in its runtime's queue while it
//! waits in `Inner::delayed`; it reaches the runtime's channel only from `run_delays`, and only
//! if it is still queued then. `delays_changed` is notified under the table lock by whoever
//! adds a delayed job, resets or shuts down, so the clock never sleeps past a change.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::jobs::faults::{Effect, FaultRule, Faults};
use crate::jobs::lifecycle::turn_terminal;
use crate::jobs::table::Inner;
use crate::jobs::{JobId, JobState, JobTable};

impl JobTable {
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

    /// Hands a new job to its runtime, or does what a fault rule decided instead.
    pub(super) fn apply(&self, inner: &mut Inner, id: &JobId, effect: Effect) {
        let note = match &effect {
            Effect::None | Effect::Reject(_) => None,
            Effect::Fail { rule, .. } => Some(rule.clone()),
            Effect::Drop(note) | Effect::Delay(_, note) => Some(note.clone()),
        };
        if let (Some(job), Some(note)) = (inner.jobs.get_mut(id), note) {
            job.view.notes_mut().fault = Some(Arc::from(note));
        }
        match effect {
            // Already handed over (`Runtime::hand_over`).
            Effect::None | Effect::Reject(_) => {}
            Effect::Fail { message, .. } => {
                if let Some(job) = inner.jobs.get_mut(id) {
                    turn_terminal(
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
}

impl Inner {
    /// A delayed job's time came: to its runtime's channel, if it is still queued there.
    pub(super) fn hand_out_delayed(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if job.view.state != JobState::Queued {
            return;
        }
        if let Some(sender) = self
            .registry
            .runtimes
            .get(job.view.runtime_id())
            .and_then(|rt| rt.sender())
        {
            let _ = sender.send(id.clone());
        }
    }
}
