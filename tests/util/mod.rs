//! Test harness: a real emulator on 127.0.0.1:0, HTTP agents for the application and for
//! runtimes, a raw-socket client for malformed requests, and exact-assertion helpers.
//!
//! Every agent has a global timeout, so a hung server fails a test instead of hanging it.
//!
//! Rooms: `server` (`TestServer`), `roles` (the application's `App` and a runtime's `Rt`),
//! `assert` (exact assertions that print both sides), `raw` (hand-written requests on raw
//! sockets); this file holds the constants, agents, `Resp` and small helpers they share.
//! Everything is re-exported here, so tests `use crate::util::*`.

mod assert;
mod raw;
mod roles;
mod server;

pub use assert::*;
pub use raw::*;
pub use roles::*;
pub use server::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Prefix of every Contour route.
pub const CONTOUR: &str = "/contour-backend-multiplexer/api/module-group-multiplexer";
/// Prefix of every runtime route.
pub const RUNTIMES: &str = "/_emulate/foundry/compute-modules/runtimes";
/// The bearer token `app()` sends.
pub const APP_TOKEN: &str = "test-token";
/// Client timeout of the agents: far above anything a passing test waits for.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `wait_for` polls before giving up.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP agent that never turns a status into an error and never waits forever.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

pub fn agent() -> ureq::Agent {
    agent_with_timeout(CLIENT_TIMEOUT)
}

/// A response reduced to plain data. Header names are lower-case.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the raw body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}); status {}, body: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status, printing the whole response on mismatch.
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "unexpected status; headers {:?}; body: {}",
            self.headers,
            self.text()
        );
        self
    }
}

/// Sends any request. `body: None` sends no body at all. A transport error panics.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_send(agent, method, url, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`send`], but a transport error is an `Err` instead of a panic, so a timed request
/// on its own thread can report it.
pub fn try_send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(bytes) => agent.run(builder.body(bytes.to_vec()).expect("request")),
        None => agent.run(builder.body(()).expect("request")),
    };
    let mut response = result.map_err(|e| format!("{method} {url}: transport error: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| format!("{method} {url}: reading the body failed: {e}"))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Polls `cond` until it holds; panics with `what` after [`CONDITION_TIMEOUT`].
/// This is polling of observable state, not sleeping to synchronise.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Milliseconds since the Unix epoch, the unit of the emulator's timestamps.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The path of a file under `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// An execute/submit body.
pub fn exec_body(rid: &str, query_type: &str, query: Value) -> Value {
    json!({"deployedAppRid": rid, "queryType": query_type, "query": query})
}

/// The job id inside a job envelope.
pub fn envelope_job_id(envelope: &Value) -> String {
    envelope["computeModuleJobV1"]["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("no jobId in envelope {envelope}"))
        .to_string()
}

/// The job handle SPEC.md fixes for a job id.
pub fn job_handle(id: &str) -> String {
    format!(
        r#"{{"type":"v1","jobId":"{id}","nodeId":null,"moduleId":null,"persistJobResult":null}}"#
    )
}

pub fn is_random_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The exact answer of `POST /runtimes` for a server whose public base URL is `base`.
pub fn session_json(base: &str, id: &str, token: &str) -> Value {
    let at = format!("{base}{RUNTIMES}/{id}");
    json!({
        "runtimeId": id,
        "moduleAuthToken": token,
        "getJobUri": format!("{at}/job"),
        "postResultUri": format!("{at}/results"),
        "postSchemaUri": format!("{at}/schemas"),
        "restartNotificationUri": format!("{at}/restart"),
    })
}

/// A deterministic byte pattern covering every byte value.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}
