//! The route table: one `match` on path segments, then the method check (404 versus 405),
//! then the ids in the path.
//!
//! `HEAD` is allowed wherever `GET` is and runs the `GET` handler; the connection layer sends
//! the answer's head only (RFC 9110 §9.3.2).

use crate::api::contour::CancelRoute;
use crate::api::names::{check_job_id, check_runtime_id};
use crate::api::{contour, dashboard, metrics, observe, runtime, steer, App};
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
const FAULTS: &[&str] = &["GET", "HEAD", "PUT", "DELETE"];
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
    Direct(&'a str),
    Reset,
    Faults,
    Health,
    Info,
    ListRuntimes,
    ListJobs,
    Job(&'a str),
    Dashboard,
    JobPage(&'a str),
    Metrics,
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
            [rt, "jobs"] => Some((POST, Route::Direct(rt))),
            _ => None,
        };
    }
    match segments {
        ["_emulate"] => Some((GET, Route::Dashboard)),
        ["_emulate", "health"] => Some((GET, Route::Health)),
        ["_emulate", "info"] => Some((GET, Route::Info)),
        ["_emulate", "runtimes"] => Some((GET, Route::ListRuntimes)),
        ["_emulate", "jobs"] => Some((GET, Route::ListJobs)),
        ["_emulate", "jobs", id] => Some((GET, Route::Job(id))),
        ["_emulate", "view", "jobs", id] => Some((GET, Route::JobPage(id))),
        ["metrics"] => Some((GET, Route::Metrics)),
        ["_emulate", "reset"] => Some((POST, Route::Reset)),
        ["_emulate", "faults"] => Some((FAULTS, Route::Faults)),
        _ => None,
    }
}

impl Route<'_> {
    /// Refuses ids in the path that are not valid ids (`..`, `/`, control characters).
    fn check_ids(&self) -> Result<(), Error> {
        match *self {
            Route::Poll(rt) | Route::Schemas(rt) | Route::Restart(rt) | Route::Direct(rt) => {
                check_runtime_id(rt)
            }
            Route::PostResult(rt, job) | Route::Inspect(rt, job) => {
                check_runtime_id(rt).and_then(|()| check_job_id(job))
            }
            Route::Status(job)
            | Route::Job(job)
            | Route::JobPage(job)
            | Route::ResultGet(job)
            | Route::Cancel(job)
            | Route::SoftCancel(job) => check_job_id(job),
            _ => Ok(()),
        }
    }

    /// The route's class in `foundry_emulator_http_requests_total`.
    fn name(&self) -> &'static str {
        match self {
            Route::Execute => "execute",
            Route::Submit => "submit",
            Route::Status(_) => "status",
            Route::StatusV2 => "status_v2",
            Route::ResultGet(_) => "result_get",
            Route::Cancel(_) | Route::CancelByBody => "cancel",
            Route::SoftCancel(_) => "soft_cancel",
            Route::AppSchemas => "app_schemas",
            Route::Result => "result",
            Route::CreateRuntime => "create_runtime",
            Route::Poll(_) => "poll",
            Route::Schemas(_) => "post_schemas",
            Route::PostResult(..) => "post_result",
            Route::Restart(_) => "restart",
            Route::Inspect(..) => "inspect",
            Route::Direct(_) => "runtime_direct",
            Route::Reset => "reset",
            Route::Faults => "faults",
            Route::Health => "health",
            Route::Info => "info",
            Route::ListRuntimes => "list_runtimes",
            Route::ListJobs => "list_jobs",
            Route::Job(_) => "job",
            Route::Dashboard => "dashboard",
            Route::JobPage(_) => "job_page",
            Route::Metrics => "metrics",
        }
    }
}

/// The sink for a chunked request body as it arrives, if its route streams it: only a
/// runtime's result post does (to a sync execute waiting on that job).
pub fn observe_body(app: &App, req: &Req) -> Option<Box<dyn crate::http::BodySink>> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match match_path(&segments) {
        Some((_, route @ Route::PostResult(rt, job))) if req.method == "POST" => {
            route.check_ids().ok()?;
            runtime::observe_result(app, req, rt, job)
        }
        _ => None,
    }
}

/// Answers one request, and counts it by route class and status.
pub fn route(app: &App, req: Req) -> Reply {
    let (class, reply) = dispatch(app, req);
    app.metrics.request(class, reply.status);
    reply
}

fn dispatch(app: &App, req: Req) -> (&'static str, Reply) {
    let segments: Vec<String> = req.segments.clone();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let Some((allowed, route)) = match_path(&segments) else {
        let err = Error::NotFound(format!(
            "No route for {} {}.",
            req.method.escape_debug(),
            req.path.escape_debug()
        ));
        return ("unmatched", err.into());
    };
    let class = route.name();
    if !allowed.contains(&req.method.as_str()) {
        return (class, Error::MethodNotAllowed(allowed).into());
    }
    if let Err(e) = route.check_ids() {
        return (class, e.into());
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
        Route::Direct(rt) => steer::direct(app, req, rt),
        Route::Reset => steer::reset(app, req),
        Route::Faults => match req.method.as_str() {
            "PUT" => steer::put_faults(app, req),
            "DELETE" => steer::delete_faults(app, req),
            _ => steer::get_faults(app, req),
        },
        Route::Health => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        Route::Info => Ok(Reply::json(200, &crate::api::wire::info(app))),
        Route::ListRuntimes => observe::runtimes(app, req),
        Route::ListJobs => observe::jobs(app, req),
        Route::Job(id) => observe::job(app, req, id),
        Route::Dashboard => dashboard::overview(app, req),
        Route::JobPage(id) => dashboard::job_page(app, req, id),
        Route::Metrics => metrics::metrics(app, req),
    };
    (class, reply.into())
}
