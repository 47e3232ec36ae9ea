//! The worker pool: front workers take requests off tiny_http, waiting lanes hold blocked ones.
//!
//! tiny_http reads connections on its own threads and queues parsed requests. Our `front`
//! workers (a fixed number) each loop on `recv()`, read the body (capped), and call
//! [`Handler::handle`]. A request that must wait (a sync execute, a long poll) comes back as
//! [`Outcome::Wait`] and is passed, with its tiny_http request, to a *waiting lane*: a bounded
//! crossbeam channel drained by that lane's own fixed threads, which call [`Handler::finish`]
//! and answer. So a blocked wait never occupies a front worker, and the requests that end
//! waits (result posts, polls, status) are always served.
//!
//! Admission to a lane is decided by the handler *before* it creates any state, through a
//! [`LaneGate`] whose capacity equals the lane channel's bound: a request that gets a
//! [`LaneTicket`] is guaranteed a place, one that does not gets `503 overloaded` and leaves
//! nothing behind. Every handler call runs under `catch_unwind`; a panic becomes a JSON 500
//! and the worker lives on.

use std::io::{Cursor, Read};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{Body, Reply, Req};
use crate::error::Error;

/// What a handler does with a request: answer now, or wait in a lane.
pub enum Outcome<W> {
    Reply(Reply),
    Wait(W),
}

/// The application behind the server.
pub trait Handler: Send + Sync + 'static {
    /// A parked request's state; it owns its [`LaneTicket`].
    type Wait: Send + 'static;
    /// Answers a request, or parks it. Runs on a front worker; must not block.
    fn handle(&self, req: Req) -> Outcome<Self::Wait>;
    /// Index into [`ServerOptions::lanes`] of the lane this wait belongs to.
    fn lane(wait: &Self::Wait) -> usize;
    /// Performs the wait and answers. Runs on a lane thread.
    fn finish(&self, wait: Self::Wait) -> Reply;
}

/// Counts the requests admitted to one waiting lane (running or queued in it).
#[derive(Debug)]
pub struct LaneGate {
    name: &'static str,
    threads: usize,
    capacity: usize,
    in_use: AtomicUsize,
}

impl LaneGate {
    /// A lane served by `threads` threads that admits up to `threads + queue` requests.
    pub fn new(name: &'static str, threads: usize, queue: usize) -> Arc<LaneGate> {
        let threads = threads.max(1);
        Arc::new(LaneGate {
            name,
            threads,
            capacity: threads + queue,
            in_use: AtomicUsize::new(0),
        })
    }

    /// Admits one request if the lane has room; the ticket frees the place when dropped.
    pub fn try_enter(self: &Arc<Self>) -> Option<LaneTicket> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| LaneTicket(self.clone()))
    }

    /// The error a request gets when the lane is full.
    pub fn overloaded(&self) -> Error {
        Error::Overloaded(format!(
            "all {} places of the {} lane are taken",
            self.capacity, self.name
        ))
    }
}

/// A place in a waiting lane, held from admission until the request is answered.
#[derive(Debug)]
pub struct LaneTicket(Arc<LaneGate>);

impl Drop for LaneTicket {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sizes of the pool.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Front workers calling `recv()`.
    pub front_threads: usize,
    /// The waiting lanes, indexed by [`Handler::lane`].
    pub lanes: Vec<Arc<LaneGate>>,
    /// Body cap in bytes (`--max-body`).
    pub max_body: u64,
    /// Threads that read large or chunked bodies and write large answers.
    pub io_threads: usize,
    /// Read and write timeout of every accepted connection.
    pub socket_timeout: Duration,
}

/// Bodies up to this size are read by tiny_http's connection thread before the request
/// reaches us (tiny_http 0.12's rule); larger ones, chunked ones and `Expect: 100-continue`
/// ones are still on the socket.
const PREREAD_BODY_BYTES: usize = 1024;

/// Answers larger than this are written by an I/O thread: a client that does not read could
/// otherwise block a front worker once the socket buffer is full.
const INLINE_REPLY_BYTES: usize = 64 * 1024;

/// The most a declared body length makes us allocate up front.
const PREALLOCATE_MAX: u64 = 16 * 1024 * 1024;

/// Requests that may wait for an I/O thread before 503.
const IO_QUEUE: usize = 256;

/// Work for the I/O lane: everything that may block on a slow client's socket.
enum IoTask {
    /// Read the body, then handle the request.
    Serve(tiny_http::Request, Instant),
    /// Write a large answer.
    Write(tiny_http::Request, Reply, Instant),
}

type Parked<W> = (tiny_http::Request, W, Instant);

/// A running server. Dropping it without [`HttpServer::shutdown`] leaves threads running.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    front: Vec<JoinHandle<()>>,
    io: Vec<JoinHandle<()>>,
    lanes: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` (already bound, so the caller knows the address) with `handler`.
    pub fn start<H: Handler>(
        listener: TcpListener,
        handler: Arc<H>,
        options: ServerOptions,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let timeout = Some(options.socket_timeout);
        let server =
            tiny_http::Server::from_listener_with_timeouts(listener, None, timeout, timeout)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));

        let mut senders = Vec::new();
        let mut lanes = Vec::new();
        for gate in &options.lanes {
            let (tx, rx) = crossbeam_channel::bounded::<Parked<H::Wait>>(gate.capacity);
            senders.push(tx);
            for n in 0..gate.threads {
                let (rx, handler) = (rx.clone(), handler.clone());
                lanes.push(spawn(format!("lane-{}-{n}", gate.name), move || {
                    lane_loop(&*handler, rx)
                })?);
            }
        }
        let (io_tx, io_rx) = crossbeam_channel::bounded::<IoTask>(IO_QUEUE);
        let mut io = Vec::new();
        for n in 0..options.io_threads.max(1) {
            let dispatch = Dispatch {
                handler: handler.clone(),
                lanes: senders.clone(),
                io: None,
                max_body: options.max_body,
            };
            let rx = io_rx.clone();
            io.push(spawn(format!("io-{n}"), move || dispatch.run_io(rx))?);
        }
        let mut front = Vec::new();
        for n in 0..options.front_threads.max(1) {
            let worker = FrontWorker {
                server: server.clone(),
                stopping: stopping.clone(),
                dispatch: Dispatch {
                    handler: handler.clone(),
                    lanes: senders.clone(),
                    io: Some(io_tx.clone()),
                    max_body: options.max_body,
                },
            };
            front.push(spawn(format!("front-{n}"), move || worker.run())?);
        }
        Ok(HttpServer {
            server,
            addr,
            stopping,
            front,
            io,
            lanes,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every worker finish its request, and joins all threads.
    ///
    /// The caller must first wake every wait (`JobTable::shutdown`), or lane threads would
    /// sit out their deadlines here.
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each unblock() releases exactly one thread blocked in recv().
        for _ in &self.front {
            self.server.unblock();
        }
        for handle in self.front {
            let _ = handle.join();
        }
        // The front workers held the only I/O senders: the I/O threads drain and exit, and
        // with them the last lane senders, so the lanes drain and exit too.
        for handle in self.io {
            let _ = handle.join();
        }
        for handle in self.lanes {
            let _ = handle.join();
        }
        drop(self.server);
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

struct FrontWorker<H: Handler> {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    dispatch: Dispatch<H>,
}

impl<H: Handler> FrontWorker<H> {
    fn run(self) {
        loop {
            let raw = match self.server.recv() {
                Ok(raw) => raw,
                Err(_) if self.stopping.load(Ordering::SeqCst) => return,
                Err(e) => {
                    log::warn!("accepting a connection failed: {e}");
                    continue;
                }
            };
            self.dispatch.serve(raw, Instant::now());
        }
    }
}

/// How a request moves on: what front workers and I/O threads share.
struct Dispatch<H: Handler> {
    handler: Arc<H>,
    lanes: Vec<Sender<Parked<H::Wait>>>,
    /// `Some` on front workers, which must not block on a client's socket; `None` on the
    /// I/O threads, which may.
    io: Option<Sender<IoTask>>,
    max_body: u64,
}

impl<H: Handler> Dispatch<H> {
    /// Reads, handles and answers (or parks) one request.
    fn serve(&self, mut raw: tiny_http::Request, started: Instant) {
        if body_on_socket(&raw) {
            if let Some(io) = &self.io {
                return to_io(io, IoTask::Serve(raw, started));
            }
        }
        let req = to_req(&mut raw, self.max_body);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handler.handle(req)))
            .unwrap_or_else(|panic| Outcome::Reply(panic_reply(panic)));
        match outcome {
            Outcome::Reply(reply) => match &self.io {
                Some(io) if reply.body.as_ref().len() > INLINE_REPLY_BYTES => {
                    to_io(io, IoTask::Write(raw, reply, started))
                }
                _ => respond(raw, reply, started),
            },
            Outcome::Wait(wait) => {
                // Cannot fail while the gate admitted `wait`: the channel holds
                // gate.capacity items and each admitted wait holds one ticket.
                if let Err(err) = self.lanes[H::lane(&wait)].try_send((raw, wait, started)) {
                    let (raw, _, _) = err.into_inner();
                    let reply = Error::Overloaded("a waiting lane is full".into()).into();
                    respond(raw, reply, started);
                }
            }
        }
    }

    fn run_io(self, rx: Receiver<IoTask>) {
        for task in rx {
            match task {
                IoTask::Serve(raw, started) => self.serve(raw, started),
                IoTask::Write(raw, reply, started) => respond(raw, reply, started),
            }
        }
    }
}

/// Hands slow socket work to the I/O lane; when it is full, a request gets 503 (nothing was
/// done yet), and an answer is written here after all (it may carry a claimed job).
fn to_io(io: &Sender<IoTask>, task: IoTask) {
    match io.try_send(task).map_err(|e| e.into_inner()) {
        Ok(()) => {}
        Err(IoTask::Serve(raw, started)) => {
            let reply = Error::Overloaded("all I/O threads are busy".into()).into();
            respond(raw, reply, started);
        }
        Err(IoTask::Write(raw, reply, started)) => respond(raw, reply, started),
    }
}

/// True when the body was not read ahead by tiny_http, so reading it may block.
fn body_on_socket(raw: &tiny_http::Request) -> bool {
    let has = |name: &str| {
        raw.headers()
            .iter()
            .any(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
    };
    has("Transfer-Encoding")
        || has("Expect")
        || raw.body_length().is_some_and(|n| n > PREREAD_BODY_BYTES)
}

fn lane_loop<H: Handler>(handler: &H, rx: Receiver<Parked<H::Wait>>) {
    for (raw, wait, started) in rx {
        let reply =
            catch_unwind(AssertUnwindSafe(|| handler.finish(wait))).unwrap_or_else(panic_reply);
        respond(raw, reply, started);
    }
}

fn panic_reply(panic: Box<dyn std::any::Any + Send>) -> Reply {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_string());
    log::error!("handler panicked: {why}");
    Error::Internal(why).into()
}

/// Copies tiny_http's request into an owned [`Req`], reading at most `max_body` bytes.
fn to_req(raw: &mut tiny_http::Request, max_body: u64) -> Req {
    let headers = raw
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_string(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let method = raw.method().as_str().to_string();
    let url = raw.url().to_string();
    let body = read_body(raw, max_body);
    Req::new(&method, &url, headers, body)
}

fn read_body(raw: &mut tiny_http::Request, max_body: u64) -> Body {
    let declared = raw.body_length().map(|n| n as u64);
    let chunked = raw.headers().iter().any(|h| {
        h.field
            .as_str()
            .as_str()
            .eq_ignore_ascii_case("Transfer-Encoding")
    });
    if declared.is_none() && !chunked {
        // HTTP/1.1: no length and no chunking means no body. (tiny_http would hand over the
        // raw socket as the "body" of an `Upgrade` request, which never ends.)
        return Body::Complete(Vec::new());
    }
    if declared.is_some_and(|n| n > max_body) {
        // Never read: the connection is closed after the 413 instead of drained.
        return Body::TooLarge(max_body);
    }
    // One allocation for a declared length (pages are touched only as bytes arrive), capped
    // because a declared length is only a claim until the bytes come.
    let mut buf =
        Vec::with_capacity(declared.unwrap_or(0).min(max_body).min(PREALLOCATE_MAX) as usize);
    match raw
        .as_reader()
        .take(max_body.saturating_add(1))
        .read_to_end(&mut buf)
    {
        Err(e) => Body::Broken(e.to_string()),
        Ok(_) if buf.len() as u64 > max_body => Body::TooLarge(max_body),
        Ok(n) if declared.is_some_and(|want| (n as u64) < want) => {
            Body::Broken("the connection closed before the whole body arrived".into())
        }
        Ok(_) => Body::Complete(buf),
    }
}

fn respond(raw: tiny_http::Request, reply: Reply, started: Instant) {
    let (method, url) = (raw.method().clone(), raw.url().to_string());
    let status = reply.status;
    let len = reply.body.as_ref().len();
    let headers = reply
        .headers
        .iter()
        .filter_map(|(name, value)| {
            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
        })
        .collect();
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        Cursor::new(reply.body),
        Some(len),
        None,
    )
    // Always send Content-Length, never chunked: simpler for every client.
    .with_chunked_threshold(usize::MAX);
    if let Err(e) = raw.respond(response) {
        log::debug!("writing the response to {method} {url} failed: {e}");
    }
    log::debug!(
        "{method} {url} {status} {}us",
        started.elapsed().as_micros()
    );
}
