//! Steering from a test: runtime-direct jobs over HTTP.

use foundry_emulator::runtimes::builtin::Builtin;
use foundry_emulator::{JobSource, JobState, Seed};
use serde_json::{json, Value};

use crate::util::*;

const ECHO_RID: &str = "ri.foundry.main.deployed-app.steer-echo";
const DIRECT: &str = "/_emulate/foundry/compute-modules/runtimes";

fn post(server: &TestServer, path: &str, body: &Value, bearer: Option<&str>) -> Resp {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let body = serde_json::to_vec(body).unwrap();
    send(&agent(), "POST", &server.url(path), &headers, Some(&body))
}

#[test]
fn runtime_direct_jobs_over_http_reach_a_builtin_runtime_and_read_through_contour() {
    let mut seed = Seed::default();
    seed.add_builtin("echo-rt", ECHO_RID, Builtin::Echo);
    let server = TestServer::start(move |cfg| cfg.seed = seed);
    let app = server.app();

    // Sync: the echo's bytes, exactly.
    let query = json!({"hello": [1, "two"]});
    let waited = post(
        &server,
        &format!("{DIRECT}/echo-rt/jobs?wait"),
        &json!({"queryType": "echo", "query": query}),
        None,
    );
    assert_octets(&waited, br#"{"hello":[1,"two"]}"#);

    // Async: the submit's shape; then status and result/v2 on the Contour routes.
    let submitted = post(
        &server,
        &format!("{DIRECT}/echo-rt/jobs"),
        &json!({"queryType": "echo", "query": {"n": 1}}),
        None,
    );
    submitted.expect_status(200);
    let answer = submitted.json();
    let id = answer["id"].as_str().expect("an id").to_string();
    assert_json(
        &answer,
        &json!({
            "id": id, "nodeId": null, "moduleId": null, "jobHandle": job_handle(&id),
            "persistJobResult": null,
            "status": {"type": "queued", "queued": {"queueInfo": "NORMAL_OPERATION"}},
        }),
        "the async answer",
    );
    server.wait_state(&id, JobState::Succeeded);
    assert_eq!(app.status_json(&id)["type"], json!("succeeded"));
    assert_octets(&app.result_by_id(&id), br#"{"n":1}"#);
    let job = server.job(&id);
    assert_eq!(job.source, JobSource::RuntimeDirect);
    assert_eq!(job.deployed_app_rid, None);
}

#[test]
fn runtime_direct_jobs_reach_a_polling_runtime_with_the_callers_credential() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime("poller");
    let resp = post(
        &server,
        &format!("{DIRECT}/poller/jobs"),
        &json!({"queryType": "q", "query": {"x": 1}}),
        Some("caller"),
    );
    resp.expect_status(200);
    let id = resp.json()["id"].as_str().unwrap().to_string();
    let envelope = rt.next_job();
    assert_eq!(envelope_job_id(&envelope), id);
    let job = &envelope["computeModuleJobV1"];
    assert_eq!(job["queryType"], json!("q"));
    assert_eq!(job["query"], json!({"x": 1}));
    assert_eq!(job["authHeader"], json!("Bearer caller"));
    rt.complete(&id, b"direct");
    assert_octets(&server.app().result_by_id(&id), b"direct");
}

#[test]
fn runtime_direct_errors() {
    let server = TestServer::start(|cfg| cfg.tokens = vec!["secret".into()]);
    server.runtime("rt");
    let path = format!("{DIRECT}/rt/jobs");
    let body = json!({"queryType": "q"});
    // Strict mode: a write route needs an accepted bearer.
    let resp = post(&server, &path, &body, None);
    assert_error(
        &resp,
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    assert_eq!(post(&server, &path, &body, Some("secret")).status, 200);
    let unknown = post(
        &server,
        &format!("{DIRECT}/nope/jobs"),
        &body,
        Some("secret"),
    );
    assert_error(
        &unknown,
        404,
        "not_found",
        "Compute-module runtime 'nope' was not found.",
    );
    let bad = post(&server, &path, &json!({"query": {}}), Some("secret"));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], json!("invalid_request"));
}
