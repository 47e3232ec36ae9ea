//! The blocking waits on jobs and runtime channels, and the watch slot they sleep on.
//!
//! A job's watch slot (`WatchSlot`) is created with the job (`enqueue_watched`,
//! `enqueue_streamed`) or on it (`watch`) and held by a `Watch`; `turn_terminal` fills it with the
//! terminal snapshot and notifies it, and `open_stream` puts a streamed result in it.
//!
//! **Invariant:** a wait computes its deadline once, re-checks its condition after every
//! wake, and holds no lock when it returns; `wait_terminal` and `wait_answer` sleep on the
//! job's own condvar with the table lock (so everyone who changes the slot does so under
//! that lock, and a wake cannot fall between check and sleep), `next_job` on the runtime's
//! channel with no lock held. An `Abandon` waker must not block: it takes the table lock
//! briefly. Every blocking fn has a `# Blocking` section: who wakes it, its deadline, and
//! what reset and shutdown do to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, OnceLock, PoisonError};
use std::time::Instant;

use crossbeam_channel::select;

use crate::error::Error;
use crate::jobs::lifecycle::{
    stream_broke_message, turn_terminal, Dispatched, EnqueueRequest, Taker,
};
use crate::jobs::stream::{ResultStream, StreamReader};
use crate::jobs::{JobId, JobState, JobTable, JobView};

/// A registered interest in one job's end, holding the job's watch slot; see
/// [`JobTable::wait_terminal`].
pub struct Watch {
    id: JobId,
    slot: Arc<WatchSlot>,
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

/// The watch slot of one job, shared by the job (`Open::watch_slot`) and every `Watch` on it:
/// its waiters sleep on `wake` with the table lock, and `turn_terminal` leaves the terminal
/// snapshot in `done` first, so a waiter gets its answer even if the job is evicted before
/// it runs again.
#[derive(Default)]
pub(super) struct WatchSlot {
    pub(super) wake: Condvar,
    pub(super) done: OnceLock<Box<JobView>>,
    /// Set by `enqueue_streamed`, cleared (under the table lock) when its wait ends: a
    /// chunked result post meanwhile streams to the waiter.
    pub(super) accepts_stream: AtomicBool,
    /// The job's streamed result, set by `open_stream` (which notifies `wake`).
    pub(super) stream: OnceLock<Arc<ResultStream>>,
}

impl JobTable {
    /// Enqueues and registers a waiter in the same step, so the job's end is seen however
    /// soon it comes (even if the job is evicted before the waiter first runs).
    pub fn enqueue_watched(&self, req: EnqueueRequest) -> Result<Watch, Error> {
        let slot = Arc::new(WatchSlot::default());
        let id = self.enqueue_inner(req, Some(slot.clone()))?;
        Ok(Watch { id, slot })
    }

    /// [`JobTable::enqueue_watched`] for a waiter that will read a chunked result post as
    /// it arrives ([`JobTable::wait_answer`]): from this moment until that wait ends, such a
    /// post opens a stream to it ([`JobTable::open_stream`]), however soon it comes.
    pub fn enqueue_streamed(&self, req: EnqueueRequest) -> Result<Watch, Error> {
        let slot = Arc::new(WatchSlot {
            accepts_stream: AtomicBool::new(true),
            ..WatchSlot::default()
        });
        let id = self.enqueue_inner(req, Some(slot.clone()))?;
        Ok(Watch { id, slot })
    }

    /// A watch on an existing job (already terminal or not).
    pub fn watch(&self, id: &JobId) -> Result<Watch, Error> {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(id) else {
            return Err(inner.missing(id));
        };
        // An open job has its `open` part; a terminal one gets a slot already filled.
        let slot = match job.open.as_deref_mut() {
            Some(open) => open.watch_slot.get_or_insert_with(Default::default).clone(),
            None => {
                let done = WatchSlot::default();
                let _ = done.done.set(Box::new(job.view.clone()));
                Arc::new(done)
            }
        };
        Ok(Watch {
            id: id.clone(),
            slot,
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

    /// Waits until the watched job is terminal.
    ///
    /// # Blocking
    /// Waits on the job's own condvar with the table lock, so a completion wakes only the
    /// waiters of that job. The watch was registered with the job (`enqueue_watched`) or on
    /// it (`watch`), and `turn_terminal` leaves the terminal snapshot in its slot before
    /// notifying, so no end can be missed, not even one followed at once by eviction. Woken
    /// by `complete`, `fail`, `cancel`, `restart`, a session reset (`create_runtime`), the
    /// runtime limit (`sweep`) and `shutdown`, all through `turn_terminal`; and by `abandon`
    /// (the caller's client left), whose waker notifies under the lock so the wake cannot
    /// fall between check and wait.
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
        let slot = &watch.slot;
        {
            let (table, slot) = (self.clone(), slot.clone());
            abandon.on_abandon(Box::new(move || {
                let _locked = table.lock();
                slot.wake.notify_all();
            }));
        }
        let mut inner = self.lock();
        let outcome = loop {
            // `turn_terminal` fills `done` before it notifies: no lookup needed, none can miss.
            if let Some(view) = slot.done.get() {
                break WaitOutcome::Finished(view.clone());
            }
            if let Some(reader) = slot
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
            inner = slot
                .wake
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        // Nobody reads a stream that starts from now on.
        slot.accepts_stream.store(false, Ordering::SeqCst);
        drop(inner);
        // The waker holds an `Arc` of the table; it must not outlive the wait.
        abandon.clear();
        outcome
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
        if job.view.runtime_id() != runtime_id
            || job.view.state.is_terminal()
            || job.view.canceled().is_some()
        {
            return None;
        }
        let slot = job.open.as_ref()?.watch_slot.as_ref()?;
        if !slot.accepts_stream.load(Ordering::SeqCst) || slot.stream.get().is_some() {
            return None;
        }
        let stream = ResultStream::new();
        let _ = slot.stream.set(stream.clone());
        slot.wake.notify_all();
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
            .open
            .as_ref()
            .and_then(|open| open.watch_slot.as_ref())
            .and_then(|w| w.stream.get())
            .is_some_and(|s| Arc::ptr_eq(s, stream));
        if !ours || job.view.state.is_terminal() {
            return;
        }
        let message = stream_broke_message(job_id, reason);
        turn_terminal(
            job,
            JobState::Failed,
            Some(message),
            &mut inner.ledger,
            &mut inner.registry,
        );
        inner.evict(&self.limits, Instant::now());
    }
}
