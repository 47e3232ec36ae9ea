//! Availability: slow, stalled, vanished and idle clients never delay anyone else; an
//! abandoned poll loses its job to a live poller; a low fd limit and SIGTERM with a stalled
//! client are survived cleanly; `--max-queued` counts only jobs that are really queued.
//!
//! Every test is bounded: timeouts on every socket and agent, background threads that stop by
//! themselves or in a guard's `Drop`, child processes killed by a guard. The tests in this
//! module take turns (one lock) so that their 2 s and 1 s deadlines measure the server, not
//! each other's hundreds of sockets on a small machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use foundry_emulator::config::{Seed, SeedApp, SeedRuntime};
use foundry_emulator::runtimes::builtin::Builtin;
use foundry_emulator::{Config, JobState};
use serde_json::json;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-emulator");
/// Bound to the in-process built-in echo runtime `echo-rt`.
const ECHO_RID: &str = "ri.foundry.main.deployed-app.availability-echo";
/// Bound to runtimes the tests drive by hand (or never).
const RID: &str = "ri.foundry.main.deployed-app.availability";
/// What every timed request must beat.
const FAST: Duration = Duration::from_secs(2);
/// Client timeout of the timed requests: a hung server fails them instead of hanging them.
const TIMED_CLIENT: Duration = Duration::from_secs(10);
/// How long a child process may take to print its address.
const CHILD_START: Duration = Duration::from_secs(30);

/// One test of this module at a time (see the module doc).
fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit: the in-process server and the
/// test's own sockets together need well over a thousand descriptors.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= 4096,
        "RLIMIT_NOFILE hard limit {} is too low for these tests",
        limit.rlim_max
    );
}

/// A server whose built-in echo runtime `echo-rt` is bound to [`ECHO_RID`].
fn echo_server(configure: impl FnOnce(&mut Config)) -> TestServer {
    let seed = Seed {
        runtimes: vec![SeedRuntime {
            runtime_id: "echo-rt".to_string(),
            module_auth_token: None,
            display_name: None,
            builtin: Some(Builtin::Echo),
            oauth_client: None,
            sources: None,
        }],
        deployed_apps: vec![SeedApp {
            deployed_app_rid: ECHO_RID.to_string(),
            runtime_id: "echo-rt".to_string(),
            branch: "master".to_string(),
            display_name: None,
            active: true,
        }],
        ..Seed::default()
    };
    TestServer::start(|cfg| {
        cfg.seed = seed;
        configure(cfg);
    })
}

/// A raw execute/submit body with `query` spliced in verbatim (echo answers exactly it).
fn raw_body(rid: &str, query: &str) -> Vec<u8> {
    format!(r#"{{"deployedAppRid":"{rid}","queryType":"q","query":{query}}}"#).into_bytes()
}

/// A connection with 5 s timeouts on connect, read and write.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Whether the server has sent something (or closed): peeks, so nothing is consumed.
fn has_data(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let got =
        !matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    got
}

/// Runs `request` on its own thread and returns its answer, panicking unless it came within
/// `limit`. (A late request's thread ends by its own client timeout.)
fn within(
    limit: Duration,
    what: &str,
    request: impl FnOnce() -> Result<Resp, String> + Send + 'static,
) -> Resp {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(request());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(resp)) => {
            eprintln!(
                "{what}: answered {} in {:?}",
                resp.status,
                started.elapsed()
            );
            resp
        }
        Ok(Err(e)) => panic!("{what}: failed after {:?}: {e}", started.elapsed()),
        Err(_) => panic!("{what}: not answered within {limit:?}"),
    }
}

/// A timed sync execute with the app's bearer token.
fn timed_execute(server: &TestServer, what: &str, body: Vec<u8>) -> Resp {
    let url = server.execute_url();
    within(FAST, what, move || {
        try_send(
            &agent_with_timeout(TIMED_CLIENT),
            "POST",
            &url,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer test-token"),
            ],
            Some(&body),
        )
    })
}

/// A timed `GET /_emulate/health`, asserted to be 200 `{"status":"ok"}`.
fn timed_health(server: &TestServer) {
    let url = server.url("/_emulate/health");
    let resp = within(FAST, "health check", move || {
        try_send(&agent_with_timeout(TIMED_CLIENT), "GET", &url, &[], None)
    });
    resp.expect_status(200);
    assert_json(&resp.json(), &json!({"status": "ok"}), "health");
}

/// The path part of a URL the server handed out (`getJobUri`, …).
fn path_of(server: &TestServer, url: &str) -> String {
    url.strip_prefix(&server.base_url)
        .unwrap_or_else(|| panic!("{url} is not under {}", server.base_url))
        .to_string()
}

/// A raw long poll of `rt`, written on a fresh connection that the caller holds (or drops).
fn raw_poll(server: &TestServer, rt: &Rt) -> TcpStream {
    let path = path_of(server, rt.session["getJobUri"].as_str().unwrap());
    let request = raw_request(
        "GET",
        &path,
        &[("Module-Auth-Token", rt.token.as_str())],
        b"",
        None,
    );
    let mut stream = connect(server.addr);
    stream.write_all(&request).expect("write the poll");
    stream
}

/// Starts `rt.poll()` on its own thread (its own agent); the receiver gets the answer.
fn poll_in_background(rt: &Rt, timeout: Duration) -> mpsc::Receiver<Result<Resp, String>> {
    let (tx, rx) = mpsc::channel();
    let url = rt.session["getJobUri"].as_str().unwrap().to_string();
    let token = rt.token.clone();
    thread::spawn(move || {
        let got = try_send(
            &agent_with_timeout(timeout),
            "GET",
            &url,
            &[("Module-Auth-Token", token.as_str())],
            None,
        );
        let _ = tx.send(got);
    });
    rx
}

/// Sockets that send one body byte per second, from one background thread, for at most
/// `total`; stopped (and the sockets closed) when dropped.
struct Drip {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drip {
    fn start(mut sockets: Vec<TcpStream>, total: Duration) -> Drip {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let end = Instant::now() + total;
            let mut next = Instant::now() + Duration::from_secs(1);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < end {
                if Instant::now() < next {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next += Duration::from_secs(1);
                for socket in &mut sockets {
                    // The server may have closed it: that is its right.
                    let _ = socket.write_all(b" ");
                }
            }
        });
        Drip {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The in-process server
// ---------------------------------------------------------------------------------------

#[test]
fn slow_and_non_reading_clients_do_not_block_anyone() {
    const SLOW: usize = 300;
    const NON_READING: usize = 300;
    let _turn = take_turn();
    raise_fd_limit();
    let server = echo_server(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    // An 8 MiB answer for the clients that never read.
    let big = pattern(8 * 1024 * 1024);
    let big_id = app.submit_id(RID, "big", json!({}));
    assert_eq!(rt.next_job_id(), big_id);
    rt.complete(&big_id, &big);
    // A running job whose 2 KiB result is posted under load.
    let small_id = app.submit_id(RID, "small", json!({}));
    assert_eq!(rt.next_job_id(), small_id);

    // 300 clients ask for the 8 MiB answer and never read it.
    let result_body = format!(r#"{{"id":"{big_id}"}}"#);
    let result_request = raw_request(
        "PUT",
        &format!("{CONTOUR}/jobs/result/v2"),
        &[
            ("Authorization", "Bearer test-token"),
            ("Content-Type", "application/json"),
        ],
        result_body.as_bytes(),
        None,
    );
    let non_reading: Vec<TcpStream> = (0..NON_READING)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream
                .write_all(&result_request)
                .expect("write the request");
            stream
        })
        .collect();
    // 300 clients announce a 4 KiB execute body and send it at one byte per second.
    let slow_head = format!(
        "POST {CONTOUR}/compute-modules/jobs/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer test-token\r\nContent-Type: application/json\r\n\
         Content-Length: 4096\r\n\r\n"
    );
    let slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream
                .write_all(slow_head.as_bytes())
                .expect("write the head");
            stream
        })
        .collect();
    let drip = Drip::start(slow, Duration::from_secs(15));
    // Bounded wait until the server is writing to every non-reader (not asserted: a server
    // that cannot even start is caught by the timed requests below).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answered = non_reading.iter().filter(|s| has_data(s)).count();
        if answered == NON_READING || Instant::now() >= deadline {
            eprintln!("{answered} of {NON_READING} non-readers have answer bytes waiting");
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }

    // While all 600 are connected, each of these completes within 2 s.
    timed_health(&server);
    let small_query = r#"{"n": 1}"#;
    assert_octets(
        &timed_execute(&server, "small execute", raw_body(ECHO_RID, small_query)),
        small_query.as_bytes(),
    );
    let large_query = format!("\"{}\"", "q".repeat(4096 - 2));
    assert_eq!(large_query.len(), 4096);
    assert_octets(
        &timed_execute(&server, "4 KiB execute", raw_body(ECHO_RID, &large_query)),
        large_query.as_bytes(),
    );
    let small_result = pattern(2048);
    let (url, token, bytes) = (
        rt.result_url(&small_id),
        rt.token.clone(),
        small_result.clone(),
    );
    let resp = within(FAST, "2 KiB result post", move || {
        try_send(
            &agent_with_timeout(TIMED_CLIENT),
            "POST",
            &url,
            &[
                ("Module-Auth-Token", token.as_str()),
                ("Content-Type", "application/octet-stream"),
            ],
            Some(&bytes),
        )
    });
    resp.expect_status(204);
    assert!(resp.body.is_empty(), "204 has no body: {:?}", resp.body);
    assert_octets(&app.result_by_id(&small_id), &small_result);

    // A non-reader that finally reads gets the whole 8 MiB answer, intact.
    let mut first = non_reading.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    match first.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "reading the 8 MiB answer failed after {} bytes: {e}",
            answer.len()
        ),
    }
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {} bytes", answer.len()));
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&answer[..head_end])
    );
    assert!(
        answer[head_end + 4..] == big[..],
        "the 8 MiB answer differs ({} body bytes)",
        answer.len() - head_end - 4
    );
    drop(drip);
    server.assert_alive();
}

#[test]
fn vanished_sync_callers_do_not_delay_a_finished_job() {
    const CALLERS: usize = 500;
    let _turn = take_turn();
    raise_fd_limit();
    let server = echo_server(|cfg| cfg.execute_timeout = Duration::from_secs(30));
    // Bound to RID and never polling: every caller's job would wait the full 30 s.
    let _idle = server.runtime_bound("idle", RID);
    let request = raw_request(
        "POST",
        &format!("{CONTOUR}/compute-modules/jobs/execute"),
        &[
            ("Authorization", "Bearer test-token"),
            ("Content-Type", "application/json"),
        ],
        &raw_body(RID, "{}"),
        None,
    );
    let callers: Vec<TcpStream> = (0..CALLERS)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream.write_all(&request).expect("write the execute");
            stream
        })
        .collect();
    // Bounded wait until the server has taken in what it will of them (the queue stops
    // growing); not asserted, since how many it admits is the server's business.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut stable_since) = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        let queued = server.queued("idle");
        if queued != last {
            (last, stable_since) = (queued, Instant::now());
        } else if queued > 0 && stable_since.elapsed() >= Duration::from_millis(300) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{last} vanishing executes queued");
    // Every caller goes away at once.
    drop(callers);
    let query = r#"{"after": "vanished callers"}"#;
    assert_octets(
        &timed_execute(&server, "echo execute", raw_body(ECHO_RID, query)),
        query.as_bytes(),
    );
    timed_health(&server);
}

#[test]
fn sixty_five_idle_pollers_do_not_delay_another_runtimes_job() {
    const IDLE: usize = 65;
    let _turn = take_turn();
    raise_fd_limit();
    // Default pools: the point is that the defaults hold 65 idle polls and one more.
    let mut server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_secs(30));
    let idle: Vec<mpsc::Receiver<Result<Resp, String>>> = (0..IDLE)
        .map(|n| {
            let rt = server.runtime(&format!("idle-{n}"));
            let before = server.after_first_poll(&rt);
            let rx = poll_in_background(&rt, Duration::from_secs(40));
            server.wait_new_poll(&rt.id, before);
            rx
        })
        .collect();
    let target = server.runtime_bound("target", RID);
    let before = server.after_first_poll(&target);
    let poll = poll_in_background(&target, Duration::from_secs(40));
    server.wait_new_poll("target", before);
    let id = server.app().submit_id(RID, "q", json!({"for": "target"}));
    let submitted = Instant::now();
    let resp = match poll.recv_timeout(FAST) {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("the target's poll failed: {e}"),
        Err(_) => panic!("the target's job was not delivered within {FAST:?} of its submit"),
    };
    eprintln!("delivered {:?} after submit", submitted.elapsed());
    resp.expect_status(200);
    assert_eq!(envelope_job_id(&resp.json()), id);
    target.complete(&id, b"done");
    assert_octets(&server.app().result_by_id(&id), b"done");
    // The idle polls were all still held: the delivery did not depend on any of them ending.
    for (n, rx) in idle.iter().enumerate() {
        assert!(
            matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "idle poll {n} was answered before its 30 s wait ended"
        );
    }
    // Shutdown answers every held poll with 204 at once.
    server.shutdown();
    for (n, rx) in idle.into_iter().enumerate() {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(resp)) => {
                resp.expect_status(204);
            }
            Ok(Err(e)) => panic!("idle poll {n} failed at shutdown: {e}"),
            Err(_) => panic!("idle poll {n} was not answered at shutdown"),
        }
    }
}

#[test]
fn an_abandoned_poll_gives_its_job_to_a_live_poller() {
    let _turn = take_turn();
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::from_secs(30));
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    let job_state = |id: &str| server.job(id).state;

    // 1. A poll held and abandoned, then a job with no live poller: it is queued. (If the
    //    dead poll took it before its connection thread saw the close, the job was `running`
    //    only until the answer could not be written, and is back.)
    let before = server.after_first_poll(&rt);
    let abandoned = raw_poll(&server, &rt);
    server.wait_new_poll("rt", before);
    drop(abandoned);
    let first = app.submit_id(RID, "q", json!({"n": 1}));
    let watch_until = Instant::now() + Duration::from_millis(1500);
    let mut states = vec![job_state(&first)];
    while Instant::now() < watch_until {
        let state = job_state(&first);
        if states.last() != Some(&state) {
            states.push(state);
        }
        thread::sleep(Duration::from_millis(2));
    }
    assert!(
        [
            &[JobState::Queued][..],
            &[JobState::Running, JobState::Queued],
            &[JobState::Queued, JobState::Running, JobState::Queued],
        ]
        .contains(&&states[..]),
        "job {first} went through {states:?} though its only poller was gone"
    );
    assert_eq!(app.status_json(&first)["type"], json!("queued"));
    assert_eq!(server.queued("rt"), 1);
    let live = poll_in_background(&rt, Duration::from_secs(10));
    let resp = match live.recv_timeout(Duration::from_secs(1)) {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("the live poll failed: {e}"),
        Err(_) => panic!("a live poll did not get the queued job {first} within 1 s"),
    };
    resp.expect_status(200);
    assert_eq!(envelope_job_id(&resp.json()), first);
    assert_eq!(job_state(&first), JobState::Running);
    rt.complete(&first, b"one");
    assert_eq!(app.status_json(&first)["type"], json!("succeeded"));
    assert_eq!(job_state(&first), JobState::Succeeded);

    // 2. A poll held and abandoned, a live poll held after it, then a job: the live poll
    //    has it within 1 s, and it never went `running` before that (and back).
    let before = server.after_first_poll(&rt);
    let abandoned = raw_poll(&server, &rt);
    server.wait_new_poll("rt", before);
    drop(abandoned);
    let before = server.after_first_poll(&rt);
    let live = poll_in_background(&rt, Duration::from_secs(10));
    server.wait_new_poll("rt", before);
    let second = app.submit_id(RID, "q", json!({"n": 2}));
    let submitted = Instant::now();
    let mut states = vec![job_state(&second)];
    let resp = loop {
        match live.try_recv() {
            Ok(Ok(resp)) => break resp,
            Ok(Err(e)) => panic!("the live poll failed: {e}"),
            Err(mpsc::TryRecvError::Disconnected) => panic!("the live poll thread died"),
            Err(mpsc::TryRecvError::Empty) => {}
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(1),
            "the live poll did not get job {second} within 1 s of its submit; states seen: {states:?}"
        );
        let state = job_state(&second);
        if states.last() != Some(&state) {
            states.push(state);
        }
        thread::sleep(Duration::from_millis(1));
    };
    eprintln!("delivered {:?} after submit", submitted.elapsed());
    resp.expect_status(200);
    assert_eq!(envelope_job_id(&resp.json()), second);
    // Queued, then running for the live poller; at most one detour through the dead poll
    // (running only until its answer could not be written).
    let ok = [
        &[JobState::Queued][..],
        &[JobState::Queued, JobState::Running],
        &[JobState::Running],
        &[
            JobState::Queued,
            JobState::Running,
            JobState::Queued,
            JobState::Running,
        ],
        &[JobState::Running, JobState::Queued, JobState::Running],
    ];
    assert!(
        ok.contains(&&states[..]),
        "job {second} went through {states:?} before the live poller had it"
    );
    assert_eq!(job_state(&second), JobState::Running);
    assert_eq!(app.status_json(&second)["type"], json!("running"));
    rt.complete(&second, b"two");
    assert_eq!(app.status_json(&second)["type"], json!("succeeded"));
    assert_eq!(job_state(&second), JobState::Succeeded);
    assert_octets(&app.result_by_id(&second), b"two");
}

#[test]
fn max_queued_counts_only_queued_jobs() {
    const CAP: usize = 20;
    let _turn = take_turn();
    let server = TestServer::start(|cfg| cfg.limits.max_queued = CAP);
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    // CAP jobs, each completed early by a result post while still queued.
    for n in 0..CAP {
        let id = app.submit_id(RID, "early", json!({"n": n}));
        assert_eq!(app.status_json(&id)["type"], json!("queued"));
        rt.complete(&id, format!("early {n}").as_bytes());
        assert_eq!(app.status_json(&id)["type"], json!("succeeded"));
    }
    // None of them is queued any more: CAP new jobs fit.
    let fresh: Vec<String> = (0..CAP)
        .map(|n| {
            let resp = app.submit(&exec_body(RID, "fresh", json!({"n": n})));
            assert_eq!(
                resp.status,
                200,
                "submit {} after {CAP} early results: {}",
                n + 1,
                resp.text()
            );
            resp.json()["id"].as_str().expect("an id").to_string()
        })
        .collect();
    assert_eq!(server.queued("rt"), CAP);
    assert_error(
        &app.submit(&exec_body(RID, "fresh", json!({"n": "one too many"}))),
        503,
        "overloaded",
        &format!(
            "The emulator is overloaded: runtime 'rt' already has {CAP} queued jobs (--max-queued). Retry later."
        ),
    );
    // The runtime gets exactly the fresh jobs, in order.
    for id in &fresh {
        assert_eq!(&rt.next_job_id(), id);
        rt.complete(id, b"ok");
    }
    assert_eq!(server.queued("rt"), 0);
}

// ---------------------------------------------------------------------------------------
// The binary as a child process
// ---------------------------------------------------------------------------------------

/// A `serve` child; killed (and reaped) on drop.
struct ServedChild {
    child: Child,
    addr: SocketAddr,
    base: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: mpsc::Receiver<()>,
}

impl ServedChild {
    /// Spawns `cmd` (which must run `serve --port 0 …`) and waits for its address line.
    fn start(mut cmd: Command) -> ServedChild {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("FOUNDRY_EMULATOR_URL")
            .env_remove("FOUNDRY_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn foundry-emulator serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, stderr_done) = mpsc::channel();
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = done_tx.send(());
        });
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            for _ in lines {}
        });
        let mut served = ServedChild {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            base: String::new(),
            stderr,
            stderr_done,
        };
        let first = match line_rx.recv_timeout(CHILD_START) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "serve printed no address ({other:?}); stderr: {}",
                served.stderr_text()
            ),
        };
        served.base = first
            .strip_prefix("foundry-emulator listening on ")
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        served.addr = served.base["http://".len()..].parse().expect("an address");
        served
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// One health check with a short client timeout.
    fn healthy(&self) -> bool {
        let url = format!("{}/_emulate/health", self.base);
        try_send(
            &agent_with_timeout(Duration::from_secs(1)),
            "GET",
            &url,
            &[],
            None,
        )
        .is_ok_and(|resp| resp.status == 200 && resp.body == br#"{"status":"ok"}"#)
    }

    /// Waits (bounded) for the child to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the child and returns all it wrote to stderr.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(10));
        self.stderr_text()
    }
}

impl Drop for ServedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn low_fd_limit_refuses_cleanly_and_recovers() {
    const CONNECTIONS: usize = 100;
    let _turn = take_turn();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"ulimit -n 64 && exec "$0" serve --port 0 --no-echo"#,
        BIN,
    ]);
    let served = ServedChild::start(cmd);
    assert!(served.healthy(), "the server serves before the load");
    let health = b"GET /_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // Far more connections than 64 descriptors allow; refused or closed ones are fine.
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let Ok(mut stream) = TcpStream::connect_timeout(&served.addr, Duration::from_millis(500))
        else {
            continue;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = stream.write_all(health);
        held.push(stream);
    }
    // Hold them a moment, while the server runs out of descriptors.
    thread::sleep(Duration::from_secs(1));
    // Whatever was answered is a proper answer: 200, or a clean 503.
    let mut answered = 0;
    for stream in &held {
        if !has_data(stream) {
            continue;
        }
        let mut head = [0u8; 12];
        stream.set_nonblocking(true).unwrap();
        let got = stream.peek(&mut head).unwrap_or(0);
        stream.set_nonblocking(false).unwrap();
        if got == 0 {
            continue; // closed by the server without a byte: a clean refusal
        }
        let head = &head[..got];
        assert!(
            b"HTTP/1.1 200".starts_with(head) || b"HTTP/1.1 503".starts_with(head),
            "an answer under fd pressure starts {:?}",
            String::from_utf8_lossy(head)
        );
        answered += 1;
    }
    eprintln!("{} connections made, {answered} answered", held.len());
    drop(held);
    // Once they are closed, the server serves again (bounded retry).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served.healthy() {
        assert!(
            Instant::now() < deadline,
            "no health answer within 5 s of closing the connections; stderr: {}",
            served.stderr_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let mut served = served;
    assert!(
        served.child.try_wait().expect("try_wait").is_none(),
        "the server exited"
    );
    let stderr = served.finish();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked under fd pressure: {stderr}"
    );
}

#[test]
fn sigterm_with_a_slow_client_exits_within_the_grace() {
    let _turn = take_turn();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--port", "0", "--no-echo", "--shutdown-grace", "1"]);
    let mut served = ServedChild::start(cmd);
    // Half a request head, then nothing.
    let mut slow = connect(served.addr);
    slow.write_all(b"GET /_emulate/health HTTP/1.1\r\nHost: 127")
        .expect("write half a head");
    assert!(served.healthy(), "the server serves beside the slow client");
    let pid = libc::pid_t::try_from(served.child.id()).expect("a pid");
    // SAFETY: kill(2) with the pid of our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    let status = served
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "still running 10 s after SIGTERM (grace 1 s); stderr: {}",
                served.stderr_text()
            )
        });
    eprintln!("exited {:?} after SIGTERM", sent.elapsed());
    assert!(
        status.success(),
        "exit status {status:?} after SIGTERM; stderr: {}",
        served.stderr_text()
    );
    drop(slow);
    let stderr = served.finish();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
