//! A small blocking client of the emulator's HTTP API (ureq), used by the CLI subcommands.
//!
//! **Boundary:** the server never uses this module; it speaks only HTTP, so it works against
//! any emulator (or a real Contour endpoint) at `base_url`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::paths::{CONTOUR, RUNTIMES};

/// What a call can fail with.
#[derive(Debug)]
pub enum ClientError {
    /// No usable HTTP answer (connection refused, malformed response); the whole sentence.
    Transport(String),
    /// No answer within the client's timeout.
    TimedOut(Duration),
    /// A 2xx answer whose body broke off before its end: a streamed result whose job failed
    /// mid-stream, or a connection lost mid-answer; the whole sentence.
    BrokeOff(String),
    /// The server answered with an error status; `body` is the raw error body.
    Api {
        status: u16,
        code: String,
        description: String,
        body: Vec<u8>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(why) | ClientError::BrokeOff(why) => f.write_str(why),
            ClientError::TimedOut(after) => {
                write!(f, "no answer within {} s", after.as_secs_f64())
            }
            ClientError::Api {
                status,
                code,
                description,
                ..
            } => {
                write!(f, "{status} {code}: {description}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A job to submit.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    pub deployed_app_rid: &'a str,
    pub branch: Option<&'a str>,
    pub query_type: &'a str,
    /// JSON text.
    pub query: &'a str,
}

impl JobRequest<'_> {
    /// The execute body, with the query embedded as the exact JSON text given (key order,
    /// number spelling and all): it never goes through a `Value`.
    fn body(&self) -> Result<Vec<u8>, ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            deployed_app_rid: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            deployed_app_branch: Option<&'a str>,
            query_type: &'a str,
            query: &'a RawValue,
        }
        let query: &RawValue = serde_json::from_str(self.query.trim())
            .map_err(|e| ClientError::Transport(format!("the query is not valid JSON: {e}")))?;
        let body = Body {
            deployed_app_rid: self.deployed_app_rid,
            deployed_app_branch: self.branch,
            query_type: self.query_type,
            query,
        };
        serde_json::to_vec(&body).map_err(|e| ClientError::Transport(e.to_string()))
    }
}

/// A client bound to one emulator and one bearer token.
pub struct Client {
    agent: ureq::Agent,
    timeout: Duration,
    base_url: String,
    authorization: String,
}

impl Client {
    /// `timeout` bounds each whole call; give sync executes more than the server's 30 s.
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            timeout,
            base_url: base_url.trim_end_matches('/').to_string(),
            authorization: format!("Bearer {token}"),
        }
    }

    /// Sync execute: the raw result bytes.
    pub fn execute(&self, job: &JobRequest<'_>) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{CONTOUR}/compute-modules/jobs/execute", self.base_url);
        self.send("POST", &url, Some(job.body()?))
    }

    /// Async submit: the job id.
    pub fn submit(&self, job: &JobRequest<'_>) -> Result<String, ClientError> {
        let url = format!("{}{CONTOUR}/deployed-apps/jobs", self.base_url);
        let answer = self.json("POST", &url, Some(job.body()?))?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Transport("the submit answer has no 'id'".into()))
    }

    /// The status JSON of a job.
    pub fn status(&self, job_id: &str) -> Result<Value, ClientError> {
        let url = format!("{}{CONTOUR}/jobs/{job_id}/status", self.base_url);
        self.json("GET", &url, None)
    }

    /// The raw result of a succeeded job.
    pub fn result(&self, job_id: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{CONTOUR}/jobs/result/v2", self.base_url);
        self.send(
            "PUT",
            &url,
            Some(json!({"id": job_id}).to_string().into_bytes()),
        )
    }

    /// `GET /_emulate/health`.
    pub fn health(&self) -> Result<Value, ClientError> {
        self.json("GET", &format!("{}/_emulate/health", self.base_url), None)
    }

    /// `GET /_emulate/info`: the emulator's listeners and CA path.
    pub fn info(&self) -> Result<Value, ClientError> {
        self.json("GET", &format!("{}/_emulate/info", self.base_url), None)
    }

    /// Creates or resets a runtime session; the answer holds the token and URIs.
    pub fn create_runtime(&self, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{RUNTIMES}", self.base_url);
        self.json("POST", &url, Some(body.to_string().into_bytes()))
    }

    fn json(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> Result<Value, ClientError> {
        let bytes = self.send(method, url, body)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Transport(format!("the answer is not JSON: {e}")))
    }

    /// One request; a 2xx answer gives the body, any other status a [`ClientError::Api`].
    fn send(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, ClientError> {
        let transport = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => ClientError::TimedOut(self.timeout),
            e => ClientError::Transport(format!(
                "cannot reach the emulator at {}: {e}",
                self.base_url
            )),
        };
        let auth = self.authorization.as_str();
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(url).header("Authorization", auth).call(),
            ("PUT", Some(b)) => self
                .agent
                .put(url)
                .header("Authorization", auth)
                .content_type("application/json")
                .send(&b[..]),
            (_, b) => self
                .agent
                .post(url)
                .header("Authorization", auth)
                .content_type("application/json")
                .send(&b.unwrap_or_default()[..]),
        }
        .map_err(transport)?;
        let status = response.status().as_u16();
        // The head came, so the emulator was reached: a body that fails now broke off (a
        // streamed result whose job failed, or a connection lost mid-answer).
        let broke_off = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => ClientError::TimedOut(self.timeout),
            e => ClientError::BrokeOff(format!(
                "the answer from the emulator at {} broke off before its end (a streamed \
                 result whose job failed, or a lost connection): {e}",
                self.base_url
            )),
        };
        let bytes = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(broke_off)?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            code: parsed["error"].as_str().unwrap_or("").to_string(),
            description: parsed["error_description"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            body: bytes,
        })
    }
}
