//! PATCH (foundry-emulator): new module, replacing upstream's `ClientConnection`.
//!
//! One thread per connection owns its socket for the connection's whole life: it reads a
//! request whole (head and body, under one deadline), queues it for a worker, waits for the
//! answer while watching the socket for the client leaving, writes the answer (under a second
//! deadline), and only then reads the next request. So a worker never touches a socket, a
//! pipelined request is never read while one is unanswered, and a slow or dead client costs
//! only this thread, for at most `io_timeout` per request.
//!
//! PATCH (foundry-emulator), bodies in pieces: a chunked request body is shown to the
//! server's [`BodySink`] (if its observer wants it) as each piece is decoded, and an answer
//! with a [`BodySource`] is written chunked as the source produces it, still under the
//! answer's one write deadline.
//!
//! The socket's read and write timeouts are one [`TICK`]: every blocking socket call returns
//! at least that often, so the thread re-checks its deadline and the server's stop flags
//! without any other wake-up mechanism.
//!
//! Long (about 740 lines) because a connection's whole life runs on this one thread, as one
//! loop: the read under its deadline, the hand-off, watching for the client leaving, the plain
//! or chunked write, the stop flags. It stays one file so that the deadlines and stop checks
//! every step shares are read in one place.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::body::{BodySink, BodySource, Piece};
use crate::framing::{self, BodyFraming, ChunkedDecoder, Rejection, RequestHead};
use crate::queue::RequestQueue;
use crate::request::{GoneWatch, Request, Response};
use crate::stream::{is_tick, Stream};
use crate::ServerOptions;

/// How often a blocked connection thread wakes to check its deadline and the stop flags,
/// and how soon it notices a client that left while its request was being handled.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// Answers up to this size are written with their head in one `write` call.
const COALESCE_MAX: usize = 64 * 1024;

/// A body is read into memory no faster than this is allocated ahead of the bytes: a declared
/// length is only a claim until the bytes come.
const PREALLOCATE_MAX: u64 = 1024 * 1024;

/// After refusing a request, the rest the client is still sending is read and thrown away for
/// at most this long (and this much), so our close does not turn into a reset that destroys
/// the answer before the client reads it (nginx's "lingering close"). Nothing read here is
/// parsed.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Why an observed body broke off when the client closed (or the server dropped the
/// connection) before its end.
pub(crate) const BROKE_OFF: &str = "The connection closed before the whole body arrived.";

/// State shared by the accept thread, every connection thread and the server handle.
pub(crate) struct Shared {
    pub(crate) queue: RequestQueue,
    options: ServerOptions,
    /// Set by `stop_accepting`: finish the current request, then close.
    stopping: AtomicBool,
    /// Set when the grace ran out: drop the socket at the next tick.
    forced: AtomicBool,
    open: Mutex<usize>,
    closed: Condvar,
}

impl Shared {
    pub(crate) fn new(options: ServerOptions, queue: RequestQueue) -> Shared {
        Shared {
            queue,
            options,
            stopping: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            open: Mutex::new(0),
            closed: Condvar::new(),
        }
    }

    /// Counts a connection in; the guard counts it out when dropped.
    pub(crate) fn open(self: &Arc<Self>) -> OpenGuard {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        OpenGuard(self.clone())
    }

    pub(crate) fn open_connections(&self) -> usize {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections stop after their current request; queued requests get 503.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for request in self.queue.close() {
            request.respond(shutting_down());
        }
    }

    pub(crate) fn force_close(&self) {
        self.forced.store(true, Ordering::SeqCst);
    }

    /// True once no connection is open; false if `deadline` came first.
    pub(crate) fn wait_closed(&self, deadline: Instant) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while *open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self
                .closed
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn forced(&self) -> bool {
        self.forced.load(Ordering::SeqCst)
    }
}

/// One open connection, counted until dropped.
pub(crate) struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        drop(open);
        self.0.closed.notify_all();
    }
}

fn shutting_down() -> Response {
    let rejection = Rejection {
        status: 503,
        code: "overloaded",
        reason: "The emulator is shutting down.".into(),
    };
    let mut response = Response::new(503, Box::new(framing::rejection_body(&rejection)));
    response.headers = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Retry-After".into(), "1".into()),
    ];
    response.close = true;
    response
}

/// What to do after one request.
enum Next {
    KeepAlive,
    Close,
    /// Refuse with this answer, then close (lingering).
    Refuse(Rejection),
}

struct Conn<S> {
    stream: S,
    shared: Arc<Shared>,
    /// The client's address, asked of the socket once (a system call) rather than per request.
    peer: Option<std::net::SocketAddr>,
    /// Bytes read but not yet used: the start of the next request, if pipelined.
    buf: Vec<u8>,
}

/// Serves a plain connection until it closes. Runs on the connection's own thread.
pub(crate) fn serve_plain(socket: TcpStream, shared: Arc<Shared>, open: OpenGuard) {
    if prepare(&socket) {
        serve(socket, shared, open);
    }
}

/// Serves a TLS connection until it closes: the handshake (under `io_timeout`), then the
/// same loop as a plain connection. Runs on the connection's own thread.
#[cfg(feature = "tls")]
pub(crate) fn serve_tls(
    socket: TcpStream,
    config: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    open: OpenGuard,
) {
    if !prepare(&socket) {
        return;
    }
    let peer = socket.peer_addr().ok();
    let deadline = Instant::now() + shared.options.io_timeout;
    let give_up = || shared.stopping() || shared.forced();
    match crate::stream::handshake(config, socket, deadline, give_up) {
        Ok(stream) => serve(stream, shared, open),
        // Worth seeing at info: a client that does not trust the CA shows up here.
        Err(e) => log::info!("TLS handshake with {peer:?} failed: {e}"),
    }
}

/// Socket timeouts of one tick; false if the socket is already unusable.
fn prepare(socket: &TcpStream) -> bool {
    let ready = socket
        .set_read_timeout(Some(TICK))
        .and_then(|()| socket.set_write_timeout(Some(TICK)))
        .and_then(|()| socket.set_nodelay(true));
    if let Err(e) = &ready {
        log::debug!("could not set up a connection: {e}");
    }
    ready.is_ok()
}

fn serve<S: Stream>(stream: S, shared: Arc<Shared>, _open: OpenGuard) {
    let peer = stream.socket().peer_addr().ok();
    let mut conn = Conn {
        stream,
        shared,
        peer,
        buf: Vec::new(),
    };
    loop {
        match conn.serve_one() {
            Next::KeepAlive => continue,
            Next::Close => break,
            Next::Refuse(rejection) => {
                conn.refuse(&rejection);
                return;
            }
        }
    }
    conn.stream.end_writes();
}

fn too_slow(io_timeout: Duration) -> Rejection {
    Rejection {
        status: 408,
        code: "request_timeout",
        reason: format!(
            "The request did not arrive whole within {} s.",
            io_timeout.as_secs_f64()
        ),
    }
}

fn too_large(max_body: u64) -> Rejection {
    Rejection {
        status: 413,
        code: "payload_too_large",
        reason: format!("The request body is larger than the {max_body}-byte limit (--max-body)."),
    }
}

impl<S: Stream> Conn<S> {
    fn serve_one(&mut self) -> Next {
        let Some(started) = self.await_request() else {
            return Next::Close;
        };
        let deadline = started + self.shared.options.io_timeout;
        let head = match self.read_head(deadline) {
            Ok(Some(head)) => head,
            Ok(None) => return Next::Close,
            Err(rejection) => return Next::Refuse(rejection),
        };
        let mut sink = self.observe(&head);
        let body = self.read_body(&head, deadline, &mut sink);
        if let Some(sink) = sink.as_deref_mut() {
            match &body {
                Ok(Some(_)) => sink.end_of_body(),
                Ok(None) => sink.abort(BROKE_OFF),
                Err(rejection) => sink.abort(&rejection.reason),
            }
        }
        drop(sink);
        let body = match body {
            Ok(Some(body)) => body,
            Ok(None) => return Next::Close,
            Err(rejection) => return Next::Refuse(rejection),
        };
        let head_only = head.method == "HEAD";
        let gone = GoneWatch::default();
        let (reply_to, replies) = mpsc::channel();
        let request = Request {
            method: head.method,
            url: head.target,
            headers: head
                .headers
                .into_iter()
                // A valid value keeps its bytes' allocation; others have bytes replaced.
                .map(|(name, value)| {
                    let value = String::from_utf8(value)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (name, value)
                })
                .collect(),
            body,
            minor_version: head.minor_version,
            remote_addr: self.peer,
            secure: self.stream.secure(),
            received_at: started,
            gone: gone.clone(),
            reply_to,
        };
        let mut response = match self.shared.queue.push(request) {
            Ok(()) => match self.await_response(&replies, &gone) {
                Some(response) => response,
                None => return Next::Close,
            },
            Err(_) => shutting_down(),
        };
        let close = response.close || !head.keep_alive || self.shared.stopping();
        if response.on_delivered.is_some() {
            // A client that left since the last tick must not be counted as served.
            self.watch_client(&gone);
        }
        let written = match response.stream.take() {
            Some(source) => self.write_streamed(&response, source, head_only, close, &gone),
            None => self.write_response(&response, head_only, close),
        };
        response.delivered(written && !head_only && !gone.is_gone());
        if written && !close {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Waits for the first byte of the next request; returns when it arrived. `None`: the
    /// client closed, stayed idle past `idle_timeout`, or the server is stopping.
    ///
    /// # Blocking
    /// Socket reads of one tick each; woken by the client's bytes or EOF.
    fn await_request(&mut self) -> Option<Instant> {
        let idle_since = Instant::now();
        while self.buf.is_empty() {
            if self.shared.stopping() || idle_since.elapsed() >= self.shared.options.idle_timeout {
                return None;
            }
            match self.read_more() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if is_tick(&e) => {}
                Err(_) => return None,
            }
        }
        Some(Instant::now())
    }

    /// Appends what the socket has (one read call) to `buf`.
    fn read_more(&mut self) -> io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let read = self.stream.read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Reads until one more chunk arrived, the deadline passed (`Err(408)`) or the client
    /// closed (`Ok(false)`).
    fn read_by(&mut self, deadline: Instant) -> Result<bool, Rejection> {
        loop {
            if self.shared.forced() {
                return Ok(false);
            }
            match self.read_more() {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if is_tick(&e) => {
                    if Instant::now() >= deadline {
                        return Err(too_slow(self.shared.options.io_timeout));
                    }
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// `Ok(None)`: the client closed mid-head (nobody to answer).
    fn read_head(&mut self, deadline: Instant) -> Result<Option<RequestHead>, Rejection> {
        loop {
            if let Some((head, used)) =
                framing::parse_head(&self.buf, &self.shared.options.head_limits)?
            {
                self.buf.drain(..used);
                return Ok(Some(head));
            }
            if !self.read_by(deadline)? {
                return Ok(None);
            }
        }
    }

    /// The sink the server's observer wants for this request's chunked body, if any.
    fn observe(&self, head: &RequestHead) -> Option<Box<dyn BodySink>> {
        match (&head.framing, &self.shared.options.body_observer) {
            (BodyFraming::Chunked, Some(observer)) => (observer.0)(head),
            _ => None,
        }
    }

    /// The whole body. `Ok(None)`: the client closed mid-body. A chunked body is shown to
    /// `sink` piece by piece as it is decoded.
    fn read_body(
        &mut self,
        head: &RequestHead,
        deadline: Instant,
        sink: &mut Option<Box<dyn BodySink>>,
    ) -> Result<Option<Vec<u8>>, Rejection> {
        let max_body = self.shared.options.max_body;
        if let BodyFraming::Length(n) = head.framing {
            if n > max_body {
                return Err(too_large(max_body));
            }
        }
        if head.expect_continue && head.framing != BodyFraming::None && self.buf.is_empty() {
            let deadline = Instant::now() + self.shared.options.io_timeout;
            if self
                .write_all_by(b"HTTP/1.1 100 Continue\r\n\r\n", deadline)
                .is_err()
            {
                return Ok(None);
            }
        }
        match head.framing {
            BodyFraming::None => Ok(Some(Vec::new())),
            BodyFraming::Length(n) => self.read_length(n, deadline),
            BodyFraming::Chunked => self.read_chunked(max_body, deadline, sink),
        }
    }

    fn read_length(&mut self, n: u64, deadline: Instant) -> Result<Option<Vec<u8>>, Rejection> {
        let n = n as usize; // n <= max_body, which fits in memory by configuration
        if self.buf.len() >= n {
            let rest = self.buf.split_off(n);
            return Ok(Some(std::mem::replace(&mut self.buf, rest)));
        }
        let mut body = std::mem::take(&mut self.buf);
        body.reserve((n - body.len()).min(PREALLOCATE_MAX as usize));
        while body.len() < n {
            // `read_to_end` reads into the spare capacity without zeroing it first; zeroing
            // it before each read cost a megabyte body about 8 MiB of memset. A read timeout
            // (a tick) returns with what arrived so far kept in `body`.
            let want = (n - body.len()) as u64;
            match (&mut self.stream).take(want).read_to_end(&mut body) {
                // The client stopped sending (it may still read): say why, then close.
                Ok(_) if body.len() < n => {
                    return Err(Rejection::new(
                        400,
                        "The request body could not be read: the connection closed before the whole body arrived.",
                    ))
                }
                Ok(_) => {}
                Err(e) if is_tick(&e) => {
                    if self.shared.forced() {
                        return Ok(None);
                    }
                    if Instant::now() >= deadline {
                        return Err(too_slow(self.shared.options.io_timeout));
                    }
                }
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(body))
    }

    fn read_chunked(
        &mut self,
        max_body: u64,
        deadline: Instant,
        sink: &mut Option<Box<dyn BodySink>>,
    ) -> Result<Option<Vec<u8>>, Rejection> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        loop {
            let before = body.len();
            let (used, done) = decoder.decode(&self.buf, &mut body)?;
            self.buf.drain(..used);
            if body.len() as u64 > max_body {
                return Err(too_large(max_body));
            }
            if let Some(sink) = sink.as_deref_mut() {
                if body.len() > before {
                    sink.chunk(&body[before..]);
                }
            }
            if done {
                return Ok(Some(body));
            }
            if !self.read_by(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Waits for the worker's answer, watching the client meanwhile. `None`: the server
    /// gave up on this connection (forced close).
    ///
    /// # Blocking
    /// `recv_timeout` of one tick on the request's own answer channel; woken by
    /// `Request::respond`, or by the request being dropped unanswered (then an empty 500).
    fn await_response(
        &mut self,
        replies: &Receiver<Response>,
        gone: &GoneWatch,
    ) -> Option<Response> {
        // Most answers come within microseconds: a thread that does not go to sleep for them
        // costs its waker no wake-up (on a VM, each one is an inter-processor interrupt).
        // Not so once the handler waits (it set a gone-waker: a long poll, a blocking
        // execute): looking on would only take turns on the CPU with the threads that work.
        let found = crate::spin::briefly(|| match replies.try_recv() {
            Ok(response) => Some(Some(response)),
            Err(_) if gone.is_watched() => Some(None),
            Err(_) => None,
        });
        if let Some(Some(response)) = found {
            return Some(response);
        }
        loop {
            match replies.recv_timeout(TICK) {
                Ok(response) => return Some(response),
                Err(RecvTimeoutError::Disconnected) => {
                    let mut response = Response::new(500, Box::new(Vec::new()));
                    response.close = true;
                    return Some(response);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.shared.forced() {
                        return None;
                    }
                    self.watch_client(gone);
                }
            }
        }
    }

    /// Fires `gone` if the client has closed its side. Bytes it sent meanwhile (a pipelined
    /// request) are kept for later, up to one head's worth.
    fn watch_client(&mut self, gone: &GoneWatch) {
        if gone.is_gone() || self.buf.len() > self.shared.options.head_limits.max_head_bytes {
            return;
        }
        if self.stream.socket().set_nonblocking(true).is_err() {
            return;
        }
        let read = self.read_more();
        let _ = self.stream.socket().set_nonblocking(false);
        match read {
            Ok(0) => gone.fire(),
            Ok(_) => {}
            Err(e) if is_tick(&e) => {}
            Err(_) => gone.fire(),
        }
    }

    /// The status line and headers of an answer, without the framing headers and the
    /// blank line.
    fn head_of(response: &Response) -> String {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            response.status,
            framing::reason_phrase(response.status),
            httpdate::fmt_http_date(SystemTime::now())
        );
        for (name, value) in &response.headers {
            let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
            if clean(name) && clean(value) {
                head.push_str(name);
                head.push_str(": ");
                head.push_str(value);
                head.push_str("\r\n");
            }
        }
        head
    }

    /// Writes the answer; false if it could not be written whole in time.
    fn write_response(&mut self, response: &Response, head_only: bool, close: bool) -> bool {
        let body = (*response.body).as_ref();
        let mut head = Self::head_of(response);
        if response.status != 204 && response.status != 304 && response.status >= 200 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let body = if head_only { &[][..] } else { body };
        let deadline = Instant::now() + self.shared.options.io_timeout;
        let written = if body.len() <= COALESCE_MAX {
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            self.write_all_by(&bytes, deadline)
        } else {
            self.write_all_by(head.as_bytes(), deadline)
                .and_then(|()| self.write_all_by(body, deadline))
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                log::debug!("writing an answer failed: {e}");
                false
            }
        }
    }

    /// PATCH (foundry-emulator): writes an answer whose body comes from `source`, chunked:
    /// one chunk per piece as it comes, then the terminating chunk when the source ends
    /// whole. True only if the whole body, terminating chunk included, was written.
    ///
    /// On false the caller closes the connection, so a client sees a body without its
    /// terminating chunk: the source broke, the deadline passed (`io_timeout` from the start
    /// of the answer, as for any answer), the client left, or the server forced the close.
    ///
    /// # Blocking
    /// `source.next` for at most one tick at a time (woken by the source's producer), and
    /// socket writes of one tick each; between ticks it re-checks the deadline, the forced
    /// close, whether the client left (while waiting) and whether the source broke (while
    /// writing to a slow client).
    fn write_streamed(
        &mut self,
        response: &Response,
        mut source: Box<dyn BodySource>,
        head_only: bool,
        close: bool,
        gone: &GoneWatch,
    ) -> bool {
        let mut head = Self::head_of(response);
        head.push_str("Transfer-Encoding: chunked\r\n");
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let deadline = Instant::now() + self.shared.options.io_timeout;
        if let Err(e) = self.write_all_by(head.as_bytes(), deadline) {
            log::debug!("writing a streamed answer's head failed: {e}");
            return false;
        }
        if head_only {
            return true;
        }
        loop {
            let now = Instant::now();
            if self.shared.forced() || now >= deadline {
                log::debug!("a streamed answer ran out of time; closing it unfinished");
                return false;
            }
            // (bytes to write, whether they end the body)
            let (framed, end) = match source.next(TICK.min(deadline - now)) {
                // An empty chunk would read as the terminating one.
                Piece::Data(data) if data.is_empty() => continue,
                Piece::Data(data) => {
                    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
                    framed.extend_from_slice(&data);
                    framed.extend_from_slice(b"\r\n");
                    (framed, false)
                }
                Piece::Wait => {
                    self.watch_client(gone);
                    if gone.is_gone() {
                        return false;
                    }
                    continue;
                }
                Piece::End => (b"0\r\n\r\n".to_vec(), true),
                Piece::Broken => {
                    log::debug!("a streamed answer's source broke; closing it unfinished");
                    return false;
                }
            };
            let written = self.write_all_until(&framed, deadline, &|| source.is_broken());
            match written {
                Ok(()) if end => return true,
                Ok(()) => {}
                Err(e) => {
                    log::debug!("writing a streamed answer stopped: {e}");
                    return false;
                }
            }
        }
    }

    /// Writes `data` and flushes it (TLS holds records until flushed).
    ///
    /// # Blocking
    /// Socket writes of one tick each, until all is written or `deadline` (or a forced close).
    fn write_all_by(&mut self, data: &[u8], deadline: Instant) -> io::Result<()> {
        self.write_all_until(data, deadline, &|| false)
    }

    /// [`Conn::write_all_by`], also giving up at a tick where `give_up` says so.
    fn write_all_until(
        &mut self,
        mut data: &[u8],
        deadline: Instant,
        give_up: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        let mut flushed = false;
        while !flushed {
            let step = match data {
                [] => self.stream.flush().map(|()| flushed = true),
                _ => self.stream.write(data).and_then(|n| match n {
                    0 => Err(io::ErrorKind::WriteZero.into()),
                    n => {
                        data = &data[n..];
                        Ok(())
                    }
                }),
            };
            match step {
                Ok(()) => {}
                Err(e) if is_tick(&e) => {
                    if self.shared.forced() || Instant::now() >= deadline || give_up() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Answers a request that cannot be served and closes the connection.
    fn refuse(&mut self, rejection: &Rejection) {
        log::debug!(
            "refused a request: {} {}",
            rejection.status,
            rejection.reason
        );
        let deadline = Instant::now() + self.shared.options.io_timeout.min(LINGER_TIME * 5);
        if self
            .write_all_by(&framing::rejection_response(rejection), deadline)
            .is_err()
        {
            return;
        }
        // Lingering close: stop sending, then discard what the client still sends, briefly.
        self.stream.end_writes();
        let until = Instant::now() + LINGER_TIME;
        let mut sink = [0u8; 8192];
        let mut discarded = 0;
        while discarded < LINGER_BYTES && Instant::now() < until {
            match self.stream.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if is_tick(&e) => {}
                Err(_) => break,
            }
        }
    }
}
