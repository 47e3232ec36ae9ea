//! The real Palantir compute-module SDKs, unmodified, against an in-process emulator.
//!
//! Each test starts an emulator (plain HTTP plus, with the `tls` feature, HTTPS on port 0),
//! launches a fixture module through the built binary (`foundry-emulator module ... -- CMD`,
//! which creates the runtime session, sets the SDK environment and execs CMD), and drives it
//! through the Contour API like an application would. One module process serves every case of
//! its test, because SDK start-up is the slow part.
//!
//! The SDKs come from `.ci/setup-sdks.sh`: PyPI `foundry-compute-modules==0.34.0` in `.venv`,
//! npm `@palantir/compute-module` 0.2.7 in `fixtures/ts/node_modules`. Without them these tests
//! fail (never skip) and say so. The last tests run Palantir's OAuth2 clients the same way:
//! PyPI `foundry-platform-sdk` and npm `@osdk/oauth`, against a strict emulator.
//!
//! Linux only: the module's idle CPU is read from `/proc`.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use foundry_emulator::Config;
use serde_json::{json, Value};

use crate::util::*;

/// How long a module may take to start (interpreter, imports, TLS, first poll) under CI load.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Client timeout of the application's agent: above the emulator's execute timeout.
const SDK_CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The emulator's execute timeout in these tests: the first job waits for the module to start.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long async jobs, schemas and similar observable state may take to appear.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The idle window over which the module's CPU use is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The bound: a fraction of one core over the idle window.
const IDLE_CPU_BOUND: f64 = 0.05;
/// Concurrent sync executes per module.
const CONCURRENT: usize = 20;

const SETUP_HINT: &str = "run `bash .ci/setup-sdks.sh` at the repository root first (it installs \
     foundry-compute-modules==0.34.0 and foundry-platform-sdk==1.111.0 into .venv, and \
     @palantir/compute-module 0.2.7 and @osdk/oauth 1.13.0 into fixtures/ts/node_modules)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An emulator with the server's default long poll (10 s), so an idle module is measured
/// against polls held open the way users run it, and a generous execute timeout.
fn sdk_server() -> TestServer {
    sdk_server_with(|_| {})
}

/// [`sdk_server`], after `configure` had its say.
fn sdk_server_with(configure: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(|cfg| {
        configure(cfg);
        cfg.poll_wait = Config::default().poll_wait;
        cfg.execute_timeout = EXECUTE_TIMEOUT;
        #[cfg(feature = "tls")]
        {
            cfg.tls = Some(foundry_emulator::config::TlsOptions {
                port: 0,
                cert: None,
                key: None,
            });
        }
    })
}

/// The application, with a client timeout above the execute timeout.
fn sdk_app(server: &TestServer) -> App {
    let mut app = server.app();
    app.agent = agent_with_timeout(SDK_CLIENT_TIMEOUT);
    app
}

/// A module process launched through `foundry-emulator module`. Dropping it kills the whole
/// process group (the module and, for Python, its worker pool) and, if the test is failing,
/// prints the module's output.
struct Module {
    name: &'static str,
    runtime_id: String,
    child: Child,
    log: PathBuf,
    /// Killed (and reaped) already: its process group id may be reused.
    killed: bool,
}

impl Module {
    fn launch(
        server: &TestServer,
        name: &'static str,
        rid: &str,
        concurrency: usize,
        command: &[&str],
    ) -> Module {
        Module::launch_as(
            server,
            name,
            &format!("sdk-{name}"),
            rid,
            concurrency,
            &[],
            command,
        )
    }

    /// [`Module::launch`] with a chosen runtime id and extra launcher flags.
    fn launch_as(
        server: &TestServer,
        name: &'static str,
        runtime_id: &str,
        rid: &str,
        concurrency: usize,
        flags: &[&str],
        command: &[&str],
    ) -> Module {
        let runtime_id = runtime_id.to_string();
        let dir = std::env::temp_dir().join(format!(
            "foundry-emulator-sdk-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the module log directory");
        let log = dir.join("module.log");
        let out = File::create(&log).expect("create the module log");
        let err = out.try_clone().expect("clone the log handle");
        let concurrency = concurrency.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_foundry-emulator"));
        cmd.args([
            "module",
            "--runtime-id",
            &runtime_id,
            "--deployed-app-rid",
            rid,
        ])
        .args([
            "--emulator",
            &server.base_url,
            "--concurrency",
            &concurrency,
        ])
        .args(flags)
        .arg("--")
        .args(command)
        .current_dir(repo())
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("FOUNDRY_EMULATOR_URL")
        .env_remove("FOUNDRY_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        // Its own process group, so Drop can kill the module's children with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the foundry-emulator binary: {e}"));
        println!("{name}: module pid {} (log {})", child.id(), log.display());
        Module {
            name,
            runtime_id,
            child,
            log,
            killed: false,
        }
    }

    /// Kills the module's whole process group (the module and, for Python, its worker
    /// pool: their connections drop at once) and reaps it.
    fn kill(&mut self) {
        if self.killed {
            return;
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the module's output if it has exited.
    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "the {} module exited ({status}) {when}; its output:\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Waits until the module has polled for a job (the emulator marks the runtime connected).
    /// A Python module polls only after its restart notification was answered 200.
    fn wait_connected(&mut self, server: &TestServer) {
        let started = Instant::now();
        while !server.connected(&self.runtime_id) {
            self.assert_running("before its first poll");
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the {} module did not poll within {START_TIMEOUT:?}; its output:\n{}",
                self.name,
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
        println!(
            "{}: first poll {} ms after launch",
            self.name,
            started.elapsed().as_millis()
        );
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // The launcher execs the module, so the child's pid is the module's and it leads the
        // process group: kill the group (Python's pool workers included), then reap.
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- {} module output ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        } else if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Panics with the setup hint unless `path` exists.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({} does not exist): {SETUP_HINT}",
        path.display()
    );
}

/// A sync execute of `query` (JSON text, sent verbatim: key order matters to the
/// module's output) that must answer 200 with exactly `want`.
fn execute_exact(app: &App, rid: &str, query_type: &str, query: &str, want: &[u8]) {
    let body =
        format!(r#"{{"deployedAppRid":"{rid}","queryType":"{query_type}","query":{query}}}"#);
    let resp = app.execute_raw(body.as_bytes());
    assert_eq!(
        resp.status,
        200,
        "execute {query_type} {query}: status {}, body {}",
        resp.status,
        resp.text()
    );
    assert!(
        resp.body == want,
        "execute {query_type} {query}: result bytes differ\n  want: {}\n  got:  {}",
        String::from_utf8_lossy(want),
        resp.text()
    );
}

/// Submits asynchronously, waits for `succeeded`, and returns (job id, result/v2 bytes).
fn submit_and_wait(app: &App, rid: &str, query_type: &str, query: Value) -> (String, Vec<u8>) {
    let id = app.submit_id(rid, query_type, query);
    let started = Instant::now();
    loop {
        let status = app.status_json(&id);
        match status["type"].as_str() {
            Some("succeeded") => break,
            Some("queued" | "running") => {}
            _ => panic!("async job {id} ({query_type}) ended as {status}"),
        }
        assert!(
            started.elapsed() < STATE_TIMEOUT,
            "async job {id} ({query_type}) not finished after {STATE_TIMEOUT:?}: {status}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let resp = app.result_by_id(&id);
    resp.expect_status(200);
    (id, resp.body)
}

/// 20 sync executes at once; each must get the answer to its own input.
/// `case(i)` is (query type, query JSON text, expected result bytes).
fn concurrent_executes(
    app: &App,
    rid: &str,
    case: impl Fn(usize) -> (&'static str, String, Vec<u8>) + Sync,
) {
    thread::scope(|s| {
        let handles: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let app = app.clone();
                let case = &case;
                s.spawn(move || {
                    let (query_type, query, want) = case(i);
                    execute_exact(&app, rid, query_type, &query, &want);
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a concurrent execute failed");
        }
    });
}

/// `GET /runtimes/:id/jobs/:jobId` (inspection).
fn inspect(server: &TestServer, runtime_id: &str, job_id: &str) -> Value {
    let url = format!("{}/{runtime_id}/jobs/{job_id}", server.runtimes_url());
    let resp = send(&agent(), "GET", &url, &[], None);
    resp.expect_status(200);
    resp.json()
}

/// The schemas inspection lists, in its order, as (function name, schema).
#[cfg(feature = "tls")] // only the Python test uses it, and the Python SDK needs TLS
fn posted_schemas(server: &TestServer, runtime_id: &str, job_id: &str) -> Vec<(String, Value)> {
    let inspection = inspect(server, runtime_id, job_id);
    inspection["schemas"]
        .as_array()
        .expect("a schema list")
        .iter()
        .map(|entry| {
            let name = entry["function_name"].as_str().expect("function_name");
            (name.to_string(), entry["schema"].clone())
        })
        .collect()
}

/// Waits until inspection lists a schema for every name; returns name → schema.
fn wait_schemas(
    server: &TestServer,
    runtime_id: &str,
    job_id: &str,
    names: &[&str],
) -> serde_json::Map<String, Value> {
    let started = Instant::now();
    loop {
        let inspection = inspect(server, runtime_id, job_id);
        let listed = inspection["schemas"]
            .as_array()
            .unwrap_or_else(|| panic!("inspection has no schema list: {inspection}"));
        let by_name: serde_json::Map<String, Value> = listed
            .iter()
            .map(|entry| {
                let name = entry["function_name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("schema entry without function_name: {entry}"));
                (name.to_string(), entry["schema"].clone())
            })
            .collect();
        if names.iter().all(|n| by_name.contains_key(*n)) {
            assert_eq!(
                by_name.len(),
                names.len(),
                "exactly these schemas: {listed:?}"
            );
            return by_name;
        }
        assert!(
            started.elapsed() < STATE_TIMEOUT,
            "schemas {names:?} not in inspection after {STATE_TIMEOUT:?}: {inspection}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `GET .../schemas` lists `count` functions for the app; returns the list.
fn wait_app_schemas(app: &App, rid: &str, count: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let resp = app.schemas(rid, Some("master"));
        resp.expect_status(200);
        let listed = resp.json().as_array().cloned().expect("a JSON list");
        if listed.len() >= count {
            assert_eq!(listed.len(), count, "exactly {count} schemas: {listed:?}");
            return listed;
        }
        assert!(
            started.elapsed() < STATE_TIMEOUT,
            "{count} schemas not listed after {STATE_TIMEOUT:?}: {listed:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `GET .../schemas` shows each posted schema as `{"functionName", "inputs", "output"}`, in
/// the order inspection lists them (the order first posted).
#[cfg(feature = "tls")] // only the Python test uses it, and the Python SDK needs TLS
fn assert_app_schemas(app: &App, rid: &str, posted: &[(String, Value)]) {
    let want: Vec<Value> = posted
        .iter()
        .map(|(name, schema)| {
            json!({"functionName": name, "inputs": schema["inputs"], "output": schema["output"]})
        })
        .collect();
    let resp = app.schemas(rid, Some("master"));
    resp.expect_status(200);
    assert_json(&resp.json(), &json!(want), "GET /schemas");
}

/// The failure of a job whose query type the module's schemas do not name.
fn unknown_function(runtime: &str, query_type: &str, names: &str) -> String {
    format!(
        "Compute-module runtime '{runtime}' has no function '{query_type}'; its posted schemas \
         name: {names}. (Serve with --allow-unknown-query-types to hand it such jobs anyway.)"
    )
}

/// The schema both SDKs post for `add(x: int, y: int) -> int` (Python adds
/// `ontologyProvenance: null`).
fn add_schema() -> Value {
    let int = json!({"type": "integer", "integer": {}});
    json!({
        "functionName": "add",
        "inputs": [
            {"name": "x", "required": true, "constraints": [], "dataType": int},
            {"name": "y", "required": true, "constraints": [], "dataType": int},
        ],
        "output": {"type": "single", "single": {"dataType": int}},
    })
}

/// utime + stime + cutime + cstime (clock ticks) of `root` and all its descendants, from
/// `/proc/PID/stat`. Reaped children's time lives on in their parent's cutime/cstime.
fn tree_cpu_ticks(root: u32) -> u64 {
    // (pid, ppid, ticks) of every process.
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state=0, ppid=1, ..., utime=11, stime=12, cutime=13, cstime=14.
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        procs.push((pid, num(1) as u32, num(11) + num(12) + num(13) + num(14)));
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    procs
        .iter()
        .filter(|p| tree.contains(&p.0))
        .map(|p| p.2)
        .sum()
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// With no jobs, the module only holds a long poll open: its process tree must use less than
/// 5% of one core over 10 s. Prints the figure (visible with --nocapture).
fn assert_idle_cpu(module: &mut Module) {
    module.assert_running("before the idle measurement");
    let hz = clock_ticks_per_second();
    let before = tree_cpu_ticks(module.pid());
    let started = Instant::now();
    // A measurement window, not synchronisation: the module must stay quiet for all of it.
    thread::sleep(IDLE_WINDOW);
    let after = tree_cpu_ticks(module.pid());
    let elapsed = started.elapsed().as_secs_f64();
    module.assert_running("during the idle measurement");
    let used = after.saturating_sub(before) as f64 / hz as f64;
    let share = used / elapsed;
    println!(
        "{}: idle CPU {:.3} s over {:.1} s = {:.2}% of one core ({} ticks at {hz} Hz; bound {:.0}%)",
        module.name,
        used,
        elapsed,
        share * 100.0,
        after.saturating_sub(before),
        IDLE_CPU_BOUND * 100.0
    );
    assert!(
        share < IDLE_CPU_BOUND,
        "the idle {} module used {:.2}% of one core over {elapsed:.1} s (bound {:.0}%)",
        module.name,
        share * 100.0,
        IDLE_CPU_BOUND * 100.0
    );
}

/// Python SDK (`foundry-compute-modules` 0.34.0): it only speaks HTTPS, so it needs the TLS
/// listener and its generated CA (the launcher passes both).
#[cfg(feature = "tls")]
#[test]
fn python_sdk_module_end_to_end() {
    const RID: &str = "ri.foundry.main.deployed-app.sdk-python";
    let python = repo().join(".venv/bin/python");
    require(&python, "the Python virtualenv with the SDK");
    let import = Command::new(&python)
        .args(["-c", "import compute_modules"])
        .output()
        .expect("run .venv/bin/python");
    assert!(
        import.status.success(),
        "foundry-compute-modules is not installed in .venv ({}): {SETUP_HINT}",
        String::from_utf8_lossy(&import.stderr).trim()
    );

    let server = sdk_server();
    assert!(
        server.running().tls_base_url().is_some(),
        "the Python SDK needs the emulator's TLS listener"
    );
    let app = sdk_app(&server);
    let mut module = Module::launch(
        &server,
        "python",
        RID,
        4,
        &[python.to_str().unwrap(), "fixtures/python/app.py"],
    );
    // The SDK posts its schemas, then the restart notification (which must answer 200 with a
    // JSON array or the SDK exits), then polls: a connected, living module shows all three.
    module.wait_connected(&server);
    module.assert_running("after its restart notification");

    // Sync results, exact bytes: json.dumps with its default separators and ASCII escapes.
    execute_exact(
        &app,
        RID,
        "echo",
        r#"{"s": "é", "a": [1, "x"]}"#,
        br#"{"s": "\u00e9", "a": [1, "x"]}"#,
    );
    execute_exact(&app, RID, "add", r#"{"x": 2, "y": 3}"#, b"5");

    // Async: submit, status, result/v2.
    let (add_job, bytes) = submit_and_wait(&app, RID, "add", json!({"x": 40, "y": 2}));
    assert_eq!(bytes, b"42", "async add result");

    // A raising function: the SDK posts {"exception": "<str(e)>: <traceback>"} as a normal
    // result, so the application sees 200 with that JSON and the job succeeded.
    let resp = app.execute(&exec_body(RID, "fails", json!({})));
    resp.expect_status(200);
    let failure = resp.json();
    let message = failure["exception"]
        .as_str()
        .unwrap_or_else(|| panic!("want {{\"exception\": \"...\"}}, got {failure}"));
    assert_eq!(
        failure.as_object().map(|o| o.len()),
        Some(1),
        "only the exception key: {failure}"
    );
    assert!(
        message.starts_with("boom from the fixture: Traceback (most recent call last):")
            && message.contains("ValueError: boom from the fixture"),
        "exception message: {message}"
    );

    // A streaming generator: one chunk per item, stored as the concatenated JSON values.
    execute_exact(
        &app,
        RID,
        "count",
        r#"{"n": 3}"#,
        br#"{"i": 0}{"i": 1}{"i": 2}"#,
    );
    execute_exact(&app, RID, "count", r#"{"n": 0}"#, b"");
    // The same, passed on to a raw-socket application item by item (a chat module's case).
    let gates = GateDir::new("python-stream");
    streamed_execute(&server, RID, &gates, 5);

    // The envelope's authHeader (the submitting request's Authorization) reaches the function.
    let (whoami_job, bytes) = submit_and_wait(&app, RID, "whoami", json!({}));
    let seen: Value = serde_json::from_slice(&bytes).expect("whoami answers JSON");
    println!("python: the SDK's context for job {whoami_job}: {seen}");
    assert_eq!(seen["jobId"], json!(whoami_job), "{seen}");
    assert_eq!(
        seen["authHeader"],
        json!(format!("Bearer {APP_TOKEN}")),
        "{seen}"
    );
    // The emulator's caller is the bearer token's holder: its token is the temporary
    // credential, and its user is the one `/multipass/api/me` names (permissive mode: the
    // default user, for any token the emulator did not issue).
    assert_eq!(seen["userId"], json!(server.user_id(APP_TOKEN)), "{seen}");
    assert_eq!(seen["tempCredsAuthToken"], json!(APP_TOKEN), "{seen}");

    // 20 concurrent sync executes (4 pool workers), each paired with its own input.
    concurrent_executes(&app, RID, |i| {
        if i % 2 == 0 {
            let pad = "x".repeat(i);
            let query = format!(r#"{{"pad":"{pad}","i":{i}}}"#);
            let want = format!(r#"{{"pad": "{pad}", "i": {i}}}"#);
            ("echo", query, want.into_bytes())
        } else {
            let query = format!(r#"{{"x":{i},"y":1000}}"#);
            ("add", query, (i + 1000).to_string().into_bytes())
        }
    });

    // Schemas, posted at start-up, stored under each function's name.
    let schemas = wait_schemas(
        &server,
        &module.runtime_id,
        &add_job,
        &["echo", "add", "fails", "count", "gated", "whoami"],
    );
    let mut want_add = add_schema();
    want_add["ontologyProvenance"] = Value::Null;
    assert_json(&schemas["add"], &want_add, "Python add schema");
    for (name, schema) in &schemas {
        assert_eq!(schema["functionName"], json!(name), "{schema}");
    }
    // The same schemas through the Contour route, in the SDK's shape without its own fields.
    let posted = posted_schemas(&server, &module.runtime_id, &add_job);
    assert_app_schemas(&app, RID, &posted);
    let listed = app.schemas(RID, Some("master")).json();
    let add = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["functionName"] == "add");
    assert_json(
        add.unwrap(),
        &add_schema(),
        "Python add through GET /schemas",
    );

    assert_idle_cpu(&mut module);

    // Last, since it ends the module: killed while it streams, the job fails and the
    // application's answer ends without its terminating chunk.
    let gates = GateDir::new("python-killed");
    let (mut answer, job) = start_gated(&server, RID, &gates, 3);
    crate::streaming::expect_bytes(&mut answer, br#"{"i": 0}"#);
    module.kill();
    use crate::streaming::{read_chunk, Chunk};
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    let status = app.status_json(&job);
    assert_eq!(status["type"], json!("failed"), "{status}");
    let broke =
        format!("The result stream of compute-module job '{job}' broke off before its end: ");
    let message = status["failed"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&broke), "{status}");
}

/// A fresh directory for the `gated` fixture's gate files, removed when dropped.
#[cfg(feature = "tls")] // only the Python test uses it, and the Python SDK needs TLS
struct GateDir(PathBuf);

#[cfg(feature = "tls")]
impl GateDir {
    fn new(name: &str) -> GateDir {
        let dir = std::env::temp_dir().join(format!(
            "foundry-emulator-sdk-gates-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the gate directory");
        GateDir(dir)
    }

    /// Lets the `gated` function produce item `i`.
    fn open(&self, i: usize) {
        File::create(self.0.join(i.to_string())).expect("create a gate file");
    }
}

#[cfg(feature = "tls")]
impl Drop for GateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a sync execute of the `gated` streaming function (plain HTTP, raw socket) and
/// reads the streamed head; returns the answer and the job's id (from the listing).
#[cfg(feature = "tls")]
fn start_gated(
    server: &TestServer,
    rid: &str,
    gates: &GateDir,
    n: usize,
) -> (crate::streaming::Answer, String) {
    let query = json!({"n": n, "gate": gates.0.to_str().expect("a UTF-8 temp path")});
    let body = serde_json::to_vec(&exec_body(rid, "gated", query)).unwrap();
    let stream = crate::streaming::send_execute_body(server.addr, "HTTP/1.1", &body);
    stream
        .set_read_timeout(Some(SDK_CLIENT_TIMEOUT))
        .expect("a read timeout");
    let answer = crate::streaming::read_head(stream);
    crate::streaming::assert_streamed_head(&answer);
    let listed = send(
        &agent(),
        "GET",
        &server.url("/_emulate/jobs?query_type=gated&limit=1"),
        &[],
        None,
    );
    listed.expect_status(200);
    let job = listed.json()["jobs"][0]["id"]
        .as_str()
        .expect("the gated job is listed")
        .to_string();
    (answer, job)
}

/// Each item of a `gated` execute reaches the application before the next is produced (the
/// next gate opens only after the item was read); the answer ends whole, and the job keeps
/// the concatenation.
#[cfg(feature = "tls")]
fn streamed_execute(server: &TestServer, rid: &str, gates: &GateDir, n: usize) {
    let (mut answer, job) = start_gated(server, rid, gates, n);
    let mut all = Vec::new();
    for i in 0..n {
        if i > 0 {
            gates.open(i);
        }
        let item = format!(r#"{{"i": {i}}}"#);
        crate::streaming::expect_bytes(&mut answer, item.as_bytes());
        all.extend_from_slice(item.as_bytes());
    }
    use crate::streaming::{read_chunk, Chunk};
    assert_eq!(read_chunk(&mut answer), Chunk::End, "the answer ends whole");
    assert_octets(&server.app().result_by_id(&job), &all);
}

/// TypeScript SDK (`@palantir/compute-module` 0.2.7) from plain JavaScript. It uses the full
/// URIs, so it talks plain HTTP even when the emulator also serves HTTPS.
#[test]
fn typescript_sdk_module_end_to_end() {
    const RID: &str = "ri.foundry.main.deployed-app.sdk-typescript";
    require(
        &repo().join("fixtures/ts/node_modules/@palantir/compute-module/package.json"),
        "the npm SDK",
    );
    let server = sdk_server();
    let app = sdk_app(&server);
    let mut module = Module::launch(
        &server,
        "typescript",
        RID,
        1,
        &["node", "fixtures/ts/app.js"],
    );
    module.wait_connected(&server);

    // Sync results, exact bytes: JSON.stringify (compact, UTF-8 as is).
    execute_exact(
        &app,
        RID,
        "echo",
        r#"{"text": "hé", "n": [1, 2]}"#,
        r#"{"text":"hé","n":[1,2]}"#.as_bytes(),
    );
    execute_exact(&app, RID, "add", r#"{"x": 2, "y": 3}"#, b"5");

    // Async: submit, status, result/v2.
    let (add_job, bytes) = submit_and_wait(&app, RID, "add", json!({"x": 40, "y": 2}));
    assert_eq!(bytes, b"42", "async add result");

    // 20 concurrent sync executes (the SDK runs every job it receives at once).
    concurrent_executes(&app, RID, |i| {
        if i % 2 == 0 {
            let query = format!(r#"{{"text": "t{i}", "i": {i}}}"#);
            let want = format!(r#"{{"text":"t{i}","i":{i}}}"#);
            ("echo", query, want.into_bytes())
        } else {
            let query = format!(r#"{{"x":{i},"y":1000}}"#);
            ("add", query, (i + 1000).to_string().into_bytes())
        }
    });

    // Schemas: posted after the first 2xx answer to a poll, stored by function name.
    let schemas = wait_schemas(&server, &module.runtime_id, &add_job, &["echo", "add"]);
    assert_json(&schemas["add"], &add_schema(), "TypeScript add schema");
    let string = json!({"type": "string", "string": {}});
    let want_echo = json!({
        "functionName": "echo",
        "inputs": [{"name": "text", "required": true, "constraints": [], "dataType": string}],
        "output": {"type": "single", "single": {"dataType": string}},
    });
    assert_json(&schemas["echo"], &want_echo, "TypeScript echo schema");
    let listed = wait_app_schemas(&app, RID, 2);
    assert_json(
        &json!(listed),
        &json!([want_echo, add_schema()]),
        "TypeScript schemas through GET /schemas",
    );

    // A query type the module does not define: the SDK would never answer it, so the job
    // fails at submit (without the rule, this execute would wait out its 60 s and get 504).
    let message = unknown_function(&module.runtime_id, "nope", "echo, add");
    let resp = app.execute(&exec_body(RID, "nope", json!({})));
    assert_error(&resp, 500, "job_failed", &message);
    let id = app.submit_id(RID, "nope", json!({}));
    let failed = json!({"type": "failed", "failed": {"message": message}});
    assert_json(&app.status_json(&id), &failed, "unknown function, async");
    module.assert_running("after the unknown functions");

    assert_idle_cpu(&mut module);
}

/// With `--allow-unknown-query-types`, a TypeScript SDK module receives a job its schemas do
/// not name (and, as the SDK does, never answers it: the application cancels it).
#[test]
fn typescript_sdk_receives_unknown_functions_with_the_flag() {
    const RID: &str = "ri.foundry.main.deployed-app.sdk-typescript-unknown";
    require(
        &repo().join("fixtures/ts/node_modules/@palantir/compute-module/package.json"),
        "the npm SDK",
    );
    let server = sdk_server_with(|cfg| cfg.limits.allow_unknown_query_types = true);
    let app = sdk_app(&server);
    let mut module = Module::launch(
        &server,
        "typescript-unknown",
        RID,
        1,
        &["node", "fixtures/ts/app.js"],
    );
    module.wait_connected(&server);
    wait_app_schemas(&app, RID, 2);
    let id = app.submit_id(RID, "nope", json!({}));
    // The module's long poll takes it: it is running, and nothing is left queued.
    server.wait_state(&id, foundry_emulator::JobState::Running);
    assert_eq!(server.queued(&module.runtime_id), 0);
    assert_no_content(&app.cancel(&id));
    let canceled = format!("Compute-module job '{id}' was canceled.");
    let failed = json!({"type": "failed", "failed": {"message": canceled}});
    assert_json(&app.status_json(&id), &failed, "canceled unknown function");
    // Known functions still work on the same module.
    execute_exact(&app, RID, "add", r#"{"x": 1, "y": 2}"#, b"3");
    module.assert_running("after the unknown function");
}

// ---- Palantir's OAuth2 clients, unmodified, against the token endpoint (strict mode) ----

/// The strict seed of `tests/oauth.rs`: echo built in, users, the `ci-app` confidential
/// client, and `module-client` for modules.
#[cfg(feature = "tls")]
fn auth_server() -> TestServer {
    let seed = foundry_emulator::Seed::load(&fixture("seed-auth.json")).expect("seed-auth.json");
    sdk_server_with(|cfg| cfg.seed = seed)
}

#[cfg(feature = "tls")]
const AUTH_ECHO_RID: &str = "ri.foundry.main.deployed-app.echo";

/// `host:port` of the HTTPS listener and the generated CA's path.
#[cfg(feature = "tls")]
fn tls_endpoint(server: &TestServer) -> (String, String) {
    let addr = server.running().tls_addr().expect("the TLS listener");
    let ca = server.running().ca_path().expect("a generated CA");
    (
        format!("127.0.0.1:{}", addr.port()),
        ca.display().to_string(),
    )
}

/// Runs a fixture client to completion (bounded) and parses its one JSON line.
#[cfg(feature = "tls")]
fn run_client(mut cmd: Command, what: &str) -> Value {
    cmd.current_dir(repo()).stdin(Stdio::null());
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = wait_bounded(child, START_TIMEOUT, what);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed {stdout:?}: {e}"))
}

/// Waits for a child, killing it past `limit` so a hung client fails the test.
#[cfg(feature = "tls")]
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

#[cfg(feature = "tls")]
#[test]
fn platform_sdk_confidential_client_gets_a_token_and_runs_a_strict_execute() {
    let python = repo().join(".venv/bin/python");
    require(&python, "the Python virtualenv with foundry-platform-sdk");
    let server = auth_server();
    let (host, ca) = tls_endpoint(&server);
    let mut cmd = Command::new(&python);
    cmd.arg("fixtures/python/oauth_client.py")
        .env("EMULATOR_HOST", &host)
        .env("EMULATOR_CA", &ca)
        .env("CLIENT_ID", "ci-app")
        .env("CLIENT_SECRET", "s3cr3t+/= x")
        .env("DEPLOYED_APP_RID", AUTH_ECHO_RID)
        // The SDK appends offline_access itself.
        .env("OAUTH_SCOPES", "api:read-data");
    let out = run_client(cmd, "foundry-platform-sdk ConfidentialClientAuth");
    println!("platform sdk: {out}");
    assert_eq!(out["execute_status"], 200, "{out}");
    // Echo answers the query's bytes as sent (Python's json.dumps separators).
    assert_eq!(out["execute_body"], r#"{"msg": "hi"}"#, "{out}");
    assert_eq!(out["user"]["username"], "ci-app", "{out}");
    assert_eq!(out["user"]["status"], "ACTIVE", "{out}");
    // The token really came from the emulator: a made-up bearer is refused in this mode.
    let refused =
        server
            .app_with_token("made-up")
            .execute(&exec_body(AUTH_ECHO_RID, "echo", json!({})));
    assert_eq!(refused.status, 401);
}

#[cfg(feature = "tls")]
#[test]
fn osdk_oauth_confidential_client_uses_basic_auth_and_runs_a_strict_execute() {
    let osdk = repo().join("fixtures/ts/node_modules/@osdk/oauth");
    require(&osdk, "npm @osdk/oauth");
    let server = auth_server();
    let (host, ca) = tls_endpoint(&server);
    let mut cmd = Command::new("node");
    cmd.arg("fixtures/ts/oauth-client.mjs")
        .env("EMULATOR_HOST", &host)
        .env("EMULATOR_CA", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("CLIENT_ID", "ci-app")
        .env("CLIENT_SECRET", "s3cr3t+/= x")
        .env("DEPLOYED_APP_RID", AUTH_ECHO_RID);
    let out = run_client(cmd, "@osdk/oauth createConfidentialOauthClient");
    println!("@osdk/oauth: {out}");
    assert_eq!(out["execute_status"], 200, "{out}");
    assert_eq!(out["execute_body"], r#"{"msg":"hi"}"#, "{out}");
}

/// A Python module gets a token inside a job with the SDK's own `oauth()`, from the flags or
/// from the seed's `oauth_client`, and the emulator accepts that token.
#[cfg(feature = "tls")]
#[test]
fn python_module_obtains_a_token_with_the_sdk_oauth_inside_a_job() {
    const RID: &str = "ri.foundry.main.deployed-app.py";
    let python = repo().join(".venv/bin/python");
    require(&python, "the Python virtualenv with the SDK");
    let server = auth_server();
    let app = {
        let mut app = server.app_with_token("static-ci-token");
        app.agent = agent_with_timeout(SDK_CLIENT_TIMEOUT);
        app
    };
    let command = [python.to_str().unwrap(), "fixtures/python/oauth_module.py"];
    // 1. The flags; 2. the seed's `oauth_client` of runtime `py-module` (no client flags).
    let launches: [(&str, &[&str]); 2] = [
        (
            "sdk-oauth-flags",
            &[
                "--token",
                "static-ci-token",
                "--client-id",
                "module-client",
                "--client-secret",
                "module-secret",
            ],
        ),
        ("py-module", &["--token", "static-ci-token"]),
    ];
    for (runtime_id, flags) in launches {
        let mut module =
            Module::launch_as(&server, "python-oauth", runtime_id, RID, 1, flags, &command);
        module.wait_connected(&server);
        let resp = app.execute(&exec_body(
            RID,
            "token",
            json!({"scopes": ["api:read-data"]}),
        ));
        assert_eq!(resp.status, 200, "{}: {}", runtime_id, resp.text());
        let token = resp.json()["token"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{runtime_id}: the SDK's oauth() got no token: {}",
                    resp.text()
                )
            })
            .to_string();
        assert!(token.starts_with("foundry_emulator_access_"), "{token}");
        // That token is accepted, and acts for the module's client.
        let echo = server.app_with_token(&token).execute(&exec_body(
            AUTH_ECHO_RID,
            "echo",
            json!({"from": "module"}),
        ));
        assert_octets(&echo, br#"{"from":"module"}"#);
        let me = send(
            &agent(),
            "GET",
            &server.url("/multipass/api/me"),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(me.json()["username"], "module-client", "{runtime_id}");
        // The seed gives py-module a source; the SDK reads it from the launcher's files.
        let source = app.execute(&exec_body(RID, "source", json!({"name": "WeatherApi"})));
        let want = if runtime_id == "py-module" {
            json!({"secret": "sk-test-123", "config": {"region": "eu"}})
        } else {
            json!({"secret": null, "config": {}})
        };
        assert_json(&source.json(), &want, runtime_id);
        drop(module);
    }
}
