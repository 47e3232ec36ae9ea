//! The two HTTP clients of the bench, one keep-alive connection each: a minimal HTTP/1.1
//! client on `TcpStream` (the default) and ureq.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::{IO_TIMEOUT, MIB};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientKind {
    Raw,
    Ureq,
}

pub trait Http: Send {
    /// Sends one request and reads the whole answer into `out`; returns the status.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16>;
}

pub fn connect(kind: ClientKind, addr: SocketAddr) -> Box<dyn Http> {
    match kind {
        ClientKind::Raw => Box::new(RawClient::new(addr)),
        ClientKind::Ureq => Box::new(UreqClient::new(addr)),
    }
}

/// A minimal HTTP/1.1 client: one request at a time, keep-alive, Content-Length or chunked.
pub struct RawClient {
    pub addr: SocketAddr,
    pub host: String,
    pub conn: Option<(BufReader<TcpStream>, TcpStream)>,
    pub head: Vec<u8>,
    pub line: Vec<u8>,
}

/// A failure on a reused connection before any byte of the answer: safe to retry once.
enum CallError {
    Stale(io::Error),
    Other(io::Error),
}

impl RawClient {
    pub fn new(addr: SocketAddr) -> RawClient {
        RawClient {
            addr,
            host: addr.to_string(),
            conn: None,
            head: Vec::with_capacity(512),
            line: Vec::with_capacity(256),
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        self.conn = Some((reader, stream));
        Ok(())
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u16, CallError> {
        if self.conn.is_none() {
            self.open().map_err(CallError::Other)?;
        }
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        );
        for (name, value) in headers {
            let _ = write!(self.head, "{name}: {value}\r\n");
        }
        if method != "GET" || !body.is_empty() {
            let _ = write!(self.head, "Content-Length: {}\r\n", body.len());
        }
        self.head.extend_from_slice(b"\r\n");
        let small = body.len() <= 16 * 1024;
        if small {
            self.head.extend_from_slice(body);
        }
        let (reader, stream) = self.conn.as_mut().expect("opened above");
        let sent = stream.write_all(&self.head).and_then(|_| {
            if small {
                Ok(())
            } else {
                stream.write_all(body)
            }
        });
        sent.map_err(CallError::Stale)?;

        // Status line.
        self.line.clear();
        match reader.read_until(b'\n', &mut self.line) {
            Ok(0) => {
                return Err(CallError::Stale(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the answer",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(CallError::Stale(e)),
        }
        let status = parse_status(&self.line).map_err(CallError::Other)?;
        // Headers.
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .map_err(CallError::Other)?;
            if n == 0 {
                return Err(CallError::Other(eof("in the headers")));
            }
            let line = trim_crlf(&self.line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim_ascii(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case(b"close");
            }
        }
        // Body.
        out.clear();
        let result = if status == 204 || status == 304 || (100..200).contains(&status) {
            Ok(())
        } else if chunked {
            read_chunked(reader, &mut self.line, out)
        } else if let Some(n) = length {
            out.resize(n, 0);
            reader.read_exact(out)
        } else {
            close = true;
            reader.read_to_end(out).map(|_| ())
        };
        if let Err(e) = result {
            self.conn = None;
            return Err(CallError::Other(e));
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

impl Http for RawClient {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16> {
        let reused = self.conn.is_some();
        match self.try_call(method, path, headers, body, out) {
            Ok(status) => Ok(status),
            Err(CallError::Stale(_)) if reused => {
                // The server closed the idle connection: what every keep-alive client does.
                self.conn = None;
                self.try_call(method, path, headers, body, out)
                    .map_err(|e| match e {
                        CallError::Stale(e) | CallError::Other(e) => e,
                    })
                    .inspect_err(|_| self.conn = None)
            }
            Err(CallError::Stale(e) | CallError::Other(e)) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn eof(where_: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {where_}"),
    )
}

fn parse_status(line: &[u8]) -> io::Result<u16> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad status line");
    if line.len() < 12 || !line.starts_with(b"HTTP/1.") {
        return Err(bad());
    }
    std::str::from_utf8(&line[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        line.clear();
        if reader.read_until(b'\n', line)? == 0 {
            return Err(eof("in a chunk header"));
        }
        let text = std::str::from_utf8(trim_crlf(line)).unwrap_or("");
        let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if reader.read_until(b'\n', line)? == 0 || trim_crlf(line).is_empty() {
                    return Ok(());
                }
            }
        }
        let at = out.len();
        out.resize(at + size, 0);
        reader.read_exact(&mut out[at..])?;
        line.clear();
        reader.read_until(b'\n', line)?;
    }
}

/// The same calls through ureq 3 (one agent, so one pooled connection, per thread).
struct UreqClient {
    pub agent: ureq::Agent,
    pub base: String,
}

impl UreqClient {
    pub fn new(addr: SocketAddr) -> UreqClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(IO_TIMEOUT))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .build();
        UreqClient {
            agent: ureq::Agent::new_with_config(config),
            base: format!("http://{addr}"),
        }
    }
}

impl Http for UreqClient {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => {
                let mut rb = self.agent.get(&url);
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.call()
            }
            _ => {
                let mut rb = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.send(body)
            }
        };
        let mut response = result.map_err(io::Error::other)?;
        let status = response.status().as_u16();
        *out = response
            .body_mut()
            .with_config()
            .limit(256 * MIB as u64)
            .read_to_vec()
            .map_err(io::Error::other)?;
        Ok(status)
    }
}
