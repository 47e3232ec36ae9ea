//! The `foundry-emulator` binary: `serve` (default echo, built-in runtime flags, seed errors)
//! and the client subcommands (`execute`, `submit`, `status`, `result`, `wait`, `wait-ready`,
//! `module`, `module-env`): their stdout bytes, stderr and exit codes.
//!
//! Every child is bounded in time and killed by a guard; every client call names its
//! emulator explicitly (flag or env), so nothing depends on port 4000.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::builtin::TempDir;
use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-emulator");
const ECHO_RID: &str = "ri.foundry.main.deployed-app.echo";
const EXEC_RID: &str = "ri.foundry.main.deployed-app.cli-exec";
/// An exec command that runs until its parent (the `serve` child) is gone: "never finishes"
/// for the test, yet leaves no stray process once the guard has killed the server.
const UNTIL_SERVER_DIES: &str = "while kill -0 $PPID 2>/dev/null; do sleep 0.1; done";
/// How long any one child process may run before the test kills it and fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(40);

/// A `foundry-emulator` command with a clean environment for our variables, run from the
/// crate root (seed files name the handler relative to it).
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("FOUNDRY_EMULATOR_URL")
        .env_remove("FOUNDRY_TOKEN")
        .env("RUST_LOG", "warn");
    cmd
}

/// A `serve` child; killed (and reaped) on drop. Also used by `framing` (log lines, leaks).
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Gets `()` once the child's stderr pipe has closed.
    stderr_done: mpsc::Receiver<()>,
}

impl Served {
    /// `serve --port 0 ARGS…`; returns once the first stdout line announced the address.
    fn start(args: &[&str]) -> Served {
        Served::start_env(args, &[])
    }

    /// Like [`Served::start`], with extra environment variables (e.g. `RUST_LOG`).
    pub(crate) fn start_env(args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut full = vec!["serve", "--port", "0"];
        full.extend_from_slice(args);
        let mut child = command(&full)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn foundry-emulator serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = drain_joinable(child.stderr.take().unwrap(), stderr.clone());
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut served = Served {
            child,
            base: String::new(),
            stderr,
            stderr_done,
        };
        let first = match line_rx.recv_timeout(CHILD_DEADLINE) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "serve {args:?} printed no address ({other:?}); stderr: {}",
                served.stderr_text()
            ),
        };
        served.base = first
            .strip_prefix("foundry-emulator listening on ")
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        served
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Stops the server with SIGTERM (so every log line is written), waits for it to exit and
    /// for its stderr to close, and returns that stderr. Bounded by [`CHILD_DEADLINE`].
    pub(crate) fn stop(&mut self) -> Vec<u8> {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(term.success(), "kill -TERM {}", self.child.id());
        let deadline = Instant::now() + CHILD_DEADLINE;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stderr_done
            .recv_timeout(Duration::from_secs(10))
            .expect("the child's stderr closes after it exits");
        self.stderr.lock().unwrap().clone()
    }

    /// `--emulator BASE` for a client subcommand.
    fn emulator(&self) -> [&str; 2] {
        ["--emulator", self.base.as_str()]
    }

    /// Runs a client subcommand against this server (adds `--emulator`).
    fn cli(&self, args: &[&str]) -> Out {
        self.cli_with(args, &[], None)
    }

    fn cli_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
        let mut full = args.to_vec();
        full.extend_from_slice(&self.emulator());
        run_with(&full, env, stdin)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished child left behind.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Out {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts the exit code, printing everything on mismatch.
    fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n  stdout: {:?}\n  stderr: {}",
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }

    /// Asserts stdout byte for byte.
    fn expect_stdout(&self, want: &[u8]) -> &Out {
        assert!(
            self.stdout == want,
            "stdout differs\n  want: {want:?} ({:?})\n  got:  {:?} ({:?})\n  stderr: {}",
            String::from_utf8_lossy(want),
            self.stdout,
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }

    /// Asserts a usage error as the README documents it: exit 2, nothing on stdout, and one
    /// line on stderr, `foundry-emulator: <sentence>`; returns stderr.
    fn expect_usage_error(&self) -> String {
        self.expect_code(2).expect_stdout(b"");
        let err = self.stderr_text();
        assert!(
            err.starts_with("foundry-emulator: ") && err.lines().count() == 1,
            "one sentence on stderr: {err:?}"
        );
        err
    }

    /// Asserts that stderr is exactly one line holding this JSON error body.
    fn expect_error_body(&self, code: &str, description: &str) -> &Out {
        let text = self.stderr_text();
        let line = text
            .strip_suffix('\n')
            .filter(|l| !l.contains('\n'))
            .unwrap_or_else(|| panic!("stderr is not one line: {text:?}"));
        let got: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr is not the JSON error body ({e}): {text:?}"));
        assert_json(
            &got,
            &json!({"error": code, "error_description": description}),
            "stderr error body",
        );
        self
    }

    /// The stdout parsed as one JSON value followed by a newline.
    fn stdout_json(&self) -> Value {
        let text = self.stdout_text();
        let line = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("stdout does not end with a newline: {text:?}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
    }
}

/// Runs the binary to completion (bounded by [`CHILD_DEADLINE`]).
fn run(args: &[&str]) -> Out {
    run_with(args, &[], None)
}

fn run_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
    let mut cmd = command(args);
    cmd.envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn foundry-emulator");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let out_done = drain_joinable(child.stdout.take().unwrap(), stdout.clone());
    let err_done = drain_joinable(child.stderr.take().unwrap(), stderr.clone());
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "foundry-emulator {args:?} still running after {CHILD_DEADLINE:?}; stderr: {}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The pipes close when the child exits (a grandchild could hold them: bound that too).
    for done in [out_done, err_done] {
        done.recv_timeout(Duration::from_secs(10))
            .expect("the child's pipes close after it exits");
    }
    let take = |buf: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *buf.lock().unwrap());
    Out {
        code: status.code(),
        stdout: take(&stdout),
        stderr: take(&stderr),
    }
}

/// Drains a pipe into `sink`; the receiver gets `()` at end of stream.
fn drain_joinable(
    mut pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(());
    });
    rx
}

/// The job id `submit` printed (one line).
fn submitted_id(out: &Out) -> String {
    out.expect_code(0);
    let text = out.stdout_text();
    let id = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("submit output {text:?}"));
    assert!(is_random_id(id, "foundry_job_"), "submit printed {text:?}");
    id.to_string()
}

fn exec_flag(command: &str) -> String {
    format!("{EXEC_RID}={command}")
}

// ---------------------------------------------------------------------------------------
// serve and execute
// ---------------------------------------------------------------------------------------

#[test]
fn serve_alone_brings_the_default_echo_runtime() {
    let served = Served::start(&[]);
    served
        .cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--query-type",
            "x",
            "--query",
            r#"{"a":1}"#,
        ])
        .expect_code(0)
        .expect_stdout(br#"{"a":1}"#);
    // And it is the plain HTTP route a curl line would use.
    let resp = send(
        &agent(),
        "POST",
        &served.url(&format!("{CONTOUR}/compute-modules/jobs/execute")),
        &[("Authorization", "Bearer any"), ("Content-Type", "application/json")],
        Some(format!(r#"{{"deployedAppRid":"{ECHO_RID}","queryType":"echo","query":{{"hello":"world"}}}}"#).as_bytes()),
    );
    assert_octets(&resp, br#"{"hello":"world"}"#);
}

#[test]
fn serve_no_echo_drops_the_default_runtime() {
    let served = Served::start(&["--no-echo"]);
    served
        .cli(&["execute", "--rid", ECHO_RID, "--query-type", "x"])
        .expect_code(5)
        .expect_error_body(
            "not_found",
            &format!("No active compute-module runtime is bound to '{ECHO_RID}'."),
        );
}

#[test]
fn execute_passes_the_query_through_verbatim() {
    // Key order and a number beyond f64 reach the runtime (and come back from echo) as typed.
    let served = Served::start(&[]);
    let query = r#"{"z":1,"a":2,"big":123456789012345678901234567890}"#;
    served
        .cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--query-type",
            "x",
            "--query",
            query,
        ])
        .expect_code(0)
        .expect_stdout(query.as_bytes());
}

#[test]
fn execute_reads_the_query_from_a_file_or_stdin() {
    let served = Served::start(&[]);
    let dir = TempDir::new("cli-query");
    let file = dir.path().join("query.json");
    std::fs::write(&file, br#"{"from":"file"}"#).unwrap();
    let at_file = format!("@{}", file.display());
    served
        .cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--query-type",
            "x",
            "--query",
            &at_file,
        ])
        .expect_code(0)
        .expect_stdout(br#"{"from":"file"}"#);
    served
        .cli_with(
            &[
                "execute",
                "--rid",
                ECHO_RID,
                "--query-type",
                "x",
                "--query",
                "-",
            ],
            &[],
            Some(br#"{"from":"stdin"}"#),
        )
        .expect_code(0)
        .expect_stdout(br#"{"from":"stdin"}"#);
    // No --query: {}.
    served
        .cli(&["execute", "--rid", ECHO_RID, "--query-type", "x"])
        .expect_code(0)
        .expect_stdout(b"{}");
}

#[test]
fn execute_rejects_a_bad_query_as_a_usage_error() {
    let served = Served::start(&[]);
    let missing = format!(
        "@{}",
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("no-such-query.json")
            .display()
    );
    for query in ["{not json", missing.as_str()] {
        let out = served.cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--query-type",
            "x",
            "--query",
            query,
        ]);
        out.expect_usage_error();
    }
}

#[test]
fn execute_unknown_rid_exits_5_with_the_error_body() {
    let served = Served::start(&[]);
    served
        .cli(&["execute", "--rid", "ri.nobody", "--query-type", "x"])
        .expect_code(5)
        .expect_stdout(b"")
        .expect_error_body(
            "not_found",
            "No active compute-module runtime is bound to 'ri.nobody'.",
        );
    // A branch nothing is bound on is not found either.
    served
        .cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--branch",
            "dev",
            "--query-type",
            "x",
        ])
        .expect_code(5);
    served
        .cli(&[
            "execute",
            "--rid",
            ECHO_RID,
            "--branch",
            "master",
            "--query-type",
            "x",
            "--query",
            "[]",
        ])
        .expect_code(0)
        .expect_stdout(b"[]");
}

#[test]
fn strict_tokens_exit_6_for_a_wrong_token() {
    let served = Served::start(&["--token", "s3cret"]);
    let args = [
        "execute",
        "--rid",
        ECHO_RID,
        "--query-type",
        "x",
        "--query",
        "1",
    ];
    let mut wrong = args.to_vec();
    wrong.extend(["--token", "wrong"]);
    served.cli(&wrong).expect_code(6).expect_stdout(b"");
    let err: Value = serde_json::from_str(served.cli(&wrong).stderr_text().trim_end())
        .expect("stderr is the JSON error body");
    assert_eq!(err["error"], "invalid_token", "{err}");
    // The default token is not configured either.
    served.cli(&args).expect_code(6);
    let mut right = args.to_vec();
    right.extend(["--token", "s3cret"]);
    served.cli(&right).expect_code(0).expect_stdout(b"1");
}

#[test]
fn env_vars_name_the_emulator_and_the_token() {
    let served = Served::start(&["--token", "from-env"]);
    let args = [
        "execute",
        "--rid",
        ECHO_RID,
        "--query-type",
        "x",
        "--query",
        r#"{"env":true}"#,
    ];
    let env = [
        ("FOUNDRY_EMULATOR_URL", served.base.as_str()),
        ("FOUNDRY_TOKEN", "from-env"),
    ];
    run_with(&args, &env, None)
        .expect_code(0)
        .expect_stdout(br#"{"env":true}"#);
    // The env token is really used: a wrong one is rejected.
    run_with(
        &args,
        &[
            ("FOUNDRY_EMULATOR_URL", &served.base),
            ("FOUNDRY_TOKEN", "nope"),
        ],
        None,
    )
    .expect_code(6);
    // Flags win over the environment.
    let mut flagged = args.to_vec();
    flagged.extend(["--emulator", &served.base, "--token", "from-env"]);
    run_with(
        &flagged,
        &[
            ("FOUNDRY_EMULATOR_URL", "http://127.0.0.1:1"),
            ("FOUNDRY_TOKEN", "nope"),
        ],
        None,
    )
    .expect_code(0);
}

#[test]
fn execute_of_a_failing_exec_runtime_exits_3() {
    let served = Served::start(&["--exec-runtime", &exec_flag("echo oops >&2; exit 3")]);
    let out = served.cli(&["execute", "--rid", EXEC_RID, "--query-type", "x"]);
    out.expect_code(3).expect_stdout(b"");
    let err: Value = serde_json::from_str(out.stderr_text().trim_end()).expect("JSON error body");
    assert_eq!(err["error"], "job_failed", "{err}");
    let description = err["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains("exited with status 3") && description.contains("oops"),
        "{description:?}"
    );
}

#[test]
fn execute_timeout_exits_4() {
    let served = Served::start(&[
        "--exec-runtime",
        &exec_flag(UNTIL_SERVER_DIES),
        "--exec-timeout",
        "10",
        "--execute-timeout",
        "0.5",
    ]);
    let out = served.cli(&["execute", "--rid", EXEC_RID, "--query-type", "x"]);
    out.expect_code(4).expect_stdout(b"");
    let err: Value = serde_json::from_str(out.stderr_text().trim_end()).expect("JSON error body");
    assert_eq!(err["error"], "job_timeout", "{err}");
}

#[test]
fn execute_writes_non_utf8_result_bytes_unchanged() {
    let served = Served::start(&["--exec-runtime", &exec_flag("printf '\\000\\377ab'")]);
    served
        .cli(&["execute", "--rid", EXEC_RID, "--query-type", "x"])
        .expect_code(0)
        .expect_stdout(&[0x00, 0xff, b'a', b'b']);
}

#[test]
fn exec_runtime_flag_sees_stdin_and_job_env() {
    let served = Served::start(&[
        "--exec-runtime",
        &exec_flag(r#"printf '%s|' "$FOUNDRY_QUERY_TYPE"; cat"#),
    ]);
    served
        .cli(&[
            "execute",
            "--rid",
            EXEC_RID,
            "--query-type",
            "shout",
            "--query",
            r#"["x"]"#,
        ])
        .expect_code(0)
        .expect_stdout(br#"shout|["x"]"#);
}

#[test]
fn echo_runtime_flag_and_seeded_exec_runtime() {
    let served = Served::start(&[
        "--no-echo",
        "--echo-runtime",
        "ri.foundry.main.deployed-app.mine",
        "--seed",
        "fixtures/seed-builtins.json",
    ]);
    served
        .cli(&[
            "execute",
            "--rid",
            "ri.foundry.main.deployed-app.mine",
            "--query-type",
            "x",
            "--query",
            "[2]",
        ])
        .expect_code(0)
        .expect_stdout(b"[2]");
    served
        .cli(&[
            "execute",
            "--rid",
            "ri.foundry.main.deployed-app.seed-exec",
            "--query-type",
            "binary",
        ])
        .expect_code(0)
        .expect_stdout(&[0x00, 0xff]);
    served
        .cli(&[
            "execute",
            "--rid",
            "ri.foundry.main.deployed-app.seed-exec",
            "--query-type",
            "fail",
        ])
        .expect_code(3);
    served
        .cli(&["execute", "--rid", ECHO_RID, "--query-type", "x"])
        .expect_code(5);
}

#[test]
fn execute_against_nothing_listening_exits_2() {
    let url = dead_url();
    let out = run(&[
        "execute",
        "--rid",
        ECHO_RID,
        "--query-type",
        "x",
        "--emulator",
        &url,
    ]);
    let err = out.expect_usage_error();
    let prefix = format!("foundry-emulator: cannot reach the emulator at {url}: ");
    assert!(
        err.starts_with(&prefix),
        "one sentence naming the URL: {err:?}"
    );
}

#[test]
fn a_client_side_timeout_exits_4_saying_what_it_waited_for() {
    let served = Served::start(&[
        "--exec-runtime",
        &exec_flag(UNTIL_SERVER_DIES),
        "--exec-timeout",
        "10",
    ]);
    let out = served.cli(&[
        "execute",
        "--rid",
        EXEC_RID,
        "--query-type",
        "x",
        "--timeout",
        "1",
    ]);
    out.expect_code(4).expect_stdout(b"");
    assert_eq!(
        out.stderr_text(),
        format!(
            "foundry-emulator: timed out after 1 s waiting for the sync execute of '{EXEC_RID}'\n"
        )
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"]);
    out.expect_code(0)
        .expect_stdout(format!("foundry-emulator {}\n", env!("CARGO_PKG_VERSION")).as_bytes());
    let served = Served::start(&[]);
    let info = send(&agent(), "GET", &served.url("/_emulate/info"), &[], None).json();
    assert_eq!(info["version"], json!(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_strict_mode_try_it_line_asks_for_a_real_token() {
    let mut served = Served::start_env(&["--token", "s3cret"], &[("RUST_LOG", "info")]);
    let log = String::from_utf8_lossy(&served.stop()).into_owned();
    assert!(
        log.contains("-H 'Authorization: Bearer <a --token value or an issued token>'"),
        "{log}"
    );
    assert!(!log.contains("Bearer any"), "{log}");
    assert!(log.contains(&format!(
        "foundry-emulator {} serving on",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(!log.contains("s3cret"), "the token is never logged");
}

// ---------------------------------------------------------------------------------------
// submit, status, result, wait, wait-ready
// ---------------------------------------------------------------------------------------

#[test]
fn submit_then_wait_status_and_result() {
    let served = Served::start(&[]);
    let id = submitted_id(&served.cli(&[
        "submit",
        "--rid",
        ECHO_RID,
        "--query-type",
        "x",
        "--query",
        r#"{"async":[1,2]}"#,
    ]));
    let waited = served.cli(&["wait", &id, "--timeout", "20"]);
    waited.expect_code(0);
    let status = waited.stdout_json();
    assert_eq!(status["type"], "succeeded", "{status}");
    assert!(
        status["succeeded"]["multiplexerJobTiming"].is_object(),
        "{status}"
    );
    let status = served.cli(&["status", &id]);
    status.expect_code(0);
    assert_eq!(status.stdout_json(), waited.stdout_json());
    served
        .cli(&["result", &id])
        .expect_code(0)
        .expect_stdout(br#"{"async":[1,2]}"#);
}

#[test]
fn status_and_result_of_an_unknown_job_exit_5() {
    let served = Served::start(&[]);
    for sub in ["status", "result", "wait"] {
        served
            .cli(&[sub, "foundry_job_nope"])
            .expect_code(5)
            .expect_stdout(b"");
    }
}

#[test]
fn wait_on_a_failed_job_exits_3_and_prints_its_status() {
    let served = Served::start(&["--exec-runtime", &exec_flag("echo nope >&2; exit 9")]);
    let id = submitted_id(&served.cli(&["submit", "--rid", EXEC_RID, "--query-type", "x"]));
    let out = served.cli(&["wait", &id, "--timeout", "20"]);
    out.expect_code(3);
    let status = out.stdout_json();
    assert_eq!(status["type"], "failed", "{status}");
    let message = status["failed"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exited with status 9") && message.contains("nope"),
        "{message:?}"
    );
    // Its result is not ready (409): another API error.
    served
        .cli(&["result", &id])
        .expect_code(1)
        .expect_stdout(b"")
        .expect_error_body(
            "job_not_ready",
            &format!("Compute-module job '{id}' has not completed successfully."),
        );
}

#[test]
fn wait_on_a_job_that_never_finishes_exits_4() {
    let served = Served::start(&["--exec-runtime", &exec_flag(UNTIL_SERVER_DIES)]);
    let id = submitted_id(&served.cli(&["submit", "--rid", EXEC_RID, "--query-type", "x"]));
    let out = served.cli(&["wait", &id, "--timeout", "0.5"]);
    out.expect_code(4).expect_stdout(b"");
    assert!(out.stderr_text().contains(&id), "{}", out.stderr_text());
    // status shows it queued or running, and result is not ready.
    let status = served.cli(&["status", &id]);
    status.expect_code(0);
    let kind = status.stdout_json()["type"].clone();
    assert!(kind == "running" || kind == "queued", "{kind}");
    served.cli(&["result", &id]).expect_code(1);
}

#[test]
fn wait_ready_succeeds_against_a_running_server() {
    let served = Served::start(&[]);
    served
        .cli(&["wait-ready", "--timeout", "10"])
        .expect_code(0)
        .expect_stdout(b"");
    let health = send(&agent(), "GET", &served.url("/_emulate/health"), &[], None);
    health.expect_status(200);
    assert_json(&health.json(), &json!({"status": "ok"}), "health");
}

#[test]
fn wait_ready_times_out_with_nothing_listening() {
    let url = dead_url();
    let out = run(&["wait-ready", "--emulator", &url, "--timeout", "0.3"]);
    out.expect_code(4).expect_stdout(b"");
    assert!(out.stderr_text().contains(&url), "{}", out.stderr_text());
}

/// A URL where nothing listens: a port the OS gave us, released again.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// bad start-up
// ---------------------------------------------------------------------------------------

#[test]
fn bad_seed_exits_2_with_one_line_naming_file_entry_and_field() {
    let out = run(&[
        "serve",
        "--port",
        "0",
        "--seed",
        "fixtures/seed-unknown-runtime.json",
    ]);
    let err = out.expect_usage_error();
    for part in [
        "seed-unknown-runtime.json",
        "foundry.compute_modules.deployed_apps[0]",
        "runtime_id",
        "ghost",
    ] {
        assert!(err.contains(part), "stderr names {part:?}: {err:?}");
    }
}

/// Seed typos stop start-up with one sentence naming the file, the entry and the key, and
/// the near key when there is one; unimplemented sections of other emulators' seeds warn.
#[test]
fn seed_typos_stop_start_up_naming_the_key() {
    let dir = TempDir::new("seed-typos");
    let cases = [
        (
            json!({"foundry": {"compute_modules": {
                "runtimes": [{"runtime_id": "rt"}],
                "deployed_apps": [{"deployed_app_rid": "ri.a", "runtime_id": "rt", "brnach": "dev"}],
            }}}),
            "entry foundry.compute_modules.deployed_apps[0], field 'brnach': is not a known key; did you mean `branch`?",
        ),
        (
            json!({"tokenz": ["secret"]}),
            "entry the top level, field 'tokenz': is not a known key; did you mean `tokens`?",
        ),
        (
            json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "rt", "bultin": "echo"}]}}}),
            "entry foundry.compute_modules.runtimes[0], field 'bultin': is not a known key; did you mean `builtin`?",
        ),
        (
            json!({"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "rt", "exec": {"comand": ["true"]}}]}}}),
            "entry foundry.compute_modules.runtimes[0].exec, field 'comand': is not a known key; did you mean `command`?",
        ),
        (
            json!({"foundry": {"compute_modles": {}}}),
            "entry foundry, field 'compute_modles': is not a known key; did you mean `compute_modules`?",
        ),
        (
            json!({"zzz": 1}),
            "entry the top level, field 'zzz': is not a known key (known: foundry, tokens)",
        ),
    ];
    for (n, (seed, sentence)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("seed-{n}.json"));
        std::fs::write(&path, seed.to_string()).unwrap();
        let out = run(&["serve", "--port", "0", "--seed", path.to_str().unwrap()]);
        assert_eq!(
            out.expect_usage_error(),
            format!(
                "foundry-emulator: seed file {}, {sentence}\n",
                path.display()
            ),
            "case {n}"
        );
    }
    // Sections this emulator does not implement, and a runtime bound to nothing: warnings.
    let path = dir.path().join("seed-warn.json");
    let seed = json!({"foundry": {"groups": [], "ontologies": {}, "compute_modules": {
        "runtimes": [{"runtime_id": "lonely"}]}}});
    std::fs::write(&path, seed.to_string()).unwrap();
    let mut served =
        Served::start_env(&["--seed", path.to_str().unwrap()], &[("RUST_LOG", "warn")]);
    let log = String::from_utf8_lossy(&served.stop()).into_owned();
    assert!(
        log.contains("seed: ignoring foundry.groups, foundry.ontologies: this emulator does not implement them"),
        "{log}"
    );
    assert!(
        log.contains("seed: runtime 'lonely' is bound to no deployed app"),
        "{log}"
    );
}

#[test]
fn bad_flags_exit_non_zero_without_serving() {
    let cases: &[&[&str]] = &[
        &["serve", "--port", "0", "--no-such-flag"],
        &["serve", "--port", "0", "--exec-runtime", "no-equals-sign"],
        &["serve", "--port", "0", "--execute-timeout", "soon"],
        &["execute", "--query-type", "x"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = run(args);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{args:?} must fail: {out:?}"
        );
        assert!(
            !out.stdout_text().contains("listening"),
            "{args:?} must not serve"
        );
        assert!(!out.stderr.is_empty(), "{args:?} says why: {out:?}");
    }
    // A bad --exec-runtime is our own error: one sentence, exit 2.
    let out = run(&["serve", "--port", "0", "--exec-runtime", "no-equals-sign"]);
    let err = out.expect_usage_error();
    assert!(err.contains("no-equals-sign"), "{err}");
}

#[test]
fn usage_errors_exit_2_as_documented() {
    // README: "2 usage error or emulator unreachable"; 1 means another API error, so a CI
    // script must not see 1 for a mistyped command line.
    let cases: &[&[&str]] = &[
        &["execute", "--query-type", "x"],
        &[
            "execute",
            "--rid",
            "r",
            "--query-type",
            "x",
            "--no-such-flag",
        ],
        &["status"],
        &["wait", "job", "--timeout", "soon"],
        &["serve", "--port", "0", "--no-such-flag"],
    ];
    for args in cases {
        let out = run(args);
        assert_eq!(
            out.code,
            Some(2),
            "{args:?} is a usage error; stderr: {}",
            out.stderr_text()
        );
    }
}

#[test]
fn sigterm_to_serve_leaves_no_exec_command_running() {
    // The README's CI job ends with `kill $EMULATOR_PID`. Exec commands run in their own
    // process groups, so unless serve shuts down on SIGTERM they outlive it.
    let dir = TempDir::new("cli-sigterm");
    let pid_file = dir.path().join("pid");
    let command = format!("echo $$ > '{}'; exec sleep 20", pid_file.display());
    let mut served = Served::start(&["--no-echo", "--exec-runtime", &exec_flag(&command)]);
    submitted_id(&served.cli(&["submit", "--rid", EXEC_RID, "--query-type", "x"]));
    let deadline = Instant::now() + CHILD_DEADLINE;
    let handler_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the exec command never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    let alive = |pid: u32| {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("run kill")
            .success()
    };
    assert!(alive(handler_pid), "the exec command runs");
    let term = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let deadline = Instant::now() + CHILD_DEADLINE;
    while served.child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(handler_pid) {
        assert!(
            Instant::now() < deadline,
            "exec command {handler_pid} still runs after serve was stopped with SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// module and module-env
// ---------------------------------------------------------------------------------------

/// Removes the launcher's token file when dropped (not its directory: other tests' modules
/// share it).
struct TokenDir(std::path::PathBuf);

impl Drop for TokenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn token_dir(token_file: &str) -> TokenDir {
    TokenDir(std::path::PathBuf::from(token_file))
}

#[test]
fn module_exit_code_is_the_command_exit_code() {
    let served = Served::start(&["--no-echo"]);
    let out = run(&[
        "module",
        "--emulator",
        &served.base,
        "--runtime-id",
        "t",
        "--",
        "sh",
        "-c",
        "printf '%s' \"$MODULE_AUTH_TOKEN\"; exit 7",
    ]);
    let _cleanup = token_dir(&out.stdout_text());
    out.expect_code(7);
}

#[test]
fn module_gives_the_command_the_sdk_environment() {
    let served = Served::start(&["--no-echo"]);
    let out = run(&[
        "module",
        "--emulator",
        &served.base,
        "--runtime-id",
        "t",
        "--concurrency",
        "3",
        "--",
        "sh",
        "-c",
        r#"printf "%s|%s|%s|" "$MAX_CONCURRENT_TASKS" "$GET_JOB_URI" "$MODULE_AUTH_TOKEN"; cat "$MODULE_AUTH_TOKEN""#,
    ]);
    out.expect_code(0);
    let text = out.stdout_text();
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(parts.len(), 4, "{text:?}");
    let _cleanup = token_dir(parts[2]);
    assert_eq!(parts[0], "3");
    assert_eq!(parts[1], served.url(&format!("{RUNTIMES}/t/job")));
    assert!(
        is_random_id(parts[3], "foundry_module_auth_"),
        "the token file holds just the token, no newline: {:?}",
        parts[3]
    );
}

/// Parses `export NAME='value'` lines; every line must have that shape.
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
                .unwrap_or_else(|| panic!("not an export line: {line:?}"));
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("value not single-quoted: {line:?}"));
            assert!(!value.contains('\''), "no quote inside {line:?}");
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn module_env_prints_exports_and_the_token_works() {
    let served = Served::start(&["--no-echo", "--poll-wait", "0"]);
    let out = run(&[
        "module-env",
        "--emulator",
        &served.base,
        "--runtime-id",
        "t",
        "--concurrency",
        "2",
    ]);
    out.expect_code(0);
    let exports = parse_exports(&out.stdout_text());
    let get = |name: &str| -> String {
        exports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no export of {name} in {exports:?}"))
    };
    let token_file = get("MODULE_AUTH_TOKEN");
    let _cleanup = token_dir(&token_file);
    let port = served.base.rsplit(':').next().unwrap().to_string();
    let runtime = served.url(&format!("{RUNTIMES}/t"));
    let want = [
        ("RUNTIME_HOST", "127.0.0.1".to_string()),
        ("RUNTIME_PORT", port),
        ("GET_JOB_URI", format!("{runtime}/job")),
        ("POST_RESULT_URI", format!("{runtime}/results")),
        ("POST_SCHEMA_URI", format!("{runtime}/schemas")),
        ("RESTART_NOTIFICATION_URI", format!("{runtime}/restart")),
        ("MAX_CONCURRENT_TASKS", "2".to_string()),
    ];
    for (name, value) in want {
        assert_eq!(get(name), value, "{name}");
    }
    let token = std::fs::read_to_string(&token_file).expect("the token file exists");
    assert!(is_random_id(&token, "foundry_module_auth_"), "{token:?}");

    // The launcher's token is the session's: polls with it are accepted.
    let poll = |token: &str| {
        send(
            &agent(),
            "GET",
            &get("GET_JOB_URI"),
            &[("Module-Auth-Token", token)],
            None,
        )
    };
    let resp = poll(&token);
    assert!(
        resp.status == 204 || resp.status == 200,
        "poll with the launcher's token: {} {}",
        resp.status,
        resp.text()
    );
    assert_eq!(poll("foundry_module_auth_wrong").status, 401);

    // A second launch resets the session: the first token stops working.
    let again = run(&[
        "module-env",
        "--emulator",
        &served.base,
        "--runtime-id",
        "t",
    ]);
    again.expect_code(0);
    let second = parse_exports(&again.stdout_text());
    let file = &second
        .iter()
        .find(|(n, _)| n == "MODULE_AUTH_TOKEN")
        .unwrap()
        .1;
    let _cleanup2 = token_dir(file);
    let new_token = std::fs::read_to_string(file).unwrap();
    assert_ne!(new_token, token);
    assert_eq!(poll(&token).status, 401);
    assert_eq!(poll(&new_token).status, 204);
}

#[test]
fn module_against_nothing_listening_exits_2() {
    let url = dead_url();
    let out = run(&[
        "module",
        "--emulator",
        &url,
        "--runtime-id",
        "t",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    let err = out.expect_usage_error();
    assert!(err.contains(&url), "{err}");
}

/// The README's CI recipe is `fixtures/ci-recipe.sh` verbatim, and it works as pasted.
#[test]
fn the_readme_ci_recipe_runs_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = std::fs::read_to_string(root.join("fixtures/ci-recipe.sh")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```sh\n{recipe}```")),
        "README.md's CI section must hold fixtures/ci-recipe.sh verbatim"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut child = Command::new("bash")
        .arg(root.join("fixtures/ci-recipe.sh"))
        .env("EMULATOR", BIN)
        .env("PORT", &port)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs the recipe");
    let deadline = Instant::now() + CHILD_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the recipe did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the recipe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"the emulator answered: {"ok": true, "greeting": "hello Ada"}"#),
        "{stdout}"
    );
}

/// Every `serve` option in `--help` is in the README's option table, and the table names no
/// option `serve` does not have.
#[test]
fn the_readme_option_table_matches_serve_help() {
    let help = run(&["serve", "--help"]);
    help.expect_code(0);
    let from_help: std::collections::BTreeSet<String> = help
        .stdout_text()
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .map(|rest| {
            let name = rest.split(|c: char| c.is_whitespace() || c == ',').next();
            format!("--{}", name.unwrap_or(""))
        })
        .filter(|flag| flag != "--help")
        .collect();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split("## Command line")
        .nth(1)
        .and_then(|rest| rest.split("### Client subcommands").next())
        .expect("the Command line section");
    let from_readme: std::collections::BTreeSet<String> = table
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .flat_map(|line| {
            let first = line.split('|').nth(1).unwrap_or("");
            first
                .split('`')
                .filter(|part| part.starts_with("--"))
                .map(|part| part.split_whitespace().next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        from_readme, from_help,
        "README option table vs `serve --help`"
    );
}

#[test]
fn execute_of_a_streamed_result_that_breaks_off_exits_3_and_prints_nothing() {
    const RID: &str = "ri.foundry.main.deployed-app.cli-stream";
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let base = server.base_url.clone();
    let execute = std::thread::spawn(move || {
        run(&[
            "execute",
            "--emulator",
            &base,
            "--rid",
            RID,
            "--query-type",
            "chat",
        ])
    });
    let job = rt.next_job_id();
    // A chunked post the module abandons after its first chunk.
    let mut post = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST {RUNTIMES}/rt/results/{job} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Module-Auth-Token: {}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
        rt.token
    );
    post.write_all(head.as_bytes()).unwrap();
    // The execute answered with the stream (its head is on its way) before the post drops.
    let answered = r#"foundry_emulator_http_requests_total{route="execute",status="200"} 1"#;
    wait_for("the execute to answer with its stream", || {
        send(&agent(), "GET", &server.url("/metrics"), &[], None)
            .text()
            .lines()
            .any(|line| line == answered)
    });
    drop(post);
    let out = execute.join().unwrap();
    out.expect_code(3).expect_stdout(b"");
    let err = out.stderr_text();
    let prefix = format!(
        "foundry-emulator: the answer from the emulator at {} broke off before its end",
        server.base_url
    );
    assert!(
        err.starts_with(&prefix) && err.lines().count() == 1,
        "{err:?}"
    );
}

/// A supervisor may signal as soon as it read the address line: the stop is still graceful
/// (the handler is installed before the line is printed), every start-up line is logged, and
/// the exit status is 0, not death by SIGTERM. The signal goes the instant the line's newline
/// is read (`kill(2)`, no `kill` process), 20 times.
#[test]
fn sigterm_right_after_the_address_line_stops_gracefully() {
    for _ in 0..20 {
        let mut child = command(&["serve", "--port", "0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).expect("read stdout") == 1 && byte[0] != b'\n' {}
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let out = child.wait_with_output().expect("serve exits");
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{:?}; log: {log}", out.status);
        assert!(log.contains("try it: curl"), "{log}");
        assert!(log.contains("stopping: failing open jobs"), "{log}");
    }
}
