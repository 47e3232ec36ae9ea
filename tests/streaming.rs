//! Streamed results (issue 11 item 5): a runtime's chunked result post passed on to the sync
//! execute waiting on it, chunk by chunk, over raw sockets on both sides (the framing is
//! what is tested). Every step is coordinated: a chunk is sent only after the application
//! read the one before it, and every read has a timeout, so no test depends on speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use foundry_emulator::JobState;
use serde_json::json;

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.streaming";

/// The sync execute's answer as a raw client reads it.
pub struct Answer {
    pub reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a sync execute on a fresh connection (`Connection: close`), without reading.
fn send_execute(addr: SocketAddr, version: &str) -> TcpStream {
    let body = serde_json::to_vec(&exec_body(RID, "chat", json!({}))).unwrap();
    send_execute_body(addr, version, &body)
}

/// Sends a sync execute with this body (JSON text) on a fresh connection
/// (`Connection: close`), without reading.
pub fn send_execute_body(addr: SocketAddr, version: &str, body: &[u8]) -> TcpStream {
    let head = format!(
        "POST {CONTOUR}/compute-modules/jobs/execute {version}\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {APP_TOKEN}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// Reads the answer's status line and headers.
pub fn read_head(stream: TcpStream) -> Answer {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Answer {
        reader,
        status,
        headers,
    }
}

/// What the next chunk of a chunked body was.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Data(Vec<u8>),
    /// The terminating chunk (and the empty trailer section).
    End,
    /// The connection closed before a whole chunk came: the body is truncated.
    Closed,
}

pub fn read_chunk(answer: &mut Answer) -> Chunk {
    let mut line = String::new();
    match answer.reader.read_line(&mut line) {
        Ok(0) => return Chunk::Closed,
        Ok(_) if !line.ends_with("\r\n") => return Chunk::Closed,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Chunk::Closed,
        Err(e) => panic!("reading a chunk-size line failed: {e}"),
    }
    let size = usize::from_str_radix(line.trim_end(), 16)
        .unwrap_or_else(|_| panic!("bad chunk-size line {line:?}"));
    if size == 0 {
        let mut trailer = String::new();
        answer
            .reader
            .read_line(&mut trailer)
            .expect("the last CRLF");
        assert_eq!(trailer, "\r\n", "no trailers");
        return Chunk::End;
    }
    let mut data = vec![0; size + 2];
    match answer.reader.read_exact(&mut data) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Chunk::Closed,
        Err(e) => panic!("reading a chunk failed: {e}"),
    }
    assert_eq!(&data[size..], b"\r\n", "a chunk ends with CRLF");
    data.truncate(size);
    Chunk::Data(data)
}

/// Reads chunks until `want.len()` bytes came (the server may split or join chunks of the
/// post); they must be exactly `want`.
pub fn expect_bytes(answer: &mut Answer, want: &[u8]) {
    let mut got = Vec::new();
    while got.len() < want.len() {
        match read_chunk(answer) {
            Chunk::Data(data) => got.extend_from_slice(&data),
            other => panic!("want {} more bytes, got {other:?}", want.len() - got.len()),
        }
    }
    assert_eq!(got, want, "the streamed bytes");
}

/// Asserts a streamed 200 head.
pub fn assert_streamed_head(answer: &Answer) {
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.header("content-length"), None);
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
}

/// A runtime's chunked result post on a raw connection.
struct Post(TcpStream);

impl Post {
    fn start(addr: SocketAddr, rt: &Rt, job: &str) -> Post {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let head = format!(
            "POST {RUNTIMES}/{}/results/{job} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Module-Auth-Token: {}\r\nContent-Type: application/octet-stream\r\n\
             Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
            rt.id, rt.token
        );
        stream.write_all(head.as_bytes()).unwrap();
        Post(stream)
    }

    fn chunk(&mut self, data: &[u8]) {
        let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
        framed.extend_from_slice(data);
        framed.extend_from_slice(b"\r\n");
        self.0.write_all(&framed).expect("send a chunk");
    }

    /// Sends the terminating chunk and reads the answer.
    fn end(mut self) -> Resp {
        self.0.write_all(b"0\r\n\r\n").unwrap();
        let mut bytes = Vec::new();
        self.0.read_to_end(&mut bytes).expect("the post's answer");
        let text = String::from_utf8_lossy(&bytes);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad answer {text:?}"));
        Resp {
            status,
            headers: Vec::new(),
            body: bytes,
        }
    }
}

/// A server with a runtime bound to [`RID`], an execute on its way, and the job it made
/// (already taken by the runtime, so `running`).
fn executing(version: &str) -> (TestServer, Rt, TcpStream, String) {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let execute = send_execute(server.addr, version);
    let job = rt.next_job_id();
    (server, rt, execute, job)
}

#[test]
fn a_chunked_result_reaches_the_application_chunk_by_chunk() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let chunks: [&[u8]; 3] = [
        b"{\"token\":\"Hel\"}\n",
        b"\x00\xff{\"token\":\"lo\"}\n",
        b"end",
    ];
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(chunks[0]);
    let mut answer = read_head(execute);
    assert_streamed_head(&answer);
    expect_bytes(&mut answer, chunks[0]);
    // Each chunk is sent only after the application read the one before.
    post.chunk(chunks[1]);
    expect_bytes(&mut answer, chunks[1]);
    post.chunk(chunks[2]);
    expect_bytes(&mut answer, chunks[2]);
    server.wait_state(&job, JobState::Running);
    let resp = post.end();
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(read_chunk(&mut answer), Chunk::End);
    assert_eq!(read_chunk(&mut answer), Chunk::Closed, "Connection: close");
    // The stored result is the exact concatenation, whole (not a preview).
    assert_octets(&server.app().result_by_id(&job), &chunks.concat());
    let inspected = rt.inspect_json(&job);
    assert_eq!(inspected["job"]["status"], json!("succeeded"));
}

#[test]
fn a_post_that_breaks_off_fails_the_job_and_truncates_the_answer() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"first half");
    let mut answer = read_head(execute);
    assert_streamed_head(&answer);
    expect_bytes(&mut answer, b"first half");
    // The module dies mid-stream.
    post.0.shutdown(Shutdown::Both).unwrap();
    drop(post);
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    let message = format!(
        "The result stream of compute-module job '{job}' broke off before its end: The \
         connection closed before the whole body arrived."
    );
    let app = server.app();
    assert_json(
        &app.status_json(&job),
        &json!({"type": "failed", "failed": {"message": message}}),
        "status",
    );
    // The module's retry is too late.
    assert_error(
        &rt.post_result(&job, b"again"),
        409,
        "conflict",
        &format!("Compute-module job '{job}' already finished; the first result is kept."),
    );
}

#[test]
fn a_bad_chunk_fails_the_job_and_truncates_the_answer() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"ok so far");
    let mut answer = read_head(execute);
    expect_bytes(&mut answer, b"ok so far");
    post.0.write_all(b"zz\r\n").unwrap();
    let mut refused = Vec::new();
    let _ = post.0.read_to_end(&mut refused);
    assert!(
        String::from_utf8_lossy(&refused).starts_with("HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    let status = server.app().status_json(&job);
    assert_eq!(status["type"], json!("failed"), "{status}");
    let message = status["failed"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "The result stream of compute-module job '{job}' broke off before its end: "
        )),
        "{message}"
    );
}

#[test]
fn a_reader_that_never_reads_is_cut_off_and_the_job_still_completes() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    // Far more than the stream's 1 MiB buffer plus what the kernel's socket buffers hold
    // for a client that reads nothing (a few MiB on loopback), sent in 64 KiB chunks.
    let result = pattern(24 * 1024 * 1024);
    let mut post = Post::start(server.addr, &rt, &job);
    for chunk in result.chunks(64 * 1024) {
        post.chunk(chunk);
    }
    let resp = post.end();
    assert_eq!(resp.status, 204, "{}", resp.text());
    server.wait_state(&job, JobState::Succeeded);
    assert_octets(&server.app().result_by_id(&job), &result);
    // Only now does the application read: a prefix of the result, then the close.
    let mut answer = read_head(execute);
    assert_streamed_head(&answer);
    let mut got = Vec::new();
    loop {
        match read_chunk(&mut answer) {
            Chunk::Data(data) => got.extend_from_slice(&data),
            Chunk::End => panic!("a complete-looking answer after {} bytes", got.len()),
            Chunk::Closed => break,
        }
    }
    assert!(got.len() < result.len(), "truncated: {} bytes", got.len());
    assert!(result.starts_with(&got), "a prefix of the result");
}

#[test]
fn a_result_posted_with_a_length_is_answered_with_a_length() {
    let (_server, rt, execute, job) = executing("HTTP/1.1");
    let result = pattern(100_000);
    rt.complete(&job, &result);
    let mut answer = read_head(execute);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), None);
    assert_eq!(answer.header("content-length"), Some("100000"));
    let mut body = Vec::new();
    answer.reader.read_to_end(&mut body).unwrap();
    assert_eq!(body, result);
}

#[test]
fn an_http_1_0_caller_gets_a_streamed_result_whole() {
    let (server, rt, execute, job) = executing("HTTP/1.0");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"one ");
    post.chunk(b"two");
    assert_eq!(post.end().status, 204);
    let mut answer = read_head(execute);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), None);
    assert_eq!(answer.header("content-length"), Some("7"));
    let mut body = Vec::new();
    answer.reader.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"one two");
}

#[test]
fn a_chunked_post_without_the_token_streams_nothing() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let stranger = rt.with_token("foundry_module_auth_not-the-token");
    let mut post = Post::start(server.addr, &stranger, &job);
    post.chunk(b"forged");
    let resp = post.end();
    assert_eq!(resp.status, 401, "{}", resp.text());
    rt.complete(&job, b"real");
    let mut answer = read_head(execute);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-length"), Some("4"));
    let mut body = Vec::new();
    answer.reader.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"real");
}

#[test]
fn a_reset_mid_stream_fails_the_job_and_truncates_the_answer() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"before the reset");
    let mut answer = read_head(execute);
    expect_bytes(&mut answer, b"before the reset");
    let reset = send(
        &agent(),
        "POST",
        &server.url("/_emulate/reset"),
        &[],
        Some(b""),
    );
    reset.expect_status(200);
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    // The rest of the post finds no job (the reset dropped it): 404, nothing else breaks.
    post.chunk(b"after");
    assert_eq!(post.end().status, 404);
    server.assert_alive();
}

#[test]
fn a_cancel_mid_stream_fails_the_job_and_truncates_the_answer() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"before the cancel");
    let mut answer = read_head(execute);
    expect_bytes(&mut answer, b"before the cancel");
    let app = server.app();
    assert_no_content(&app.cancel(&job));
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    let canceled = format!("Compute-module job '{job}' was canceled.");
    assert_json(
        &app.status_json(&job),
        &json!({"type": "failed", "failed": {"message": canceled}}),
        "status",
    );
    post.chunk(b"after");
    assert_eq!(post.end().status, 409);
}

#[test]
fn an_application_that_leaves_mid_stream_leaves_the_job_to_finish() {
    let (server, rt, execute, job) = executing("HTTP/1.1");
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"read ");
    let mut answer = read_head(execute);
    expect_bytes(&mut answer, b"read ");
    drop(answer);
    post.chunk(b"unread");
    assert_eq!(post.end().status, 204);
    server.wait_state(&job, JobState::Succeeded);
    assert_octets(&server.app().result_by_id(&job), b"read unread");
}

#[test]
fn the_library_client_says_a_streamed_answer_broke_off() {
    let server = TestServer::start(|_| {});
    let rt = server.runtime_bound("rt", RID);
    let base = server.base_url.clone();
    let caller = std::thread::spawn(move || {
        let client = foundry_emulator::client::Client::new(&base, APP_TOKEN, CLIENT_TIMEOUT);
        let job = foundry_emulator::client::JobRequest {
            deployed_app_rid: RID,
            branch: None,
            query_type: "chat",
            query: "{}",
        };
        client.execute(&job)
    });
    let job = rt.next_job_id();
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"part");
    // The execute's worker answered (with the stream): its head is on its way.
    let answered = r#"foundry_emulator_http_requests_total{route="execute",status="200"} 1"#;
    wait_for("the execute to answer with its stream", || {
        send(&agent(), "GET", &server.url("/metrics"), &[], None)
            .text()
            .lines()
            .any(|line| line == answered)
    });
    drop(post);
    let err = caller
        .join()
        .unwrap()
        .expect_err("a broken-off answer is an error");
    let said = err.to_string();
    assert!(
        said.starts_with(&format!(
            "the answer from the emulator at {} broke off before its end",
            server.base_url
        )),
        "{said}"
    );
}

#[test]
fn a_shutdown_mid_stream_truncates_the_answer_and_ends_within_the_grace() {
    let mut server = TestServer::start(|cfg| cfg.shutdown_grace = std::time::Duration::ZERO);
    let rt = server.runtime_bound("rt", RID);
    let execute = send_execute(server.addr, "HTTP/1.1");
    let job = rt.next_job_id();
    let mut post = Post::start(server.addr, &rt, &job);
    post.chunk(b"before the stop");
    let mut answer = read_head(execute);
    expect_bytes(&mut answer, b"before the stop");
    // The module's post stays open: the stop must not wait for it past the grace.
    server.shutdown();
    assert_eq!(
        read_chunk(&mut answer),
        Chunk::Closed,
        "no terminating chunk"
    );
    drop(post);
}
