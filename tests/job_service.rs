//! The rest of the job service (issue 11): cancel, the other ways to read a job, the deployed
//! app's function schemas, and unknown functions failing at submit.

use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use foundry_emulator::JobState;
use serde_json::{json, Value};

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.job-service";

/// A server whose empty polls answer 204 at once, so "never delivered" is one poll away.
fn server() -> TestServer {
    TestServer::start(|cfg| cfg.poll_wait = Duration::ZERO)
}

fn canceled(id: &str) -> String {
    format!("Compute-module job '{id}' was canceled.")
}

fn failed_status(message: &str) -> Value {
    json!({"type": "failed", "failed": {"message": message}})
}

/// The job object a submit answers, as an application keeps it.
fn job_object(id: &str) -> Value {
    json!({
        "id": id,
        "nodeId": null,
        "moduleId": null,
        "jobHandle": job_handle(id),
        "persistJobResult": null,
        "status": {"type": "queued", "queued": {"queueInfo": "NORMAL_OPERATION"}},
    })
}

/// Inspection's `canceled_by` for a cancel through `route` of a job that was `was`.
fn canceled_by(route: &str, was: &str) -> Value {
    json!({"route": route, "user_id": "foundry-emulator-user", "was": was})
}

/// The job is failed as canceled, says who canceled it, and left no queued count behind.
fn assert_canceled(server: &TestServer, rt: &Rt, id: &str, route: &str, was: &str) {
    let app = server.app();
    assert_json(
        &app.status_json(id),
        &failed_status(&canceled(id)),
        "status",
    );
    let job = rt.inspect_json(id)["job"].clone();
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["error_message"], json!(canceled(id)), "{job}");
    assert_json(&job["canceled_by"], &canceled_by(route, was), "canceled_by");
    assert_eq!(server.queued(&rt.id), 0);
    assert_error(
        &app.result_by_id(id),
        409,
        "job_not_ready",
        &format!("Compute-module job '{id}' has not completed successfully."),
    );
}

#[test]
fn a_queued_job_canceled_by_id_is_never_delivered() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_no_content(&app.cancel(&id));
    assert_canceled(&server, &rt, &id, "DELETE /jobs/{jobId}", "queued");
    // The first poll of a session and a later one: neither gets the job.
    rt.poll().expect_status(204);
    rt.poll().expect_status(204);
    // The queue still works: the next job is the next one submitted.
    let next = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), next);
}

#[test]
fn a_queued_job_soft_canceled_is_never_delivered() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_no_content(&app.soft_cancel(&id));
    assert_canceled(&server, &rt, &id, "PUT /jobs/{jobId}/soft-cancel", "queued");
    rt.poll().expect_status(204);
}

#[test]
fn a_running_sync_execute_canceled_by_job_object_answers_500_at_once_and_the_late_post_409() {
    // An execute timeout far beyond the client's: only the cancel can end the wait in time.
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_secs(3600));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "slow", json!({}))));
        let id = rt.next_job_id();
        assert_no_content(&app.cancel_with(&job_object(&id)));
        assert_error(&execute.join().unwrap(), 500, "job_failed", &canceled(&id));
        assert_canceled(&server, &rt, &id, "DELETE /jobs", "running");
        assert_error(
            &rt.post_result(&id, b"too late"),
            409,
            "conflict",
            &format!("Compute-module job '{id}' was canceled; its result is not kept."),
        );
        assert_eq!(rt.inspect_json(&id)["job"]["result_body_utf8"], Value::Null);
    });
}

#[test]
fn a_running_async_job_canceled_by_handle_ends_at_once() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    assert_eq!(app.status_json(&id)["type"], json!("running"));
    // The handle as the submit answered it (JSON text), and as an object.
    assert_no_content(&app.cancel_with(&json!({"jobHandle": job_handle(&id)})));
    assert_canceled(&server, &rt, &id, "DELETE /jobs", "running");
    let other = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), other);
    let handle: Value = serde_json::from_str(&job_handle(&other)).unwrap();
    assert_no_content(&app.cancel_with(&json!({ "jobHandle": handle })));
    assert_canceled(&server, &rt, &other, "DELETE /jobs", "running");
}

#[test]
fn canceling_a_finished_job_changes_nothing_and_says_so() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let done = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), done);
    rt.complete(&done, b"kept");
    let finished = |state: &str| {
        format!("Compute-module job '{done}' already finished as {state}; canceling it changes nothing.")
    };
    assert_error(&app.cancel(&done), 409, "conflict", &finished("succeeded"));
    assert_error(
        &app.cancel_with(&job_object(&done)),
        409,
        "conflict",
        &finished("succeeded"),
    );
    assert_error(
        &app.soft_cancel(&done),
        409,
        "conflict",
        &finished("succeeded"),
    );
    assert_octets(&app.result_by_id(&done), b"kept");
    assert_eq!(rt.inspect_json(&done)["job"]["canceled_by"], Value::Null);

    // A canceled job is finished too: a second cancel keeps the first one's record.
    let id = app.submit_id(RID, "f", json!({}));
    assert_no_content(&app.cancel(&id));
    let again = format!(
        "Compute-module job '{id}' already finished as failed; canceling it changes nothing."
    );
    assert_error(&app.soft_cancel(&id), 409, "conflict", &again);
    assert_canceled(&server, &rt, &id, "DELETE /jobs/{jobId}", "queued");
}

#[test]
fn canceling_an_unknown_job_is_404_by_id_by_job_object_and_by_handle() {
    let server = server();
    let app = server.app();
    let unknown = "foundry_job_00000000000000000000000000000000";
    let not_found = format!("Compute-module job '{unknown}' was not found.");
    for resp in [
        app.cancel(unknown),
        app.soft_cancel(unknown),
        app.cancel_with(&job_object(unknown)),
        app.cancel_with(&json!({"jobHandle": job_handle(unknown)})),
    ] {
        assert_error(&resp, 404, "not_found", &not_found);
    }
}

/// One round of the race: the job (running, or still queued) gets a cancel and a result post
/// at the same moment. Returns whether the cancel won.
fn race_once(server: &TestServer, rt: &Rt, app: &App, running: bool) -> bool {
    let id = app.submit_id(RID, "f", json!({}));
    if running {
        assert_eq!(rt.next_job_id(), id);
    }
    let start = Barrier::new(2);
    let (cancel, post) = thread::scope(|s| {
        let cancel = s.spawn(|| {
            start.wait();
            app.cancel(&id)
        });
        let post = s.spawn(|| {
            start.wait();
            rt.post_result(&id, b"won")
        });
        (cancel.join().unwrap(), post.join().unwrap())
    });
    let was = if running { "running" } else { "queued" };
    match (cancel.status, post.status) {
        (204, 409) => {
            assert_error(
                &post,
                409,
                "conflict",
                &format!("Compute-module job '{id}' was canceled; its result is not kept."),
            );
            assert_canceled(server, rt, &id, "DELETE /jobs/{jobId}", was);
            true
        }
        (409, 204) => {
            assert_error(
                &cancel,
                409,
                "conflict",
                &format!(
                    "Compute-module job '{id}' already finished as succeeded; canceling it changes nothing."
                ),
            );
            assert_eq!(app.status_json(&id)["type"], json!("succeeded"));
            assert_octets(&app.result_by_id(&id), b"won");
            assert_eq!(rt.inspect_json(&id)["job"]["canceled_by"], Value::Null);
            false
        }
        other => panic!(
            "exactly one of cancel and result post must win; got {other:?}: {} / {}",
            cancel.text(),
            post.text()
        ),
    }
}

#[test]
fn cancel_racing_a_result_post_200_times_exactly_one_wins() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let mut cancels = 0;
    for round in 0..200 {
        cancels += usize::from(race_once(&server, &rt, &app, round % 2 == 0));
    }
    println!("cancel won {cancels} of 200 races");
    // Nothing is left queued or handed out: every job ended exactly once.
    assert_eq!(server.queued("rt"), 0);
    rt.poll().expect_status(204);
    let next = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), next);
}

#[test]
fn status_v2_answers_by_id_by_handle_and_by_the_submit_answer() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let submitted = app
        .submit(&exec_body(RID, "f", json!({})))
        .expect_status(200)
        .json();
    let id = submitted["id"].as_str().unwrap().to_string();
    let bodies = [
        json!({"id": id}),
        json!({"jobHandle": job_handle(&id)}),
        submitted.clone(),
    ];
    let check = |what: &str| {
        let want = app.status_json(&id);
        for body in &bodies {
            let resp = app.status_v2(body);
            resp.expect_status(200);
            assert_eq!(resp.header("content-type"), Some("application/json"));
            assert_json(&resp.json(), &want, &format!("status/v2 {what} by {body}"));
        }
    };
    check("queued");
    assert_eq!(rt.next_job_id(), id);
    check("running");
    rt.complete(&id, b"ok");
    check("succeeded");
    assert_error(
        &app.status_v2(&json!({"id": "foundry_job_nope"})),
        404,
        "not_found",
        "Compute-module job 'foundry_job_nope' was not found.",
    );
}

#[test]
fn result_v2_takes_the_submit_answer_and_get_result_serves_the_same_bytes_and_errors() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let submitted = app
        .submit(&exec_body(RID, "f", json!({})))
        .expect_status(200)
        .json();
    let id = submitted["id"].as_str().unwrap().to_string();
    let not_ready = format!("Compute-module job '{id}' has not completed successfully.");
    assert_error(&app.result(&submitted), 409, "job_not_ready", &not_ready);
    assert_error(&app.result_get(&id), 409, "job_not_ready", &not_ready);
    assert_eq!(rt.next_job_id(), id);
    let bytes = pattern(70_000);
    rt.complete(&id, &bytes);
    assert_octets(&app.result(&submitted), &bytes);
    assert_octets(&app.result_get(&id), &bytes);
    let unknown = "foundry_job_00000000000000000000000000000000";
    assert_error(
        &app.result_get(unknown),
        404,
        "not_found",
        &format!("Compute-module job '{unknown}' was not found."),
    );
    assert_error(
        &server.app_with_token("").result_get(&id),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
}

#[test]
fn deployed_apps_execute_is_the_sync_execute() {
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_millis(300));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let body = serde_json::to_vec(&exec_body(RID, "f", json!({"x": 1}))).unwrap();
    let execute = || app.contour("POST", "/deployed-apps/jobs/execute", Some(&body));
    thread::scope(|s| {
        let answer = s.spawn(execute);
        let envelope = rt.next_job();
        assert_eq!(envelope["computeModuleJobV1"]["query"], json!({"x": 1}));
        let id = envelope_job_id(&envelope);
        rt.complete(&id, b"\x00sync\xff");
        assert_octets(&answer.join().unwrap(), b"\x00sync\xff");
        assert_eq!(rt.inspect_json(&id)["job"]["source"], json!("contour-sync"));
    });
    // The same errors: a timeout names the job, a failure is 500.
    thread::scope(|s| {
        let answer = s.spawn(execute);
        let id = rt.next_job_id();
        assert_error(
            &answer.join().unwrap(),
            504,
            "job_timeout",
            &format!("Timed out waiting for compute-module job '{id}'."),
        );
        rt.restart().expect_status(200);
    });
    let unbound = exec_body("ri.nowhere", "f", json!({}));
    let resp = app.contour(
        "POST",
        "/deployed-apps/jobs/execute",
        Some(&serde_json::to_vec(&unbound).unwrap()),
    );
    assert_error(
        &resp,
        404,
        "not_found",
        "No active compute-module runtime is bound to 'ri.nowhere'.",
    );
}

#[test]
fn schemas_lists_what_the_bound_runtime_posted_in_every_format() {
    let server = server();
    let app = server.app();
    assert_error(
        &app.schemas(RID, Some("master")),
        404,
        "not_found",
        &format!("No active compute-module runtime is bound to '{RID}'."),
    );
    let rt = server.runtime_bound("rt", RID);
    for branch in [Some("master"), None, Some("")] {
        let resp = app.schemas(RID, branch);
        resp.expect_status(200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_json(&resp.json(), &json!([]), "nothing posted yet");
    }
    let int = json!({"type": "integer", "integer": {}});
    let inputs = json!([{"name": "x", "required": true, "constraints": [], "dataType": int}]);
    let output = json!({"type": "single", "single": {"dataType": int}});
    // The SDKs' list (with a field of their own), then SPEC's wrapped and map formats.
    let sdk = json!([{"functionName": "sdk", "inputs": inputs, "output": output,
        "ontologyProvenance": null}]);
    rt.post_schemas(&sdk).expect_status(200);
    let wrapped = json!({"functions": [
        {"name": "wrapped", "schema": {"inputs": inputs, "output": output}},
        {"function_name": "opaque", "schemaPayload": {"type": "object"}},
    ]});
    rt.post_schemas(&wrapped).expect_status(200);
    rt.post_schemas(&json!({"mapped": {"type": "string"}}))
        .expect_status(200);
    let want = json!([
        {"functionName": "sdk", "inputs": inputs, "output": output},
        {"functionName": "wrapped", "inputs": inputs, "output": output},
        {"functionName": "opaque", "inputs": [], "output": null},
        {"functionName": "mapped", "inputs": [], "output": null},
    ]);
    assert_json(
        &app.schemas(RID, Some("master")).json(),
        &want,
        "all formats",
    );
    // Another branch is another binding; an unknown one is unbound.
    let dev = server.create_runtime(json!({"runtimeId": "dev", "deployedAppRid": RID,
        "branch": "dev"}));
    assert_json(&app.schemas(RID, Some("dev")).json(), &json!([]), "dev");
    assert_error(
        &app.schemas(RID, Some("feature")),
        404,
        "not_found",
        &format!("No active compute-module runtime is bound to '{RID}'."),
    );
    // A session reset clears the schemas.
    drop(dev);
    server.runtime("rt");
    assert_json(
        &app.schemas(RID, Some("master")).json(),
        &json!([]),
        "after reset",
    );
}

/// What a job of an unknown function fails with, for runtime `rt` that posted `names`.
fn unknown_function(runtime: &str, query_type: &str, names: &str) -> String {
    format!(
        "Compute-module runtime '{runtime}' has no function '{query_type}'; its posted schemas \
         name: {names}. (Serve with --allow-unknown-query-types to hand it such jobs anyway.)"
    )
}

#[test]
fn an_unknown_function_fails_at_submit_once_schemas_are_posted() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    // Without schemas nothing is known: the job goes to the runtime.
    let before = app.submit_id(RID, "anything", json!({}));
    assert_eq!(rt.next_job_id(), before);
    rt.post_schemas(&json!([{"functionName": "add"}, {"functionName": "echo"}]))
        .expect_status(200);
    let message = unknown_function("rt", "nope", "add, echo");
    // A sync execute answers at once (the execute timeout is 5 s, the client's 20 s).
    assert_error(
        &app.execute(&exec_body(RID, "nope", json!({}))),
        500,
        "job_failed",
        &message,
    );
    // An async submit answers as usual, and the job is failed already.
    let id = app.submit_id(RID, "nope", json!({}));
    assert_json(&app.status_json(&id), &failed_status(&message), "status");
    assert_eq!(server.job(&id).state, JobState::Failed);
    assert_eq!(server.queued("rt"), 0);
    rt.poll().expect_status(204);
    // A known function still runs.
    let known = app.submit_id(RID, "echo", json!({}));
    assert_eq!(rt.next_job_id(), known);
}

#[test]
fn an_unknown_function_failure_names_twenty_functions_and_counts_the_rest() {
    let server = server();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let names: Vec<String> = (0..25).map(|i| format!("f{i}")).collect();
    let schemas: Vec<Value> = names.iter().map(|n| json!({"functionName": n})).collect();
    rt.post_schemas(&json!(schemas)).expect_status(200);
    let id = app.submit_id(RID, "nope", json!({}));
    let listed = format!("{} and 5 more", names[..20].join(", "));
    assert_json(
        &app.status_json(&id),
        &failed_status(&unknown_function("rt", "nope", &listed)),
        "status",
    );
}

#[test]
fn allow_unknown_query_types_hands_the_job_to_the_runtime() {
    let server = TestServer::start(|cfg| {
        cfg.poll_wait = Duration::ZERO;
        cfg.limits.allow_unknown_query_types = true;
    });
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    rt.post_schemas(&json!([{"functionName": "add"}]))
        .expect_status(200);
    let id = app.submit_id(RID, "nope", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, b"answered anyway");
    assert_octets(&app.result_by_id(&id), b"answered anyway");
}
