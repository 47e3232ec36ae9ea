//! The Contour API, application side: execute, submit, status, result/v2, the bearer policy
//! and deployed-app resolution.

use std::thread;
use std::time::Duration;

use foundry_emulator::auth::StaticToken;
use foundry_emulator::JobState;
use serde_json::{json, Value};

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.contour";
const BASIC: &str = "ri.foundry.main.deployed-app.basic";

/// The timing object of running/succeeded statuses, from the job's recorded times.
fn timing(server: &TestServer, id: &str) -> Value {
    let job = server.job(id);
    let dispatched = job.dispatched_at().expect("dispatched");
    json!({"type": "queuedJob", "queuedJob": {
        "multiplexerSubmitTimeMillis": job.submitted_at,
        "queueSubmitTimeMillis": job.submitted_at,
        "queuedJobDispatchTimeMillis": dispatched,
        "moduleSubmitTimeMillis": dispatched,
    }})
}

fn queued_status() -> Value {
    json!({"type": "queued", "queued": {"queueInfo": "NORMAL_OPERATION"}})
}

fn failed_status(message: &str) -> Value {
    json!({"type": "failed", "failed": {"message": message}})
}

#[test]
fn execute_answers_the_runtime_bytes_and_hands_over_the_full_envelope() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    // Whitespace, a trailing zero and an integer beyond f64: only a verbatim copy keeps them.
    let query = r#"{ "z": 1.50, "big": 123456789012345678901234567890, "a" : [true, null, "é"] }"#;
    let body = format!(r#"{{"deployedAppRid":"{RID}","queryType":"echo","query":{query}}}"#);
    let result = [0x00, 0xff, b'o', b'k', 0x80, 0x00, 0xfe];
    thread::scope(|s| {
        let execute = s.spawn(|| app.execute_raw(body.as_bytes()));
        let poll = rt.next_job_resp();
        let raw = String::from_utf8(poll.body.clone()).expect("envelope is UTF-8");
        assert!(
            raw.contains(&format!(r#""query":{query}"#)),
            "the query is forwarded verbatim; envelope: {raw}"
        );
        let envelope = poll.json();
        let id = envelope_job_id(&envelope);
        assert!(is_random_id(&id, "foundry_job_"), "{id}");
        let want = json!({"type": "computeModuleJobV1", "computeModuleJobV1": {
            "jobId": id,
            "queryType": "echo",
            "query": serde_json::from_str::<Value>(query).unwrap(),
            "temporaryCredentialsAuthToken": APP_TOKEN,
            "authHeader": format!("Bearer {APP_TOKEN}"),
            "userId": server.user_id(APP_TOKEN),
        }});
        assert_json(&envelope, &want, "job envelope");
        rt.complete(&id, &result);
        assert_octets(&execute.join().unwrap(), &result);
        let inspection = rt.inspect_json(&id);
        assert_eq!(inspection["job"]["source"], json!("contour-sync"));
        assert_eq!(inspection["job"]["status"], json!("succeeded"));
    });
}

#[test]
fn absent_query_is_forwarded_as_empty_object_and_auth_header_as_sent() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app_with_token("another token with spaces");
    let id = app
        .submit(&json!({"deployedAppRid": RID, "queryType": "noQuery"}))
        .expect_status(200)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let want = json!({"type": "computeModuleJobV1", "computeModuleJobV1": {
        "jobId": id,
        "queryType": "noQuery",
        "query": {},
        "temporaryCredentialsAuthToken": "another token with spaces",
        "authHeader": "Bearer another token with spaces",
        "userId": server.user_id("another token with spaces"),
    }});
    assert_json(&rt.next_job(), &want, "envelope without query");
    assert_eq!(rt.inspect_json(&id)["job"]["query"], json!({}));
}

#[test]
fn submit_answers_queued_with_the_exact_job_handle() {
    let server = TestServer::start(|_| {});
    let _rt = server.runtime_bound("rt", RID);
    let resp = server.app().submit(&exec_body(RID, "f", json!({"x": 1})));
    resp.expect_status(200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let answer = resp.json();
    let id = answer["id"].as_str().expect("id").to_string();
    assert!(is_random_id(&id, "foundry_job_"), "{id}");
    let want = json!({
        "id": id,
        "nodeId": null,
        "moduleId": null,
        "jobHandle": job_handle(&id),
        "persistJobResult": null,
        "status": queued_status(),
    });
    assert_json(&answer, &want, "submit answer");
    assert_eq!(server.job(&id).state, JobState::Queued);
}

#[test]
fn status_goes_queued_running_succeeded_and_result_v2_serves_the_bytes() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({"n": 1}));
    assert_json(&app.status_json(&id), &queued_status(), "queued");

    assert_eq!(rt.next_job_id(), id);
    let running = json!({"type": "running", "running": {
        "metadata": null,
        "intermediateJobInfoList": [],
        "multiplexerJobTiming": timing(&server, &id),
    }});
    assert_json(&app.status_json(&id), &running, "running");

    let bytes: Vec<u8> = (0..=255u8).collect();
    rt.complete(&id, &bytes);
    let succeeded = json!({"type": "succeeded", "succeeded": {
        "metadata": null,
        "intermediateJobInfoList": [],
        "multiplexerJobTiming": timing(&server, &id),
    }});
    assert_json(&app.status_json(&id), &succeeded, "succeeded");

    assert_octets(&app.result_by_id(&id), &bytes);
    assert_octets(&app.result(&json!({"jobHandle": job_handle(&id)})), &bytes);
    // Extra fields are ignored.
    assert_octets(&app.result(&json!({"id": id, "extra": [1, 2]})), &bytes);
    // Reading a result does not consume it.
    assert_octets(&app.result_by_id(&id), &bytes);
}

#[test]
fn status_goes_queued_running_failed_on_restart() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_json(&app.status_json(&id), &queued_status(), "queued");
    assert_eq!(rt.next_job_id(), id);
    assert_eq!(app.status_json(&id)["type"], json!("running"));
    let resp = rt.restart();
    resp.expect_status(200);
    assert_json(&resp.json(), &json!([id]), "restart answer");
    assert_json(
        &app.status_json(&id),
        &failed_status("compute module restarted"),
        "failed",
    );
    assert_error(
        &app.result_by_id(&id),
        409,
        "job_not_ready",
        &format!("Compute-module job '{id}' has not completed successfully."),
    );
}

#[test]
fn result_v2_prefers_id_over_job_handle() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let a = app.submit_id(RID, "f", json!({"job": "a"}));
    let b = app.submit_id(RID, "f", json!({"job": "b"}));
    assert_eq!(rt.next_job_id(), a);
    assert_eq!(rt.next_job_id(), b);
    rt.complete(&a, b"result of a");
    rt.complete(&b, b"result of b");
    let both = json!({"id": a, "jobHandle": job_handle(&b)});
    assert_octets(&app.result(&both), b"result of a");
    let both = json!({"jobHandle": job_handle(&a), "id": b});
    assert_octets(&app.result(&both), b"result of b");
}

#[test]
fn result_v2_errors_not_ready_unknown_and_bad_handle() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let running = app.submit_id(RID, "f", json!({}));
    let queued = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), running);
    for id in [&queued, &running] {
        let not_ready = format!("Compute-module job '{id}' has not completed successfully.");
        assert_error(&app.result_by_id(id), 409, "job_not_ready", &not_ready);
        let by_handle = app.result(&json!({"jobHandle": job_handle(id)}));
        assert_error(&by_handle, 409, "job_not_ready", &not_ready);
    }
    let unknown = "foundry_job_00000000000000000000000000000000";
    assert_error(
        &app.result_by_id(unknown),
        404,
        "not_found",
        &format!("Compute-module job '{unknown}' was not found."),
    );
    assert_error(
        &app.result(&json!({"jobHandle": job_handle(unknown)})),
        404,
        "not_found",
        &format!("Compute-module job '{unknown}' was not found."),
    );
    let bad_handle = "Field 'jobHandle' is not a valid job handle.";
    for handle in [
        json!("not json"),
        json!(r#"{"type":"v1"}"#),
        json!(r#"{"type":"v1","jobId":""}"#),
        json!(r#"{"type":"v1","jobId":7}"#),
        json!(7),
    ] {
        let resp = app.result(&json!({ "jobHandle": handle }));
        assert_error(&resp, 400, "invalid_request", bad_handle);
    }
    assert_error(
        &app.result(&json!({})),
        400,
        "invalid_request",
        "The body needs an 'id' or a 'jobHandle' field.",
    );
    assert_error(
        &app.result(&json!({"id": 5})),
        400,
        "invalid_request",
        "Field 'id' must be a string.",
    );
}

#[test]
fn status_of_unknown_job_is_404() {
    let server = TestServer::start(|_| {});
    let resp = server.app().status("foundry_job_nope");
    assert_error(
        &resp,
        404,
        "not_found",
        "Compute-module job 'foundry_job_nope' was not found.",
    );
}

/// Sends each Contour route with this `Authorization` header (None: absent) and returns
/// the four responses.
fn contour_calls(server: &TestServer, authorization: Option<&str>) -> Vec<(&'static str, Resp)> {
    let agent = agent();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    let body = serde_json::to_vec(&exec_body(RID, "f", json!({}))).unwrap();
    let result_body = br#"{"id":"foundry_job_unknown"}"#;
    vec![
        (
            "submit",
            send(&agent, "POST", &server.submit_url(), &headers, Some(&body)),
        ),
        (
            "status",
            send(
                &agent,
                "GET",
                &server.status_url("foundry_job_unknown"),
                &headers,
                None,
            ),
        ),
        (
            "result",
            send(
                &agent,
                "PUT",
                &server.result_url(),
                &headers,
                Some(result_body),
            ),
        ),
        (
            "execute",
            send(&agent, "POST", &server.execute_url(), &headers, Some(&body)),
        ),
    ]
}

fn assert_all_rejected(server: &TestServer, authorization: Option<&str>) {
    for (route, resp) in contour_calls(server, authorization) {
        eprintln!("route {route} with Authorization {authorization:?}");
        assert_error(
            &resp,
            401,
            "invalid_token",
            "A valid 'Authorization: Bearer <token>' header is required.",
        );
    }
}

/// Accepted: submit 200, status and result 404 (unknown job), execute 504 (nobody polls).
fn assert_all_accepted(server: &TestServer, authorization: Option<&str>) {
    for (route, resp) in contour_calls(server, authorization) {
        let want = match route {
            "submit" => 200,
            "status" | "result" => 404,
            _ => 504,
        };
        assert_eq!(
            resp.status,
            want,
            "route {route} with Authorization {authorization:?}: {}",
            resp.text()
        );
    }
}

#[test]
fn default_bearer_policy_accepts_any_non_empty_token() {
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_millis(200));
    let _rt = server.runtime_bound("rt", RID);
    assert_all_accepted(&server, Some("Bearer anything-at-all"));
    assert_all_accepted(&server, Some("bearer lower-case-scheme"));
    assert_all_rejected(&server, None);
    assert_all_rejected(&server, Some("Bearer "));
    assert_all_rejected(&server, Some("Bearer"));
    assert_all_rejected(&server, Some("Basic dXNlcjpwYXNz"));
    assert_all_rejected(&server, Some(""));
}

#[test]
fn configured_tokens_are_the_only_ones_accepted() {
    let server = TestServer::start(|cfg| {
        cfg.execute_timeout = Duration::from_millis(200);
        cfg.tokens = vec!["s3cret".to_string()];
        cfg.seed.tokens = vec![StaticToken::plain("from-seed")];
    });
    let _rt = server.runtime_bound("rt", RID);
    assert_all_accepted(&server, Some("Bearer s3cret"));
    assert_all_accepted(&server, Some("Bearer from-seed"));
    assert_all_rejected(&server, Some("Bearer s3cre"));
    assert_all_rejected(&server, Some("Bearer s3cret2"));
    assert_all_rejected(&server, Some("Bearer anything-at-all"));
    assert_all_rejected(&server, None);
}

#[test]
fn deployed_apps_resolve_by_branch_and_skip_inactive_bindings() {
    let server = TestServer::seeded(|_| {});
    let app = server.app();
    let runtime_of = |branch: Option<&str>| {
        let mut body = exec_body(BASIC, "f", json!({}));
        if let Some(branch) = branch {
            body["deployedAppBranch"] = json!(branch);
        }
        let resp = app.submit(&body);
        resp.expect_status(200);
        let id = resp.json()["id"].as_str().unwrap().to_string();
        let job = server.job(&id);
        (
            job.runtime_id().to_string(),
            job.branch().map(str::to_string),
        )
    };
    assert_eq!(
        runtime_of(Some("master")),
        ("rt-master".to_string(), Some("master".to_string()))
    );
    assert_eq!(
        runtime_of(Some("dev")),
        ("rt-dev".to_string(), Some("dev".to_string()))
    );
    for any in [None, Some(""), Some("   ")] {
        let (runtime, branch) = runtime_of(any);
        assert!(
            (runtime == "rt-master" && branch.as_deref() == Some("master"))
                || (runtime == "rt-dev" && branch.as_deref() == Some("dev")),
            "branch {any:?} resolved to {runtime} on {branch:?}"
        );
    }
    let unbound = |rid: &str| format!("No active compute-module runtime is bound to '{rid}'.");
    let mut on_missing_branch = exec_body(BASIC, "f", json!({}));
    on_missing_branch["deployedAppBranch"] = json!("feature");
    assert_error(
        &app.submit(&on_missing_branch),
        404,
        "not_found",
        &unbound(BASIC),
    );
    assert_error(
        &app.execute(&on_missing_branch),
        404,
        "not_found",
        &unbound(BASIC),
    );
    let off = "ri.foundry.main.deployed-app.off";
    assert_error(
        &app.submit(&exec_body(off, "f", json!({}))),
        404,
        "not_found",
        &unbound(off),
    );
    let nowhere = "ri.foundry.main.deployed-app.nowhere";
    assert_error(
        &app.execute(&exec_body(nowhere, "f", json!({}))),
        404,
        "not_found",
        &unbound(nowhere),
    );
    // Five submits succeeded; the refused ones left no job behind.
    assert_eq!(server.queued("rt-master") + server.queued("rt-dev"), 5);
    // The seeded runtimes work with their fixed tokens; dev's first job is the "dev" one.
    let dev = server.seeded_runtime("rt-dev", "seed-dev-token");
    let id = dev.next_job_id();
    assert_eq!(server.job(&id).branch(), Some("dev"));
    let master = server.seeded_runtime("rt-master", "seed-master-token");
    let id = master.next_job_id();
    assert_eq!(server.job(&id).branch(), Some("master"));
}

#[test]
fn sync_execute_times_out_with_504_and_a_late_result_still_succeeds_the_job() {
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_millis(300));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "slow", json!({}))));
        let id = rt.next_job_id();
        let resp = execute.join().unwrap();
        assert_error(
            &resp,
            504,
            "job_timeout",
            &format!("Timed out waiting for compute-module job '{id}'."),
        );
        // The job stays, still running, and may still finish.
        assert_eq!(app.status_json(&id)["type"], json!("running"));
        rt.complete(&id, b"late but fine");
        assert_eq!(app.status_json(&id)["type"], json!("succeeded"));
        assert_octets(&app.result_by_id(&id), b"late but fine");
    });
}

#[test]
fn sync_execute_of_a_job_failed_by_restart_is_500_job_failed() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "f", json!({}))));
        let id = rt.next_job_id();
        rt.restart().expect_status(200);
        assert_error(
            &execute.join().unwrap(),
            500,
            "job_failed",
            "compute module restarted",
        );
        assert_json(
            &app.status_json(&id),
            &failed_status("compute module restarted"),
            "failed",
        );
    });
}

/// Runs a sync execute, waits until its job is in `state` on the server, resets the runtime,
/// and returns the execute's answer and (when the runtime took it) the job id.
fn reset_during_execute(state: JobState) -> (Resp, Option<String>, TestServer) {
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_secs(15));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let (resp, id) = thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "f", json!({}))));
        let id = match state {
            JobState::Running => Some(rt.next_job_id()),
            _ => {
                wait_for("the execute's job to be queued", || {
                    server.queued("rt") == 1
                });
                None
            }
        };
        // Reset: same id, bindings kept (no deployedAppRid in the body).
        let fresh = server.runtime("rt");
        assert_ne!(fresh.token, rt.token);
        (execute.join().unwrap(), id)
    });
    (resp, id, server)
}

#[test]
fn reset_during_a_blocked_execute_of_a_running_job_ends_it_as_job_failed() {
    let (resp, id, server) = reset_during_execute(JobState::Running);
    let id = id.expect("the runtime took the job");
    assert_error(&resp, 500, "job_failed", "runtime session was reset");
    assert_json(
        &server.app().status_json(&id),
        &failed_status("runtime session was reset"),
        "status after reset",
    );
}

#[test]
fn reset_during_a_blocked_execute_of_a_queued_job_ends_it_as_job_failed() {
    let (resp, _, server) = reset_during_execute(JobState::Queued);
    assert_error(&resp, 500, "job_failed", "runtime session was reset");
    // The reset emptied the queue: the new session gets no stale job.
    assert_eq!(server.queued("rt"), 0);
}

#[test]
fn max_queued_sheds_submits_with_503_and_creates_nothing() {
    let server = TestServer::start(|cfg| cfg.limits.max_queued = 2);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let first = app.submit_id(RID, "f", json!({}));
    app.submit_id(RID, "f", json!({}));
    let overloaded = "The emulator is overloaded: runtime 'rt' already has 2 queued jobs (--max-queued). Retry later.";
    assert_error(
        &app.submit(&exec_body(RID, "f", json!({}))),
        503,
        "overloaded",
        overloaded,
    );
    assert_error(
        &app.execute(&exec_body(RID, "f", json!({}))),
        503,
        "overloaded",
        overloaded,
    );
    assert_eq!(server.queued("rt"), 2);
    // Taking one job frees a place.
    assert_eq!(rt.next_job_id(), first);
    app.submit_id(RID, "f", json!({}));
}

#[test]
fn runtime_direct_jobs_are_inspectable_and_carry_no_auth_header() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime("rt");
    let id = server
        .running()
        .enqueue_direct("rt", "direct", &json!({"k": [1, 2]}))
        .expect("enqueue_direct");
    let want = json!({"type": "computeModuleJobV1", "computeModuleJobV1": {
        "jobId": id.to_string(),
        "queryType": "direct",
        "query": {"k": [1, 2]},
        "temporaryCredentialsAuthToken": null,
        "authHeader": null,
        "userId": null,
    }});
    assert_json(&rt.next_job(), &want, "direct envelope");
    rt.complete(&id.to_string(), b"{}");
    let job = rt.inspect_json(&id.to_string())["job"].clone();
    assert_eq!(job["source"], json!("runtime-direct"));
    assert_eq!(job["deployed_app_rid"], Value::Null);
    assert_eq!(job["branch"], Value::Null);
    assert_octets(&server.app().result_by_id(&id.to_string()), b"{}");
    let err = server
        .running()
        .enqueue_direct("no-such-runtime", "direct", &json!({}))
        .unwrap_err();
    assert_eq!(err.status(), 404);
    assert_eq!(
        err.to_string(),
        "Compute-module runtime 'no-such-runtime' was not found."
    );
}
