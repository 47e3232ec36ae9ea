//! Concurrency: many sync executes at once, each paired with its own answer; long polls that
//! wake when a job arrives; small pools; load shedding; resets and shutdown releasing waiters.

use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.concurrency";

/// The bytes the echo runtime answers for a nonce (binary tail included).
fn echo(nonce: &str) -> Vec<u8> {
    let mut bytes = format!("echo:{nonce}").into_bytes();
    bytes.extend_from_slice(&[0x00, 0xff]);
    bytes
}

/// A runtime thread: polls like an SDK, answers each `echo` job with [`echo`] of its nonce,
/// and returns the number of echo jobs it served when it receives a `stop` job.
fn echo_runtime(rt: Rt) -> usize {
    let mut served = 0;
    loop {
        let resp = rt.poll();
        if resp.status == 204 {
            continue;
        }
        resp.expect_status(200);
        let envelope = resp.json();
        let job = &envelope["computeModuleJobV1"];
        let id = job["jobId"].as_str().unwrap();
        match job["queryType"].as_str().unwrap() {
            "stop" => {
                rt.complete(id, b"stopped");
                return served;
            }
            "echo" => {
                let nonce = job["query"]["nonce"].as_str().unwrap();
                rt.complete(id, &echo(nonce));
                served += 1;
            }
            other => panic!("unexpected query type {other}"),
        }
    }
}

/// Enqueues one `stop` job per runtime thread.
fn stop_runtimes(server: &TestServer, runtime_id: &str, threads: usize) {
    for _ in 0..threads {
        server
            .running()
            .enqueue_direct(runtime_id, "stop", &json!({}))
            .expect("stop job");
    }
}

fn nonce_body(nonce: &str) -> Value {
    exec_body(RID, "echo", json!({ "nonce": nonce }))
}

/// `clients` sync executes released together by a barrier; each returns (nonce, answer).
fn concurrent_executes<'s>(
    s: &'s thread::Scope<'s, '_>,
    server: &'s TestServer,
    barrier: &'s Barrier,
    clients: usize,
    tag: &'s str,
    done: Option<mpsc::Sender<(String, Resp)>>,
) -> Vec<thread::ScopedJoinHandle<'s, (String, Resp)>> {
    (0..clients)
        .map(|n| {
            let app = server.app();
            let done = done.clone();
            s.spawn(move || {
                let nonce = format!("{tag}-{n}");
                barrier.wait();
                let resp = app.execute(&nonce_body(&nonce));
                if let Some(done) = done {
                    let _ = done.send((nonce.clone(), resp.clone()));
                }
                (nonce, resp)
            })
        })
        .collect()
}

#[test]
fn hundred_concurrent_sync_executes_over_four_runtime_threads_pair_answers() {
    const CLIENTS: usize = 100;
    const RUNTIME_THREADS: usize = 4;
    let server = TestServer::start(|cfg| cfg.execute_timeout = Duration::from_secs(30));
    let rt = server.runtime_bound("rt", RID);
    let barrier = Barrier::new(CLIENTS);
    thread::scope(|s| {
        let runtimes: Vec<_> = (0..RUNTIME_THREADS)
            .map(|_| {
                let rt = rt.with_agent(agent());
                s.spawn(move || echo_runtime(rt))
            })
            .collect();
        let clients = concurrent_executes(s, &server, &barrier, CLIENTS, "hundred", None);
        for client in clients {
            let (nonce, resp) = client.join().unwrap();
            assert_octets(&resp, &echo(&nonce));
        }
        stop_runtimes(&server, "rt", RUNTIME_THREADS);
        let served: usize = runtimes.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(served, CLIENTS);
    });
}

#[test]
fn a_long_poll_returns_as_soon_as_a_job_arrives() {
    // The poll wait is far above the client timeout: if the job arrives at all, the wake worked.
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_secs(60));
    let rt = server
        .runtime_bound("rt", RID)
        .with_agent(agent_with_timeout(Duration::from_secs(10)));
    let app = server.app();
    thread::scope(|s| {
        let before = server.after_first_poll(&rt);
        let poll = s.spawn(|| rt.poll());
        server.wait_new_poll("rt", before);
        let id = app.submit_id(RID, "wake", json!({"x": 1}));
        let resp = poll.join().unwrap();
        resp.expect_status(200);
        assert_eq!(envelope_job_id(&resp.json()), id);
    });
    // Same for a sync execute: the parked poll takes it and the execute gets the answer.
    thread::scope(|s| {
        let before = server.after_first_poll(&rt);
        let poll = s.spawn(|| rt.poll());
        server.wait_new_poll("rt", before);
        let execute = s.spawn(|| app.execute(&nonce_body("woken")));
        let resp = poll.join().unwrap();
        resp.expect_status(200);
        let id = envelope_job_id(&resp.json());
        rt.complete(&id, &echo("woken"));
        assert_octets(&execute.join().unwrap(), &echo("woken"));
    });
}

#[test]
fn a_reset_releases_a_parked_poll_of_the_old_session() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_secs(60));
    let old = server
        .runtime_bound("rt", RID)
        .with_agent(agent_with_timeout(Duration::from_secs(10)));
    thread::scope(|s| {
        let before = server.after_first_poll(&old);
        let poll = s.spawn(|| old.poll());
        server.wait_new_poll("rt", before);
        let new = server.runtime("rt");
        let resp = poll.join().unwrap();
        resp.expect_status(204);
        assert!(resp.body.is_empty());
        // The old session is over; the new one gets the jobs.
        assert_error(
            &old.poll(),
            401,
            "invalid_module_auth_token",
            "The Module-Auth-Token header is invalid.",
        );
        let id = server.app().submit_id(RID, "f", json!({}));
        assert_eq!(new.next_job_id(), id);
    });
}

#[test]
fn a_small_reserve_serves_threads_plus_twenty_concurrent_executes() {
    const THREADS: usize = 2;
    const CLIENTS: usize = THREADS + 20;
    // Every execute has a wait place; only the two spare workers serve the runtime's polls
    // and result posts, which must never queue behind the waiting executes.
    let server = TestServer::start(|cfg| {
        cfg.threads = THREADS;
        cfg.wait_threads = CLIENTS;
        cfg.execute_timeout = Duration::from_secs(30);
    });
    let rt = server.runtime_bound("rt", RID);
    let barrier = Barrier::new(CLIENTS);
    thread::scope(|s| {
        let runtime = s.spawn(|| echo_runtime(rt.with_agent(agent())));
        let clients = concurrent_executes(s, &server, &barrier, CLIENTS, "small", None);
        for client in clients {
            let (nonce, resp) = client.join().unwrap();
            assert_octets(&resp, &echo(&nonce));
        }
        stop_runtimes(&server, "rt", 1);
        assert_eq!(runtime.join().unwrap(), CLIENTS);
    });
}

#[test]
fn executes_beyond_the_wait_places_get_503_at_once_and_the_rest_200() {
    const THREADS: usize = 2;
    const WAIT_THREADS: usize = 4;
    const CLIENTS: usize = THREADS + 20;
    let server = TestServer::start(|cfg| {
        cfg.threads = THREADS;
        cfg.wait_threads = WAIT_THREADS;
        cfg.execute_timeout = Duration::from_secs(30);
    });
    let rt = server.runtime_bound("rt", RID);
    let overloaded = format!(
        "The emulator is overloaded: all {WAIT_THREADS} sync-execute wait places are taken (--wait-threads). Retry later."
    );
    let barrier = Barrier::new(CLIENTS);
    thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel();
        let clients = concurrent_executes(s, &server, &barrier, CLIENTS, "shed", Some(done_tx));
        // Nobody answers jobs yet, so exactly the wait places are taken and kept: every
        // other request must come back at once with 503.
        for _ in 0..CLIENTS - WAIT_THREADS {
            let (nonce, resp) = done_rx
                .recv_timeout(CLIENT_TIMEOUT)
                .expect("the requests beyond capacity are answered, not held");
            eprintln!("shed: {nonce}");
            assert_error(&resp, 503, "overloaded", &overloaded);
        }
        // Refused requests left no job behind.
        assert_eq!(server.queued("rt"), WAIT_THREADS);
        let runtime = s.spawn(|| echo_runtime(rt.with_agent(agent())));
        let mut ok = 0;
        for client in clients {
            let (nonce, resp) = client.join().unwrap();
            if resp.status == 503 {
                assert_error(&resp, 503, "overloaded", &overloaded);
            } else {
                assert_octets(&resp, &echo(&nonce));
                ok += 1;
            }
        }
        assert_eq!(ok, WAIT_THREADS);
        stop_runtimes(&server, "rt", 1);
        assert_eq!(runtime.join().unwrap(), WAIT_THREADS);
        // The places are free again.
        let app = server.app();
        let runtime = s.spawn(|| echo_runtime(rt.with_agent(agent())));
        assert_octets(&app.execute(&nonce_body("again")), &echo("again"));
        stop_runtimes(&server, "rt", 1);
        assert_eq!(runtime.join().unwrap(), 1);
    });
}

#[test]
fn shutdown_answers_parked_polls_and_blocked_executes() {
    let mut server = TestServer::start(|cfg| {
        cfg.poll_wait = Duration::from_secs(60);
        cfg.execute_timeout = Duration::from_secs(60);
    });
    let idle = server
        .runtime("idle")
        .with_agent(agent_with_timeout(Duration::from_secs(10)));
    let _busy = server.runtime_bound("busy", RID);
    let mut app = server.app();
    app.agent = agent_with_timeout(Duration::from_secs(10));
    let before = server.after_first_poll(&idle);
    let poll = thread::spawn(move || idle.poll());
    let execute = {
        let app = app.clone();
        thread::spawn(move || app.execute(&nonce_body("never answered")))
    };
    server.wait_new_poll("idle", before);
    wait_for("the execute's job to be queued", || {
        server.queued("busy") == 1
    });

    let (stopped_tx, stopped_rx) = mpsc::channel();
    thread::spawn(move || {
        server.shutdown();
        let _ = stopped_tx.send(());
    });
    stopped_rx
        .recv_timeout(CLIENT_TIMEOUT)
        .expect("shutdown returns promptly with waits in progress");
    let resp = poll.join().unwrap();
    resp.expect_status(204);
    assert_error(
        &execute.join().unwrap(),
        500,
        "job_failed",
        "the emulator shut down",
    );
}

/// A poll that reaches the job table after shutdown must not wait out its deadline: the
/// HTTP server joins its workers after `JobTable::shutdown`, so such a poll would hold
/// `Running::shutdown` for up to the poll wait. Driven on the table directly, because over
/// HTTP the window (between `JobTable::shutdown` and the workers stopping) is tiny.
#[test]
fn a_poll_reaching_the_table_after_shutdown_returns_at_once() {
    use foundry_emulator::jobs::{JobTable, NeverAbandon, Taker};
    use foundry_emulator::jobs::{Limits, SessionSpec};
    use std::sync::Arc;
    use std::time::Instant;

    let table = Arc::new(JobTable::new(Limits::default()));
    let session = table.create_runtime(SessionSpec {
        runtime_id: "rt".to_string(),
        ..SessionSpec::default()
    });
    table.shutdown();
    let (tx, rx) = mpsc::channel();
    let token = session.token.expose().to_string();
    let waiter = Arc::clone(&table);
    thread::spawn(move || {
        let got = waiter.next_job(
            "rt",
            Some(&token),
            Instant::now() + Duration::from_secs(60),
            Taker::Module,
            &NeverAbandon,
        );
        let _ = tx.send(got.map(|job| job.is_some()));
    });
    let got = rx
        .recv_timeout(CLIENT_TIMEOUT)
        .expect("next_job after shutdown answers at once instead of waiting out its 60 s deadline");
    assert_eq!(got, Ok(false));
}
