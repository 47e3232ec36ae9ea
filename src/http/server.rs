//! The worker pool: a fixed number of threads, each carrying one request from
//! [`tiny_http::Server::recv`] to its answer.
//!
//! tiny_http's connection threads own the sockets: a request reaches a worker whole (body
//! read, capped), and the worker's answer goes back to the connection thread, which writes it.
//! So a worker never blocks on a client; it blocks only in `recv` and, for a sync execute or
//! a long poll, in the job table's wait, which the handler enters only with a [`Permit`].
//! The pool holds every permit plus `--threads` more workers, so the requests that end waits
//! (result posts, polls, status) always find a free worker.
//!
//! Every handler call runs under `catch_unwind`; a panic becomes a JSON 500 and the worker
//! lives on.

use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{BodySink, ClientGone, Reply, Req};
use crate::error::Error;

/// The application behind the server.
pub trait Handler: Send + Sync + 'static {
    /// Answers a request; may block in a bounded wait, holding a [`Permit`].
    fn handle(&self, req: Req) -> Reply;

    /// Asked on a connection thread, once the head of a request with a chunked body was
    /// read (`req` has no body yet), whether to see that body as it arrives; the request is
    /// then handled whole as usual. Must not block. None by default.
    fn observe_body(&self, _req: &Req) -> Option<Box<dyn BodySink>> {
        None
    }
}

/// Counts the requests that may block a worker in one kind of wait (sync executes, polls).
#[derive(Debug)]
pub struct Permits {
    name: &'static str,
    capacity: usize,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// How long a request may wait for a place to free up before it is refused. A client that
/// left is noticed by its connection thread within a tick (250 ms), which frees its place;
/// so a burst of vanished callers delays a new one by at most this, instead of refusing it.
pub const PERMIT_PATIENCE: Duration = Duration::from_millis(600);

impl Permits {
    pub fn new(name: &'static str, capacity: usize) -> Arc<Permits> {
        Arc::new(Permits {
            name,
            capacity: capacity.max(1),
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// How many may wait at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many wait now.
    pub fn in_use(&self) -> usize {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place to wait, if one is free now; it is given back when the permit is dropped.
    pub fn try_take(self: &Arc<Self>) -> Option<Permit> {
        self.take_within(Duration::ZERO)
    }

    /// A place to wait, if one is free now or frees up within `patience`.
    ///
    /// # Blocking
    /// Waits on `freed`, woken by a dropped [`Permit`]; deadline `patience`, then `None`.
    pub fn take_within(self: &Arc<Self>, patience: Duration) -> Option<Permit> {
        let deadline = Instant::now() + patience;
        let mut in_use = self.lock();
        while *in_use >= self.capacity {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            in_use = self
                .freed
                .wait_timeout(in_use, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *in_use += 1;
        Some(Permit(self.clone()))
    }

    /// The error an execute gets when every permit is taken.
    pub fn overloaded(&self) -> Error {
        Error::Overloaded(format!(
            "all {} {} wait places are taken (--wait-threads)",
            self.capacity, self.name
        ))
    }
}

/// One place in a kind of wait, held until the request is answered.
#[derive(Debug)]
pub struct Permit(Arc<Permits>);

impl Drop for Permit {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// Sizes and limits of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads: every wait permit plus the reserve (`--threads`).
    pub workers: usize,
    /// Body cap in bytes (`--max-body`).
    pub max_body: u64,
    /// Deadline for reading one request and for writing one answer (`--io-timeout`).
    pub io_timeout: Duration,
}

/// How long a kept-alive connection may idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Stack of a worker: serde_json nests at most 128 levels, far below this.
const WORKER_STACK: usize = 512 * 1024;

/// A running server. Dropping it without [`HttpServer::shutdown`] leaves workers running.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` (already bound, so the caller knows the address) with `handler`.
    pub fn start<H: Handler>(
        listener: TcpListener,
        handler: Arc<H>,
        options: ServerOptions,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let server = Arc::new(tiny_http::Server::from_listener(
            listener,
            tiny_http::ServerOptions {
                max_body: options.max_body,
                io_timeout: options.io_timeout,
                idle_timeout: IDLE_TIMEOUT,
                body_observer: Some(body_observer(handler.clone())),
                ..tiny_http::ServerOptions::default()
            },
        )?);
        let mut workers = Vec::with_capacity(options.workers);
        for n in 0..options.workers.max(1) {
            let (server, handler) = (server.clone(), handler.clone());
            let worker = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .stack_size(WORKER_STACK)
                .spawn(move || work(&server, &*handler))?;
            workers.push(worker);
        }
        Ok(HttpServer {
            server,
            addr,
            workers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Also serves `listener` over TLS: its connections feed the same workers.
    #[cfg(feature = "tls")]
    pub fn listen_tls(
        &self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<SocketAddr> {
        self.server.listen_tls(listener, config)
    }

    /// Closes the listener; connections finish their current request, then close.
    pub fn stop_accepting(&self) {
        self.server.stop_accepting();
    }

    /// Stops accepting, gives open answers up to `grace`, closes what is left, and joins the
    /// workers.
    ///
    /// The caller must first wake every wait (`JobTable::shutdown`), or workers would sit
    /// out their deadlines here.
    pub fn shutdown(self, grace: Duration) {
        self.server.drain(grace);
        // Each unblock() releases exactly one worker blocked in recv().
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// The connection layer's hook for chunked bodies: the head as a body-less [`Req`], asked of
/// the handler under `catch_unwind` (a panic means "not observed").
fn body_observer<H: Handler>(handler: Arc<H>) -> tiny_http::BodyObserver {
    tiny_http::BodyObserver(Arc::new(move |head: &tiny_http::framing::RequestHead| {
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect();
        let req = Req::new(&head.method, &head.target, headers, Vec::new());
        catch_unwind(AssertUnwindSafe(|| handler.observe_body(&req))).unwrap_or_else(|_| {
            log::error!("a body observer panicked; the body is not observed");
            None
        })
    }))
}

fn work<H: Handler>(server: &tiny_http::Server, handler: &H) {
    while let Some(raw) = server.recv() {
        serve(handler, raw);
    }
}

/// Handles and answers one request.
///
/// Never inlined into the worker loop: inlined, every handler's locals become part of the
/// loop's frame, and stack probes touch each of its pages on every one of the 264 worker
/// threads before its first request (7 MiB of RSS at start, measured).
#[inline(never)]
fn serve<H: Handler>(handler: &H, mut raw: tiny_http::Request) {
    let (headers, body) = (raw.take_headers(), raw.take_body());
    let mut req = Req::new(raw.method(), raw.url(), headers, body)
        .arrived(raw.received_at(), ClientGone::new(raw.gone_watch()));
    req.accepts_chunked = raw.minor_version() >= 1;
    let (method, target) = (req.method.clone(), logged_target(raw.url()));
    let received_at = req.received_at;
    let reply = catch_unwind(AssertUnwindSafe(|| handler.handle(req))).unwrap_or_else(panic_reply);
    // Debug, not info: one line per request. The path is the client's, escaped (control
    // bytes arrive percent-encoded, but say so explicitly: no input writes a log line).
    log::debug!(
        "{method} {} {} {}us",
        target.escape_debug(),
        reply.status,
        received_at.elapsed().as_micros()
    );
    raw.respond(reply.into_response());
}

/// The target as logged: the path, and the query's names with their values left out (a
/// query may carry a secret: an OAuth2 client secret, a `state`, a PKCE verifier).
fn logged_target(target: &str) -> String {
    match target.split_once('?') {
        None => target.to_string(),
        Some((path, query)) => {
            let names: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split('=').next().unwrap_or(""))
                .collect();
            format!("{path}?{}=…", names.join("=…&"))
        }
    }
}

fn panic_reply(panic: Box<dyn std::any::Any + Send>) -> Reply {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_string());
    log::error!("handler panicked: {}", why.escape_debug());
    Error::Internal(why).into()
}
