//! The runtime API, compute-module side: sessions and resets, polls, results, restart,
//! schemas and job inspection; FIFO order and isolation between runtimes.

use std::io::Cursor;
use std::time::Duration;

use foundry_emulator::JobState;
use serde_json::{json, Value};

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.runtime";
const OTHER_RID: &str = "ri.foundry.main.deployed-app.other";
const BAD_MODULE_TOKEN: &str = "The Module-Auth-Token header is invalid.";

/// Standard padded base64, written independently of the emulator's.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn create_answers_a_token_and_absolute_uris_built_from_the_base_url() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime("rt-1");
    assert!(
        is_random_id(&rt.token, "foundry_module_auth_"),
        "{}",
        rt.token
    );
    assert_json(
        &rt.session,
        &session_json(&server.base_url, "rt-1", &rt.token),
        "session",
    );
    assert_eq!(server.base_url, format!("http://{}", server.addr));
    // Another runtime gets another token.
    assert_ne!(server.runtime("rt-2").token, rt.token);
}

#[test]
fn create_uses_the_configured_public_url() {
    let server = TestServer::start(|cfg| {
        cfg.public_url = Some("https://emulator.example:8443/".to_string());
    });
    let resp = server.create_runtime_raw(&json!({"runtimeId": "rt"}));
    resp.expect_status(200);
    let session = resp.json();
    let token = session["moduleAuthToken"].as_str().unwrap().to_string();
    assert_json(
        &session,
        &session_json("https://emulator.example:8443", "rt", &token),
        "session with public_url",
    );
}

#[test]
fn runtime_ids_are_escaped_in_uris_and_the_uris_work() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("my runtime", RID);
    let get_job = rt.session["getJobUri"].as_str().unwrap();
    assert_eq!(
        get_job,
        format!("{}/my%20runtime/job", server.runtimes_url())
    );
    let id = server.app().submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, b"ok");
    assert_eq!(server.job(&id).runtime_id(), "my runtime");
}

#[test]
fn reset_mints_a_new_token_clears_schemas_fails_open_jobs_and_keeps_bindings() {
    let server = TestServer::start(|_| {});
    let old = server.runtime_bound("rt", RID);
    let app = server.app();
    old.post_schemas(&json!([{"functionName": "f", "schema": {"type": "object"}}]))
        .expect_status(200);
    let running = app.submit_id(RID, "f", json!({"n": 1}));
    let queued = app.submit_id(RID, "f", json!({"n": 2}));
    assert_eq!(old.next_job_id(), running);

    let new = server.runtime("rt");
    assert_ne!(new.token, old.token);
    assert!(is_random_id(&new.token, "foundry_module_auth_"));
    assert_json(
        &new.session,
        &session_json(&server.base_url, "rt", &new.token),
        "reset session",
    );

    // The old token stops working everywhere.
    assert_error(
        &old.poll(),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
    assert_error(
        &old.post_result(&running, b"x"),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
    assert_error(
        &old.post_schemas(&json!({"g": {}})),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
    assert_error(
        &old.restart(),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );

    // Queued and running jobs failed; their records stay inspectable.
    for id in [&running, &queued] {
        assert_json(
            &app.status_json(id),
            &json!({"type": "failed", "failed": {"message": "runtime session was reset"}}),
            "status after reset",
        );
        let job = new.inspect_json(id)["job"].clone();
        assert_eq!(job["status"], json!("failed"));
        assert_eq!(job["error_message"], json!("runtime session was reset"));
    }
    // A result for a job the reset ended is a conflict, and does not revive it.
    assert_error(
        &new.post_result(&running, b"too late"),
        409,
        "conflict",
        &format!("Compute-module job '{running}' already finished; the first result is kept."),
    );

    // Schemas cleared; bindings kept because the reset body gave no deployedAppRid.
    let inspection = new.inspect_json(&running);
    assert_json(&inspection["schemas"], &json!([]), "schemas after reset");
    assert_json(
        &inspection["runtime"]["deployed_apps"],
        &json!([{"deployed_app_rid": RID, "branch": "master", "display_name": null, "active": true}]),
        "bindings kept",
    );
    let after = app.submit_id(RID, "f", json!({"n": 3}));
    assert_eq!(
        new.next_job_id(),
        after,
        "the new session gets new jobs only"
    );

    // A reset that names a deployed app replaces the bindings.
    let newer = server.create_runtime(json!({
        "runtimeId": "rt", "deployedAppRid": OTHER_RID, "branch": "dev", "displayName": "Dev"
    }));
    assert_error(
        &app.submit(&exec_body(RID, "f", json!({}))),
        404,
        "not_found",
        &format!("No active compute-module runtime is bound to '{RID}'."),
    );
    let mut on_master = exec_body(OTHER_RID, "f", json!({}));
    on_master["deployedAppBranch"] = json!("master");
    assert_eq!(app.submit(&on_master).status, 404);
    let mut on_dev = exec_body(OTHER_RID, "f", json!({}));
    on_dev["deployedAppBranch"] = json!("dev");
    let id = app.submit(&on_dev).expect_status(200).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inspection = newer.inspect_json(&id);
    assert_json(
        &inspection["runtime"]["deployed_apps"],
        &json!([{"deployed_app_rid": OTHER_RID, "branch": "dev", "display_name": "Dev", "active": true}]),
        "bindings replaced",
    );
}

#[test]
fn poll_answers_204_with_an_empty_body_when_no_job_arrives() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_millis(50));
    let rt = server.runtime("rt");
    assert!(!server.connected("rt"));
    assert_eq!(server.last_poll_at("rt"), None);
    // The first poll of a session is answered at once, later ones after the poll wait.
    for _ in 0..2 {
        let resp = rt.poll();
        resp.expect_status(204);
        assert!(resp.body.is_empty(), "{:?}", resp.body);
    }
    assert!(server.connected("rt"), "a poll marks the runtime connected");
    assert!(server.last_poll_at("rt").is_some());
}

#[test]
fn poll_with_zero_wait_answers_204_at_once() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::ZERO);
    let rt = server.runtime("rt");
    // Not only the session's first poll: every poll answers at once.
    let quick = rt.with_agent(agent_with_timeout(Duration::from_secs(5)));
    for _ in 0..3 {
        let resp = quick.poll();
        resp.expect_status(204);
        assert!(resp.body.is_empty());
    }
}

#[test]
fn poll_of_unknown_runtime_is_404_and_bad_tokens_are_401() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime("rt");
    let ghost = rt.with_token(&rt.token);
    let url = format!("{}/ghost/job", server.runtimes_url());
    let resp = send(
        &ghost.agent,
        "GET",
        &url,
        &[("Module-Auth-Token", &rt.token)],
        None,
    );
    assert_error(
        &resp,
        404,
        "not_found",
        "Compute-module runtime 'ghost' was not found.",
    );
    for token in ["wrong", "", &rt.token[..rt.token.len() - 1]] {
        assert_error(
            &rt.with_token(token).poll(),
            401,
            "invalid_module_auth_token",
            BAD_MODULE_TOKEN,
        );
    }
    let url = rt.session["getJobUri"].as_str().unwrap();
    assert_error(
        &send(&agent(), "GET", url, &[], None),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
}

#[test]
fn results_store_bytes_exactly_with_their_content_type() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let bin = app.submit_id(RID, "f", json!({}));
    let text = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), bin);
    assert_eq!(rt.next_job_id(), text);

    let resp = rt.post_result_typed(&bin, &binary, "application/x-custom; charset=binary");
    resp.expect_status(204);
    assert!(resp.body.is_empty());
    assert_octets(&app.result_by_id(&bin), &binary);
    let job = rt.inspect_json(&bin)["job"].clone();
    assert_eq!(
        job["result_content_type"],
        json!("application/x-custom; charset=binary")
    );
    assert_eq!(job["result_body_utf8"], Value::Null);
    assert_eq!(job["result_body_base64"], json!(base64(&binary)));

    let utf8 = "héllo \u{0} wörld".as_bytes();
    rt.post_result_typed(&text, utf8, "text/plain")
        .expect_status(204);
    assert_octets(&app.result_by_id(&text), utf8);
    let job = rt.inspect_json(&text)["job"].clone();
    assert_eq!(job["result_content_type"], json!("text/plain"));
    assert_eq!(job["result_body_utf8"], json!("héllo \u{0} wörld"));
    assert_eq!(job["result_body_base64"], Value::Null);
}

#[test]
fn result_without_content_type_and_empty_result_are_kept_as_sent() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    let path = format!("{RUNTIMES}/rt/results/{id}");
    let request = raw_request(
        "POST",
        &path,
        &[("Module-Auth-Token", &rt.token)],
        b"",
        None,
    );
    let resp = expect_response(raw_exchange(server.addr, &request, false), "empty result");
    resp.expect_status(204);
    assert!(resp.body.is_empty());
    assert_octets(&app.result_by_id(&id), b"");
    let job = rt.inspect_json(&id)["job"].clone();
    assert_eq!(job["result_content_type"], Value::Null);
    assert_eq!(job["result_body_utf8"], json!(""));
    assert_eq!(job["result_body_base64"], Value::Null);
}

#[test]
fn second_result_is_409_conflict_and_the_first_is_kept() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, b"first");
    assert_error(
        &rt.post_result(&id, b"second"),
        409,
        "conflict",
        &format!("Compute-module job '{id}' already finished; the first result is kept."),
    );
    assert_octets(&app.result_by_id(&id), b"first");
}

#[test]
fn result_for_a_queued_job_succeeds_it() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    rt.complete(&id, b"early");
    assert_eq!(app.status_json(&id)["type"], json!("succeeded"));
    assert_octets(&app.result_by_id(&id), b"early");
    // Its id is skipped by later polls.
    let next = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), next);
}

#[test]
fn results_for_unknown_jobs_or_other_runtimes_jobs_are_404() {
    let server = TestServer::start(|_| {});
    let a = server.runtime_bound("rt-a", RID);
    let b = server.runtime_bound("rt-b", OTHER_RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(a.next_job_id(), id);
    let not_found = format!("Compute-module job '{id}' was not found.");
    assert_error(&b.post_result(&id, b"steal"), 404, "not_found", &not_found);
    assert_error(&b.inspect(&id), 404, "not_found", &not_found);
    assert_error(
        &a.post_result("foundry_job_unknown", b"x"),
        404,
        "not_found",
        "Compute-module job 'foundry_job_unknown' was not found.",
    );
    // A's token does not open B's routes.
    assert_error(
        &b.with_token(&a.token).post_result(&id, b"x"),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
    let url = format!("{}/ghost/results/{id}", server.runtimes_url());
    assert_error(
        &send(
            &agent(),
            "POST",
            &url,
            &[("Module-Auth-Token", &a.token)],
            Some(b"x"),
        ),
        404,
        "not_found",
        "Compute-module runtime 'ghost' was not found.",
    );
    a.complete(&id, b"mine");
    assert_octets(&app.result_by_id(&id), b"mine");
}

#[test]
fn a_five_mib_result_round_trips_byte_for_byte() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let big = pattern(5 * 1024 * 1024);
    std::thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "big", json!({}))));
        let id = rt.next_job_id();
        rt.complete(&id, &big);
        assert_octets(&execute.join().unwrap(), &big);
    });
    // Submitted async, the whole result is kept for result/v2 (sync keeps only a preview).
    let id = app.submit_id(RID, "big", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, &big);
    assert_octets(&app.result_by_id(&id), &big);
    assert_octets(&app.result_by_id(&id), &big);
}

#[test]
fn chunked_result_bodies_are_stored_whole() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let raw = app.submit_id(RID, "stream", json!({}));
    let streamed = app.submit_id(RID, "stream", json!({}));
    assert_eq!(rt.next_job_id(), raw);
    assert_eq!(rt.next_job_id(), streamed);

    // A streaming SDK function: concatenated JSON values, chunked, with binary in between.
    let chunks: [&[u8]; 4] = [b"{\"a\":1}", b"\x00\xff", b"", b"{\"b\":[2]}"];
    let chunks: Vec<&[u8]> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
    let path = format!("{RUNTIMES}/rt/results/{raw}");
    let request = raw_chunked_request(
        "POST",
        &path,
        &[
            ("Module-Auth-Token", &rt.token),
            ("Content-Type", "application/json"),
        ],
        &chunks,
    );
    let resp = expect_response(raw_exchange(server.addr, &request, false), "chunked");
    resp.expect_status(204);
    assert_octets(&app.result_by_id(&raw), &chunks.concat());
    assert_eq!(
        rt.inspect_json(&raw)["job"]["result_content_type"],
        json!("application/json")
    );

    // ureq sends a reader of unknown size chunked.
    let big = pattern(1024 * 1024 + 7);
    let resp = rt
        .agent
        .post(rt.result_url(&streamed))
        .header("Module-Auth-Token", &rt.token)
        .header("Content-Type", "application/octet-stream")
        .send(ureq::SendBody::from_owned_reader(Cursor::new(big.clone())))
        .expect("chunked post");
    assert_eq!(resp.status().as_u16(), 204);
    assert_octets(&app.result_by_id(&streamed), &big);
}

#[test]
fn bodies_over_max_body_are_413_and_leave_the_job_open() {
    let server = TestServer::start(|cfg| cfg.max_body = 1024);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    let too_large = "The request body is larger than the 1024-byte limit (--max-body).";

    assert_error(
        &rt.post_result(&id, &pattern(2048)),
        413,
        "payload_too_large",
        too_large,
    );
    assert_error(
        &rt.post_result(&id, &pattern(1025)),
        413,
        "payload_too_large",
        too_large,
    );
    let path = format!("{RUNTIMES}/rt/results/{id}");
    let chunk = pattern(700);
    let request = raw_chunked_request(
        "POST",
        &path,
        &[("Module-Auth-Token", &rt.token)],
        &[&chunk, &chunk],
    );
    let resp = expect_response(raw_exchange(server.addr, &request, false), "chunked 413");
    assert_error(&resp, 413, "payload_too_large", too_large);
    // A declared length over the limit is refused without reading the body.
    let request = raw_request(
        "POST",
        &path,
        &[("Module-Auth-Token", &rt.token)],
        b"",
        Some(1 << 30),
    );
    let resp = expect_response(
        raw_exchange(server.addr, &request, false),
        "declared too large",
    );
    assert_error(&resp, 413, "payload_too_large", too_large);
    // Contour bodies too.
    let mut huge = exec_body(RID, "f", json!({}));
    huge["query"] = json!("x".repeat(2000));
    assert_error(&app.submit(&huge), 413, "payload_too_large", too_large);
    assert_error(&app.execute(&huge), 413, "payload_too_large", too_large);

    assert_eq!(server.job(&id).state, JobState::Running);
    let exactly = pattern(1024);
    rt.complete(&id, &exactly);
    assert_octets(&app.result_by_id(&id), &exactly);
}

#[test]
fn restart_fails_running_jobs_only_and_lists_them() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let first = app.submit_id(RID, "f", json!({}));
    let second = app.submit_id(RID, "f", json!({}));
    let done = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), first);
    assert_eq!(rt.next_job_id(), second);
    assert_eq!(rt.next_job_id(), done);
    rt.complete(&done, b"ok");
    let resp = rt.restart();
    resp.expect_status(200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    // SPEC fixes no order for the ids: compare them sorted.
    let mut got: Vec<String> = serde_json::from_value(resp.json()).expect("an array of ids");
    got.sort();
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(got, want, "restart answer");
    for id in &want {
        assert_json(
            &app.status_json(id),
            &json!({"type": "failed", "failed": {"message": "compute module restarted"}}),
            "restarted job",
        );
    }
    assert_eq!(app.status_json(&done)["type"], json!("succeeded"));
    assert_octets(&app.result_by_id(&done), b"ok");
    // Nothing running any more: an empty list.
    let again = rt.restart();
    again.expect_status(200);
    assert_json(&again.json(), &json!([]), "second restart");
}

#[test]
fn restart_leaves_queued_jobs_queued() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let running = app.submit_id(RID, "f", json!({}));
    let queued = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), running);
    let resp = rt.restart();
    resp.expect_status(200);
    assert_json(&resp.json(), &json!([running]), "restart answer");
    assert_eq!(
        app.status_json(&queued),
        json!({"type": "queued", "queued": {"queueInfo": "NORMAL_OPERATION"}})
    );
    // The queued job is still handed out after the restart.
    assert_eq!(rt.next_job_id(), queued);
    rt.complete(&queued, b"after restart");
    assert_octets(&app.result_by_id(&queued), b"after restart");
}

/// What `foundry-compute-modules` posts: a list of `ComputeModuleFunctionSchema`.
fn python_sdk_schemas() -> Value {
    let integer = json!({"dataType": {"type": "integer", "integer": {}}});
    json!([{
        "functionName": "py_add",
        "inputs": [{"name": "x", "required": true, "constraints": [], "dataType": integer["dataType"]}],
        "output": {"type": "single", "single": integer},
        "ontologyProvenance": null,
    }])
}

#[test]
fn schemas_in_every_format_are_stored_by_name_and_replaced_by_name() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let id = server.app().submit_id(RID, "f", json!({}));
    let schemas = || rt.inspect_json(&id)["schemas"].clone();
    assert_json(&schemas(), &json!([]), "no schemas yet");

    let post = |body: Value| {
        let resp = rt.post_schemas(&body);
        resp.expect_status(200);
        assert_json(&resp.json(), &json!({}), "schemas answer");
    };
    post(json!([
        {"functionName": "a", "schema": {"type": "string"}},
        {"function_name": "b", "schemaPayload": {"type": "number"}},
        {"name": "c", "schema": 3},
    ]));
    post(json!({"functions": [{"functionName": "d", "schema": {"d": true}}]}));
    post(json!({"schemas": [{"functionName": "e", "schema": {"e": true}}]}));
    post(json!({"f": {"type": "object"}, "a": {"replaced": true}}));
    // The Python SDK's own list: one ComputeModuleFunctionSchema per function, stored whole.
    post(python_sdk_schemas());
    let mut got = schemas().as_array().cloned().unwrap();
    got.sort_by_key(|s| s["function_name"].as_str().unwrap().to_string());
    assert_json(
        &json!(got),
        &json!([
            {"function_name": "a", "schema": {"replaced": true}},
            {"function_name": "b", "schema": {"type": "number"}},
            {"function_name": "c", "schema": 3},
            {"function_name": "d", "schema": {"d": true}},
            {"function_name": "e", "schema": {"e": true}},
            {"function_name": "f", "schema": {"type": "object"}},
            {"function_name": "py_add", "schema": python_sdk_schemas()[0]},
        ]),
        "stored schemas",
    );

    for (body, description) in [
        (
            &b"not json"[..],
            "The request body is not valid JSON: expected ident at line 1 column 2.",
        ),
        (b"3", "Schemas must be a JSON array or object."),
        (b"[1]", "Each schema entry must be a JSON object."),
        (
            br#"[{"schema": {}}]"#,
            "A schema entry has no 'functionName' (or 'function_name', 'name').",
        ),
    ] {
        assert_error(
            &rt.post_schemas_raw(body),
            400,
            "invalid_request",
            description,
        );
    }
    assert_error(
        &rt.with_token("wrong").post_schemas(&json!({"x": {}})),
        401,
        "invalid_module_auth_token",
        BAD_MODULE_TOKEN,
    );
    assert_eq!(schemas().as_array().unwrap().len(), 7);
}

#[test]
fn inspection_shows_the_whole_job_record_and_never_the_token() {
    let server = TestServer::start(|_| {});
    let rt = server.create_runtime(json!({
        "runtimeId": "rt", "deployedAppRid": RID, "displayName": "Inspected"
    }));
    let app = server.app();
    let id = app.submit_id(RID, "inspect", json!({"q": [1, "two"]}));

    let record = |id: &str, status: &str, extra: Value| {
        let job = server.job(id);
        let mut want = json!({
            "id": id,
            "runtime_id": "rt",
            "deployed_app_rid": RID,
            "branch": "master",
            "query_type": "inspect",
            "query": {"q": [1, "two"]},
            "source": "contour-async",
            "status": status,
            "submitted_at": job.submitted_at,
            "dispatched_at": job.dispatched_at(),
            "finished_at": job.finished_at(),
            "error_message": null,
            "result_content_type": null,
            "result_body_utf8": null,
            "result_body_base64": null,
            "result_size": null,
            "result_is_preview": false,
            "fault": null,
            "canceled_by": null,
        });
        for (k, v) in extra.as_object().unwrap() {
            want[k] = v.clone();
        }
        want
    };
    let check = |status: &str, extra: Value| {
        let resp = rt.inspect(&id);
        resp.expect_status(200);
        assert!(
            !resp.text().contains(&rt.token),
            "inspection leaks the module auth token: {}",
            resp.text()
        );
        let doc = resp.json();
        assert_json(&doc["job"], &record(&id, status, extra), "job record");
        assert_eq!(doc["runtime"]["runtime_id"], json!("rt"));
        assert_eq!(doc["runtime"]["display_name"], json!("Inspected"));
        assert_eq!(
            doc.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["job", "runtime", "schemas"]
        );
    };
    check("queued", json!({}));
    assert_eq!(rt.next_job_id(), id);
    check("running", json!({}));
    rt.post_result_typed(&id, b"{\"done\":true}", "application/json")
        .expect_status(204);
    check(
        "succeeded",
        json!({
            "result_content_type": "application/json",
            "result_body_utf8": "{\"done\":true}",
            "result_size": 13,
        }),
    );
    let job = server.job(&id);
    assert!(job.dispatched_at().is_some() && job.finished_at().is_some());

    assert_error(
        &send(
            &agent(),
            "GET",
            &format!("{}/ghost/jobs/{id}", server.runtimes_url()),
            &[],
            None,
        ),
        404,
        "not_found",
        "Compute-module runtime 'ghost' was not found.",
    );
    assert_error(
        &rt.inspect("foundry_job_nope"),
        404,
        "not_found",
        "Compute-module job 'foundry_job_nope' was not found.",
    );
}

#[test]
fn jobs_are_handed_out_in_fifo_order() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let ids: Vec<String> = (0..8)
        .map(|n| app.submit_id(RID, "f", json!({ "n": n })))
        .collect();
    let direct = server
        .running()
        .enqueue_direct("rt", "f", &json!({"n": 8}))
        .unwrap();
    for (n, id) in ids.iter().enumerate() {
        let envelope = rt.next_job();
        assert_eq!(envelope_job_id(&envelope), *id);
        assert_eq!(envelope["computeModuleJobV1"]["query"], json!({ "n": n }));
    }
    assert_eq!(rt.next_job_id(), direct.to_string());
}

#[test]
fn runtimes_never_see_each_others_jobs() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_millis(50));
    let a = server.runtime_bound("rt-a", RID);
    let b = server.runtime_bound("rt-b", OTHER_RID);
    let app = server.app();
    let for_a: Vec<String> = (0..3).map(|_| app.submit_id(RID, "f", json!({}))).collect();
    let resp = b.poll();
    resp.expect_status(204);
    assert!(resp.body.is_empty());
    let for_b = app.submit_id(OTHER_RID, "g", json!({}));
    assert_eq!(b.next_job_id(), for_b);
    b.poll().expect_status(204);
    for id in &for_a {
        assert_eq!(a.next_job_id(), *id);
    }
    a.poll().expect_status(204);
    assert_eq!(server.job(&for_b).runtime_id(), "rt-b");
}

#[test]
fn health_answers_ok() {
    let server = TestServer::start(|_| {});
    server.assert_alive();
}

#[test]
fn the_first_poll_of_a_session_is_answered_at_once() {
    // The TypeScript SDK posts its schemas only after its first poll returns. A client
    // timeout far below the poll wait shows the first poll was not held.
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_secs(60));
    let quick = agent_with_timeout(Duration::from_secs(5));
    let rt = server.runtime_bound("rt", RID).with_agent(quick.clone());
    let resp = rt.poll();
    resp.expect_status(204);
    assert!(resp.body.is_empty());
    // A reset starts a new session, whose first poll is again answered at once.
    let rt = server.runtime("rt").with_agent(quick.clone());
    rt.poll().expect_status(204);
    // A first poll with a job queued gets the job.
    let rt = server.runtime("rt").with_agent(quick);
    let id = server.app().submit_id(RID, "f", json!({}));
    assert_eq!(rt.poll_job_id(), id);
}

#[test]
fn expect_100_continue_gets_an_interim_answer_then_the_result_is_stored() {
    use std::io::{Read, Write};
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "f", json!({}));
    assert_eq!(rt.next_job_id(), id);
    // curl sends `Expect: 100-continue` for large bodies and waits for the interim answer.
    let body = pattern(4096);
    let head = format!(
        "POST {RUNTIMES}/rt/results/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Module-Auth-Token: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        rt.token,
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).expect("an interim answer");
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "interim answer: {interim}"
    );
    stream.write_all(&body).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 204 "), "final answer: {text}");
    assert_octets(&app.result_by_id(&id), &body);
}
