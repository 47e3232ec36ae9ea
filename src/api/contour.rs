//! The Contour API, the application side: execute, submit, status, result, cancel and the
//! deployed app's function schemas.

use std::time::{Duration, Instant};

use super::{wire, State};
use crate::error::Error;
use crate::http::server::PERMIT_PATIENCE;
use crate::http::{BodySource, Piece, Reply, Req};
use crate::jobs::stream::{StreamPiece, StreamReader};
use crate::jobs::{
    EnqueueRequest, JobId, JobSource, JobState, Target, WaitOutcome, RESULT_PREVIEW,
};

/// Rejects a request without an acceptable bearer token.
fn authorize(state: &State, req: &Req) -> Result<(), Error> {
    state.auth.principal(req.header("authorization")).map(drop)
}

fn job_request(req: &Req, source: JobSource) -> Result<EnqueueRequest, Error> {
    let body = wire::ExecuteBody::parse(&req.body)?;
    Ok(EnqueueRequest {
        target: Target::App {
            rid: body.deployed_app_rid,
            branch: body.deployed_app_branch,
        },
        query_type: body.query_type,
        query: body.query,
        source,
        auth_header: req.header("authorization").map(str::to_string),
    })
}

/// `POST .../compute-modules/jobs/execute`: enqueue, then wait here for the job's end.
pub fn execute(state: &State, req: Req) -> Result<Reply, Error> {
    authorize(state, &req)?;
    let request = job_request(&req, JobSource::ContourSync)?;
    execute_and_wait(state, &req, request)
}

/// Enqueues `request` and answers as a sync execute does: the result bytes, 500
/// `job_failed`, or 504 `job_timeout` at `req`'s arrival + `--execute-timeout`.
///
/// When the runtime posts the result chunked while this waits (and the client speaks
/// HTTP/1.1), the answer is 200 with the result streamed as it arrives
/// (`Transfer-Encoding: chunked`), written by the client's connection thread; it ends with
/// the terminating chunk once the job succeeded, and without it (connection closed) if the
/// job fails or the application reads too slowly (`jobs::stream::STREAM_BUFFER_MAX`). The
/// streamed job keeps its whole result (for `result/v2`), since the application may have
/// received only part of it.
pub fn execute_and_wait(state: &State, req: &Req, request: EnqueueRequest) -> Result<Reply, Error> {
    // Take the wait place first: if there is none, nothing has been created yet.
    let _permit = state
        .execute_permits
        .take_within(PERMIT_PATIENCE)
        .ok_or_else(|| state.execute_permits.overloaded())?;
    // Watched from the moment it exists: the job may end (and even be evicted) at once.
    let watch = match req.accepts_chunked {
        true => state.table.enqueue_streamed(request)?,
        false => state.table.enqueue_watched(request)?,
    };
    let job = watch.id().clone();
    let deadline = super::deadline(req.received_at, state.execute_timeout);
    let started = Instant::now();
    let outcome = match req.accepts_chunked {
        true => state.table.wait_answer(&watch, deadline, &req.gone),
        false => state.table.wait_terminal(&watch, deadline, &req.gone),
    };
    let waited = started.elapsed();
    state.metrics.execute_wait(waited);
    log::debug!(
        "execute wait for {job} ended ({}) after {}us",
        outcome_name(&outcome),
        waited.as_micros()
    );
    match outcome {
        WaitOutcome::Finished(view) => match (view.state, &view.result) {
            (JobState::Succeeded, Some(bytes)) => {
                state.table.keep_preview(&job);
                Ok(Reply::octets(bytes.clone()))
            }
            _ => {
                let message = view.error_message();
                let message = message.unwrap_or(crate::jobs::DEFAULT_FAILURE);
                Err(Error::JobFailed(message.to_string()))
            }
        },
        WaitOutcome::Streaming(reader) => Ok(Reply::octets_streamed(Box::new(Streamed(reader)))),
        // Abandoned: the client left, so nobody reads this; the job goes on.
        WaitOutcome::TimedOut | WaitOutcome::Abandoned => Err(Error::JobTimeout(job)),
    }
}

/// A streamed result as the connection layer reads it.
struct Streamed(StreamReader);

impl BodySource for Streamed {
    fn next(&mut self, wait: Duration) -> Piece {
        match self.0.next(wait) {
            StreamPiece::Data(data) => Piece::Data(data),
            StreamPiece::Wait => Piece::Wait,
            StreamPiece::Whole => Piece::End,
            StreamPiece::Broken => Piece::Broken,
        }
    }

    fn is_broken(&self) -> bool {
        self.0.is_broken()
    }
}

fn outcome_name(outcome: &WaitOutcome) -> &'static str {
    match outcome {
        WaitOutcome::Finished(_) => "finished",
        WaitOutcome::TimedOut => "timeout",
        WaitOutcome::Abandoned => "client gone",
        WaitOutcome::Streaming(_) => "streaming",
    }
}

/// `POST .../deployed-apps/jobs`: enqueue and answer at once.
pub fn submit(state: &State, req: Req) -> Result<Reply, Error> {
    authorize(state, &req)?;
    let id = state
        .table
        .enqueue(job_request(&req, JobSource::ContourAsync)?)?;
    Ok(Reply::json(200, &wire::submitted(&id)))
}

/// `GET .../jobs/:jobId/status`.
pub fn status(state: &State, req: Req, job_id: &str) -> Result<Reply, Error> {
    authorize(state, &req)?;
    status_of(state, &JobId::from_client(job_id))
}

/// `PUT .../jobs/status/v2`: the status of the job the body names.
pub fn status_v2(state: &State, req: Req) -> Result<Reply, Error> {
    authorize(state, &req)?;
    status_of(state, &wire::named_job_id(&req.body)?)
}

fn status_of(state: &State, id: &JobId) -> Result<Reply, Error> {
    let job = state.table.job(id)?;
    Ok(Reply::json(200, &wire::status(&job)))
}

/// `PUT .../jobs/result/v2`: the raw result of the succeeded job the body names.
pub fn result(state: &State, req: Req) -> Result<Reply, Error> {
    authorize(state, &req)?;
    result_of(state, wire::named_job_id(&req.body)?)
}

/// `GET .../jobs/:jobId/result`: the same bytes and errors as `result/v2`.
pub fn result_get(state: &State, req: Req, job_id: &str) -> Result<Reply, Error> {
    authorize(state, &req)?;
    result_of(state, JobId::from_client(job_id))
}

fn result_of(state: &State, id: JobId) -> Result<Reply, Error> {
    let job = state.table.job(&id)?;
    if job.result_preview_of().is_some() {
        return Err(Error::NotFound(format!(
            "The result of compute-module job '{id}' was answered to its sync execute and is not \
             kept (inspection shows its first {RESULT_PREVIEW} bytes)."
        )));
    }
    match (job.state, job.result) {
        (JobState::Succeeded, Some(bytes)) => Ok(Reply::octets(bytes)),
        _ => Err(Error::JobNotReady(id)),
    }
}

/// How a cancel was asked for; inspection shows it as the job's `canceled_by.route`.
#[derive(Debug, Clone, Copy)]
pub enum CancelRoute {
    /// `DELETE .../jobs/:jobId`.
    ById,
    /// `DELETE .../jobs` with the job object or a `jobHandle` as its body.
    ByBody,
    /// `PUT .../jobs/:jobId/soft-cancel`: the emulator's modules have no soft-cancel
    /// endpoint to call, so it ends the job like the others.
    Soft,
}

impl CancelRoute {
    fn name(self) -> &'static str {
        match self {
            CancelRoute::ById => "DELETE /jobs/{jobId}",
            CancelRoute::ByBody => "DELETE /jobs",
            CancelRoute::Soft => "PUT /jobs/{jobId}/soft-cancel",
        }
    }
}

/// The cancel routes: the job ends `failed` at once (204), unless it had already finished.
/// `job_id` is the path's; `None` reads the job from the body.
pub fn cancel(
    state: &State,
    req: Req,
    job_id: Option<&str>,
    how: CancelRoute,
) -> Result<Reply, Error> {
    authorize(state, &req)?;
    let id = match job_id {
        Some(id) => JobId::from_client(id),
        None => wire::named_job_id(&req.body)?,
    };
    state.table.cancel(&id, how.name())?;
    log::debug!("job {id} canceled ({})", how.name());
    Ok(Reply::empty(204))
}

/// `GET .../schemas?rid=<deployedAppRid>&branch=<b>`: the function schemas the app's runtime
/// posted (`[]` before it posted any); an empty or absent branch means any.
pub fn schemas(state: &State, req: Req) -> Result<Reply, Error> {
    authorize(state, &req)?;
    let rid = req
        .param("rid")
        .map(|rid| rid.trim().to_string())
        .filter(|rid| !rid.is_empty())
        .ok_or_else(|| {
            Error::InvalidRequest("Query parameter 'rid' is required and must not be blank.".into())
        })?;
    let branch = req.param("branch");
    let branch = branch.map(str::trim).filter(|b| !b.is_empty());
    let schemas = state.table.app_schemas(&rid, branch)?;
    Ok(Reply::json(200, &wire::function_schemas(&schemas)))
}
