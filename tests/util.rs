//! Test harness: a real emulator on 127.0.0.1:0, HTTP agents for the application and for
//! runtimes, a raw-socket client for malformed requests, and exact-assertion helpers.
//!
//! Every agent has a global timeout, so a hung server fails a test instead of hanging it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use foundry_emulator::{Config, JobId, JobState, JobView, Running, Seed};
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

fn to_resp(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Resp {
    let mut response = result.unwrap_or_else(|e| panic!("{what}: transport error: {e}"));
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
        .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends any request. `body: None` sends no body at all.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let what = format!("{method} {url}");
    let result = match body {
        Some(bytes) => agent.run(builder.body(bytes.to_vec()).expect("request")),
        None => agent.run(builder.body(()).expect("request")),
    };
    to_resp(result, &what)
}

/// Asserts an error response exactly: status, the JSON body `{"error", "error_description"}`,
/// `Content-Type: application/json`, and the headers SPEC.md requires for the code.
/// Prints both sides in full on a mismatch.
pub fn assert_error(resp: &Resp, status: u16, code: &str, description: &str) {
    let want = json!({"error": code, "error_description": description});
    let got: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let ok = resp.status == status && got.as_ref() == Some(&want);
    assert!(
        ok,
        "error response mismatch\n  want: {status} {}\n  got:  {} {}\n  got headers: {:?}",
        serde_json::to_string_pretty(&want).unwrap(),
        resp.status,
        resp.text(),
        resp.headers
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "error bodies are JSON; headers {:?}",
        resp.headers
    );
    match code {
        "invalid_token" => assert_eq!(
            resp.header("www-authenticate"),
            Some("Bearer"),
            "401 invalid_token needs WWW-Authenticate: Bearer; headers {:?}",
            resp.headers
        ),
        "overloaded" => assert_eq!(
            resp.header("retry-after"),
            Some("1"),
            "503 overloaded needs Retry-After: 1; headers {:?}",
            resp.headers
        ),
        "method_not_allowed" => assert!(
            resp.header("allow").is_some_and(|v| !v.is_empty()),
            "405 needs an Allow header; headers {:?}",
            resp.headers
        ),
        _ => {}
    }
}

/// Asserts a 405 with exactly this `Allow` header.
pub fn assert_method_not_allowed(resp: &Resp, allow: &str) {
    assert_error(
        resp,
        405,
        "method_not_allowed",
        &format!("This route only allows {allow}."),
    );
    assert_eq!(resp.header("allow"), Some(allow), "{:?}", resp.headers);
}

/// Asserts JSON equality, printing both sides pretty on mismatch.
pub fn assert_json(got: &Value, want: &Value, what: &str) {
    assert!(
        got == want,
        "{what}: JSON mismatch\n  want: {}\n  got:  {}",
        serde_json::to_string_pretty(want).unwrap(),
        serde_json::to_string_pretty(got).unwrap()
    );
}

/// Asserts a 200 `application/octet-stream` whose body is exactly `want`.
pub fn assert_octets(resp: &Resp, want: &[u8]) {
    assert_eq!(
        resp.status,
        200,
        "want 200 octets; got {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream"),
        "{:?}",
        resp.headers
    );
    if resp.body != want {
        let show = |b: &[u8]| {
            if b.len() > 512 {
                format!("{} bytes, starting {:?}", b.len(), &b[..64])
            } else {
                format!("{b:?}")
            }
        };
        panic!(
            "result bytes differ\n  want: {}\n  got:  {}",
            show(want),
            show(&resp.body)
        );
    }
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

/// An emulator running in the test process. Dropping it shuts the server down and joins it.
pub struct TestServer {
    running: Option<Running>,
    /// The bearer the harness sends when it creates sessions: strict mode needs one (the
    /// first configured token), permissive mode accepts any.
    harness_bearer: String,
    pub base_url: String,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts an emulator on 127.0.0.1:0 with short test defaults (execute timeout 5 s,
    /// poll wait 2 s), after `configure` had its say.
    pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            host: "127.0.0.1".to_string(),
            port: 0,
            execute_timeout: Duration::from_secs(5),
            poll_wait: Duration::from_secs(2),
            ..Config::default()
        };
        configure(&mut config);
        let harness_bearer = format!(
            "Bearer {}",
            config.tokens.first().map_or(APP_TOKEN, String::as_str)
        );
        let running = foundry_emulator::Emulator::start(config).expect("emulator starts");
        TestServer {
            harness_bearer,
            base_url: running.base_url().to_string(),
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// Starts with `fixtures/seed-basic.json`.
    pub fn seeded(configure: impl FnOnce(&mut Config)) -> TestServer {
        let seed = Seed::load(&fixture("seed-basic.json")).expect("seed-basic.json loads");
        TestServer::start(|cfg| {
            cfg.seed = seed;
            configure(cfg);
        })
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is running")
    }

    /// Stops the server now (joins every thread).
    pub fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn contour_url(&self, path: &str) -> String {
        format!("{}{CONTOUR}{path}", self.base_url)
    }

    pub fn execute_url(&self) -> String {
        self.contour_url("/compute-modules/jobs/execute")
    }

    pub fn submit_url(&self) -> String {
        self.contour_url("/deployed-apps/jobs")
    }

    pub fn status_url(&self, job_id: &str) -> String {
        self.contour_url(&format!("/jobs/{job_id}/status"))
    }

    pub fn result_url(&self) -> String {
        self.contour_url("/jobs/result/v2")
    }

    pub fn runtimes_url(&self) -> String {
        format!("{}{RUNTIMES}", self.base_url)
    }

    /// The application: Contour calls with `Authorization: Bearer test-token`.
    pub fn app(&self) -> App {
        self.app_with_token(APP_TOKEN)
    }

    pub fn app_with_token(&self, token: &str) -> App {
        App {
            agent: agent(),
            authorization: Some(format!("Bearer {token}")),
            server: self.urls(),
        }
    }

    fn urls(&self) -> Urls {
        Urls {
            contour: self.contour_url(""),
            execute: self.execute_url(),
            submit: self.submit_url(),
            status_prefix: self.contour_url("/jobs/"),
            result: self.result_url(),
        }
    }

    /// Creates (or resets) runtime `id` over HTTP, with no binding.
    pub fn runtime(&self, id: &str) -> Rt {
        self.create_runtime(json!({"runtimeId": id}))
    }

    /// Creates (or resets) runtime `id` bound to `rid` on branch master.
    pub fn runtime_bound(&self, id: &str, rid: &str) -> Rt {
        self.create_runtime(json!({"runtimeId": id, "deployedAppRid": rid}))
    }

    /// `POST /runtimes` with this body; must answer 200.
    pub fn create_runtime(&self, body: Value) -> Rt {
        let resp = self.create_runtime_raw(&body);
        resp.expect_status(200);
        let session = resp.json();
        Rt::from_session(self, session)
    }

    pub fn create_runtime_raw(&self, body: &Value) -> Resp {
        send(
            &agent(),
            "POST",
            &self.runtimes_url(),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &self.harness_bearer),
            ],
            Some(&serde_json::to_vec(body).unwrap()),
        )
    }

    /// A runtime created by the seed, with its fixed token; URIs built from the base URL.
    pub fn seeded_runtime(&self, id: &str, token: &str) -> Rt {
        let session = session_json(&self.base_url, id, token);
        Rt::from_session(self, session)
    }

    /// A snapshot of a job through the library API; panics if unknown.
    pub fn job(&self, id: &str) -> JobView {
        self.running()
            .job(&JobId::from_client(id))
            .unwrap_or_else(|| panic!("job {id} is unknown to the server"))
    }

    /// Waits until the job is in `state` (polling the job table).
    pub fn wait_state(&self, id: &str, state: JobState) {
        wait_for(&format!("job {id} to be {state:?}"), || {
            self.running()
                .job(&JobId::from_client(id))
                .is_some_and(|j| j.state == state)
        });
    }

    /// Queued job count of a runtime, from the library API.
    pub fn queued(&self, runtime_id: &str) -> usize {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .map(|r| r.queued)
            .unwrap_or_else(|| panic!("runtime {runtime_id} unknown"))
    }

    /// A runtime's `last_poll_at` (epoch millis), from the library API.
    pub fn last_poll_at(&self, runtime_id: &str) -> Option<u64> {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .and_then(|r| r.last_poll_at)
    }

    /// Gets a session past its first poll (which the emulator answers at once, for the
    /// TypeScript SDK) and waits until the clock has moved past that poll, so that a later
    /// poll shows as a newer `last_poll_at`. Returns the time to compare against.
    pub fn after_first_poll(&self, rt: &Rt) -> u64 {
        if !self.connected(&rt.id) {
            let resp = rt.poll();
            resp.expect_status(204);
        }
        let before = self.last_poll_at(&rt.id).expect("polled");
        wait_for("the clock to pass the last poll", || now_millis() > before);
        before
    }

    /// Waits until a poll later than `before` has reached the server.
    pub fn wait_new_poll(&self, runtime_id: &str, before: u64) {
        wait_for(&format!("runtime {runtime_id} to poll"), || {
            self.last_poll_at(runtime_id).is_some_and(|at| at > before)
        });
    }

    /// Whether a runtime has polled since its session began.
    pub fn connected(&self, runtime_id: &str) -> bool {
        self.running()
            .runtimes()
            .into_iter()
            .find(|r| &*r.id == runtime_id)
            .is_some_and(|r| r.connected)
    }

    /// `GET /_emulate/health` must answer 200 `{"status":"ok"}`: the server still serves.
    pub fn assert_alive(&self) {
        let resp = send(&agent(), "GET", &self.url("/_emulate/health"), &[], None);
        resp.expect_status(200);
        assert_json(&resp.json(), &json!({"status": "ok"}), "health");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Clone)]
struct Urls {
    /// `<base><CONTOUR>`, for the routes without a helper of their own.
    contour: String,
    execute: String,
    submit: String,
    status_prefix: String,
    result: String,
}

/// The application side: Contour routes with a bearer token.
#[derive(Clone)]
pub struct App {
    pub agent: ureq::Agent,
    pub authorization: Option<String>,
    server: Urls,
}

impl App {
    fn post(&self, method: &str, url: &str, body: &[u8]) -> Resp {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &self.authorization {
            headers.push(("Authorization", auth.as_str()));
        }
        send(&self.agent, method, url, &headers, Some(body))
    }

    pub fn execute(&self, body: &Value) -> Resp {
        self.execute_raw(&serde_json::to_vec(body).unwrap())
    }

    pub fn execute_raw(&self, body: &[u8]) -> Resp {
        self.post("POST", &self.server.execute, body)
    }

    pub fn submit(&self, body: &Value) -> Resp {
        self.submit_raw(&serde_json::to_vec(body).unwrap())
    }

    pub fn submit_raw(&self, body: &[u8]) -> Resp {
        self.post("POST", &self.server.submit, body)
    }

    /// Submits asynchronously and returns the job id (asserting 200).
    pub fn submit_id(&self, rid: &str, query_type: &str, query: Value) -> String {
        let resp = self.submit(&exec_body(rid, query_type, query));
        resp.expect_status(200);
        resp.json()["id"]
            .as_str()
            .expect("submit answer has an id")
            .to_string()
    }

    pub fn status(&self, job_id: &str) -> Resp {
        let mut headers = Vec::new();
        if let Some(auth) = &self.authorization {
            headers.push(("Authorization", auth.as_str()));
        }
        let url = format!("{}{job_id}/status", self.server.status_prefix);
        send(&self.agent, "GET", &url, &headers, None)
    }

    /// The status JSON (asserting 200).
    pub fn status_json(&self, job_id: &str) -> Value {
        let resp = self.status(job_id);
        resp.expect_status(200);
        resp.json()
    }

    pub fn result(&self, body: &Value) -> Resp {
        self.post(
            "PUT",
            &self.server.result,
            &serde_json::to_vec(body).unwrap(),
        )
    }

    pub fn result_by_id(&self, job_id: &str) -> Resp {
        self.result(&json!({"id": job_id}))
    }

    /// Any Contour route (`path` after the prefix) with the bearer token; a body is sent as
    /// `application/json`.
    pub fn contour(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        let mut headers = Vec::new();
        if let Some(auth) = &self.authorization {
            headers.push(("Authorization", auth.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let url = format!("{}{path}", self.server.contour);
        send(&self.agent, method, &url, &headers, body)
    }

    /// `DELETE .../jobs/:jobId`.
    pub fn cancel(&self, job_id: &str) -> Resp {
        self.contour("DELETE", &format!("/jobs/{job_id}"), None)
    }

    /// `DELETE .../jobs` with this body (the job object, or `{"jobHandle"}`).
    pub fn cancel_with(&self, body: &Value) -> Resp {
        self.contour("DELETE", "/jobs", Some(&serde_json::to_vec(body).unwrap()))
    }

    /// `PUT .../jobs/:jobId/soft-cancel`.
    pub fn soft_cancel(&self, job_id: &str) -> Resp {
        self.contour("PUT", &format!("/jobs/{job_id}/soft-cancel"), None)
    }

    /// `PUT .../jobs/status/v2` with this body.
    pub fn status_v2(&self, body: &Value) -> Resp {
        let body = serde_json::to_vec(body).unwrap();
        self.contour("PUT", "/jobs/status/v2", Some(&body))
    }

    /// `GET .../jobs/:jobId/result`.
    pub fn result_get(&self, job_id: &str) -> Resp {
        self.contour("GET", &format!("/jobs/{job_id}/result"), None)
    }

    /// `GET .../schemas?rid=<rid>&branch=<branch>` (no branch parameter when `None`).
    pub fn schemas(&self, rid: &str, branch: Option<&str>) -> Resp {
        let query = match branch {
            Some(branch) => format!("?rid={rid}&branch={branch}"),
            None => format!("?rid={rid}"),
        };
        self.contour("GET", &format!("/schemas{query}"), None)
    }
}

/// Asserts a 204 with an empty body (a cancel's answer).
pub fn assert_no_content(resp: &Resp) {
    resp.expect_status(204);
    assert!(resp.body.is_empty(), "204 has no body: {}", resp.text());
}

/// One runtime session, speaking the runtime API with its `Module-Auth-Token`.
#[derive(Clone)]
pub struct Rt {
    pub id: String,
    pub token: String,
    /// The `POST /runtimes` answer.
    pub session: Value,
    pub agent: ureq::Agent,
    runtimes: String,
}

impl Rt {
    fn from_session(server: &TestServer, session: Value) -> Rt {
        Rt {
            id: session["runtimeId"]
                .as_str()
                .expect("runtimeId")
                .to_string(),
            token: session["moduleAuthToken"]
                .as_str()
                .expect("moduleAuthToken")
                .to_string(),
            session,
            agent: agent(),
            runtimes: server.runtimes_url(),
        }
    }

    /// The same session speaking through another agent (e.g. a shorter timeout).
    pub fn with_agent(&self, agent: ureq::Agent) -> Rt {
        Rt {
            agent,
            ..self.clone()
        }
    }

    /// The same session with another token (e.g. a stale one).
    pub fn with_token(&self, token: &str) -> Rt {
        Rt {
            token: token.to_string(),
            ..self.clone()
        }
    }

    fn uri(&self, key: &str) -> String {
        self.session[key]
            .as_str()
            .unwrap_or_else(|| panic!("session has no {key}"))
            .to_string()
    }

    fn auth(&self) -> [(&str, &str); 1] {
        [("Module-Auth-Token", self.token.as_str())]
    }

    /// `GET getJobUri`.
    pub fn poll(&self) -> Resp {
        send(
            &self.agent,
            "GET",
            &self.uri("getJobUri"),
            &self.auth(),
            None,
        )
    }

    /// Polls and expects a job; returns the envelope.
    pub fn poll_job(&self) -> Value {
        let resp = self.poll();
        resp.expect_status(200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        resp.json()
    }

    /// Polls and expects a job; returns its id.
    pub fn poll_job_id(&self) -> String {
        envelope_job_id(&self.poll_job())
    }

    /// Polls like an SDK (again after each 204) until a job arrives; returns the raw response.
    /// Bounded by [`CONDITION_TIMEOUT`].
    pub fn next_job_resp(&self) -> Resp {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        loop {
            let resp = self.poll();
            if resp.status != 204 {
                resp.expect_status(200);
                return resp;
            }
            assert!(resp.body.is_empty(), "204 has no body");
            assert!(Instant::now() < deadline, "runtime {} got no job", self.id);
        }
    }

    /// Polls until a job arrives; returns the envelope.
    pub fn next_job(&self) -> Value {
        self.next_job_resp().json()
    }

    /// Polls until a job arrives; returns its id.
    pub fn next_job_id(&self) -> String {
        envelope_job_id(&self.next_job())
    }

    pub fn result_url(&self, job_id: &str) -> String {
        format!("{}/{job_id}", self.uri("postResultUri"))
    }

    /// `POST postResultUri/:jobId` with raw bytes and `Content-Type: application/octet-stream`.
    pub fn post_result(&self, job_id: &str, body: &[u8]) -> Resp {
        self.post_result_typed(job_id, body, "application/octet-stream")
    }

    pub fn post_result_typed(&self, job_id: &str, body: &[u8], content_type: &str) -> Resp {
        let headers = [
            ("Module-Auth-Token", self.token.as_str()),
            ("Content-Type", content_type),
        ];
        send(
            &self.agent,
            "POST",
            &self.result_url(job_id),
            &headers,
            Some(body),
        )
    }

    /// Posts a result and asserts 204 with an empty body.
    pub fn complete(&self, job_id: &str, body: &[u8]) {
        let resp = self.post_result(job_id, body);
        resp.expect_status(204);
        assert!(resp.body.is_empty(), "204 has no body: {:?}", resp.body);
    }

    pub fn post_schemas(&self, body: &Value) -> Resp {
        self.post_schemas_raw(&serde_json::to_vec(body).unwrap())
    }

    pub fn post_schemas_raw(&self, body: &[u8]) -> Resp {
        let headers = [
            ("Module-Auth-Token", self.token.as_str()),
            ("Content-Type", "application/json"),
        ];
        send(
            &self.agent,
            "POST",
            &self.uri("postSchemaUri"),
            &headers,
            Some(body),
        )
    }

    pub fn restart(&self) -> Resp {
        send(
            &self.agent,
            "POST",
            &self.uri("restartNotificationUri"),
            &self.auth(),
            Some(b""),
        )
    }

    /// `GET /runtimes/:id/jobs/:jobId` (no token).
    pub fn inspect(&self, job_id: &str) -> Resp {
        let url = format!("{}/{}/jobs/{job_id}", self.runtimes, self.id);
        send(&self.agent, "GET", &url, &[], None)
    }

    pub fn inspect_json(&self, job_id: &str) -> Value {
        let resp = self.inspect(job_id);
        resp.expect_status(200);
        resp.json()
    }
}

/// What a raw exchange produced.
#[derive(Debug)]
pub enum RawOutcome {
    /// A complete response.
    Response(Resp),
    /// The server closed the connection without sending a byte.
    Closed,
}

/// Writes `request` on a fresh connection, optionally shuts the write side, then reads until
/// the server closes (send `Connection: close`). A read timeout turns a hang into a failure.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], shutdown_write: bool) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.write_all(request).expect("write request");
    if shutdown_write {
        stream.shutdown(Shutdown::Write).expect("shutdown write");
    }
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        // A reset after a complete response is fine; a timeout is a hang.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "raw exchange: reading failed after {} bytes: {e}",
            bytes.len()
        ),
    }
    if bytes.is_empty() {
        return RawOutcome::Closed;
    }
    RawOutcome::Response(parse_raw_response(&bytes))
}

fn parse_raw_response(bytes: &[u8]) -> Resp {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = bytes[end + 4..].to_vec();
    let resp = Resp {
        status,
        headers,
        body,
    };
    if let Some(len) = resp.header("content-length") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            resp.body.len(),
            "Content-Length matches the body: {resp:?}"
        );
    }
    resp
}

/// Builds a raw HTTP/1.1 request with `Connection: close`; `Content-Length` is the body's
/// length unless `content_length` overrides it.
pub fn raw_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        content_length.unwrap_or(body.len())
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Builds a raw chunked request with the body split into `chunks`.
pub fn raw_chunked_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Unwraps a raw response, panicking if the server just closed.
pub fn expect_response(outcome: RawOutcome, what: &str) -> Resp {
    match outcome {
        RawOutcome::Response(resp) => resp,
        RawOutcome::Closed => panic!("{what}: the server closed the connection without answering"),
    }
}

/// A deterministic byte pattern covering every byte value.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}
