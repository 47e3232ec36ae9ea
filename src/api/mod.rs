//! The HTTP API: one handler fn per route, plus the state they share.
//!
//! Handlers are `fn(&State, Req) -> Result<_, Error>`; they never touch a lock or a condvar
//! themselves (the job table does). The API's JSON shapes come from `wire`; the `/_emulate`
//! listings, journal lines and reset counts from `observe` and `steer`, the HTML from `dashboard`.

pub(crate) mod contour;
pub(crate) mod dashboard;
pub(crate) mod metrics;
pub(crate) mod multipass;
pub(crate) mod names;
pub(crate) mod observe;

pub(crate) mod runtime;
pub(crate) mod steer;
pub mod wire;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::auth::Auth;
use crate::http::{ClientGone, Permits, Req};
use crate::jobs::{Abandon, JobTable};

/// The state shared by every handler (the server state): everything a handler may use. Not
/// to be confused with an application, the participant that submits jobs.
pub(crate) struct State {
    pub table: Arc<JobTable>,
    pub auth: Arc<Auth>,
    /// Base of the runtime URIs handed out, without a trailing slash.
    pub public_url: String,
    pub execute_timeout: Duration,
    pub poll_wait: Duration,
    /// Sync executes that may wait at once (`--wait-threads`).
    pub execute_permits: Arc<Permits>,
    /// Long polls that may be held at once (`--wait-threads`).
    pub poll_permits: Arc<Permits>,
    /// `http://ADDR` of the plain listener.
    pub listen_url: String,
    /// Set once the TLS listener runs (`--tls-port`); read by `GET /_emulate/info`.
    pub tls: OnceLock<TlsInfo>,
    /// Runtimes that run inside the emulator (seeded `builtin`/`exec`): never reset over HTTP.
    pub builtin_runtimes: Vec<String>,
    /// Runtimes' seeded `sources`, handed to their module by the session answer.
    pub runtime_sources: Vec<(String, serde_json::Value)>,
    /// Request counts and wait times for `GET /metrics`.
    pub metrics: metrics::Metrics,
}

/// Where modules reach the TLS listener, and the CA file they must trust.
#[derive(Debug, Clone)]
pub(crate) struct TlsInfo {
    pub base_url: String,
    pub ca_path: Option<String>,
}

/// The `/_emulate` routes that read or steer (listings, dashboard, metrics, reset, faults,
/// runtime-direct jobs): open in permissive mode, like the rest of `/_emulate` (the emulator
/// listens on 127.0.0.1 by default); in strict mode (tokens configured) they need an
/// accepted bearer token, like the Contour routes.
pub(crate) fn emulate_access(state: &State, req: &Req) -> Result<(), crate::error::Error> {
    state.auth.operator(req.header("authorization"))
}

/// `from + wait`, saturating: a configured wait too large for an `Instant` means "a year".
pub(crate) fn deadline(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(from)
}

/// A client that leaves ends the wait it was in (the job table only sees an `Abandon`).
impl Abandon for ClientGone {
    fn is_abandoned(&self) -> bool {
        self.is_gone()
    }
    fn on_abandon(&self, waker: Box<dyn FnOnce() + Send>) {
        self.on_gone(waker)
    }
    fn clear(&self) {
        ClientGone::clear(self)
    }
}
