//! The Contour API, the application side: execute, submit, status, result.

use std::time::Instant;

use super::{wire, App, Wait};
use crate::error::Error;
use crate::http::{Outcome, Reply, Req};
use crate::jobs::{EnqueueRequest, JobId, JobSource, JobState, Target, WaitOutcome, Watch};

/// Rejects a request without an acceptable bearer token.
fn authorize(app: &App, req: &Req) -> Result<(), Error> {
    if app.bearer.allows(req.header("authorization")) {
        Ok(())
    } else {
        Err(Error::InvalidToken)
    }
}

fn job_request(req: &Req, source: JobSource) -> Result<EnqueueRequest, Error> {
    let body = wire::ExecuteBody::parse(req.body()?)?;
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

/// `POST .../compute-modules/jobs/execute`: enqueue, then wait in the execute lane.
pub fn execute(app: &App, req: Req) -> Result<Outcome<Wait>, Error> {
    authorize(app, &req)?;
    // Take the lane place first: if there is none, nothing has been created yet.
    let ticket = app
        .execute_lane
        .try_enter()
        .ok_or_else(|| app.execute_lane.overloaded())?;
    // Watched from the moment it exists: the job may end (and even be evicted) before a
    // lane thread picks this wait up.
    let watch = app
        .table
        .enqueue_watched(job_request(&req, JobSource::ContourSync)?)?;
    Ok(Outcome::Wait(Wait::Execute {
        watch,
        deadline: super::deadline(req.received_at, app.execute_timeout),
        _ticket: ticket,
    }))
}

/// The waiting half of execute, on a lane thread.
pub fn finish_execute(app: &App, watch: &Watch, deadline: Instant) -> Result<Reply, Error> {
    let started = Instant::now();
    let job = watch.id();
    let outcome = app.table.wait_terminal(watch, deadline);
    log::debug!(
        "execute wait for {job} ended ({}) after {}us",
        outcome_name(&outcome),
        started.elapsed().as_micros()
    );
    match outcome {
        WaitOutcome::Finished(view) => match (view.state, view.result) {
            (JobState::Succeeded, Some(bytes)) => Ok(Reply::octets(bytes)),
            _ => {
                Err(Error::JobFailed(view.error_message.unwrap_or_else(|| {
                    crate::jobs::DEFAULT_FAILURE.to_string()
                })))
            }
        },
        WaitOutcome::TimedOut => Err(Error::JobTimeout(job.clone())),
    }
}

fn outcome_name(outcome: &WaitOutcome) -> &'static str {
    match outcome {
        WaitOutcome::Finished(_) => "finished",
        WaitOutcome::TimedOut => "timeout",
    }
}

/// `POST .../deployed-apps/jobs`: enqueue and answer at once.
pub fn submit(app: &App, req: Req) -> Result<Reply, Error> {
    authorize(app, &req)?;
    let id = app
        .table
        .enqueue(job_request(&req, JobSource::ContourAsync)?)?;
    Ok(Reply::json(200, &wire::submitted(&id)))
}

/// `GET .../jobs/:jobId/status`.
pub fn status(app: &App, req: Req, job_id: &str) -> Result<Reply, Error> {
    authorize(app, &req)?;
    let id = JobId::from_client(job_id);
    let job = app.table.job(&id)?;
    Ok(Reply::json(200, &wire::status(&job)))
}

/// `PUT .../jobs/result/v2`: the raw result of a succeeded job.
pub fn result(app: &App, req: Req) -> Result<Reply, Error> {
    authorize(app, &req)?;
    let id = wire::result_request_job_id(req.body()?)?;
    let job = app.table.job(&id)?;
    match (job.state, job.result) {
        (JobState::Succeeded, Some(bytes)) => Ok(Reply::octets(bytes)),
        _ => Err(Error::JobNotReady(id)),
    }
}
