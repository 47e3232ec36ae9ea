//! PATCH (foundry-emulator): new module. The queue of whole requests between connection
//! threads (producers) and the caller's fixed worker pool (consumers).
//!
//! Unbounded on purpose: every connection has at most one request in it (a connection thread
//! waits for the answer before it reads the next), so its length is bounded by the number of
//! open connections.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::request::Request;

pub(crate) struct RequestQueue {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    requests: VecDeque<Request>,
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
                unblocks: 0,
                closed: false,
            }),
            ready: Condvar::new(),
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
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest request, or `None` when an `unblock` is pending.
    ///
    /// # Blocking
    /// Waits on `ready` until a request or an unblock arrives; no deadline.
    pub(crate) fn pop(&self) -> Option<Request> {
        let mut state = self.lock();
        loop {
            if state.unblocks > 0 {
                state.unblocks -= 1;
                return None;
            }
            if let Some(request) = state.requests.pop_front() {
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
        state.requests.drain(..).collect()
    }
}
