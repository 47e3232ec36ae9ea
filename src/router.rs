//! The route table: one `match` on path segments, then the method check (404 versus 405),
//! then the ids in the path. [`Router`] is the HTTP server's handler: a request comes down
//! from the server to here, and from here to one handler in `api`; nothing calls back up.
//!
//! `HEAD` is allowed wherever `GET` is and runs the `GET` handler; the connection layer sends
//! the answer's head only (RFC 9110 §9.3.2).

use crate::api::contour::CancelRoute;
use std::sync::Arc;

use crate::api::names::{check_job_id, check_runtime_id};
use crate::api::{contour, dashboard, metrics, multipass, observe, runtime, steer, State};
use crate::error::Error;
use crate::http::{Handler, Reply, Req};
use crate::paths::{CONTOUR_SEGMENTS, OAUTH2_SEGMENTS, RUNTIMES_SEGMENTS};

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
    Token,
    Authorize,
    Revoke,
    Me,
    CurrentUser,
}

/// Every route the emulator serves, with the methods it allows.
fn match_path<'a>(segments: &'a [&'a str]) -> Option<(&'static [&'static str], Route<'a>)> {
    if let Some(rest) = segments.strip_prefix(CONTOUR_SEGMENTS) {
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
    if let Some(rest) = segments.strip_prefix(RUNTIMES_SEGMENTS) {
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
    if let Some(rest) = segments.strip_prefix(OAUTH2_SEGMENTS) {
        return match rest {
            ["token"] => Some((POST, Route::Token)),
            ["authorize"] => Some((GET, Route::Authorize)),
            ["revoke_token"] => Some((POST, Route::Revoke)),
            _ => None,
        };
    }
    match segments {
        ["multipass", "api", "me"] => Some((GET, Route::Me)),
        ["api", "v2", "admin", "users", "getCurrent"] => Some((GET, Route::CurrentUser)),
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
            Route::Token => "oauth2_token",
            Route::Authorize => "oauth2_authorize",
            Route::Revoke => "oauth2_revoke",
            Route::Me => "me",
            Route::CurrentUser => "current_user",
        }
    }
}

/// The server's handler: every request enters the emulator here.
pub struct Router(pub Arc<State>);

impl Handler for Router {
    fn handle(&self, req: Req) -> Reply {
        route(&self.0, req)
    }

    fn observe_body(&self, req: &Req) -> Option<Box<dyn crate::http::BodySink>> {
        observe_body(&self.0, req)
    }
}

/// The sink for a chunked request body as it arrives, if its route streams it: only a
/// runtime's result post does (to a sync execute waiting on that job).
pub fn observe_body(state: &State, req: &Req) -> Option<Box<dyn crate::http::BodySink>> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match match_path(&segments) {
        Some((_, route @ Route::PostResult(rt, job))) if req.method == "POST" => {
            route.check_ids().ok()?;
            runtime::observe_result(state, req, rt, job)
        }
        _ => None,
    }
}

/// Answers one request, and counts it by route class and status.
pub fn route(state: &State, req: Req) -> Reply {
    let (class, reply) = dispatch(state, req);
    state.metrics.request(class, reply.status);
    reply
}

/// The route of a method and path, or the 404/405/400 it gets: (route class, route).
fn resolve<'a>(
    method: &str,
    path: &str,
    segments: &'a [&'a str],
) -> (&'static str, Result<Route<'a>, Error>) {
    let Some((allowed, route)) = match_path(segments) else {
        let err = Error::NotFound(format!(
            "No route for {} {}.",
            method.escape_debug(),
            path.escape_debug()
        ));
        return ("unmatched", Err(err));
    };
    let class = route.name();
    if !allowed.contains(&method) {
        return (class, Err(Error::MethodNotAllowed(allowed)));
    }
    (class, route.check_ids().map(|()| route))
}

fn dispatch(state: &State, req: Req) -> (&'static str, Reply) {
    let segments: Vec<String> = req.segments.clone();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let route = match resolve(&req.method, &req.path, &segments) {
        (class, Ok(route)) => (class, route),
        (class, Err(e)) => return (class, e.into()),
    };
    let (class, route) = route;
    let reply = match route {
        Route::Execute => contour::execute(state, req),
        Route::Poll(rt) => runtime::poll(state, req, rt),
        Route::Submit => contour::submit(state, req),
        Route::Status(id) => contour::status(state, req, id),
        Route::StatusV2 => contour::status_v2(state, req),
        Route::Result => contour::result(state, req),
        Route::ResultGet(id) => contour::result_get(state, req, id),
        Route::Cancel(id) => contour::cancel(state, req, Some(id), CancelRoute::ById),
        Route::CancelByBody => contour::cancel(state, req, None, CancelRoute::ByBody),
        Route::SoftCancel(id) => contour::cancel(state, req, Some(id), CancelRoute::Soft),
        Route::AppSchemas => contour::schemas(state, req),
        Route::CreateRuntime => runtime::create(state, req),
        Route::Schemas(rt) => runtime::schemas(state, req, rt),
        Route::PostResult(rt, job) => runtime::result(state, req, rt, job),
        Route::Restart(rt) => runtime::restart(state, req, rt),
        Route::Inspect(rt, job) => runtime::inspect(state, req, rt, job),
        Route::Direct(rt) => steer::direct(state, req, rt),
        Route::Reset => steer::reset(state, req),
        Route::Faults => match req.method.as_str() {
            "PUT" => steer::put_faults(state, req),
            "DELETE" => steer::delete_faults(state, req),
            _ => steer::get_faults(state, req),
        },
        Route::Health => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        Route::Info => Ok(Reply::json(200, &crate::api::wire::info(state))),
        Route::ListRuntimes => observe::runtimes(state, req),
        Route::ListJobs => observe::jobs(state, req),
        Route::Job(id) => observe::job(state, req, id),
        Route::Dashboard => dashboard::overview(state, req),
        Route::JobPage(id) => dashboard::job_page(state, req, id),
        Route::Metrics => metrics::metrics(state, req),
        Route::Token => multipass::token(state, req),
        Route::Authorize => multipass::authorize(state, req),
        Route::Revoke => multipass::revoke(state, req),
        Route::Me => multipass::me(state, req),
        Route::CurrentUser => multipass::current_user(state, req),
    };
    (class, reply.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method × path → route class, or the error's status (and `Allow` for a 405).
    #[test]
    fn route_table() {
        let c = crate::paths::CONTOUR;
        let r = crate::paths::RUNTIMES;
        // (method, path, route class, error status, `Allow` of a 405)
        type Case = (
            &'static str,
            String,
            &'static str,
            Option<u16>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "POST",
                format!("{c}/compute-modules/jobs/execute"),
                "execute",
                None,
                None,
            ),
            (
                "POST",
                format!("{c}/deployed-apps/jobs/execute"),
                "execute",
                None,
                None,
            ),
            (
                "POST",
                format!("{c}/deployed-apps/jobs"),
                "submit",
                None,
                None,
            ),
            ("GET", format!("{c}/jobs/j1/status"), "status", None, None),
            ("HEAD", format!("{c}/jobs/j1/status"), "status", None, None),
            (
                "PUT",
                format!("{c}/jobs/status/v2"),
                "status_v2",
                None,
                None,
            ),
            ("PUT", format!("{c}/jobs/result/v2"), "result", None, None),
            (
                "GET",
                format!("{c}/jobs/j1/result"),
                "result_get",
                None,
                None,
            ),
            ("DELETE", format!("{c}/jobs/j1"), "cancel", None, None),
            ("DELETE", format!("{c}/jobs"), "cancel", None, None),
            (
                "PUT",
                format!("{c}/jobs/j1/soft-cancel"),
                "soft_cancel",
                None,
                None,
            ),
            ("GET", format!("{c}/schemas"), "app_schemas", None, None),
            (
                "GET",
                format!("{c}/compute-modules/jobs/execute"),
                "execute",
                Some(405),
                Some("POST"),
            ),
            (
                "POST",
                format!("{c}/jobs/j1/status"),
                "status",
                Some(405),
                Some("GET, HEAD"),
            ),
            ("POST", r.to_string(), "create_runtime", None, None),
            ("GET", format!("{r}/rt/job"), "poll", None, None),
            (
                "POST",
                format!("{r}/rt/schemas"),
                "post_schemas",
                None,
                None,
            ),
            (
                "POST",
                format!("{r}/rt/results/j1"),
                "post_result",
                None,
                None,
            ),
            ("POST", format!("{r}/rt/restart"), "restart", None, None),
            ("GET", format!("{r}/rt/jobs/j1"), "inspect", None, None),
            ("POST", format!("{r}/rt/jobs"), "runtime_direct", None, None),
            (
                "GET",
                format!("{r}/rt/results/j1"),
                "post_result",
                Some(405),
                Some("POST"),
            ),
            (
                "POST",
                "/multipass/api/oauth2/token".into(),
                "oauth2_token",
                None,
                None,
            ),
            (
                "GET",
                "/multipass/api/oauth2/authorize".into(),
                "oauth2_authorize",
                None,
                None,
            ),
            (
                "POST",
                "/multipass/api/oauth2/revoke_token".into(),
                "oauth2_revoke",
                None,
                None,
            ),
            (
                "GET",
                "/multipass/api/oauth2/token".into(),
                "oauth2_token",
                Some(405),
                Some("POST"),
            ),
            ("GET", "/multipass/api/me".into(), "me", None, None),
            (
                "GET",
                "/api/v2/admin/users/getCurrent".into(),
                "current_user",
                None,
                None,
            ),
            ("GET", "/_emulate".into(), "dashboard", None, None),
            ("GET", "/_emulate/health".into(), "health", None, None),
            ("GET", "/_emulate/info".into(), "info", None, None),
            (
                "GET",
                "/_emulate/runtimes".into(),
                "list_runtimes",
                None,
                None,
            ),
            ("GET", "/_emulate/jobs".into(), "list_jobs", None, None),
            ("GET", "/_emulate/jobs/j1".into(), "job", None, None),
            (
                "GET",
                "/_emulate/view/jobs/j1".into(),
                "job_page",
                None,
                None,
            ),
            ("GET", "/metrics".into(), "metrics", None, None),
            ("POST", "/_emulate/reset".into(), "reset", None, None),
            ("PUT", "/_emulate/faults".into(), "faults", None, None),
            ("DELETE", "/_emulate/faults".into(), "faults", None, None),
            (
                "POST",
                "/_emulate/faults".into(),
                "faults",
                Some(405),
                Some("GET, HEAD, PUT, DELETE"),
            ),
            ("GET", "/nope".into(), "unmatched", Some(404), None),
            (
                "GET",
                format!("{c}/jobs/j1/status/extra"),
                "unmatched",
                Some(404),
                None,
            ),
            ("GET", format!("{r}/../job"), "poll", Some(400), None),
        ];
        for (method, path, class, status, allow) in cases {
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let (got_class, route) = resolve(method, &path, &segments);
            assert_eq!(got_class, class, "{method} {path}");
            match (route, status) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    assert_eq!(e.status(), want, "{method} {path}: {e}");
                    let allowed = e.headers().into_iter().find(|(n, _)| *n == "Allow");
                    assert_eq!(
                        allowed.map(|(_, v)| v),
                        allow.map(str::to_string),
                        "{method} {path}"
                    );
                }
                (Ok(_), Some(want)) => panic!("{method} {path}: routed, want {want}"),
                (Err(e), None) => panic!("{method} {path}: {e}"),
            }
        }
    }
}
