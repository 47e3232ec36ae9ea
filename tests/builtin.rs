//! Built-in runtimes, in process: `echo` answers with the query text; `exec` runs
//! `fixtures/exec-handler.sh` per job (stdin, env, stdout, exit status, stderr tail, timeout,
//! concurrency) and its jobs show in status and inspection like any other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use foundry_emulator::config::{Seed, SeedApp, SeedRuntime};
use foundry_emulator::runtimes::builtin::{Builtin, ExecSpec};
use serde_json::{json, Value};

use crate::util::*;

const ECHO_RID: &str = "ri.foundry.main.deployed-app.builtin-echo";
const EXEC_RID: &str = "ri.foundry.main.deployed-app.builtin-exec";

/// How long a test waits for a job to end before it fails.
const JOB_DEADLINE: Duration = Duration::from_secs(30);

/// A directory under cargo's test tmpdir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `["sh", ".../fixtures/exec-handler.sh"]`.
fn handler_command() -> Vec<String> {
    vec![
        "sh".to_string(),
        fixture("exec-handler.sh").display().to_string(),
    ]
}

fn exec_spec(concurrency: usize, timeout: Duration) -> Builtin {
    Builtin::Exec(ExecSpec {
        command: handler_command(),
        concurrency,
        timeout,
        dir: None,
    })
}

/// A seed with one built-in runtime `runtime_id` bound to `rid` on master.
fn seed_with(runtime_id: &str, rid: &str, builtin: Builtin) -> Seed {
    Seed {
        runtimes: vec![SeedRuntime {
            runtime_id: runtime_id.to_string(),
            module_auth_token: None,
            display_name: Some(format!("built-in {runtime_id}")),
            builtin: Some(builtin),
            oauth_client: None,
            sources: None,
        }],
        deployed_apps: vec![SeedApp {
            deployed_app_rid: rid.to_string(),
            runtime_id: runtime_id.to_string(),
            branch: "master".to_string(),
            display_name: None,
            active: true,
        }],
        ..Seed::default()
    }
}

/// A server whose only runtime is the built-in `builtin` called `rt`, bound to `rid`;
/// sync executes wait up to 25 s (every exec test finishes far sooner or fails on its own).
fn server_with(rid: &str, builtin: Builtin) -> TestServer {
    let seed = seed_with("rt", rid, builtin);
    TestServer::start(|cfg| {
        cfg.seed = seed;
        cfg.execute_timeout = Duration::from_secs(25);
    })
}

/// An exec server running the fixture handler, one job at a time, 20 s job timeout.
fn exec_server() -> TestServer {
    server_with(EXEC_RID, exec_spec(1, Duration::from_secs(20)))
}

/// An app whose agent outlasts the 25 s server execute timeout.
fn patient_app(server: &TestServer) -> App {
    let mut app = server.app();
    app.agent = agent_with_timeout(Duration::from_secs(40));
    app
}

/// A raw execute body with `query` spliced in verbatim.
fn raw_body(rid: &str, query_type: &str, query: &str) -> Vec<u8> {
    format!(r#"{{"deployedAppRid":"{rid}","queryType":"{query_type}","query":{query}}}"#)
        .into_bytes()
}

/// Polls a job's status until it is terminal (bounded); returns the status JSON.
fn wait_terminal(app: &App, id: &str) -> Value {
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        let status = app.status_json(id);
        match status["type"].as_str() {
            Some("succeeded" | "failed") => return status,
            Some("queued" | "running") => {}
            _ => panic!("job {id}: unexpected status {status}"),
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {status} after {JOB_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `error_description` of a 500 `job_failed`; asserts the rest of the error shape.
fn job_failed_description(resp: &Resp) -> String {
    resp.expect_status(500);
    let body = resp.json();
    assert_eq!(body["error"], "job_failed", "{body}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{:?}",
        resp.headers
    );
    body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_description in {body}"))
        .to_string()
}

fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected to contain {needle:?}\n  got: {haystack:?}"
    );
}

/// The inspection of `job_id` on runtime `rt` (asserting 200).
fn inspect(server: &TestServer, job_id: &str) -> Value {
    let resp = send(
        &agent(),
        "GET",
        &server.url(&format!("{RUNTIMES}/rt/jobs/{job_id}")),
        &[],
        None,
    );
    resp.expect_status(200);
    resp.json()
}

/// Asserts the job record of an inspection, field by field, for the fields a built-in
/// runtime decides (timestamps are only checked for presence).
fn assert_inspected(
    inspection: &Value,
    id: &str,
    rid: &str,
    query_type: &str,
    source: &str,
    status: &str,
) {
    let job = &inspection["job"];
    let got = json!({
        "id": job["id"], "runtime_id": job["runtime_id"], "deployed_app_rid": job["deployed_app_rid"],
        "branch": job["branch"], "query_type": job["query_type"], "source": job["source"],
        "status": job["status"],
    });
    let want = json!({
        "id": id, "runtime_id": "rt", "deployed_app_rid": rid, "branch": "master",
        "query_type": query_type, "source": source, "status": status,
    });
    assert_json(&got, &want, "inspected job");
    for stamp in ["submitted_at", "dispatched_at", "finished_at"] {
        assert!(job[stamp].is_u64(), "{stamp} is set: {job}");
    }
    assert_eq!(inspection["runtime"]["runtime_id"], "rt", "{inspection}");
    assert!(
        !inspection.to_string().contains("foundry_module_auth_"),
        "inspection never shows the token: {inspection}"
    );
}

#[test]
fn echo_answers_with_the_query_text_exactly_as_sent() {
    let server = server_with(ECHO_RID, Builtin::Echo);
    let app = server.app();
    // Whitespace, a trailing zero, a number beyond f64 and non-ASCII: only a verbatim copy
    // keeps them all.
    let query = r#"{ "z": 1.50, "big": 123456789012345678901234567890, "a" : [true, null, "é"] }"#;
    assert_octets(
        &app.execute_raw(&raw_body(ECHO_RID, "anything", query)),
        query.as_bytes(),
    );
    // No query at all: the default `{}`.
    let resp =
        app.execute_raw(format!(r#"{{"deployedAppRid":"{ECHO_RID}","queryType":"q"}}"#).as_bytes());
    assert_octets(&resp, b"{}");
    // Any JSON value, not only objects.
    assert_octets(
        &app.execute_raw(&raw_body(ECHO_RID, "q", r#""just a string""#)),
        br#""just a string""#,
    );
}

#[test]
fn echo_jobs_show_in_status_result_and_inspection() {
    let server = server_with(ECHO_RID, Builtin::Echo);
    let app = server.app();
    let query = r#"{"hello": "world"}"#;
    let resp = app.submit_raw(&raw_body(ECHO_RID, "greet", query));
    resp.expect_status(200);
    let id = resp.json()["id"].as_str().expect("job id").to_string();
    let status = wait_terminal(&app, &id);
    assert_eq!(status["type"], "succeeded", "{status}");
    assert_octets(&app.result_by_id(&id), query.as_bytes());
    let inspection = inspect(&server, &id);
    assert_inspected(
        &inspection,
        &id,
        ECHO_RID,
        "greet",
        "contour-async",
        "succeeded",
    );
    assert_eq!(inspection["job"]["result_body_utf8"], query, "{inspection}");
    assert_eq!(inspection["job"]["error_message"], Value::Null);
}

#[test]
fn exec_echoes_stdin_back_byte_for_byte() {
    let server = exec_server();
    let app = server.app();
    let query = r#"{ "z": 1.50, "big": 123456789012345678901234567890, "a" : [true, null, "é"] }"#;
    assert_octets(
        &app.execute_raw(&raw_body(EXEC_RID, "echo", query)),
        query.as_bytes(),
    );
}

#[test]
fn exec_sees_job_id_and_query_type_and_its_jobs_are_inspectable() {
    let server = exec_server();
    let app = server.app();

    // Sync: the handler prints the id it was given; that id is the job's.
    let resp = app.execute(&exec_body(EXEC_RID, "env", json!({})));
    resp.expect_status(200);
    let text = resp.text();
    let id = text
        .strip_prefix("job=")
        .and_then(|rest| rest.strip_suffix(" type=env"))
        .unwrap_or_else(|| panic!("handler output {text:?}"));
    assert!(is_random_id(id, "foundry_job_"), "{id}");
    let inspection = inspect(&server, id);
    assert_inspected(
        &inspection,
        id,
        EXEC_RID,
        "env",
        "contour-sync",
        "succeeded",
    );
    assert_eq!(
        inspection["job"]["result_body_utf8"],
        text.as_str(),
        "{inspection}"
    );

    // Async: submit, status, result, inspection.
    let id = app.submit_id(EXEC_RID, "env", json!({"x": 1}));
    let status = wait_terminal(&app, &id);
    assert_eq!(status["type"], "succeeded", "{status}");
    assert_octets(
        &app.result_by_id(&id),
        format!("job={id} type=env").as_bytes(),
    );
    let inspection = inspect(&server, &id);
    assert_inspected(
        &inspection,
        &id,
        EXEC_RID,
        "env",
        "contour-async",
        "succeeded",
    );
    assert_eq!(inspection["job"]["query"], json!({"x": 1}), "{inspection}");
}

#[test]
fn exec_failure_fails_the_job_with_the_exit_status_and_stderr() {
    let server = exec_server();
    let app = server.app();

    let description = job_failed_description(&app.execute(&exec_body(EXEC_RID, "fail", json!({}))));
    assert_contains(&description, "exited with status 3", "sync failure");
    assert_contains(
        &description,
        "handler: reading the query\nhandler: cannot handle this input",
        "sync failure",
    );

    // Async: the same message in status and inspection; no result.
    let id = app.submit_id(EXEC_RID, "fail", json!({}));
    let status = wait_terminal(&app, &id);
    assert_json(
        &status,
        &json!({"type": "failed", "failed": {"message": description}}),
        "failed status",
    );
    let inspection = inspect(&server, &id);
    assert_inspected(
        &inspection,
        &id,
        EXEC_RID,
        "fail",
        "contour-async",
        "failed",
    );
    assert_eq!(
        inspection["job"]["error_message"],
        description.as_str(),
        "{inspection}"
    );
    assert_error(
        &app.result_by_id(&id),
        409,
        "job_not_ready",
        &format!("Compute-module job '{id}' has not completed successfully."),
    );

    // The runtime goes on serving.
    assert_octets(&app.execute_raw(&raw_body(EXEC_RID, "echo", "[1]")), b"[1]");
}

#[test]
fn exec_failure_without_stderr_is_still_a_clean_sentence() {
    let silent = Builtin::Exec(ExecSpec {
        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        concurrency: 1,
        timeout: Duration::from_secs(10),
        dir: None,
    });
    let server = server_with(EXEC_RID, silent);
    let description =
        job_failed_description(&server.app().execute(&exec_body(EXEC_RID, "x", json!({}))));
    assert_contains(&description, "exited with status 3", "silent failure");
    assert!(
        !description.trim_end().ends_with(':'),
        "with an empty stderr the message must not end in a dangling ': ': {description:?}"
    );
}

#[test]
fn exec_failure_message_keeps_only_the_tail_of_stderr() {
    let server = exec_server();
    let app = server.app();
    let description =
        job_failed_description(&app.execute(&exec_body(EXEC_RID, "noisy", json!({}))));
    assert_contains(&description, "exited with status 1", "noisy failure");
    assert!(
        description.ends_with("handler: the last words"),
        "the message ends with the last stderr line: {description:?}"
    );
    assert!(
        !description.contains("noise line 0:"),
        "the head of ~70 KiB of stderr is dropped"
    );
    assert!(
        description.len() < 4096,
        "only a tail of stderr is kept; got {} bytes",
        description.len()
    );
}

#[test]
fn exec_timeout_kills_the_command_and_fails_the_job() {
    // The handler sleeps 30 s in a child of its shell. Unless the whole process group is
    // killed, that child holds stdout open and the job cannot end before the 25 s execute
    // timeout: a 500 job_failed (not a 504) shows the kill reached it.
    let server = server_with(EXEC_RID, exec_spec(1, Duration::from_millis(500)));
    let app = patient_app(&server);
    let description = job_failed_description(&app.execute(&exec_body(EXEC_RID, "slow", json!({}))));
    assert_contains(&description, "timed out", "timeout failure");
    assert_contains(&description, "killed", "timeout failure");
    assert_contains(
        &description,
        "handler: this will take a while",
        "timeout failure keeps stderr",
    );
    assert!(
        !description.contains("woke up"),
        "the command was killed before it finished: {description:?}"
    );
    // Its only runtime thread is free again.
    assert_octets(
        &app.execute_raw(&raw_body(EXEC_RID, "echo", r#"{"after":"timeout"}"#)),
        br#"{"after":"timeout"}"#,
    );
}

/// Submits `n` barrier jobs meeting in a fresh directory; returns (dir, job ids).
fn submit_barrier(app: &App, jobs: usize, meet: usize, tries: u32) -> (TempDir, Vec<String>) {
    let dir = TempDir::new("barrier");
    let query = json!({"dir": dir.path().display().to_string(), "n": meet, "tries": tries});
    let ids = (0..jobs)
        .map(|_| app.submit_id(EXEC_RID, "barrier", query.clone()))
        .collect();
    (dir, ids)
}

#[test]
fn exec_concurrency_runs_that_many_jobs_at_once() {
    // Each barrier job leaves a marker and waits (up to 20 s, inside the handler) until three
    // markers exist. Three can only all succeed if three run at the same time.
    let server = server_with(EXEC_RID, exec_spec(3, Duration::from_secs(25)));
    let app = server.app();
    let (_dir, ids) = submit_barrier(&app, 3, 3, 200);
    for id in &ids {
        let status = wait_terminal(&app, id);
        assert_eq!(status["type"], "succeeded", "job {id}: {status}");
        assert_octets(&app.result_by_id(id), b"released with 3");
    }

    // Sync executes share the same threads.
    let dir = TempDir::new("barrier-sync");
    let body = raw_body(
        EXEC_RID,
        "barrier",
        &json!({"dir": dir.path().display().to_string(), "n": 3, "tries": 200}).to_string(),
    );
    let app = patient_app(&server);
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..3).map(|_| s.spawn(|| app.execute_raw(&body))).collect();
        for call in calls {
            assert_octets(&call.join().unwrap(), b"released with 3");
        }
    });
}

#[test]
fn exec_concurrency_one_runs_jobs_one_after_another() {
    // The negative control of the barrier: with one thread the second job only starts once
    // the first has given up, so the first fails and the second finds both markers.
    let server = exec_server();
    let app = server.app();
    let (_dir, ids) = submit_barrier(&app, 2, 2, 3);
    let first = wait_terminal(&app, &ids[0]);
    assert_eq!(first["type"], "failed", "{first}");
    assert_contains(
        first["failed"]["message"].as_str().unwrap_or_default(),
        "barrier: only 1 of 2 jobs arrived",
        "first barrier job",
    );
    let second = wait_terminal(&app, &ids[1]);
    assert_eq!(second["type"], "succeeded", "{second}");
    assert_octets(&app.result_by_id(&ids[1]), b"released with 2");
}

#[test]
fn exec_stdout_bytes_come_back_exactly_even_when_not_utf8() {
    let server = exec_server();
    let app = server.app();
    assert_octets(
        &app.execute(&exec_body(EXEC_RID, "binary", json!({}))),
        &[0x00, 0xff],
    );
    let id = app.submit_id(EXEC_RID, "binary", json!({}));
    assert_eq!(wait_terminal(&app, &id)["type"], "succeeded");
    assert_octets(&app.result_by_id(&id), &[0x00, 0xff]);
    let job = &inspect(&server, &id)["job"];
    assert_eq!(job["result_body_utf8"], Value::Null, "{job}");
    assert_eq!(job["result_body_base64"], "AP8=", "{job}");
    // A large stdout written before stdin is read: the pipes are drained concurrently.
    assert_octets(
        &app.execute(&exec_body(
            EXEC_RID,
            "big",
            json!({"pad": "x".repeat(100_000)}),
        )),
        &vec![0u8; 262_144],
    );
}

#[test]
fn exec_command_that_cannot_start_or_dies_by_signal_fails_the_job() {
    let missing = Builtin::Exec(ExecSpec {
        command: vec!["/nonexistent/foundry-emulator-handler".to_string()],
        concurrency: 1,
        timeout: Duration::from_secs(10),
        dir: None,
    });
    let server = server_with(EXEC_RID, missing);
    let description =
        job_failed_description(&server.app().execute(&exec_body(EXEC_RID, "x", json!({}))));
    assert_contains(&description, "could not start", "missing program");
    assert_contains(
        &description,
        "/nonexistent/foundry-emulator-handler",
        "missing program",
    );

    let killed = Builtin::Exec(ExecSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo dying >&2; kill -9 $$".into(),
        ],
        concurrency: 1,
        timeout: Duration::from_secs(10),
        dir: None,
    });
    let server = server_with(EXEC_RID, killed);
    let description =
        job_failed_description(&server.app().execute(&exec_body(EXEC_RID, "x", json!({}))));
    assert_contains(&description, "signal 9", "killed command");
    assert_contains(&description, "dying", "killed command keeps stderr");
}

#[test]
fn seed_file_declares_echo_and_exec_runtimes() {
    let seed = Seed::load(&fixture("seed-builtins.json")).expect("seed-builtins.json loads");
    let got: Vec<(&str, Option<&str>, Option<&Builtin>)> = seed
        .runtimes
        .iter()
        .map(|r| {
            (
                r.runtime_id.as_str(),
                r.display_name.as_deref(),
                r.builtin.as_ref(),
            )
        })
        .collect();
    let exec = Builtin::Exec(ExecSpec {
        command: vec!["sh".into(), "exec-handler.sh".into()],
        concurrency: 2,
        timeout: Duration::from_secs(20),
        // Relative paths in a seed's command resolve next to the seed file.
        dir: Some(fixture("").canonicalize().unwrap()),
    });
    assert_eq!(
        got,
        vec![
            ("seed-echo", Some("Seeded echo"), Some(&Builtin::Echo)),
            ("seed-exec", None, Some(&exec)),
        ]
    );
    // Run from elsewhere, the command still finds its script next to the seed file.
    let server = TestServer::start(|cfg| cfg.seed = seed);
    let app = server.app();
    let echo = "ri.foundry.main.deployed-app.seed-echo";
    let exec = "ri.foundry.main.deployed-app.seed-exec";
    assert_octets(
        &app.execute_raw(&raw_body(echo, "q", r#"{"n": 1}"#)),
        br#"{"n": 1}"#,
    );
    assert_octets(
        &app.execute_raw(&raw_body(exec, "q", r#"{"n": 2}"#)),
        br#"{"n": 2}"#,
    );
    let id = app.submit_id(exec, "env", json!({}));
    assert_eq!(wait_terminal(&app, &id)["type"], "succeeded");
    let resp = send(
        &agent(),
        "GET",
        &server.url(&format!("{RUNTIMES}/seed-exec/jobs/{id}")),
        &[],
        None,
    );
    resp.expect_status(200);
    assert_eq!(resp.json()["job"]["source"], "contour-async");
}

#[test]
fn shutdown_kills_a_running_exec_command() {
    let mut server = server_with(EXEC_RID, exec_spec(1, Duration::from_secs(60)));
    let id = server.app().submit_id(EXEC_RID, "slow", json!({}));
    server.wait_state(&id, foundry_emulator::JobState::Running);
    // Shutdown joins the runtime thread, which waits for its command: bound it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
        "shutdown did not return while an exec command was running"
    );
}

#[test]
fn canceling_a_running_exec_job_kills_its_command_and_frees_its_thread() {
    // One runtime thread, a 60 s job timeout and a command that sleeps 30 s: the echo after
    // the cancel is answered before the 25 s execute timeout only if the cancel killed it.
    let server = server_with(EXEC_RID, exec_spec(1, Duration::from_secs(60)));
    let app = patient_app(&server);
    let id = app.submit_id(EXEC_RID, "slow", json!({}));
    server.wait_state(&id, foundry_emulator::JobState::Running);
    assert_no_content(&app.cancel(&id));
    assert_octets(
        &app.execute_raw(&raw_body(EXEC_RID, "echo", r#"{"after":"cancel"}"#)),
        br#"{"after":"cancel"}"#,
    );
}

#[test]
fn exec_timeout_holds_even_when_a_background_child_keeps_stdout_open() {
    // The shell exits at once, but its background child holds stdout for 60 s: only a
    // deadline on the pipes too (and the group kill) ends the job before the 25 s execute
    // timeout, as a 500 job_failed rather than a 504.
    let spec = Builtin::Exec(ExecSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo started; sleep 60 & echo bye >&2".into(),
        ],
        concurrency: 1,
        timeout: Duration::from_millis(500),
        dir: None,
    });
    let server = server_with(EXEC_RID, spec);
    let app = patient_app(&server);
    let description = job_failed_description(&app.execute(&exec_body(EXEC_RID, "x", json!({}))));
    assert_contains(&description, "timed out", "background child");
    assert_contains(&description, "killed", "background child");
}

#[test]
fn exec_stdout_over_the_limit_fails_the_job_with_a_sentence() {
    let spec = Builtin::Exec(ExecSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            "head -c 67108865 /dev/zero".into(),
        ],
        concurrency: 1,
        timeout: Duration::from_secs(20),
        dir: None,
    });
    let server = server_with(EXEC_RID, spec);
    let app = patient_app(&server);
    let description = job_failed_description(&app.execute(&exec_body(EXEC_RID, "x", json!({}))));
    assert_eq!(
        description,
        "exec runtime command wrote more than 67108864 bytes to stdout"
    );
}
