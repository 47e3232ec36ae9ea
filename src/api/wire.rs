//! Every JSON shape of the HTTP API, and the conversions from the inner types.
//!
//! **Boundary:** the job table's types are not serializable; this module converts them by hand,
//! so a wire change never reaches `jobs` and the field names SPEC.md fixes live in one file.
//! That is why it is long (about 630 lines, 60 of them tests): one place for every shape.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::error::Error;
use crate::jobs::RuntimeView;
use crate::jobs::{Dispatched, JobId, JobState, JobView};

/// A JSON object body with its values left unparsed (a 1 MiB query is never built as a `Value`).
pub(crate) struct Fields<'a>(HashMap<Cow<'a, str>, &'a RawValue>);

impl<'a> Fields<'a> {
    /// Parses a request body that must be a JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Fields<'a>, Error> {
        // One pass on the happy path (a 1 MiB query is scanned once); the failure path
        // parses again only to say precisely what is wrong.
        serde_json::from_slice(body).map(Fields).map_err(|map_err| {
            match serde_json::from_slice::<&RawValue>(body) {
                Err(e) => {
                    Error::InvalidRequest(format!("The request body is not valid JSON: {e}."))
                }
                Ok(value) if !value.get().starts_with('{') => {
                    Error::InvalidRequest("The request body must be a JSON object.".into())
                }
                Ok(_) => Error::InvalidRequest(format!(
                    "The request body is not a valid JSON object: {map_err}."
                )),
            }
        })
    }

    /// The raw JSON text of a field, if present.
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0.get(name).copied()
    }

    /// The `query` field as JSON text, copied once straight out of the body; `{}` when absent.
    pub fn query(&self) -> Arc<str> {
        self.raw("query")
            .map_or_else(|| Arc::from("{}"), |q| Arc::from(q.get()))
    }

    /// An optional string field; `null` counts as absent.
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, Error> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| Error::InvalidRequest(format!("Field '{name}' must be a string."))),
        }
    }

    /// A required string field that is not blank after trimming; returned trimmed.
    pub fn required_str(&self, name: &str) -> Result<String, Error> {
        match self.opt_str(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(Error::InvalidRequest(format!(
                "Field '{name}' is required and must be a non-blank string."
            ))),
        }
    }
}

/// The body of both execute routes.
#[derive(Debug)]
pub(crate) struct ExecuteBody {
    pub deployed_app_rid: String,
    pub deployed_app_branch: Option<String>,
    pub query_type: String,
    /// JSON text, `{}` when absent: copied once, straight out of the body.
    pub query: Arc<str>,
}

impl ExecuteBody {
    pub fn parse(body: &[u8]) -> Result<ExecuteBody, Error> {
        let fields = Fields::parse(body)?;
        Ok(ExecuteBody {
            deployed_app_rid: fields.required_str("deployedAppRid")?,
            deployed_app_branch: fields
                .opt_str("deployedAppBranch")?
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty()),
            query_type: fields.required_str("queryType")?,
            query: fields.query(),
        })
    }
}

/// The body of a runtime-direct job (`POST /_emulate/.../runtimes/:id/jobs`).
#[derive(Debug)]
pub(crate) struct DirectBody {
    pub query_type: String,
    /// JSON text, `{}` when absent.
    pub query: Arc<str>,
}

impl DirectBody {
    pub fn parse(body: &[u8]) -> Result<DirectBody, Error> {
        let fields = Fields::parse(body)?;
        Ok(DirectBody {
            query_type: fields.required_str("queryType")?,
            query: fields.query(),
        })
    }
}

/// The job a body names (`result/v2`, `status/v2`, `DELETE /jobs`): `id`, else the id inside
/// `jobHandle`. The job object a submit answers has both, so it names its job too.
pub(crate) fn named_job_id(body: &[u8]) -> Result<JobId, Error> {
    let fields = Fields::parse(body)?;
    if let Some(id) = fields.opt_str("id")? {
        return Ok(JobId::from_client(&id));
    }
    let bad_handle =
        || Error::InvalidRequest("Field 'jobHandle' is not a valid job handle.".into());
    let handle: Value = match fields.raw("jobHandle") {
        None => {
            return Err(Error::InvalidRequest(
                "The body needs an 'id' or a 'jobHandle' field.".into(),
            ))
        }
        // The handle is JSON text inside a string; accept the object itself too.
        Some(raw) => match serde_json::from_str::<Value>(raw.get()).map_err(|_| bad_handle())? {
            Value::String(text) => serde_json::from_str(&text).map_err(|_| bad_handle())?,
            other => other,
        },
    };
    match handle.get("jobId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(JobId::from_client(id)),
        _ => Err(bad_handle()),
    }
}

/// The job handle: JSON text naming the job, with SPEC.md's key order.
pub(crate) fn job_handle(id: &JobId) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Handle<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        job_id: &'a JobId,
        node_id: Option<()>,
        module_id: Option<()>,
        persist_job_result: Option<()>,
    }
    let handle = Handle {
        kind: "v1",
        job_id: id,
        node_id: None,
        module_id: None,
        persist_job_result: None,
    };
    serde_json::to_string(&handle).unwrap_or_default()
}

/// The answer to an async submit.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Submitted<'a> {
    id: &'a JobId,
    node_id: Option<()>,
    module_id: Option<()>,
    job_handle: String,
    persist_job_result: Option<()>,
    status: Status<'a>,
}

pub(crate) fn submitted(id: &JobId) -> Submitted<'_> {
    Submitted {
        id,
        node_id: None,
        module_id: None,
        job_handle: job_handle(id),
        persist_job_result: None,
        status: Status::Queued {
            queued: Queued {
                queue_info: "NORMAL_OPERATION",
            },
        },
    }
}

/// A job status, tagged by `type` with the payload under the same name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum Status<'a> {
    Queued { queued: Queued },
    Running { running: Progress },
    Succeeded { succeeded: Progress },
    Failed { failed: Failure<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Queued {
    queue_info: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    metadata: Option<()>,
    intermediate_job_info_list: [(); 0],
    multiplexer_job_timing: Timing,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Timing {
    QueuedJob {
        #[serde(rename = "queuedJob")]
        queued_job: QueuedJobTiming,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueuedJobTiming {
    multiplexer_submit_time_millis: u64,
    queue_submit_time_millis: u64,
    queued_job_dispatch_time_millis: u64,
    module_submit_time_millis: u64,
}

#[derive(Serialize)]
pub(crate) struct Failure<'a> {
    message: &'a str,
}

/// The status route's body.
pub(crate) fn status(job: &JobView) -> Status<'_> {
    match job.state {
        JobState::Queued => Status::Queued {
            queued: Queued {
                queue_info: "NORMAL_OPERATION",
            },
        },
        JobState::Running => Status::Running {
            running: progress(job),
        },
        JobState::Succeeded => Status::Succeeded {
            succeeded: progress(job),
        },
        JobState::Failed => Status::Failed {
            failed: Failure {
                message: job.error_message().unwrap_or(crate::jobs::DEFAULT_FAILURE),
            },
        },
    }
}

fn progress(job: &JobView) -> Progress {
    // A result may arrive for a job never polled; it was then "dispatched" when it finished.
    let dispatched = job
        .dispatched_at()
        .or(job.finished_at())
        .unwrap_or(job.submitted_at);
    Progress {
        metadata: None,
        intermediate_job_info_list: [],
        multiplexer_job_timing: Timing::QueuedJob {
            queued_job: QueuedJobTiming {
                multiplexer_submit_time_millis: job.submitted_at,
                queue_submit_time_millis: job.submitted_at,
                queued_job_dispatch_time_millis: dispatched,
                module_submit_time_millis: dispatched,
            },
        },
    }
}

/// The `user_id` a cancel is recorded with: cancels are recorded by route, not by caller.
pub(crate) const EMULATOR_USER_ID: &str = crate::auth::users::DEFAULT_USERNAME;

/// Serializes the envelope of a dispatched job:
/// `{"type":"computeModuleJobV1","computeModuleJobV1":{"jobId","queryType","query",
/// "temporaryCredentialsAuthToken","authHeader","userId"}}`. The stored query (validated at
/// submit) is spliced in as is, so a large query is copied once and never parsed again.
pub(crate) fn envelope(job: &Dispatched, user_id: Option<&str>) -> Result<Vec<u8>, Error> {
    // Foundry hands a module the caller's credentials; the emulator's caller is whoever
    // held the bearer token, so the token doubles as the temporary credential.
    let bearer = job
        .auth_header
        .as_deref()
        .and_then(|h| h.trim().split_once(' '))
        .map(|(_, token)| token.trim());
    let user = bearer.and(user_id);
    let mut out = Vec::with_capacity(job.query.len() + 256);
    out.extend_from_slice(br#"{"type":"computeModuleJobV1","computeModuleJobV1":{"jobId":"#);
    push_json(&mut out, &job.job_id)?;
    out.extend_from_slice(br#","queryType":"#);
    push_json(&mut out, &*job.query_type)?;
    out.extend_from_slice(br#","query":"#);
    out.extend_from_slice(job.query.as_bytes());
    out.extend_from_slice(br#","temporaryCredentialsAuthToken":"#);
    push_json(&mut out, &bearer)?;
    out.extend_from_slice(br#","authHeader":"#);
    push_json(&mut out, &job.auth_header.as_deref())?;
    out.extend_from_slice(br#","userId":"#);
    push_json(&mut out, &user)?;
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// A job id is its text on the wire.
impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Appends one value as JSON.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    serde_json::to_writer(out, value).map_err(|e| Error::Internal(e.to_string()))
}

/// The body of `POST /runtimes`.
pub(crate) struct CreateRuntimeBody {
    pub runtime_id: String,
    pub deployed_app_rid: Option<String>,
    pub branch: Option<String>,
    pub display_name: Option<String>,
}

impl CreateRuntimeBody {
    pub fn parse(body: &[u8]) -> Result<CreateRuntimeBody, Error> {
        let fields = Fields::parse(body)?;
        let non_blank = |name| -> Result<Option<String>, Error> {
            Ok(fields
                .opt_str(name)?
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()))
        };
        // Checked as sent, before trimming: `rt\r` is refused, not quietly made `rt`.
        let sent = fields.opt_str("runtimeId").ok().flatten();
        if let Some(raw) = sent.filter(|s| !s.trim().is_empty()) {
            crate::api::names::check_runtime_id(raw.trim_matches(' '))?;
        }
        let runtime_id = fields.required_str("runtimeId")?;
        Ok(CreateRuntimeBody {
            runtime_id,
            deployed_app_rid: non_blank("deployedAppRid")?,
            branch: non_blank("branch")?,
            display_name: non_blank("displayName")?,
        })
    }
}

/// The answer to `POST /runtimes`.
pub(crate) fn session<'a>(runtime_id: &'a str, token: &'a str, runtime_base: &str) -> Session<'a> {
    let base = format!("{runtime_base}/{}", percent_encode(runtime_id));
    Session {
        runtime_id,
        module_auth_token: token,
        get_job_uri: format!("{base}/job"),
        post_result_uri: format!("{base}/results"),
        post_schema_uri: format!("{base}/schemas"),
        restart_notification_uri: format!("{base}/restart"),
    }
}

/// A new session: its token and its absolute URIs, in SPEC.md's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Session<'a> {
    runtime_id: &'a str,
    module_auth_token: &'a str,
    get_job_uri: String,
    post_result_uri: String,
    post_schema_uri: String,
    restart_notification_uri: String,
}

/// Reads the schema formats SPEC.md lists into (function name, schema) pairs.
pub(crate) fn schemas(body: &[u8]) -> Result<Vec<(String, Value)>, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidRequest(format!("The request body is not valid JSON: {e}.")))?;
    match value {
        Value::Array(items) => items.into_iter().map(schema_entry).collect(),
        Value::Object(mut map) => {
            for key in ["functions", "schemas"] {
                if let Some(Value::Array(items)) = map.remove(key) {
                    return items.into_iter().map(schema_entry).collect();
                }
            }
            Ok(map.into_iter().collect())
        }
        _ => Err(Error::InvalidRequest(
            "Schemas must be a JSON array or object.".into(),
        )),
    }
}

/// One list entry: a name field, and either a `schema`/`schemaPayload` field or itself.
fn schema_entry(item: Value) -> Result<(String, Value), Error> {
    let Value::Object(mut map) = item else {
        return Err(Error::InvalidRequest(
            "Each schema entry must be a JSON object.".into(),
        ));
    };
    let name = ["functionName", "function_name", "name", "apiName"]
        .iter()
        .find_map(|key| map.get(*key).and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| {
            Error::InvalidRequest(
                "A schema entry has no 'functionName' (or 'function_name', 'name').".into(),
            )
        })?;
    let schema = ["schema", "schemaPayload"]
        .iter()
        .find_map(|key| map.remove(*key))
        .unwrap_or(Value::Object(map));
    Ok((name, schema))
}

/// `GET /schemas`: one `{"functionName", "inputs", "output"}` per posted function, in the
/// order first posted. The SDKs post that shape (plus fields of their own, dropped here).
/// A schema of another format gives its `inputs` and `output` when it has them, else `[]`
/// and `null`: only its name is known (inspection shows every schema as posted).
pub(crate) fn function_schemas(schemas: &[(String, Value)]) -> Vec<Value> {
    schemas
        .iter()
        .map(|(name, schema)| {
            let inputs = schema.get("inputs").filter(|i| i.is_array());
            json!({
                "functionName": name,
                "inputs": inputs.cloned().unwrap_or_else(|| json!([])),
                "output": schema.get("output").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// The inspection route's body. Never includes a token.
pub(crate) fn inspection(runtime: &RuntimeView, job: &JobView) -> Value {
    json!({
        "runtime": runtime_json(runtime),
        "job": job_json(job),
        "schemas": runtime.schemas.iter().map(|(name, schema)| json!({
            "function_name": name,
            "schema": schema,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn runtime_json(rt: &RuntimeView) -> Value {
    json!({
        "runtime_id": &*rt.id,
        "display_name": rt.display_name,
        "connected": rt.connected,
        "last_poll_at": rt.last_poll_at,
        "created_at": rt.created_at,
        "resets": rt.resets,
        "queued_jobs": rt.queued,
        "deployed_apps": rt.bindings.iter().map(|b| json!({
            "deployed_app_rid": &*b.deployed_app_rid,
            "branch": &*b.branch,
            "display_name": b.display_name,
            "active": b.active,
        })).collect::<Vec<_>>(),
    })
}

/// A job's query as JSON, with every string of the form `Bearer <token>` (any case) shown
/// as `Bearer <redacted>` (see [`mask_bearers`]). Every shape that shows a query uses this.
pub(crate) fn masked_query(text: &str) -> Value {
    let mut query = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    mask_bearers(&mut query);
    query
}

/// Replaces every JSON string of the form `Bearer <token>` (any case) with
/// `Bearer <redacted>`: queries are user input, and a CI artifact or a shared dashboard must
/// not carry a credential someone pasted into one.
fn mask_bearers(value: &mut Value) {
    match value {
        Value::String(s) => {
            let lower = s.trim_start().to_ascii_lowercase();
            if lower.starts_with("bearer ") && s.trim().len() > "bearer ".len() {
                *s = "Bearer <redacted>".to_string();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_bearers),
        Value::Object(map) => map.values_mut().for_each(mask_bearers),
        _ => {}
    }
}

pub(crate) fn job_json(job: &JobView) -> Value {
    let (utf8, base64) = match &job.result {
        None => (None, None),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(base64_encode(bytes))),
        },
    };
    json!({
        "id": job.id.to_string(),
        "runtime_id": job.runtime_id(),
        "deployed_app_rid": job.deployed_app_rid(),
        "branch": job.branch(),
        "query_type": job.query_type(),
        "query": masked_query(&job.query),
        "source": job.source.as_str(),
        "status": job.state.as_str(),
        "submitted_at": job.submitted_at,
        "dispatched_at": job.dispatched_at(),
        "finished_at": job.finished_at(),
        "error_message": job.error_message(),
        "result_content_type": job.result_content_type(),
        "result_body_utf8": utf8,
        "result_body_base64": base64,
        // A sync execute's delivered result is kept only as a preview.
        "result_size": job.result_size(),
        "result_is_preview": job.result_preview_of().is_some(),
        "fault": job.fault(),
        "canceled_by": job.canceled().map(|c| json!({
            "route": c.by,
            "user_id": EMULATOR_USER_ID,
            "was": c.was.as_str(),
        })),
    })
}

/// `GET /_emulate/info`: where this emulator listens, for the module launcher.
pub(crate) fn info(state: &super::State) -> Value {
    let tls = state.tls.get();
    json!({
        "base_url": state.listen_url,
        "public_url": state.public_url,
        "tls_base_url": tls.map(|t| t.base_url.as_str()),
        "ca_path": tls.and_then(|t| t.ca_path.as_deref()),
        "version": crate::cli::VERSION,
    })
}

/// Standard base64 with padding (RFC 4648), for non-UTF-8 results in inspection.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a path segment or query value keeps as written: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes what cannot stand in a path segment or a query value (`%XX`, upper-case).
pub(crate) fn percent_encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64_encode(&[0x00, 0xff, 0xfe]), "AP/+");
    }

    #[test]
    fn schema_formats_all_map_to_names() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"[{"functionName":"a","schema":{"x":1}},{"function_name":"b","schemaPayload":2}]"#,
                &["a", "b"],
            ),
            (r#"{"functions":[{"name":"c","schema":3}]}"#, &["c"]),
            (r#"{"schemas":[{"functionName":"d","inputs":[]}]}"#, &["d"]),
            (r#"{"e":{"type":"object"}}"#, &["e"]),
        ];
        for (body, names) in cases {
            let got: Vec<String> = schemas(body.as_bytes())
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(&got, names, "{body}");
        }
        let whole = schemas(br#"[{"functionName":"d","inputs":[1]}]"#).unwrap();
        assert_eq!(whole[0].1, json!({"functionName": "d", "inputs": [1]}));
        assert!(schemas(b"[1]").is_err());
        assert!(schemas(b"[{\"schema\":1}]").is_err());
        assert!(schemas(b"3").is_err());
    }

    #[test]
    fn job_handle_round_trips() {
        let id = JobId::from_client("foundry_job_abc");
        let body = json!({"jobHandle": job_handle(&id)}).to_string();
        assert_eq!(named_job_id(body.as_bytes()).unwrap(), id);
        let both = json!({"id": "x", "jobHandle": job_handle(&id)}).to_string();
        assert_eq!(named_job_id(both.as_bytes()).unwrap().to_string(), "x");
        assert!(named_job_id(br#"{"jobHandle":"nope"}"#).is_err());
        assert!(named_job_id(br#"{}"#).is_err());
    }
}
