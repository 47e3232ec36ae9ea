//! Steering the emulator from a test: runtime-direct jobs over HTTP.
//!
//! Write routes: open in permissive mode (the emulator listens on 127.0.0.1 by default),
//! an accepted bearer token in strict mode.

use super::{contour, observe, wire, App};
use crate::error::Error;
use crate::http::{Reply, Req};
use crate::jobs::{EnqueueRequest, JobSource, Target};

/// `POST /_emulate/foundry/compute-modules/runtimes/:runtimeId/jobs` with
/// `{"queryType", "query"}`: a `runtime-direct` job straight onto that runtime, no
/// deployed-app resolution. Answers like the async submit; with `?wait` like a sync execute.
pub fn direct(app: &App, req: Req, runtime_id: &str) -> Result<Reply, Error> {
    observe::authorize(app, &req)?;
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
        return contour::execute_and_wait(app, &req, request);
    }
    let id = app.table.enqueue(request)?;
    Ok(Reply::json(200, &wire::submitted(&id)))
}
