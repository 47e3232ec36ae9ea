//! The runtime API, the compute-module side: sessions, job polls, schemas, results, restart,
//! and job inspection.

use std::sync::Arc;

use super::{wire, State};
use crate::error::Error;
use crate::http::{BodySink, Reply, Req};
use crate::jobs::stream::ResultStream;
use crate::jobs::SessionSpec;
use crate::jobs::{Dispatched, JobId, JobTable, Taker};

fn module_token(req: &Req) -> Option<&str> {
    req.header("module-auth-token")
}

/// `POST /runtimes`: create or reset a session. In strict mode only a caller with an
/// accepted bearer may (else anyone could bind a victim's app to their own runtime and
/// receive its callers' tokens); a built-in runtime is never reset over HTTP (its thread
/// holds the session's token and would stop for good).
pub fn create(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let body = wire::CreateRuntimeBody::parse(&req.body)?;
    if state.builtin_runtimes.contains(&body.runtime_id) {
        return Err(Error::Conflict(format!(
            "The runtime '{}' is built into the emulator: its session cannot be created or reset over HTTP.",
            body.runtime_id.escape_debug()
        )));
    }
    let spec = SessionSpec {
        runtime_id: body.runtime_id.clone(),
        display_name: body.display_name,
        deployed_app_rid: body.deployed_app_rid,
        branch: body.branch,
        token: None,
    };
    let session = state.table.create_runtime(spec);
    let shown = body.runtime_id.escape_debug();
    if session.was_reset {
        log::info!(
            "runtime '{shown}' reset; {} open job(s) failed",
            session.failed_jobs.len()
        );
    } else {
        log::info!("runtime '{shown}' created");
    }
    let base = format!("{}{}", state.public_url, crate::paths::RUNTIMES);
    let mut answer = serde_json::to_value(wire::session(
        &body.runtime_id,
        session.token.expose(),
        &base,
    ))
    .map_err(|e| Error::Internal(e.to_string()))?;
    // The seeded client this runtime's module acts as: the `module` launcher sets its
    // CLIENT_ID and CLIENT_SECRET from here. (Seeded clients mean strict mode, so only a
    // caller with an accepted bearer gets this far.)
    if let Some(client) = state.auth.runtime_client(&body.runtime_id) {
        answer["oauthClient"] = serde_json::json!({
            "clientId": client.client_id,
            "clientSecret": client.client_secret.as_ref().map(|s| s.expose()),
        });
    }
    // Seeded sources, in the format the SDKs read (the launcher writes them to files).
    if let Some((_, sources)) = state
        .runtime_sources
        .iter()
        .find(|(id, _)| *id == body.runtime_id)
    {
        answer["sources"] = sources.clone();
    }
    Ok(Reply::json(200, &answer))
}

/// `GET /runtimes/:id/job`: the oldest queued job, else a long poll held here until a job
/// arrives, the wait ends, or the module's connection closes.
pub fn poll(state: &State, req: Req, runtime_id: &str) -> Result<Reply, Error> {
    let token = module_token(&req);
    let taken = state.table.try_take(runtime_id, token)?;
    if let Some(job) = taken.job {
        return dispatched(state, job);
    }
    // The first poll of a session is answered at once: the TypeScript SDK posts its schemas
    // only after its first poll returns, so holding that poll would delay them.
    if state.poll_wait.is_zero() || taken.first_poll {
        return Ok(Reply::empty(204));
    }
    let Some(_permit) = state.poll_permits.try_take() else {
        // Every poll place is taken: "no job now" is truthful, and the module polls again.
        return Ok(Reply::empty(204));
    };
    let deadline = super::deadline(req.received_at, state.poll_wait);
    match state
        .table
        .next_job(runtime_id, token, deadline, Taker::Module, &req.gone)?
    {
        Some(job) => dispatched(state, job),
        None => Ok(Reply::empty(204)),
    }
}

/// The envelope of a job reserved for this poll. The job turns `running` once the envelope
/// was written to the module, and goes back to the head of the queue if it was not.
fn dispatched(state: &State, job: Dispatched) -> Result<Reply, Error> {
    let table = &state.table;
    // The caller's user, as `/multipass/api/me` names it; none for a job without a caller
    // (runtime-direct), or whose token has since expired or been revoked.
    let user_id = job
        .auth_header
        .as_deref()
        .and_then(|h| state.auth.principal(Some(h)).ok())
        .map(|p| p.user.id());
    let envelope = match wire::envelope(&job, user_id.as_deref()) {
        Ok(envelope) => envelope,
        Err(e) => {
            table.delivered(&job.job_id, false);
            return Err(e);
        }
    };
    let (table, id) = (table.clone(), job.job_id);
    Ok(Reply::json_bytes(200, envelope).on_delivered(move |ok| table.delivered(&id, ok)))
}

/// `POST /runtimes/:id/schemas`.
pub fn schemas(state: &State, req: Req, runtime_id: &str) -> Result<Reply, Error> {
    let token = module_token(&req);
    let schemas = wire::schemas(&req.body)?;
    state.table.put_schemas(runtime_id, token, schemas)?;
    Ok(Reply::json(200, &serde_json::json!({})))
}

/// `POST /runtimes/:id/results/:jobId`: the body is the result, byte for byte.
pub fn result(state: &State, mut req: Req, runtime_id: &str, job_id: &str) -> Result<Reply, Error> {
    let body = req.take_body();
    let content_type = req.header("content-type").map(str::to_string);
    let token = module_token(&req);
    state.table.complete(
        runtime_id,
        token,
        &JobId::from_client(job_id),
        body,
        content_type,
    )?;
    Ok(Reply::empty(204))
}

/// The head of a chunked `POST /runtimes/:id/results/:jobId` was read: if a sync execute
/// waits on that job (and the token is the runtime's), the sink that streams the body to it
/// chunk by chunk. The post itself is still handled whole by [`result`], which stores it.
/// Runs on the runtime's connection thread; takes the table lock once, briefly.
pub fn observe_result(
    state: &State,
    req: &Req,
    runtime_id: &str,
    job_id: &str,
) -> Option<Box<dyn BodySink>> {
    let job = JobId::from_client(job_id);
    let stream = state
        .table
        .open_stream(runtime_id, module_token(req), &job)?;
    log::debug!("job {job}: its result post streams to its sync execute");
    Some(Box::new(ResultSink {
        table: state.table.clone(),
        job,
        stream,
        open: true,
    }))
}

/// A result post's chunks on their way to a sync execute's answer. Never blocks: pushing
/// is bounded by the stream (cut off past its buffer, see `jobs::stream`).
struct ResultSink {
    table: Arc<JobTable>,
    job: JobId,
    stream: Arc<ResultStream>,
    /// Neither `end_of_body` nor `abort` came yet.
    open: bool,
}

impl BodySink for ResultSink {
    fn chunk(&mut self, data: &[u8]) {
        self.stream.push(data);
    }

    /// The body is whole; the stream ends when `complete` stores it (or fails the job).
    fn end_of_body(&mut self) {
        self.open = false;
    }

    fn abort(&mut self, reason: &str) {
        self.open = false;
        log::debug!(
            "job {}: its streamed result post broke off: {reason}",
            self.job
        );
        self.table.stream_broke(&self.job, &self.stream, reason);
    }
}

impl Drop for ResultSink {
    /// A sink dropped without an end (a panic on the connection thread) broke off too:
    /// never a complete-looking answer.
    fn drop(&mut self) {
        if self.open {
            self.abort("The result post ended without a reported end.");
        }
    }
}

/// `POST /runtimes/:id/restart`: running jobs fail; answers their ids.
pub fn restart(state: &State, req: Req, runtime_id: &str) -> Result<Reply, Error> {
    let failed = state.table.restart(runtime_id, module_token(&req))?;
    if !failed.is_empty() {
        log::info!(
            "runtime '{runtime_id}' restarted; {} running job(s) failed",
            failed.len()
        );
    }
    Ok(Reply::json(200, &failed))
}

/// `GET /runtimes/:id/jobs/:jobId`: inspection; no token in permissive mode, an accepted
/// bearer in strict mode.
pub fn inspect(state: &State, req: Req, runtime_id: &str, job_id: &str) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let (runtime, job) = state
        .table
        .inspect(runtime_id, &JobId::from_client(job_id))?;
    Ok(Reply::json(200, &wire::inspection(&runtime, &job)))
}
