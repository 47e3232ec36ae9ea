//! tiny_http 0.12.0, vendored by foundry-emulator, with its connection layer rewritten.
//!
//! PATCH (foundry-emulator): this file, `conn.rs`, `request.rs` and `framing.rs` replace
//! upstream's accept loop, `ClientConnection`, `Request` and hand-written parser (see
//! `PATCHES.md`). What stays is tiny_http's shape: a [`Server`] whose connection threads
//! parse requests and queue them, and a fixed pool of the caller's threads that loop on
//! [`Server::recv`] and answer with [`Request::respond`].
//!
//! What is new, and why:
//! - **Sockets belong to their connection thread.** It reads the whole request, body
//!   included (capped), before the request is queued, and it writes the answer the worker
//!   hands back. A worker never touches a socket, so a slow or dead client costs only its own
//!   connection thread, for a bounded time (`io_timeout`).
//! - **Strict framing** (`framing.rs`, on `httparse`): a request that cannot be framed is
//!   refused with a JSON error and the connection is closed; nothing after it is parsed.
//! - **Delivery is reported**: [`Response::on_delivered`] says whether the answer reached a
//!   live client, and [`GoneWatch`] tells a waiting worker that its client left.
//! - **Exhaustion is an error**: failed accepts and thread spawns drop one connection and back
//!   off; nothing in the accept path unwraps.
//! - **Bounded stop**: [`Server::stop_accepting`] then [`Server::drain`].
//! - **Bodies in pieces** (`body.rs`): [`ServerOptions::body_observer`] sees a chunked
//!   request body chunk by chunk as it is read (the request is still queued whole), and an
//!   answer with a [`Response::stream`] is written chunked as its source produces it.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod framing;

mod body;
mod conn;
mod queue;
mod request;
mod spin;
mod stream;

pub use body::{BodyObserver, BodySink, BodySource, Piece};
pub use request::{GoneWatch, Request, Response};

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use conn::Shared;
use queue::RequestQueue;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body; a longer one gets 413 and the connection is closed.
    pub max_body: u64,
    /// Deadline for reading one whole request (from its first byte) and for writing one
    /// answer; past it the connection is closed (408 first when a request was incomplete).
    pub io_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// Caps on a request head (431 past them).
    pub head_limits: framing::HeadLimits,
    /// PATCH (foundry-emulator): asked once per request with a chunked body, on its
    /// connection thread, whether to show the body to a [`BodySink`] as it arrives.
    pub body_observer: Option<BodyObserver>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            max_body: 64 * 1024 * 1024,
            io_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            head_limits: framing::HeadLimits::default(),
            body_observer: None,
        }
    }
}

/// Stack of a connection thread: it parses heads and copies bytes, nothing deep.
const CONNECTION_STACK: usize = 256 * 1024;

/// Back-off after a failed accept or thread spawn (Go's `http.Server`: 5 ms doubling to 1 s),
/// so a process out of descriptors or threads pauses instead of spinning.
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// An HTTP server: one accept thread per listener, one thread per connection, and one queue
/// of whole requests for the caller's workers, whichever listener they came from.
pub struct Server {
    shared: Arc<Shared>,
    closing: Arc<AtomicBool>,
    listeners: Mutex<Vec<Listening>>,
}

/// One listener's address and accept thread.
struct Listening {
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

/// How a listener's connections are wrapped.
#[derive(Clone)]
enum Wrap {
    Plain,
    #[cfg(feature = "tls")]
    Tls(Arc<rustls::ServerConfig>),
}

impl Server {
    /// A server with no listener yet; add them with [`Server::listen`] and
    /// [`Server::listen_tls`].
    pub fn new(options: ServerOptions) -> Server {
        Server {
            shared: Arc::new(Shared::new(options, RequestQueue::new())),
            closing: Arc::new(AtomicBool::new(false)),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Serves `listener` (already bound and listening) over plain HTTP.
    pub fn from_listener(listener: TcpListener, options: ServerOptions) -> io::Result<Server> {
        let server = Server::new(options);
        server.listen(listener)?;
        Ok(server)
    }

    /// Also serves `listener` over plain HTTP; its requests join the same queue.
    pub fn listen(&self, listener: TcpListener) -> io::Result<SocketAddr> {
        self.add(listener, Wrap::Plain)
    }

    /// Also serves `listener` over TLS with `config`; its requests join the same queue and
    /// report [`Request::secure`]. The handshake counts against `io_timeout`.
    #[cfg(feature = "tls")]
    pub fn listen_tls(
        &self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<SocketAddr> {
        self.add(listener, Wrap::Tls(config))
    }

    fn add(&self, listener: TcpListener, wrap: Wrap) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let (shared, closing) = (self.shared.clone(), self.closing.clone());
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, wrap, shared, closing))?;
        self.lock_listeners().push(Listening {
            addr,
            accept: Some(accept),
        });
        Ok(addr)
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<Listening>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The address of the first listener.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.lock_listeners().first().map(|l| l.addr)
    }

    /// Blocks until a whole request arrives; `None` after [`Server::unblock`] released this
    /// call.
    ///
    /// # Blocking
    /// Waits on the request queue's condvar; woken by a connection thread queueing a request
    /// or by `unblock`. No deadline.
    pub fn recv(&self) -> Option<Request> {
        self.shared.queue.pop()
    }

    /// Releases one thread blocked in (or next entering) [`Server::recv`].
    pub fn unblock(&self) {
        self.shared.queue.unblock();
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.shared.open_connections()
    }

    /// Closes the listeners: new clients are refused by the kernel. Connections finish the
    /// request they are in (its answer is still written) and then close; idle ones close at
    /// once. Requests queued but not yet taken get 503.
    pub fn stop_accepting(&self) {
        let mut listeners = self.lock_listeners();
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.stop();
        for listening in listeners.iter_mut() {
            // The accept thread blocks in accept(); a connection to ourselves wakes it.
            let _ =
                TcpStream::connect_timeout(&connectable(listening.addr), Duration::from_secs(1));
            if let Some(accept) = listening.accept.take() {
                let _ = accept.join();
            }
        }
    }

    /// Waits up to `grace` for every connection to close, then closes what is left.
    ///
    /// # Blocking
    /// Waits on the connection count's condvar; woken by each connection thread as it ends.
    /// Deadline: `grace`, then every connection thread is told to drop its socket at its next
    /// tick (at most [`conn::TICK`] later), and this waits once more for that.
    pub fn drain(&self, grace: Duration) {
        self.stop_accepting();
        let deadline = Instant::now() + grace;
        if !self.shared.wait_closed(deadline) {
            self.shared.force_close();
            self.shared.wait_closed(Instant::now() + 4 * conn::TICK);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
        self.shared.force_close();
    }
}

/// The address a client connects to for `addr` (a wildcard bind is reached on loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

fn accept_loop(listener: TcpListener, wrap: Wrap, shared: Arc<Shared>, closing: Arc<AtomicBool>) {
    let mut backoff = BACKOFF_START;
    while !closing.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if is_exhaustion(&e) => {
                log::warn!("accepting a connection failed ({e}); pausing {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            // A connection reset before we took it, an interrupted call: nothing to wait for.
            Err(e) => {
                log::debug!("accepting a connection failed: {e}");
                continue;
            }
        };
        if closing.load(Ordering::SeqCst) {
            break;
        }
        let (conn_shared, wrap) = (shared.clone(), wrap.clone());
        let guard = shared.open();
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || match wrap {
                Wrap::Plain => conn::serve_plain(stream, conn_shared, guard),
                #[cfg(feature = "tls")]
                Wrap::Tls(config) => conn::serve_tls(stream, config, conn_shared, guard),
            });
        match spawned {
            Ok(_) => backoff = BACKOFF_START,
            // The closure, with the stream and the guard, was dropped: that one client is
            // disconnected and counted out.
            Err(e) => {
                log::warn!("no thread for a new connection ({e}); pausing {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    log::debug!("listener on {:?} closed", listener.local_addr());
}

/// Errors that say the process or system ran out of something, and will again at once.
fn is_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux; mapped by std to these kinds or raw codes.
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}
