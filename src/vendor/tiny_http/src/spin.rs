//! PATCH (foundry-emulator): new module. Waiting a few microseconds before sleeping.
//!
//! A request crosses threads twice (connection thread → worker → connection thread), and
//! most answers are ready within tens of microseconds. A thread asleep on a futex must be
//! woken by a system call and rescheduled, which on a virtual machine costs an
//! inter-processor interrupt; a thread that is still looking finds the hand-off itself.
//! So the two short hand-off waits look again for a bounded while, yielding the CPU between
//! looks (on 2 cores the thread it waits for may need that CPU), before they sleep.

use std::time::{Duration, Instant};

/// How long a hand-off wait looks before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// `look()` until it gives `Some`, for at most [`SPIN`]; `None` if it never did.
pub(crate) fn briefly<T>(mut look: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + SPIN;
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}
