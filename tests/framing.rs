//! Strict HTTP/1.1 framing, over raw sockets: ambiguous or unsupported framing is refused with
//! a JSON error, `Connection: close` and a closed connection, so a request smuggled behind it
//! never runs; legal but unusual framing (trailers, bare LF, obs-text, absolute-form) is
//! served; HEAD works on every GET route; ids and log lines cannot carry forged text; and
//! HTTP/2 prefaces leak neither threads nor file descriptors.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::Served;
use crate::util::*;

/// How long an answer may take to arrive.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to close the connection after a framing rejection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long we listen for a stray second answer on a connection that stays open.
const QUIET_TIME: Duration = Duration::from_millis(300);
/// A well-formed job id that no job has.
const NO_JOB: &str = "foundry_job_00000000000000000000000000000000";
const RID: &str = "ri.foundry.main.deployed-app.framing";
/// The table server's `--max-body`.
const TABLE_MAX_BODY: usize = 65_000;

// ---------------------------------------------------------------------------------------
// A raw keep-alive connection
// ---------------------------------------------------------------------------------------

/// One raw connection that reads answers one at a time (bytes past an answer stay buffered).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// The Content-Length an answer declared.
fn content_length(resp: &Resp) -> Option<usize> {
    resp.header("content-length").map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
    })
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`; a server that already answered and closed may make this fail,
    /// which is returned rather than fatal.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into the buffer before `deadline`. `Ok(0)` is EOF.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "deadline passed"));
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one answer: status line, headers and (unless `head_only`) its Content-Length
    /// body. `Err` says what went wrong (EOF, timeout, reset) and what had arrived.
    fn try_read(&mut self, head_only: bool) -> Result<Resp, String> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match self.fill(deadline) {
                Ok(0) => return Err(format!("EOF before a complete head; got {}", self.shown())),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "no complete head: {}; got {}",
                        describe(&e),
                        self.shown()
                    ))
                }
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: Option<u16> = parts.next().and_then(|s| s.parse().ok());
        let Some(status) = status.filter(|_| version == "HTTP/1.1") else {
            return Err(format!("bad status line {status_line:?}"));
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        self.buf.drain(..end + 4);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        let len = content_length(&resp).unwrap_or(0);
        if !head_only {
            while self.buf.len() < len {
                match self.fill(deadline) {
                    Ok(0) => return Err(format!("EOF inside the body of {status}")),
                    Ok(_) => {}
                    Err(e) => return Err(format!("body of {status} incomplete: {}", describe(&e))),
                }
            }
            resp.body = self.buf.drain(..len).collect();
        }
        Ok(resp)
    }

    fn read(&mut self, what: &str) -> Resp {
        self.try_read(false)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Reads the answer to a HEAD request: a head, no body.
    fn read_head(&mut self, what: &str) -> Resp {
        self.try_read(true)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Asserts that the server closes the connection (EOF or reset) within [`CLOSE_TIMEOUT`]
    /// and sends nothing more.
    fn expect_closed(&mut self, what: &str) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        loop {
            assert!(
                self.buf.is_empty(),
                "{what}: a second answer after the first: {}",
                self.shown()
            );
            match self.fill(deadline) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => {
                    panic!("{what}: the connection is still open after {CLOSE_TIMEOUT:?} ({e})")
                }
            }
        }
    }

    /// Asserts that nothing more arrives for [`QUIET_TIME`] and the connection stays open.
    fn expect_quiet(&mut self, what: &str) {
        let deadline = Instant::now() + QUIET_TIME;
        assert!(self.buf.is_empty(), "{what}: stray bytes {}", self.shown());
        match self.fill(deadline) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("{what}: the server closed a connection that should stay open"),
            Ok(_) => panic!("{what}: a stray second answer: {}", self.shown()),
            Err(e) => panic!("{what}: the connection broke: {e}"),
        }
    }

    /// Reads and discards until EOF, a reset or [`CLOSE_TIMEOUT`].
    fn drain(&mut self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while let Ok(n) = self.fill(deadline) {
            if n == 0 {
                break;
            }
        }
    }

    fn shown(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf[..self.buf.len().min(600)]).into_owned();
        format!("{} bytes {text:?}", self.buf.len())
    }
}

/// A read error in words: a timeout is a hang.
fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("timed out (the server neither answered nor closed) after {ANSWER_TIMEOUT:?}")
        }
        ErrorKind::ConnectionReset => "connection reset by the server".to_string(),
        _ => e.to_string(),
    }
}

/// A plain keep-alive health request.
fn health_request(close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET /_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}\r\n").into_bytes()
}

fn assert_health(resp: &Resp, what: &str) {
    assert_eq!(
        resp.status,
        200,
        "{what}: {:?} {}",
        resp.headers,
        resp.text()
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(resp.body, br#"{"status":"ok"}"#, "{what}: {}", resp.text());
}

/// A fresh connection is answered: the server still serves.
fn assert_fresh_health(addr: SocketAddr, what: &str) {
    let mut conn = Conn::open(addr);
    conn.send(&health_request(true)).expect("write health");
    let resp = conn.read(&format!("{what}: health on a fresh connection"));
    assert_health(&resp, what);
}

/// Asserts a framing rejection: this status, the JSON body `{"error": code,
/// "error_description": <non-empty sentence>}`, `Content-Type: application/json`,
/// `Connection: close`, then EOF with no second answer.
fn assert_rejected(conn: &mut Conn, status: u16, code: &str, what: &str) {
    let resp = conn.read(what);
    assert_eq!(
        resp.status,
        status,
        "{what}: want {status} {code}; got headers {:?} body {}",
        resp.headers,
        resp.text()
    );
    assert_error_shape(&resp, code, what);
    assert!(
        resp.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{what}: a framing rejection says Connection: close; headers {:?}",
        resp.headers
    );
    conn.expect_closed(what);
}

/// The JSON error body with this code and some non-empty description.
fn assert_error_shape(resp: &Resp, code: &str, what: &str) {
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}: headers {:?}",
        resp.headers
    );
    let body: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", resp.text()));
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: body is not an object: {body}"));
    assert_eq!(
        object.len(),
        2,
        "{what}: exactly error and error_description: {body}"
    );
    assert_eq!(object.get("error"), Some(&json!(code)), "{what}: {body}");
    assert!(
        object
            .get("error_description")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty()),
        "{what}: error_description is a non-empty string: {body}"
    );
}

// ---------------------------------------------------------------------------------------
// The smuggled request: a runtime create whose effect we can look for
// ---------------------------------------------------------------------------------------

fn smuggled_id(n: usize) -> String {
    format!("smuggled-{n}")
}

/// `$S`: `POST /runtimes` creating runtime `smuggled-N`.
fn smuggled(n: usize) -> Vec<u8> {
    let body = format!(r#"{{"runtimeId":"{}"}}"#, smuggled_id(n));
    format!(
        "POST {RUNTIMES} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Inspects job [`NO_JOB`] of runtime `id` on a fresh connection.
fn inspect_unknown_job(addr: SocketAddr, runtime_id: &str) -> Resp {
    let path = format!("{RUNTIMES}/{runtime_id}/jobs/{NO_JOB}");
    expect_response(
        raw_exchange(addr, &raw_request("GET", &path, &[], b"", None), false),
        &format!("inspect {path}"),
    )
}

/// Runtime `id` does not exist: its inspection says runtime-not-found (not job-not-found).
fn assert_no_runtime(addr: SocketAddr, runtime_id: &str) {
    let resp = inspect_unknown_job(addr, runtime_id);
    assert_error(
        &resp,
        404,
        "not_found",
        &format!("Compute-module runtime '{runtime_id}' was not found."),
    );
}

/// Runtime `id` exists: inspecting an unknown job of it says job-not-found.
fn assert_runtime_exists(addr: SocketAddr, runtime_id: &str) {
    let resp = inspect_unknown_job(addr, runtime_id);
    assert_error(
        &resp,
        404,
        "not_found",
        &format!("Compute-module job '{NO_JOB}' was not found."),
    );
}

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

/// What a row must produce on its connection.
enum Want {
    /// A framing rejection (status, code), `Connection: close`, EOF; the row's `$S` never ran.
    Reject(u16, &'static str),
    /// `200 {"status":"ok"}`.
    Health,
    /// A JSON `404 not_found`.
    NotFound,
    /// `200`, the session of this new runtime.
    Created(&'static str),
}

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
    /// The number of the `$S` inside `bytes`, for rejections.
    smuggled: Option<usize>,
    /// After the answer: no stray bytes, then a second request on the same socket is
    /// answered (the connection stayed open).
    keep_open: bool,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `GET /_emulate/health` with these extra header lines (each ending in CRLF), then `tail`.
fn health_with(headers: &str, tail: &[u8]) -> Vec<u8> {
    cat(&[
        format!("GET /_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").as_bytes(),
        tail,
    ])
}

/// The 413 row: a body of `TABLE_MAX_BODY + 1` bytes with `$S` at offset 65,536 of the bytes
/// sent (the head is padded to make it so).
fn over_max_body(s: &[u8]) -> Vec<u8> {
    let body_len = TABLE_MAX_BODY + 1;
    let head = |pad: usize| {
        format!(
            "POST {RUNTIMES} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {body_len}\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
    };
    let pad = 65_536 - body_len - head(0).len();
    let head = head(pad);
    let mut out = head.into_bytes();
    out.resize(out.len() + body_len, b'a');
    assert_eq!(out.len(), 65_536, "$S starts at offset 65,536");
    out.extend_from_slice(s);
    out
}

/// One chunk of a chunked body, with a chunk extension.
fn chunk(data: &[u8], extension: &str) -> Vec<u8> {
    cat(&[
        format!("{:x}{extension}\r\n", data.len()).as_bytes(),
        data,
        b"\r\n",
    ])
}

fn rows(port: u16) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut reject = |name, make: &dyn Fn(&[u8]) -> Vec<u8>, status, code| {
        let n = rows.len();
        rows.push(Row {
            name,
            bytes: make(&smuggled(n)),
            want: Want::Reject(status, code),
            smuggled: Some(n),
            keep_open: false,
        });
    };
    let bad = "invalid_request";
    reject(
        "Content-Length and Transfer-Encoding: chunked",
        &|s| {
            let cl = 5 + s.len();
            health_with(
                &format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
                &cat(&[b"0\r\n\r\n", s]),
            )
        },
        400,
        bad,
    );
    reject(
        "Content-Length: 0 then Content-Length: 40",
        &|s| health_with("Content-Length: 0\r\nContent-Length: 40\r\n", s),
        400,
        bad,
    );
    reject(
        "Content-Length: -1",
        &|s| health_with("Content-Length: -1\r\n", s),
        400,
        bad,
    );
    reject(
        "Content-Length: 99999999999999999999999",
        &|s| health_with("Content-Length: 99999999999999999999999\r\n", s),
        400,
        bad,
    );
    reject(
        "Content-Length: 12abc",
        &|s| health_with("Content-Length: 12abc\r\n", s),
        400,
        bad,
    );
    reject(
        "Content-Length: +89 (89 body bytes, then $S)",
        &|s| health_with("Content-Length: +89\r\n", &cat(&[&[b'x'; 89], s])),
        400,
        bad,
    );
    reject(
        "chunk size zz",
        &|s| {
            cat(&[
                format!(
                    "POST {RUNTIMES} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                )
                .as_bytes(),
                s,
            ])
        },
        400,
        bad,
    );
    reject(
        "a body one byte over --max-body, $S at offset 65,536",
        &over_max_body,
        413,
        "payload_too_large",
    );
    reject(
        "Transfer-Encoding: identity",
        &|s| health_with("Transfer-Encoding: identity\r\n", s),
        501,
        "not_implemented",
    );
    reject(
        "Transfer-Encoding: gzip",
        &|s| health_with("Transfer-Encoding: gzip\r\n", &cat(&[b"0\r\n\r\n", s])),
        501,
        "not_implemented",
    );
    reject(
        "the HTTP/2 preface",
        &|s| cat(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", s]),
        505,
        "http_version_not_supported",
    );
    reject(
        "GET / HTTP/2.0",
        &|s| cat(&[b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", s]),
        505,
        "http_version_not_supported",
    );
    reject(
        "HTTP/0.9",
        &|s| {
            cat(&[
                b"GET /_emulate/health HTTP/0.9\r\nHost: 127.0.0.1\r\n\r\n",
                s,
            ])
        },
        505,
        "http_version_not_supported",
    );
    reject(
        "no Host",
        &|s| cat(&[b"GET /_emulate/health HTTP/1.1\r\n\r\n", s]),
        400,
        bad,
    );
    reject(
        "two Host headers",
        &|s| health_with("Host: 127.0.0.1\r\n", s),
        400,
        bad,
    );
    reject(
        "NUL in a header value",
        &|s| health_with("X-Nul: a\0b\r\n", s),
        400,
        bad,
    );
    reject(
        "an extra request-line token",
        &|s| {
            cat(&[
                b"GET /_emulate/health HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n",
                s,
            ])
        },
        400,
        bad,
    );
    reject(
        "a raw CR in the request target",
        &|s| {
            cat(&[
                b"GET /_emulate/he\rlth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                s,
            ])
        },
        400,
        bad,
    );
    reject(
        "a raw LF in the request target",
        &|s| {
            cat(&[
                b"GET /_emulate/x\nINFO forged HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                s,
            ])
        },
        400,
        bad,
    );
    reject(
        "101 header lines",
        &|s| {
            let extra: String = (1..=100).map(|i| format!("X-H{i}: v\r\n")).collect();
            health_with(&extra, s)
        },
        431,
        "request_header_fields_too_large",
    );

    let mut open = |name, bytes: Vec<u8>, want, keep_open| {
        rows.push(Row {
            name,
            bytes,
            want,
            smuggled: None,
            keep_open,
        })
    };
    open(
        "a chunked body with chunk extensions and a trailer",
        cat(&[
            format!(
                "POST {RUNTIMES} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
            &chunk(br#"{"runtimeId":"#, ";name=value"),
            &chunk(br#""chunked-trailer"}"#, ";ext"),
            b"0\r\nX-Trailer: yes\r\n\r\n",
        ]),
        Want::Created("chunked-trailer"),
        true,
    );
    open(
        "a UTF-8 path",
        "GET /_emulate/caf\u{e9}-\u{1f600} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            .as_bytes()
            .to_vec(),
        Want::NotFound,
        true,
    );
    open(
        "a \\xff byte in the path",
        b"GET /_emulate/a\xffb HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        Want::NotFound,
        true,
    );
    open(
        "a \\xff byte in a header value (obs-text)",
        cat(&[b"GET /_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Obs: a\xffb\r\n\r\n"]),
        Want::Health,
        true,
    );
    open(
        "bare LF line ends",
        b"GET /_emulate/health HTTP/1.1\nHost: x\n\n".to_vec(),
        Want::Health,
        false,
    );
    open(
        "absolute-form request target",
        format!("GET http://127.0.0.1:{port}/_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .into_bytes(),
        Want::Health,
        true,
    );
    rows
}

/// Runs checks one after another, remembering which failed, so that one run reports every
/// failing case (each panic message is printed as it happens).
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, name: impl Into<String>, f: impl FnOnce()) {
        let name = name.into();
        eprintln!("case: {name}");
        if catch_unwind(AssertUnwindSafe(f)).is_err() {
            self.0.push(name);
        }
    }

    fn assert_none(self) {
        assert!(self.0.is_empty(), "failed (details above): {:#?}", self.0);
    }
}

/// Checks the answers on the row's connection.
fn check_answer(addr: SocketAddr, conn: &mut Conn, row: &Row) {
    let what = row.name;
    match &row.want {
        Want::Reject(status, code) => assert_rejected(conn, *status, code, what),
        Want::Health => assert_health(&conn.read(what), what),
        Want::NotFound => {
            let resp = conn.read(what);
            assert_eq!(
                resp.status,
                404,
                "{what}: {:?} {}",
                resp.headers,
                resp.text()
            );
            assert_error_shape(&resp, "not_found", what);
        }
        Want::Created(id) => {
            let resp = conn.read(what);
            assert_eq!(
                resp.status,
                200,
                "{what}: {:?} {}",
                resp.headers,
                resp.text()
            );
            assert_eq!(
                resp.json()["runtimeId"],
                json!(id),
                "{what}: {}",
                resp.text()
            );
            assert_runtime_exists(addr, id);
        }
    }
    if row.keep_open {
        conn.expect_quiet(what);
        conn.send(&health_request(true))
            .unwrap_or_else(|e| panic!("{what}: second request: {e}"));
        assert_health(&conn.read(&format!("{what}: second request")), what);
        conn.expect_closed(&format!("{what}: after Connection: close"));
    }
}

/// Sends one row on a fresh connection and checks its answer, that its `$S` did not run,
/// and that a fresh connection is served.
fn check_row(addr: SocketAddr, row: &Row, failures: &mut Failures) {
    let what = row.name;
    let mut conn = Conn::open(addr);
    if let Err(e) = conn.send(&row.bytes) {
        // The server may refuse and close before reading everything; its answer counts.
        eprintln!("{what}: writing the request stopped early: {e}");
    }
    let before = failures.0.len();
    failures.check(format!("{what}: the answer"), || {
        check_answer(addr, &mut conn, row)
    });
    if failures.0.len() > before {
        // Let whatever the server still does on this connection ($S) finish first.
        conn.drain();
    }
    drop(conn);
    if let Some(n) = row.smuggled {
        failures.check(format!("{what}: $S did not run"), || {
            assert_no_runtime(addr, &smuggled_id(n))
        });
    }
    failures.check(format!("{what}: a fresh connection"), || {
        assert_fresh_health(addr, what)
    });
}

#[test]
fn framing_table() {
    let server = TestServer::start(|cfg| cfg.max_body = TABLE_MAX_BODY as u64);
    let addr = server.addr;

    // Control: behind a complete request, $S is a legitimate pipelined request: it runs, and
    // the probe sees its runtime. So "runtime not found" below means "did not run".
    let control = 999;
    let mut conn = Conn::open(addr);
    conn.send(&cat(&[&health_request(false), &smuggled(control)]))
        .unwrap();
    assert_health(&conn.read("control"), "control");
    let created = conn.read("control $S");
    assert_eq!(created.status, 200, "control $S: {}", created.text());
    assert_runtime_exists(addr, &smuggled_id(control));
    assert_no_runtime(addr, "smuggled-never-sent");

    let mut failures = Failures::default();
    for row in rows(addr.port()) {
        check_row(addr, &row, &mut failures);
    }
    failures.assert_none();
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------
// Upgrade, header sizes
// ---------------------------------------------------------------------------------------

#[test]
fn upgrade_requests_are_answered_as_normal_requests() {
    // Four front workers (the default): four upgrade requests must not occupy them all.
    let server = TestServer::start(|cfg| cfg.threads = 4);
    let addr = server.addr;
    let ids: Vec<String> = (0..4).map(|i| format!("upgrade-{i}")).collect();
    let mut conns: Vec<Conn> = ids
        .iter()
        .map(|id| {
            let body = format!(r#"{{"runtimeId":"{id}"}}"#);
            let request = format!(
                "POST {RUNTIMES} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut conn = Conn::open(addr);
            conn.send(request.as_bytes())
                .expect("write upgrade request");
            conn
        })
        .collect();
    assert_fresh_health(
        addr,
        "a fifth connection while four upgrade requests are open",
    );
    for (conn, id) in conns.iter_mut().zip(&ids) {
        let resp = conn.read(&format!("upgrade request for {id}"));
        assert_eq!(resp.status, 200, "{id}: {:?} {}", resp.headers, resp.text());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json()["runtimeId"], json!(id), "{}", resp.text());
    }
    for id in &ids {
        assert_runtime_exists(addr, id);
    }
    server.assert_alive();
}

/// Writes `bytes` on a clone of `conn`'s socket from a thread (stopping at the first error,
/// e.g. once the server closed), while the caller reads the answer.
fn write_from_thread(
    conn: &Conn,
    head: Vec<u8>,
    filler: usize,
    tail: &'static [u8],
) -> WriterGuard {
    let mut stream = conn.stream.try_clone().expect("clone the socket");
    let handle = std::thread::spawn(move || -> Result<(), std::io::Error> {
        stream.write_all(&head)?;
        let block = vec![b'a'; 64 * 1024];
        let mut left = filler;
        while left > 0 {
            let n = left.min(block.len());
            stream.write_all(&block[..n])?;
            left -= n;
        }
        stream.write_all(tail)
    });
    WriterGuard(Some(handle))
}

/// Joins the writer thread (bounded by the socket's write timeout).
struct WriterGuard(Option<std::thread::JoinHandle<Result<(), std::io::Error>>>);

impl WriterGuard {
    fn join(mut self) -> Result<(), String> {
        match self.0.take().unwrap().join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the writer panicked".into()),
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// Sends a header line with a `filler`-byte value and expects 431 (or, at least, a quick
/// close), never a served request.
fn assert_header_line_refused(server: &TestServer, filler: usize) {
    let what = format!("a {filler}-byte header line");
    let conn = Conn::open(server.addr);
    let head = b"GET /_emulate/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    let writer = write_from_thread(&conn, head, filler, b"\r\n\r\n");
    let mut conn = conn;
    let started = Instant::now();
    match conn.try_read(false) {
        Ok(resp) => {
            assert_eq!(
                resp.status,
                431,
                "{what}: want 431; got {resp:?} {}",
                resp.text()
            );
            assert_error_shape(&resp, "request_header_fields_too_large", &what);
            assert!(
                resp.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close")),
                "{what}: Connection: close; {:?}",
                resp.headers
            );
            conn.expect_closed(&what);
        }
        // A reset may destroy the answer before we read it; the connection closed quickly.
        Err(e) if e.contains("reset") || e.starts_with("EOF") => {
            eprintln!(
                "{what}: closed without a readable answer after {:?}: {e}",
                started.elapsed()
            );
        }
        Err(e) => panic!("{what}: neither a 431 nor a close: {e}"),
    }
    if let Err(e) = writer.join() {
        eprintln!("{what}: the writer stopped: {e}");
    }
    server.assert_alive();
}

#[test]
fn a_32_mib_header_line_is_refused() {
    let server = TestServer::start(|_| {});
    assert_header_line_refused(&server, 32 * 1024 * 1024);
}

#[test]
fn header_limits() {
    let server = TestServer::start(|_| {});
    let addr = server.addr;
    // Well under any limit: a 4 KiB value and 50 header lines are served.
    let big = "v".repeat(4096);
    let many: String = (1..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (what, headers) in [
        ("a 4 KiB header value", format!("X-Big: {big}\r\n")),
        ("50 header lines", many),
    ] {
        let mut conn = Conn::open(addr);
        conn.send(&health_with(
            &format!("{headers}Connection: close\r\n"),
            b"",
        ))
        .unwrap();
        assert_health(&conn.read(what), what);
    }
    // Past any limit: 101 header lines, a 2 MiB line.
    let extra: String = (1..=100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut conn = Conn::open(addr);
    let _ = conn.send(&health_with(&extra, b""));
    assert_rejected(
        &mut conn,
        431,
        "request_header_fields_too_large",
        "101 header lines",
    );
    assert_header_line_refused(&server, 2 * 1024 * 1024);
}

// ---------------------------------------------------------------------------------------
// HEAD
// ---------------------------------------------------------------------------------------

/// A raw request with extra header lines and no body (keep-alive).
fn bare_request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// HEAD on `path`: the status and Content-Type/Content-Length of `get`, no body (a GET health
/// sent right behind it on the same socket parses cleanly).
fn assert_head_like(addr: SocketAddr, path: &str, headers: &[(&str, &str)], get: &Resp) {
    let what = format!("HEAD {path}");
    let mut conn = Conn::open(addr);
    conn.send(&bare_request("HEAD", path, headers)).unwrap();
    let head = conn.read_head(&what);
    assert_eq!(head.status, get.status, "{what}: {:?}", head.headers);
    assert_eq!(
        head.header("content-type"),
        get.header("content-type"),
        "{what}: {:?}",
        head.headers
    );
    assert_eq!(
        content_length(&head),
        Some(get.body.len()),
        "{what}: the GET's Content-Length; {:?}",
        head.headers
    );
    conn.send(&health_request(true)).unwrap();
    assert_health(&conn.read(&format!("{what}: the next request")), &what);
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut conn = Conn::open(addr);
    conn.send(&bare_request("GET", path, headers)).unwrap();
    conn.read(&format!("GET {path}"))
}

#[test]
fn head_works_on_every_get_route() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::ZERO);
    let addr = server.addr;
    let rt = server.runtime_bound("head-rt", RID);
    let job = server.app().submit_id(RID, "head", json!({"n": 1}));
    let bearer = format!("Bearer {APP_TOKEN}");
    let status = format!("{CONTOUR}/jobs/{job}/status");
    let inspect = format!("{RUNTIMES}/head-rt/jobs/{job}");
    let routes: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/_emulate/health", vec![]),
        ("/_emulate/info", vec![]),
        (status.as_str(), vec![("Authorization", bearer.as_str())]),
        (inspect.as_str(), vec![]),
    ];
    let mut failures = Failures::default();
    for (path, headers) in &routes {
        failures.check(format!("HEAD {path}"), || {
            let got = get(addr, path, headers);
            assert_eq!(got.status, 200, "GET {path}: {}", got.text());
            assert_head_like(addr, path, headers, &got);
        });
    }

    // The poll: HEAD takes no job away. Its envelope was never delivered, so a GET poll
    // afterwards gets the same job, with as many bytes as the HEAD announced.
    failures.check("HEAD poll", || {
        let poll = format!("{RUNTIMES}/head-rt/job");
        let token = [("Module-Auth-Token", rt.token.as_str())];
        let mut conn = Conn::open(addr);
        conn.send(&bare_request("HEAD", &poll, &token)).unwrap();
        let head = conn.read_head("HEAD poll");
        assert_eq!(
            head.status, 200,
            "HEAD poll, a job queued: {:?}",
            head.headers
        );
        assert_eq!(head.header("content-type"), Some("application/json"));
        let announced = content_length(&head).expect("HEAD poll has a Content-Length");
        conn.send(&health_request(true)).unwrap();
        assert_health(&conn.read("HEAD poll: the next request"), "HEAD poll");
        let got = get(addr, &poll, &token);
        assert_eq!(got.status, 200, "GET poll after HEAD: {}", got.text());
        assert_eq!(
            envelope_job_id(&got.json()),
            job,
            "the same job is delivered"
        );
        assert_eq!(
            got.body.len(),
            announced,
            "HEAD announced the envelope's length"
        );
        // Now it was delivered: the queue is empty.
        assert_eq!(server.queued("head-rt"), 0);
    });
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------

fn bad_id(kind: &str, id: &str) -> String {
    format!(
        "The {kind} id \"{}\" is not valid: an id may not be empty, \".\" or \"..\", nor contain \
         \"/\" or control characters.",
        id.escape_debug()
    )
}

#[test]
fn dot_slash_and_control_ids_are_rejected() {
    let server = TestServer::start(|cfg| cfg.poll_wait = Duration::ZERO);
    let addr = server.addr;
    let rt = server.runtime("rt");

    let mut failures = Failures::default();
    for id in [".", "..", "a/b", "rt\nINFO forged", "rt\r"] {
        failures.check(format!("create runtime {id:?}"), || {
            let resp = server.create_runtime_raw(&json!({ "runtimeId": id }));
            assert_error(&resp, 400, "invalid_request", &bad_id("runtime", id));
        });
    }

    let token = rt.token.as_str();
    let headers = [
        ("Module-Auth-Token", token),
        ("Content-Type", "application/json"),
    ];
    for (segment, decoded) in [
        ("%2E%2E", ".."),
        (".", "."),
        ("%0A", "\n"),
        ("a%2Fb", "a/b"),
    ] {
        let runtime_routes = [
            ("GET", format!("{RUNTIMES}/{segment}/job"), ""),
            ("POST", format!("{RUNTIMES}/{segment}/schemas"), "[]"),
            (
                "POST",
                format!("{RUNTIMES}/{segment}/results/{NO_JOB}"),
                "x",
            ),
            ("POST", format!("{RUNTIMES}/{segment}/restart"), ""),
            ("GET", format!("{RUNTIMES}/{segment}/jobs/{NO_JOB}"), ""),
        ];
        let job_routes = [
            ("POST", format!("{RUNTIMES}/rt/results/{segment}"), "x"),
            ("GET", format!("{RUNTIMES}/rt/jobs/{segment}"), ""),
        ];
        let cases = runtime_routes
            .iter()
            .map(|r| (r, "runtime"))
            .chain(job_routes.iter().map(|r| (r, "job")));
        for ((method, path, body), kind) in cases {
            failures.check(format!("{method} {path}"), || {
                let resp = exchange(addr, method, path, &headers, body.as_bytes());
                assert_error(&resp, 400, "invalid_request", &bad_id(kind, decoded));
            });
        }
    }
    failures.assert_none();
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------
// The real binary: log lines, leaks
// ---------------------------------------------------------------------------------------

/// The address `serve` announced.
fn served_addr(served: &Served) -> SocketAddr {
    served
        .base
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("base URL {:?}", served.base))
}

/// Sends a request with `Connection: close` and returns the answer (any status).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    expect_response(
        raw_exchange(addr, &raw_request(method, path, headers, body, None), false),
        &format!("{method} {path}"),
    )
}

/// Whether a log line starts like env_logger's own lines: `[` and a timestamp or a level.
fn is_log_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    rest.starts_with(|c: char| c.is_ascii_digit())
        || ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
            .iter()
            .any(|level| rest.starts_with(level))
}

#[test]
fn client_text_cannot_forge_log_lines() {
    let mut served = Served::start_env(&[], &[("RUST_LOG", "debug")]);
    let addr = served_addr(&served);
    let echo = "ri.foundry.main.deployed-app.echo";
    let json_type = ("Content-Type", "application/json");
    let bearer = ("Authorization", "Bearer any");
    let marker = "FORGED";

    exchange(addr, "GET", "/_emulate/x%0D%0AFORGED-path%0A", &[], b"");
    let submit = format!("{CONTOUR}/deployed-apps/jobs");
    let execute = format!("{CONTOUR}/compute-modules/jobs/execute");
    let query = serde_json::to_vec(&json!({
        "deployedAppRid": echo, "queryType": "q\n[INFO forged] FORGED-query-type", "query": {}
    }))
    .unwrap();
    exchange(addr, "POST", &submit, &[json_type, bearer], &query);
    exchange(addr, "POST", &execute, &[json_type, bearer], &query);
    for body in [
        json!({"runtimeId": "rt\nFORGED-runtime-id INFO forged"}),
        json!({"runtimeId": "rt\r\nFORGED-runtime-id-crlf"}),
        json!({"runtimeId": "log-rt", "displayName": "d\nFORGED-display-name"}),
    ] {
        exchange(
            addr,
            "POST",
            RUNTIMES,
            &[json_type],
            &serde_json::to_vec(&body).unwrap(),
        );
    }
    let token = ("Module-Auth-Token", "no-such-token");
    exchange(
        addr,
        "POST",
        &format!("{RUNTIMES}/x%0AFORGED-restart/restart"),
        &[token],
        b"",
    );
    exchange(
        addr,
        "GET",
        &format!("{RUNTIMES}/x%0D%0AFORGED-poll/job"),
        &[token],
        b"",
    );
    exchange(addr, "GET", "/_emulate/health?log-sentinel", &[], b"");

    let stderr = String::from_utf8_lossy(&served.stop()).into_owned();
    assert!(
        stderr.contains("log-sentinel"),
        "RUST_LOG=debug logs every request; stderr:\n{stderr}"
    );
    let forged: Vec<&str> = stderr
        .split('\n')
        .filter(|line| line.contains(marker))
        .filter(|line| !is_log_line(line) || line.contains('\r'))
        .collect();
    assert!(
        forged.is_empty(),
        "client text started a log line of its own (or carried a raw CR): {forged:#?}\nstderr:\n{stderr}"
    );
}

#[cfg(target_os = "linux")]
fn proc_threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

#[cfg(target_os = "linux")]
fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fd dir")
        .count()
}

/// Raises this process's soft open-file limit to at least `want` (up to the hard limit).
#[cfg(target_os = "linux")]
fn raise_nofile(want: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn http2_prefaces_leak_no_threads_or_fds() {
    const CONNECTIONS: usize = 500;
    const BATCH: usize = 100;
    const SLACK: usize = 4;
    raise_nofile(4 * BATCH as libc::rlim_t);
    let served = Served::start_env(&["--no-echo"], &[]);
    let addr = served_addr(&served);
    let pid = served.child.id();
    assert_fresh_health(addr, "warm-up");
    let (threads, fds) = (proc_threads(pid), proc_fds(pid));

    let mut unanswered = 0;
    let mut other = Vec::new();
    for _ in 0..CONNECTIONS / BATCH {
        let mut conns: Vec<Conn> = (0..BATCH)
            .map(|_| {
                let mut conn = Conn::open(addr);
                conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    .expect("write preface");
                conn
            })
            .collect();
        // One deadline for the whole batch: each answers (505) or closes, or is counted.
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        for conn in &mut conns {
            loop {
                match conn.fill(deadline) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(_) => {
                        unanswered += 1;
                        break;
                    }
                }
            }
            if !conn.buf.is_empty() && !conn.buf.starts_with(b"HTTP/1.1 505 ") {
                other.push(conn.shown());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = || {
        let (t, f) = (proc_threads(pid), proc_fds(pid));
        (t <= threads + SLACK && f <= fds + SLACK, t, f)
    };
    let (mut ok, mut now_threads, mut now_fds) = settled();
    while !ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (ok, now_threads, now_fds) = settled();
    }
    assert!(
        ok,
        "after {CONNECTIONS} HTTP/2 prefaces: {now_threads} threads (was {threads}), {now_fds} fds \
         (was {fds}); {unanswered} connections got neither an answer nor a close"
    );
    assert_eq!(unanswered, 0, "every preface is answered or closed");
    assert!(other.is_empty(), "answers other than 505: {other:#?}");
    assert_fresh_health(addr, "after the prefaces");
}
