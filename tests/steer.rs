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
    assert_eq!(job.deployed_app_rid(), None);
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

const BASIC: &str = "ri.foundry.main.deployed-app.basic";

fn put_faults(server: &TestServer, rules: Value) -> Resp {
    let body = serde_json::to_vec(&json!({ "faults": rules })).unwrap();
    let headers = [("Content-Type", "application/json")];
    send(
        &agent(),
        "PUT",
        &server.url("/_emulate/faults"),
        &headers,
        Some(&body),
    )
}

fn listed(server: &TestServer) -> Vec<Value> {
    let resp = send(&agent(), "GET", &server.url("/_emulate/jobs"), &[], None);
    resp.expect_status(200);
    resp.json()["jobs"].as_array().unwrap().clone()
}

#[test]
fn reset_answers_every_waiter_at_once_and_restores_the_seed_state() {
    let server = TestServer::seeded(|cfg| {
        cfg.execute_timeout = std::time::Duration::from_secs(30);
        cfg.poll_wait = std::time::Duration::from_secs(30);
    });
    let extra = server.runtime_bound("extra", "ri.foundry.main.deployed-app.extra");
    let master = server.seeded_runtime("rt-master", "seed-master-token");
    // The seed token is replaced by a reset over HTTP; the emulator reset brings it back.
    let replaced =
        server.create_runtime(json!({"runtimeId": "rt-master", "deployedAppRid": BASIC}));
    put_faults(
        &server,
        json!([{"deployed_app_rid": "nothing-here", "fail_rate": 1}]),
    )
    .expect_status(200);
    let app = server.app();
    std::thread::scope(|s| {
        let executes: Vec<_> = (0..20)
            .map(|n| {
                let app = &app;
                s.spawn(move || app.execute(&exec_body(BASIC, "q", json!({"n": n}))))
            })
            .collect();
        extra.poll().expect_status(204); // the session's first poll answers at once
        let polls: Vec<_> = (0..4)
            .map(|_| {
                let extra = &extra;
                s.spawn(move || extra.poll())
            })
            .collect();
        wait_for("20 jobs queued", || server.queued("rt-master") == 20);
        wait_for("4 polls held", || {
            server
                .running()
                .runtimes()
                .iter()
                .any(|rt| &*rt.id == "extra" && rt.polls_held == 4)
        });
        let started = std::time::Instant::now();
        let resp = send(
            &agent(),
            "POST",
            &server.url("/_emulate/reset"),
            &[],
            Some(b""),
        );
        resp.expect_status(200);
        assert_json(
            &resp.json(),
            &json!({"jobs_failed": 20, "jobs_dropped": 20, "runtimes_removed": 1,
                    "runtimes_restored": 2, "faults_cleared": 1}),
            "reset answer",
        );
        for execute in executes {
            let resp = execute.join().unwrap();
            assert_error(&resp, 500, "job_failed", "the emulator was reset");
        }
        for poll in polls {
            assert_eq!(poll.join().unwrap().status, 204);
        }
        eprintln!(
            "every waiter answered {:?} after the reset",
            started.elapsed()
        );
    });
    // The seed state, exactly.
    assert!(listed(&server).is_empty(), "no jobs listed");
    assert_eq!(extra.poll().status, 404, "an HTTP-created runtime is gone");
    assert_eq!(
        replaced.poll().status,
        401,
        "the token it was reset to stops working"
    );
    assert_eq!(master.poll().status, 204, "the seed token works again");
    let faults = send(&agent(), "GET", &server.url("/_emulate/faults"), &[], None);
    assert_eq!(faults.json(), json!({"faults": []}));
    // And jobs flow again through the seed bindings.
    let body = json!({"deployedAppRid": BASIC, "deployedAppBranch": "master", "queryType": "q", "query": {}});
    let resp = app.submit(&body);
    resp.expect_status(200);
    assert_eq!(master.next_job_id(), resp.json()["id"].as_str().unwrap());
}

#[test]
fn each_fault_kind_does_what_it_says() {
    let server = TestServer::start(|cfg| cfg.execute_timeout = std::time::Duration::from_secs(1));
    let rt = server.runtime_bound("rt", BASIC);
    let app = server.app();
    rt.poll().expect_status(204); // the session's first poll

    // fail: the sync execute answers 500 at once; the runtime never sees the job.
    put_faults(
        &server,
        json!([{"deployed_app_rid": BASIC, "fail_rate": 1, "fail_message": "boom"}]),
    )
    .expect_status(200);
    assert_error(
        &app.execute(&exec_body(BASIC, "q", json!({}))),
        500,
        "job_failed",
        "boom",
    );
    let id = app.submit_id(BASIC, "q", json!({}));
    assert_eq!(
        app.status_json(&id),
        json!({"type": "failed", "failed": {"message": "boom"}})
    );
    assert_eq!(server.job(&id).fault(), Some("fault rule 0: failed"));

    // reject: 503 with Retry-After, nothing created.
    put_faults(
        &server,
        json!([{"deployed_app_rid": BASIC, "reject_rate": 1}]),
    )
    .expect_status(200);
    let before = listed(&server).len();
    let resp = app.submit(&exec_body(BASIC, "q", json!({})));
    assert_error(
        &resp,
        503,
        "overloaded",
        "The emulator is overloaded: fault rule 0 rejected this submit. Retry later.",
    );
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(listed(&server).len(), before, "nothing was created");

    // drop: never handed out; a sync caller sees its timeout.
    put_faults(
        &server,
        json!([{"deployed_app_rid": BASIC, "drop_rate": 1}]),
    )
    .expect_status(200);
    let resp = app.execute(&exec_body(BASIC, "q", json!({})));
    assert_eq!(resp.status, 504);
    let dropped = app.submit_id(BASIC, "q", json!({}));
    assert_eq!(rt.poll().status, 204, "a dropped job is never handed out");
    assert_eq!(app.status_json(&dropped)["type"], json!("queued"));

    // delay: handed out later, and the rule can change meanwhile (1.5 s: long enough that
    // the job submitted after it is surely in the channel first).
    put_faults(
        &server,
        json!([{"deployed_app_rid": BASIC, "delay_ms": 1500}]),
    )
    .expect_status(200);
    let delayed = app.submit_id(BASIC, "q", json!({}));
    assert_eq!(
        server.job(&delayed).fault(),
        Some("fault rule 0: delayed 1500 ms")
    );
    put_faults(&server, json!([])).expect_status(200);
    let direct = app.submit_id(BASIC, "q", json!({}));
    // The undelayed job submitted after it is handed out first.
    assert_eq!(rt.next_job_id(), direct);
    assert_eq!(rt.next_job_id(), delayed);

    // A delay longer than the execute timeout: the sync caller gets 504 at its timeout.
    put_faults(
        &server,
        json!([{"deployed_app_rid": BASIC, "delay_ms": [2000, 2500]}]),
    )
    .expect_status(200);
    assert_eq!(app.execute(&exec_body(BASIC, "q", json!({}))).status, 504);

    let metrics = send(&agent(), "GET", &server.url("/metrics"), &[], None).text();
    for effect in ["fail", "reject", "drop", "delay"] {
        assert!(
            metrics.contains(&format!(
                "foundry_emulator_faults_total{{effect=\"{effect}\"}}"
            )),
            "{effect} is counted: {metrics}"
        );
    }
}

#[test]
fn a_fixed_seed_gives_the_same_faults_twice_and_max_jobs_limits_a_rule() {
    let mut seed = Seed::default();
    seed.add_builtin("echo-rt", ECHO_RID, Builtin::Echo);
    let server = TestServer::start(move |cfg| {
        cfg.seed = seed;
        cfg.fault_seed = 42;
    });
    let app = server.app();
    let pattern = || -> Vec<bool> {
        put_faults(
            &server,
            json!([{"deployed_app_rid": ECHO_RID, "fail_rate": 0.5}]),
        )
        .expect_status(200);
        (0..30)
            .map(|n| {
                app.execute(&exec_body(ECHO_RID, "q", json!({"n": n})))
                    .status
                    == 200
            })
            .collect()
    };
    let first = pattern();
    assert_eq!(first, pattern(), "the same rules and seed, the same faults");
    let passed = first.iter().filter(|ok| **ok).count();
    assert!((5..25).contains(&passed), "about half pass: {passed}");

    // An application's retry loop against "fail twice, then succeed".
    put_faults(
        &server,
        json!([{"deployed_app_rid": ECHO_RID, "fail_rate": 1, "max_jobs": 2}]),
    )
    .expect_status(200);
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        let resp = app.execute(&exec_body(ECHO_RID, "q", json!({"try": attempts})));
        if resp.status == 200 || attempts == 5 {
            break resp;
        }
        assert_error(&resp, 500, "job_failed", "Injected failure (fault rule 0).");
    };
    assert_eq!(attempts, 3);
    assert_octets(&answer, br#"{"try":3}"#);
}

#[test]
fn bad_fault_rules_are_400_naming_the_field_and_the_old_rules_stay() {
    let server = TestServer::start(|_| {});
    let good = json!([{"deployed_app_rid": BASIC, "delay_ms": [5, 10], "max_jobs": 1}]);
    assert_eq!(
        put_faults(&server, good.clone()).json(),
        json!({"faults": good})
    );
    let cases = [
        (
            json!([{"deployed_app_rid": BASIC, "fail_rat": 1}]),
            "faults[0] has an unknown key 'fail_rat' (known: deployed_app_rid, branch, query_type, delay_ms, fail_rate, fail_message, drop_rate, reject_rate, max_jobs).",
        ),
        (
            json!([{"deployed_app_rid": BASIC}, {"deployed_app_rid": BASIC, "fail_rate": 2}]),
            "faults[1].fail_rate must be a number from 0 to 1.",
        ),
        (
            json!([{"deployed_app_rid": BASIC, "delay_ms": -1}]),
            "faults[0].delay_ms must be a non-negative number of milliseconds or [min, max].",
        ),
        (json!([{"branch": "dev"}]), "faults[0].deployed_app_rid is required."),
    ];
    for (rules, message) in cases {
        assert_error(&put_faults(&server, rules), 400, "invalid_request", message);
    }
    let now = send(&agent(), "GET", &server.url("/_emulate/faults"), &[], None);
    assert_eq!(
        now.json(),
        json!({"faults": good}),
        "the previous rules stay"
    );
    let cleared = send(
        &agent(),
        "DELETE",
        &server.url("/_emulate/faults"),
        &[],
        None,
    );
    assert_eq!(cleared.json(), json!({"faults": []}));
}

#[test]
fn seed_faults_apply_from_start_up() {
    let seed = Seed::from_json(&json!({"foundry": {"compute_modules": {
        "runtimes": [{"runtime_id": "rt"}],
        "deployed_apps": [{"deployed_app_rid": BASIC, "runtime_id": "rt"}],
        "faults": [{"deployed_app_rid": BASIC, "query_type": "flaky", "fail_rate": 1}],
    }}}))
    .expect("the seed parses");
    let server = TestServer::start(move |cfg| cfg.seed = seed);
    let app = server.app();
    let flaky = app.submit_id(BASIC, "flaky", json!({}));
    assert_eq!(app.status_json(&flaky)["type"], json!("failed"));
    let fine = app.submit_id(BASIC, "fine", json!({}));
    assert_eq!(app.status_json(&fine)["type"], json!("queued"));
    let bad = Seed::from_json(&json!({"foundry": {"compute_modules": {
        "faults": [{"deployed_app_rid": BASIC, "drop_rate": "often"}],
    }}}));
    assert_eq!(
        bad.unwrap_err().2,
        "foundry.compute_modules.faults[0].drop_rate must be a number from 0 to 1."
    );
}

/// The delay clock's reset and shutdown paths: a job delayed for a minute is failed by a
/// reset at once (its application answered) and dropped with the rest, and a delayed job
/// left at shutdown does not hold the stop.
#[test]
fn reset_and_shutdown_end_fault_delayed_jobs_at_once() {
    let mut server = TestServer::seeded(|_| {});
    let minute = json!([{"deployed_app_rid": BASIC, "delay_ms": 60_000}]);
    put_faults(&server, minute.clone()).expect_status(200);
    let app = server.app();
    let body = json!({"deployedAppRid": BASIC, "deployedAppBranch": "master", "queryType": "q", "query": {}});
    std::thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&body));
        wait_for("the delayed job", || listed(&server).len() == 1);
        let reset = send(
            &agent(),
            "POST",
            &server.url("/_emulate/reset"),
            &[],
            Some(b""),
        );
        assert_eq!(reset.json()["jobs_failed"], json!(1));
        assert_error(
            &execute.join().unwrap(),
            500,
            "job_failed",
            "the emulator was reset",
        );
    });
    assert!(
        listed(&server).is_empty(),
        "the delayed job is dropped with the rest"
    );

    put_faults(&server, minute).expect_status(200);
    let delayed = app.submit(&body);
    delayed.expect_status(200);
    let started = std::time::Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "shutdown waited {:?} with a delayed job pending",
        started.elapsed()
    );
}
