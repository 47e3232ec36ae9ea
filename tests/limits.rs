//! Bounded resources over HTTP: retention and expiry, the queue cap, the running-job limit.

use std::time::Duration;

use serde_json::json;

use crate::util::{
    assert_error, exec_body, expect_response, raw_exchange_paced, raw_request, TestServer,
};

const RID: &str = "ri.foundry.main.deployed-app.limits";

#[test]
fn evicted_jobs_answer_404_saying_they_expired_oldest_first() {
    let server = TestServer::start(|cfg| cfg.limits.max_retained_jobs = 2);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let ids: Vec<String> = (0..3)
        .map(|n| {
            let id = app.submit_id(RID, "q", json!({"n": n}));
            assert_eq!(rt.next_job_id(), id);
            rt.complete(&id, format!("r{n}").as_bytes());
            id
        })
        .collect();
    // The first finished job went; the two newest stay readable.
    let expired = format!(
        "Compute-module job '{}' expired: finished jobs are kept for --job-ttl, up to --max-retained-jobs.",
        ids[0]
    );
    assert_error(&app.status(&ids[0]), 404, "not_found", &expired);
    assert_error(&app.result_by_id(&ids[0]), 404, "not_found", &expired);
    for (n, id) in ids.iter().enumerate().skip(1) {
        app.status(id).expect_status(200);
        assert_eq!(app.result_by_id(id).body, format!("r{n}").into_bytes());
    }
}

#[test]
fn job_ttl_expires_finished_jobs_without_any_request() {
    let server = TestServer::start(|cfg| cfg.limits.job_ttl = Duration::ZERO);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, b"done");
    // The janitor sweeps about once a second; poll the observable state, bounded.
    crate::util::wait_for("the finished job to expire", || {
        app.status(&id).status == 404
    });
    let resp = app.status(&id);
    assert!(resp.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[test]
fn submits_past_the_queue_cap_get_503_and_queued_jobs_are_unharmed() {
    let server = TestServer::start(|cfg| cfg.limits.max_queued = 2);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let first = app.submit_id(RID, "q", json!({"n": 1}));
    let second = app.submit_id(RID, "q", json!({"n": 2}));
    let refused = app.submit(&exec_body(RID, "q", json!({"n": 3})));
    assert_error(
        &refused,
        503,
        "overloaded",
        "The emulator is overloaded: runtime 'rt' already has 2 queued jobs (--max-queued). Retry later.",
    );
    assert_eq!(refused.header("Retry-After"), Some("1"));
    let refused_sync = app.execute(&exec_body(RID, "q", json!({"n": 4})));
    assert_eq!(refused_sync.status, 503);
    // Both queued jobs still run, in order.
    for id in [&first, &second] {
        assert_eq!(&rt.next_job_id(), id);
        rt.complete(id, b"ok");
        assert_eq!(app.result_by_id(id).body, b"ok");
    }
}

#[test]
fn a_running_job_without_result_fails_after_max_job_runtime() {
    let server = TestServer::start(|cfg| cfg.limits.max_job_runtime = Duration::from_millis(100));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    crate::util::wait_for("the running job to fail", || {
        app.status_json(&id)["type"] == "failed"
    });
    let status = app.status_json(&id);
    assert_eq!(
        status["failed"]["message"],
        "the compute module posted no result within 0.1s (--max-job-runtime)"
    );
    // A late result is refused and the failure stays.
    assert_eq!(rt.post_result(&id, b"late").status, 409);
}

/// A server with one spare worker, one wait place of each kind and a 300 ms I/O deadline.
fn one_worker_short_io_timeout() -> TestServer {
    TestServer::start(|cfg| {
        cfg.threads = 1;
        cfg.wait_threads = 1;
        cfg.io_timeout = Duration::from_millis(300);
    })
}

/// A client that announces a large body and then stalls: its body is read on its own
/// connection thread, so no worker waits for it, and large bodies from others still go
/// through.
#[test]
fn a_stalled_upload_holds_neither_the_front_worker_nor_the_io_thread_for_long() {
    use std::io::Write;
    let server = one_worker_short_io_timeout();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST {}/compute-modules/jobs/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 5000\r\n\r\n{{\"deployedAppRid\"",
        crate::util::CONTOUR
    );
    stalled.write_all(head.as_bytes()).unwrap();
    server.assert_alive();
    // A 64 KiB result while `stalled` is still open (it stays open until the end).
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    let big = vec![b'x'; 64 * 1024];
    assert_eq!(rt.post_result(&id, &big).status, 204);
    assert_eq!(app.result_by_id(&id).body, big);
    drop(stalled);
}

/// A body whose pieces come further apart than the connection thread's read timeout (its
/// 250 ms tick) is read whole: what arrived before each timeout is kept. One that stops
/// coming gets 408 once `--io-timeout` has passed since its request began.
#[test]
fn a_body_read_across_read_timeouts_arrives_whole_and_a_stalled_one_gets_408() {
    let server = TestServer::start(|cfg| cfg.io_timeout = Duration::from_secs(20));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    let result: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    let url = rt.result_url(&id);
    let path = url
        .strip_prefix(&format!("http://{}", server.addr))
        .expect("a result URL on this server");
    let request = raw_request(
        "POST",
        path,
        &[
            ("Module-Auth-Token", &rt.token),
            ("Content-Type", "application/octet-stream"),
        ],
        &result,
        None,
    );
    let head_len = request.len() - result.len();
    let (head, body) = request.split_at(head_len);
    let pieces: Vec<&[u8]> = std::iter::once(head).chain(body.chunks(10_000)).collect();
    let answer = raw_exchange_paced(server.addr, &pieces, Duration::from_millis(400));
    assert_eq!(expect_response(answer, "paced result post").status, 204);
    assert_eq!(app.result_by_id(&id).body, result);

    // The same post on a server with a 300 ms deadline, stopping 1,000 bytes into its body
    // (the body is read before the request is routed, so the job need not exist there).
    let server = one_worker_short_io_timeout();
    let stalled = &request[..head_len + 1000];
    let answer = raw_exchange_paced(server.addr, &[stalled], Duration::ZERO);
    let resp = expect_response(answer, "stalled result post");
    assert_eq!(resp.status, 408);
    assert_eq!(
        resp.body,
        br#"{"error":"request_timeout","error_description":"The request did not arrive whole within 0.3 s."}"#
    );
}

/// A client that never reads a large answer: the answer is written by its own connection
/// thread, so the workers and the next large answer are not held.
#[test]
fn a_client_that_never_reads_holds_no_thread_for_long() {
    use std::io::Write;
    let server = one_worker_short_io_timeout();
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    // Far larger than any loopback socket buffer, so the write must block.
    let big = vec![7u8; 32 * 1024 * 1024];
    assert_eq!(rt.post_result(&id, &big).status, 204);
    let mut lazy = std::net::TcpStream::connect(server.addr).unwrap();
    let body = format!(r#"{{"id":"{id}"}}"#);
    let request = format!(
        "PUT {}/jobs/result/v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: {}\r\n\r\n{body}",
        crate::util::CONTOUR,
        body.len()
    );
    lazy.write_all(request.as_bytes()).unwrap();
    server.assert_alive();
    assert_eq!(app.result_by_id(&id).body.len(), big.len());
    drop(lazy);
}

/// A request asking to upgrade (what `curl --http2` sends over plain HTTP) has no body: it is
/// answered, and it does not hold a worker reading a socket that never ends.
#[test]
fn an_upgrade_request_is_answered_and_holds_no_worker() {
    use std::io::{Read, Write};
    let server = TestServer::start(|cfg| cfg.threads = 1);
    let mut upgrade = std::net::TcpStream::connect(server.addr).unwrap();
    upgrade
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    upgrade
        .write_all(
            b"GET /_emulate/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .unwrap();
    let mut answer = [0u8; 12];
    upgrade.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    server.assert_alive();
}

/// A request pipelined behind a sync execute that waits is not read until that execute is
/// answered, so the workers stay free for everyone else.
#[test]
fn a_request_pipelined_behind_a_waiting_execute_does_not_block_the_worker() {
    use std::io::Write;
    let server = TestServer::start(|cfg| cfg.threads = 1);
    let _rt = server.runtime_bound("idle", RID);
    let body = format!(r#"{{"deployedAppRid":"{RID}","queryType":"q"}}"#);
    let pipelined = format!(
        "POST {contour}/compute-modules/jobs/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\
         Content-Length: {len}\r\n\r\n{body}GET /_emulate/health HTTP/1.1\r\nHost: x\r\n\r\n",
        contour = crate::util::CONTOUR,
        len = body.len()
    );
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.write_all(pipelined.as_bytes()).unwrap();
    // The execute waits (no module polls "idle") for the 5 s test timeout; meanwhile another
    // client is served by the workers.
    server.assert_alive();
    drop(conn);
}

/// A sync execute whose job ends and is evicted at once (no finished job kept) still answers
/// the result: the wait was registered with the job.
#[test]
fn an_execute_answers_its_result_even_when_the_job_is_evicted_at_once() {
    let server = TestServer::start(|cfg| cfg.limits.max_retained_jobs = 0);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    std::thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "q", json!({"n": 1}))));
        let id = rt.next_job_id();
        rt.complete(&id, b"kept for the waiter");
        let resp = execute.join().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"kept for the waiter");
    });
}

/// The byte budget (`--max-retained-bytes`) counts queued queries: past it a submit is
/// refused with 503 and nothing already queued is touched.
#[test]
fn queued_queries_count_against_the_byte_budget() {
    let query = json!({"pad": "x".repeat(1000)});
    let size = serde_json::to_string(&query).unwrap().len() as u64;
    let server = TestServer::start(|cfg| cfg.limits.max_retained_bytes = 3 * size);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let queued: Vec<String> = (0..3)
        .map(|_| app.submit_id(RID, "q", query.clone()))
        .collect();
    let refused = app.submit(&exec_body(RID, "q", query.clone()));
    assert_error(
        &refused,
        503,
        "overloaded",
        &format!(
            "The emulator is overloaded: queued and running jobs hold {} bytes of queries; this \
             {size}-byte query would pass the {}-byte budget (--max-retained-bytes). Retry later.",
            3 * size,
            3 * size
        ),
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    // A finished job gives its query's room back (its result is kept while it is the newest).
    assert_eq!(rt.next_job_id(), queued[0]);
    rt.complete(&queued[0], b"");
    assert_eq!(app.submit(&exec_body(RID, "q", query)).status, 200);
    for id in &queued[1..] {
        assert_eq!(app.status_json(id)["type"], json!("queued"));
    }
}

/// A result larger than the whole byte budget could never be read back: the post gets 413
/// and the job fails saying why, so its application is answered.
#[test]
fn a_result_larger_than_the_byte_budget_is_413_and_fails_the_job() {
    let server = TestServer::start(|cfg| cfg.limits.max_retained_bytes = 4096);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    let message = format!(
        "The result of job '{id}' is larger than the 4096-byte budget for kept queries and \
         results (--max-retained-bytes)."
    );
    assert_error(
        &rt.post_result(&id, &[7u8; 4097]),
        413,
        "payload_too_large",
        &message,
    );
    assert_eq!(
        app.status_json(&id),
        json!({"type": "failed", "failed": {"message": message}})
    );
    // Exactly the budget is kept and readable.
    let id = app.submit_id(RID, "q", json!({}));
    assert_eq!(rt.next_job_id(), id);
    rt.complete(&id, &[8u8; 4096]);
    assert_eq!(app.result_by_id(&id).body, vec![8u8; 4096]);
}

/// A sync execute's answered result is kept only as a preview: inspection shows its first
/// 4096 bytes and its size, and the bytes no longer count against the budget.
#[test]
fn a_result_answered_to_a_sync_execute_is_kept_as_a_preview() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let result: Vec<u8> = (0..10_000u32).map(|n| (n % 251) as u8).collect();
    let id = std::thread::scope(|s| {
        let execute = s.spawn(|| app.execute(&exec_body(RID, "q", json!({"n": 1}))));
        let id = rt.next_job_id();
        rt.complete(&id, &result);
        let resp = execute.join().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, result, "the execute answers every byte");
        id
    });
    let job = &rt.inspect_json(&id)["job"];
    assert_eq!(job["status"], json!("succeeded"));
    assert_eq!(job["result_size"], json!(10_000));
    assert_eq!(job["result_is_preview"], json!(true));
    let preview = job["result_body_base64"]
        .as_str()
        .expect("binary, so base64");
    assert_eq!(
        preview,
        foundry_emulator::api::wire::base64_encode(&result[..4096])
    );
    assert_error(
        &app.result_by_id(&id),
        404,
        "not_found",
        &format!(
            "The result of compute-module job '{id}' was answered to its sync execute and is not \
             kept (inspection shows its first 4096 bytes)."
        ),
    );
}
