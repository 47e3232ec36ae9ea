//! Steering the emulator from a test: reset to the seed, runtime-direct jobs over HTTP,
//! fault rules.
//!
//! Open in permissive mode, a bearer token in strict mode (`super::emulate_access`).

use super::{contour, wire, State};
use crate::error::Error;
use crate::http::{Reply, Req};
use crate::jobs::faults::FaultRule;
use crate::jobs::{EnqueueRequest, JobSource, Target};
use serde_json::{json, Value};

/// `POST /_emulate/foundry/compute-modules/runtimes/:runtimeId/jobs` with
/// `{"queryType", "query"}`: a `runtime-direct` job straight onto that runtime, no
/// deployed-app resolution. Answers like the async submit; with `?wait` like a sync execute.
pub fn direct(state: &State, req: Req, runtime_id: &str) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let body = wire::DirectBody::parse(&req.body)?;
    let request = EnqueueRequest {
        target: Target::Runtime(runtime_id.to_string()),
        query_type: body.query_type,
        query: body.query,
        source: JobSource::RuntimeDirect,
        // The module gets its caller's credential, as with Contour jobs (none when absent).
        auth_header: req.header("authorization").map(str::to_string),
    };
    if req.param("wait").is_some() {
        return contour::execute_and_wait(state, &req, request);
    }
    let id = state.table.enqueue(request)?;
    Ok(Reply::json(200, &wire::submitted(&id)))
}

/// `POST /_emulate/reset`: back to the start-up state (see `JobTable::reset_to_seed`);
/// request counters restart too. Answers what was dropped.
pub fn reset(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let counts = state.table.reset_to_seed();
    state.metrics.reset();
    log::info!("reset to the seed state: {counts:?}");
    Ok(Reply::json(
        200,
        &json!({
            "jobs_failed": counts.jobs_failed,
            "jobs_dropped": counts.jobs_dropped,
            "runtimes_removed": counts.runtimes_removed,
            "runtimes_restored": counts.runtimes_restored,
            "faults_cleared": counts.faults_cleared,
        }),
    ))
}

/// `GET /_emulate/faults`.
pub fn get_faults(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    Ok(Reply::json(200, &faults_json(&state.table.faults())))
}

/// `PUT /_emulate/faults` with `{"faults": [rule, ...]}`: replaces the rules; a bad rule is
/// a 400 naming its field, and the rules in force stay.
pub fn put_faults(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Error::InvalidRequest(format!("The body is not JSON: {e}.")))?;
    let rules = FaultRule::parse_list(&body).map_err(Error::InvalidRequest)?;
    state.table.set_faults(rules);
    Ok(Reply::json(200, &faults_json(&state.table.faults())))
}

/// `DELETE /_emulate/faults`.
pub fn delete_faults(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    state.table.set_faults(Vec::new());
    Ok(Reply::json(200, &faults_json(&[])))
}

fn faults_json(rules: &[FaultRule]) -> Value {
    json!({ "faults": rules.iter().map(FaultRule::to_json).collect::<Vec<_>>() })
}
