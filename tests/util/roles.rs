//! The two clients a test plays: the application (`App`, Contour routes with a bearer
//! token) and a runtime session (`Rt`, the runtime API with its `Module-Auth-Token`).

use serde_json::{json, Value};

use super::*;

/// The Contour URLs an `App` calls, built by `TestServer::app`.
#[derive(Clone)]
pub(super) struct Urls {
    /// `<base><CONTOUR>`, for the routes without a helper of their own.
    pub(super) contour: String,
    pub(super) execute: String,
    pub(super) submit: String,
    pub(super) status_prefix: String,
    pub(super) result: String,
}

/// The application side: Contour routes with a bearer token.
#[derive(Clone)]
pub struct App {
    pub agent: ureq::Agent,
    pub authorization: Option<String>,
    pub(super) server: Urls,
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
    pub(super) fn from_session(server: &TestServer, session: Value) -> Rt {
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
