//! PATCH (foundry-emulator): new module. The queue of whole requests between connection
//! threads (producers) and the caller's fixed worker pool (consumers).
//!
//! Unbounded on purpose: every connection has at most one request in it (a connection thread
//! waits for the answer before it reads the next), so its length is bounded by the number of
//! open connections.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::request::Request;

pub(crate) struct RequestQueue {
    state: Mutex<State>,
    ready: Condvar,
    /// Requests queued, readable without the lock (a hint for the brief look in `pop`).
    waiting: AtomicUsize,
}

struct State {
    requests: VecDeque<Request>,
    /// Workers in their brief look before sleeping (see `pop`): a request they will take
    /// needs no wake-up.
    looking: usize,
    /// Pending `unblock` calls, each releasing one `pop`.
    unblocks: usize,
    /// Set at shutdown: nothing more is queued.
    closed: bool,
}

impl RequestQueue {
    pub(crate) fn new() -> RequestQueue {
        RequestQueue {
            state: Mutex::new(State {
                requests: VecDeque::new(),
                looking: 0,
                unblocks: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can panic half-way; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request; gives it back when the queue is closed.
    // The refused request goes back to its own connection thread to be answered; boxing it
    // would cost an allocation per request for a refusal that happens only at shutdown.
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(&self, request: Request) -> Result<(), Request> {
        let mut state = self.lock();
        if state.closed {
            return Err(request);
        }
        state.requests.push_back(request);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // A looking worker takes it; wake a sleeper only for requests beyond the lookers.
        let wake = state.requests.len() > state.looking;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The oldest request, or `None` when an `unblock` is pending.
    ///
    /// # Blocking
    /// First a brief look (see `spin`), counted in `looking` so that `push` does not wake a
    /// sleeper for a request this worker will take; then waits on `ready` until a request or
    /// an unblock arrives; no deadline. Both counts are read and changed under the lock, so
    /// a request pushed as the look ends is either seen by it or wakes a sleeper.
    pub(crate) fn pop(&self) -> Option<Request> {
        let mut state = self.lock();
        if state.requests.is_empty() && state.unblocks == 0 {
            state.looking += 1;
            drop(state);
            let _ =
                crate::spin::briefly(|| (self.waiting.load(Ordering::Relaxed) > 0).then_some(()));
            state = self.lock();
            state.looking -= 1;
        }
        loop {
            if state.unblocks > 0 {
                state.unblocks -= 1;
                return None;
            }
            if let Some(request) = state.requests.pop_front() {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                // Requests left that no looker will take: pass the wake-up on.
                if state.requests.len() > state.looking {
                    self.ready.notify_one();
                }
                return Some(request);
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub(crate) fn unblock(&self) {
        self.lock().unblocks += 1;
        self.ready.notify_all();
    }

    /// Refuses further requests and hands back those not yet taken.
    pub(crate) fn close(&self) -> Vec<Request> {
        let mut state = self.lock();
        state.closed = true;
        self.waiting.store(0, Ordering::Relaxed);
        state.requests.drain(..).collect()
    }
}
