//! Seeing what the emulator did: the runtime and job listings (`GET /_emulate/runtimes`,
//! `GET /_emulate/jobs`, `GET /_emulate/jobs/:id`) and the journal line of a finished job.
//!
//! Every shape here is built from snapshots the job table copied under its lock (views whose
//! payloads are shared `Arc`s); serialization happens after the lock is released. No shape
//! carries a token: views have none, and a query's bearer-looking strings are masked.

use serde_json::{json, Value};

use super::{wire, State};
use crate::error::Error;
use crate::http::{Reply, Req};
use crate::jobs::{now_millis, JobId, JobSource, JobState, JobView};
use crate::jobs::{JobFilter, RuntimeView};

/// Default and largest page of `GET /_emulate/jobs`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// How long after its last poll ended a module with nothing to do is flagged as not polling,
/// beyond `--poll-wait`.
pub const STALE_GRACE_MS: u64 = 5_000;

/// `GET /_emulate/runtimes`.
pub fn runtimes(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let now = now_millis();
    let list: Vec<Value> = state
        .table
        .runtimes()
        .iter()
        .map(|rt| runtime_listing(rt, now, state.poll_wait.as_millis() as u64))
        .collect();
    Ok(Reply::json(200, &json!({ "runtimes": list })))
}

/// `GET /_emulate/jobs?runtime=&app=&branch=&status=&source=&query_type=&limit=&before=`.
pub fn jobs(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let (filter, before, limit) = listing_params(&req)?;
    let page = state.table.list(&filter, before, limit);
    let jobs: Vec<Value> = page.jobs.iter().map(job_summary).collect();
    Ok(Reply::json(
        200,
        &json!({ "jobs": jobs, "next_before": page.next_before }),
    ))
}

/// `GET /_emulate/jobs/:id`: the whole record, result bytes included.
pub fn job(state: &State, req: Req, job_id: &str) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let job = state.table.job(&JobId::from_client(job_id))?;
    Ok(Reply::json(200, &json!({ "job": job_record(&job) })))
}

/// The filters, cursor and page size of a listing request; a bad one is a 400 naming it.
pub fn listing_params(req: &Req) -> Result<(JobFilter, Option<u64>, usize), Error> {
    let text = |name: &str| {
        req.param(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let number = |name: &str| -> Result<Option<u64>, Error> {
        match req.param(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::InvalidRequest(format!(
                    "The query parameter '{name}' must be a non-negative integer, not \"{}\".",
                    v.escape_debug()
                ))
            }),
        }
    };
    let status = match text("status") {
        None => None,
        Some(s) => Some(parse_state(&s)?),
    };
    let source = match text("source") {
        None => None,
        Some(s) => Some(parse_source(&s)?),
    };
    let limit = number("limit")?.map_or(DEFAULT_LIMIT, |n| (n as usize).clamp(1, MAX_LIMIT));
    let filter = JobFilter {
        runtime: text("runtime"),
        app: text("app"),
        branch: text("branch"),
        status,
        source,
        query_type: text("query_type"),
    };
    Ok((filter, number("before")?, limit))
}

fn parse_state(s: &str) -> Result<JobState, Error> {
    use JobState::*;
    let states = [Queued, Running, Succeeded, Failed];
    parse_choice(
        "status",
        "queued, running, succeeded or failed",
        s,
        states,
        JobState::as_str,
    )
}

fn parse_source(s: &str) -> Result<JobSource, Error> {
    use JobSource::*;
    let sources = [ContourSync, ContourAsync, RuntimeDirect];
    let names = "contour-sync, contour-async or runtime-direct";
    parse_choice("source", names, s, sources, JobSource::as_str)
}

/// The one of `choices` whose name is `s`; else a 400 naming the parameter and the names.
fn parse_choice<T: Copy, const N: usize>(
    param: &str,
    names: &str,
    s: &str,
    choices: [T; N],
    name: fn(T) -> &'static str,
) -> Result<T, Error> {
    choices.into_iter().find(|c| name(*c) == s).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "The query parameter '{param}' must be {names}, not \"{}\".",
            s.escape_debug()
        ))
    })
}

/// Whether a connected module has stopped polling: no poll held, no job running, and its
/// last poll ended more than `--poll-wait` + 5 s ago.
pub fn is_stale(rt: &RuntimeView, now: u64, poll_wait_ms: u64) -> bool {
    rt.connected
        && rt.polls_held == 0
        && rt.running == 0
        && rt
            .last_poll_at
            .is_some_and(|at| now.saturating_sub(at) > poll_wait_ms + STALE_GRACE_MS)
}

/// A runtime in the listing: inspection's runtime fields, plus counts, function names,
/// reset time and the not-polling flag. Never its token.
pub fn runtime_listing(rt: &RuntimeView, now: u64, poll_wait_ms: u64) -> Value {
    let mut value = wire::runtime_json(rt);
    if let Value::Object(map) = &mut value {
        map.insert("reset_at".into(), json!(rt.reset_at));
        map.insert("running_jobs".into(), json!(rt.running));
        map.insert("polls_held".into(), json!(rt.polls_held));
        map.insert(
            "functions".into(),
            json!(rt.schemas.iter().map(|(name, _)| name).collect::<Vec<_>>()),
        );
        map.insert("stale".into(), json!(is_stale(rt, now, poll_wait_ms)));
    }
    value
}

/// The listing's (and the journal's) fields of a job: no payloads, only their sizes.
pub fn job_summary(job: &JobView) -> Value {
    let span = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) => Some(to.saturating_sub(from)),
        _ => None,
    };
    json!({
        "id": job.id.to_string(),
        "seq": job.seq,
        "source": job.source.as_str(),
        "deployed_app_rid": job.deployed_app_rid(),
        "branch": job.branch(),
        "runtime_id": job.runtime_id(),
        "query_type": job.query_type(),
        "status": job.state.as_str(),
        "error_message": job.error_message(),
        "submitted_at": job.submitted_at,
        "dispatched_at": job.dispatched_at(),
        "finished_at": job.finished_at(),
        "queued_ms": span(Some(job.submitted_at), job.dispatched_at()),
        "running_ms": span(job.dispatched_at(), job.finished_at()),
        "total_ms": span(Some(job.submitted_at), job.finished_at()),
        "query_bytes": job.query.len(),
        "result_bytes": job.result_size(),
        "fault": job.fault(),
    })
}

/// One job in full: inspection's record (its query masked, see `wire::masked_query`) and
/// its listing cursor.
pub fn job_record(job: &JobView) -> Value {
    let mut record = wire::job_json(job);
    if let Value::Object(map) = &mut record {
        map.insert("seq".into(), json!(job.seq));
    }
    record
}

/// A journal line: the summary, and with `payloads` the masked query and the result.
pub fn journal_line(job: &JobView, payloads: bool) -> Value {
    let mut line = job_summary(job);
    if payloads {
        let record = job_record(job);
        if let (Value::Object(line), Value::Object(mut record)) = (&mut line, record) {
            for key in [
                "query",
                "result_content_type",
                "result_body_utf8",
                "result_body_base64",
            ] {
                line.insert(key.into(), record.remove(key).unwrap_or(Value::Null));
            }
        }
    }
    line
}
