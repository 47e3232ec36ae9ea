//! The route table: one `match` on path segments, then the method check (404 versus 405),
//! then the ids in the path.
//!
//! `HEAD` is allowed wherever `GET` is and runs the `GET` handler; the connection layer sends
//! the answer's head only (RFC 9110 §9.3.2).

use crate::api::contour::CancelRoute;
use crate::api::names::{check_job_id, check_runtime_id};
use crate::api::{contour, runtime, App};
use crate::error::Error;
use crate::http::{Reply, Req};

const CONTOUR: [&str; 3] = [
    "contour-backend-multiplexer",
    "api",
    "module-group-multiplexer",
];
const RUNTIMES: [&str; 4] = ["_emulate", "foundry", "compute-modules", "runtimes"];

const GET: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];
const PUT: &[&str] = &["PUT"];
const DELETE: &[&str] = &["DELETE"];

/// A matched route with its path parameters.
enum Route<'a> {
    Execute,
    Submit,
    Status(&'a str),
    StatusV2,
    Result,
    ResultGet(&'a str),
    Cancel(&'a str),
    CancelByBody,
    SoftCancel(&'a str),
    AppSchemas,
    CreateRuntime,
    Poll(&'a str),
    Schemas(&'a str),
    PostResult(&'a str, &'a str),
    Restart(&'a str),
    Inspect(&'a str, &'a str),
    Health,
    Info,
}

/// Every route the emulator serves, with the methods it allows.
fn match_path<'a>(segments: &'a [&'a str]) -> Option<(&'static [&'static str], Route<'a>)> {
    if let Some(rest) = segments.strip_prefix(&CONTOUR[..]) {
        return match rest {
            ["compute-modules", "jobs", "execute"] => Some((POST, Route::Execute)),
            ["deployed-apps", "jobs", "execute"] => Some((POST, Route::Execute)),
            ["deployed-apps", "jobs"] => Some((POST, Route::Submit)),
            ["jobs"] => Some((DELETE, Route::CancelByBody)),
            ["jobs", "result", "v2"] => Some((PUT, Route::Result)),
            ["jobs", "status", "v2"] => Some((PUT, Route::StatusV2)),
            ["jobs", id] => Some((DELETE, Route::Cancel(id))),
            ["jobs", id, "status"] => Some((GET, Route::Status(id))),
            ["jobs", id, "result"] => Some((GET, Route::ResultGet(id))),
            ["jobs", id, "soft-cancel"] => Some((PUT, Route::SoftCancel(id))),
            ["schemas"] => Some((GET, Route::AppSchemas)),
            _ => None,
        };
    }
    if let Some(rest) = segments.strip_prefix(&RUNTIMES[..]) {
        return match rest {
            [] => Some((POST, Route::CreateRuntime)),
            [rt, "job"] => Some((GET, Route::Poll(rt))),
            [rt, "schemas"] => Some((POST, Route::Schemas(rt))),
            [rt, "results", job] => Some((POST, Route::PostResult(rt, job))),
            [rt, "restart"] => Some((POST, Route::Restart(rt))),
            [rt, "jobs", job] => Some((GET, Route::Inspect(rt, job))),
            _ => None,
        };
    }
    match segments {
        ["_emulate", "health"] => Some((GET, Route::Health)),
        ["_emulate", "info"] => Some((GET, Route::Info)),
        _ => None,
    }
}

impl Route<'_> {
    /// Refuses ids in the path that are not valid ids (`..`, `/`, control characters).
    fn check_ids(&self) -> Result<(), Error> {
        match *self {
            Route::Poll(rt) | Route::Schemas(rt) | Route::Restart(rt) => check_runtime_id(rt),
            Route::PostResult(rt, job) | Route::Inspect(rt, job) => {
                check_runtime_id(rt).and_then(|()| check_job_id(job))
            }
            Route::Status(job)
            | Route::ResultGet(job)
            | Route::Cancel(job)
            | Route::SoftCancel(job) => check_job_id(job),
            _ => Ok(()),
        }
    }
}

/// Answers one request.
pub fn route(app: &App, req: Req) -> Reply {
    let segments: Vec<String> = req.segments.clone();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let Some((allowed, route)) = match_path(&segments) else {
        let err = Error::NotFound(format!(
            "No route for {} {}.",
            req.method.escape_debug(),
            req.path.escape_debug()
        ));
        return err.into();
    };
    if !allowed.contains(&req.method.as_str()) {
        return Error::MethodNotAllowed(allowed).into();
    }
    if let Err(e) = route.check_ids() {
        return e.into();
    }
    let reply = match route {
        Route::Execute => contour::execute(app, req),
        Route::Poll(rt) => runtime::poll(app, req, rt),
        Route::Submit => contour::submit(app, req),
        Route::Status(id) => contour::status(app, req, id),
        Route::StatusV2 => contour::status_v2(app, req),
        Route::Result => contour::result(app, req),
        Route::ResultGet(id) => contour::result_get(app, req, id),
        Route::Cancel(id) => contour::cancel(app, req, Some(id), CancelRoute::ById),
        Route::CancelByBody => contour::cancel(app, req, None, CancelRoute::ByBody),
        Route::SoftCancel(id) => contour::cancel(app, req, Some(id), CancelRoute::Soft),
        Route::AppSchemas => contour::schemas(app, req),
        Route::CreateRuntime => runtime::create(app, req),
        Route::Schemas(rt) => runtime::schemas(app, req, rt),
        Route::PostResult(rt, job) => runtime::result(app, req, rt, job),
        Route::Restart(rt) => runtime::restart(app, req, rt),
        Route::Inspect(rt, job) => runtime::inspect(app, rt, job),
        Route::Health => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        Route::Info => Ok(Reply::json(200, &crate::api::wire::info(app))),
    };
    reply.into()
}
