//! The HTTP API: one handler fn per route, plus the state they share.
//!
//! Handlers are `fn(&App, Req) -> Result<_, Error>`; they never touch a lock or a condvar
//! themselves (the job table does), and the only JSON they build comes from `wire`.

pub mod contour;
pub mod runtime;
pub mod wire;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::auth::BearerPolicy;
use crate::http::{Handler, LaneGate, LaneTicket, Outcome, Reply, Req};
use crate::jobs::{JobTable, Watch};

/// Everything a handler may use.
pub struct App {
    pub table: Arc<JobTable>,
    pub bearer: BearerPolicy,
    /// Base of the runtime URIs handed out, without a trailing slash.
    pub public_url: String,
    pub execute_timeout: Duration,
    pub poll_wait: Duration,
    pub execute_lane: Arc<LaneGate>,
    pub poll_lane: Arc<LaneGate>,
    /// `http://ADDR` of the plain listener.
    pub listen_url: String,
    /// Set once the TLS listener runs (`--tls-port`); read by `GET /_emulate/info`.
    pub tls: OnceLock<TlsInfo>,
}

/// Where modules reach the TLS listener, and the CA file they must trust.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub base_url: String,
    pub ca_path: Option<String>,
}

/// A request parked in a waiting lane.
pub enum Wait {
    /// A sync execute waiting for its job to end.
    Execute {
        watch: Watch,
        deadline: Instant,
        _ticket: LaneTicket,
    },
    /// An empty job poll held open until a job arrives or `deadline`.
    Poll {
        runtime_id: String,
        token: Option<String>,
        deadline: Instant,
        _ticket: LaneTicket,
    },
}

/// `from + wait`, saturating: a configured wait too large for an `Instant` means "a year".
pub fn deadline(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(from)
}

/// Lane indexes, in the order `Emulator::start` creates the gates.
pub const EXECUTE_LANE: usize = 0;
pub const POLL_LANE: usize = 1;

impl Handler for App {
    type Wait = Wait;

    fn handle(&self, req: Req) -> Outcome<Wait> {
        crate::router::route(self, req)
    }

    fn lane(wait: &Wait) -> usize {
        match wait {
            Wait::Execute { .. } => EXECUTE_LANE,
            Wait::Poll { .. } => POLL_LANE,
        }
    }

    fn finish(&self, wait: Wait) -> Reply {
        match wait {
            Wait::Execute {
                watch, deadline, ..
            } => contour::finish_execute(self, &watch, deadline),
            Wait::Poll {
                runtime_id,
                token,
                deadline,
                ..
            } => runtime::finish_poll(self, &runtime_id, token.as_deref(), deadline),
        }
        .into()
    }
}
