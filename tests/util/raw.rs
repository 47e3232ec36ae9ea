//! Hand-written requests on raw sockets, for what an HTTP library would refuse to send.

use super::{Resp, CLIENT_TIMEOUT};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// What a raw exchange produced.
#[derive(Debug)]
pub enum RawOutcome {
    /// A complete response.
    Response(Resp),
    /// The server closed the connection without sending a byte.
    Closed,
}

/// Writes `request` on a fresh connection, optionally shuts the write side, then reads until
/// the server closes (send `Connection: close`). A read timeout turns a hang into a failure.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], shutdown_write: bool) -> RawOutcome {
    let mut stream = raw_connect(addr);
    stream.write_all(request).expect("write request");
    if shutdown_write {
        stream.shutdown(Shutdown::Write).expect("shutdown write");
    }
    read_outcome(stream)
}

/// Writes `pieces` on a fresh connection with `pause` before each one after the first, then
/// reads as [`raw_exchange`] does. A piece the server no longer reads (it answered and
/// closed) ends the writing.
pub fn raw_exchange_paced(addr: SocketAddr, pieces: &[&[u8]], pause: Duration) -> RawOutcome {
    let mut stream = raw_connect(addr);
    for (n, piece) in pieces.iter().enumerate() {
        if n > 0 {
            std::thread::sleep(pause);
        }
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    read_outcome(stream)
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// Reads until the server closes: its answer, or `Closed` if it sent nothing.
fn read_outcome(mut stream: TcpStream) -> RawOutcome {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        // A reset after a complete response is fine; a timeout is a hang.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "raw exchange: reading failed after {} bytes: {e}",
            bytes.len()
        ),
    }
    if bytes.is_empty() {
        return RawOutcome::Closed;
    }
    RawOutcome::Response(parse_raw_response(&bytes))
}

fn parse_raw_response(bytes: &[u8]) -> Resp {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = bytes[end + 4..].to_vec();
    let resp = Resp {
        status,
        headers,
        body,
    };
    if let Some(len) = resp.header("content-length") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            resp.body.len(),
            "Content-Length matches the body: {resp:?}"
        );
    }
    resp
}

/// Builds a raw HTTP/1.1 request with `Connection: close`; `Content-Length` is the body's
/// length unless `content_length` overrides it.
pub fn raw_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        content_length.unwrap_or(body.len())
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Builds a raw chunked request with the body split into `chunks`.
pub fn raw_chunked_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Unwraps a raw response, panicking if the server just closed.
pub fn expect_response(outcome: RawOutcome, what: &str) -> Resp {
    match outcome {
        RawOutcome::Response(resp) => resp,
        RawOutcome::Closed => panic!("{what}: the server closed the connection without answering"),
    }
}
