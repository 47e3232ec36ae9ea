//! PATCH (foundry-emulator): replaces upstream's `Request`. A request arrives whole, its body
//! already read by its connection thread; answering hands a [`Response`] back to that thread,
//! which writes it. Nothing here touches a socket.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::body::BodySource;

/// Called once with `true` when the whole answer was written to a client that had not gone
/// away, `false` otherwise (the client closed first, the write failed or timed out, or the
/// answer carried no body because the request was `HEAD`).
pub type OnDelivered = Box<dyn FnOnce(bool) + Send>;

/// An answer, written by the connection thread.
pub struct Response {
    pub status: u16,
    /// Headers besides `Content-Length`, `Date` and `Connection`, which the writer adds.
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn AsRef<[u8]> + Send>,
    /// PATCH (foundry-emulator): when set, `body` is ignored and the answer is written with
    /// `Transfer-Encoding: chunked`, one chunk per [`crate::Piece::Data`] of the source,
    /// under the same write deadline (`io_timeout`) as any answer. A source that breaks, or
    /// runs past the deadline, leaves the body without its terminating chunk and closes the
    /// connection.
    pub stream: Option<Box<dyn BodySource>>,
    /// Close the connection after this answer (`Connection: close` is sent).
    pub close: bool,
    pub on_delivered: Option<OnDelivered>,
}

impl Response {
    pub fn new(status: u16, body: Box<dyn AsRef<[u8]> + Send>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            stream: None,
            close: false,
            on_delivered: None,
        }
    }

    pub(crate) fn delivered(&mut self, ok: bool) {
        if let Some(report) = self.on_delivered.take() {
            report(ok);
        }
    }
}

impl Drop for Response {
    /// An answer dropped unwritten (its connection was closed first) was not delivered.
    fn drop(&mut self) {
        self.delivered(false);
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &(*self.body).as_ref().len())
            .field("streamed", &self.stream.is_some())
            .field("close", &self.close)
            .finish()
    }
}

/// Tells a worker that the client of its request has gone (closed its connection while the
/// request was being handled), and runs a waker when that happens.
#[derive(Clone, Default)]
pub struct GoneWatch(Arc<GoneState>);

#[derive(Default)]
struct GoneState {
    gone: AtomicBool,
    /// A waker was set and not cleared: the handler waits (a long poll, a blocking
    /// execute), so its answer is not a matter of microseconds.
    watched: AtomicBool,
    waker: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl GoneWatch {
    /// A watch that never fires (requests built without a connection).
    pub fn never() -> GoneWatch {
        GoneWatch::default()
    }

    pub fn is_gone(&self) -> bool {
        self.0.gone.load(Ordering::SeqCst)
    }

    /// True from `on_gone` to `clear`: the request's handler is waiting on something.
    pub(crate) fn is_watched(&self) -> bool {
        self.0.watched.load(Ordering::Relaxed)
    }

    /// Runs `waker` once, on the connection thread, when the client goes (at once if it has
    /// already gone). A later call replaces an earlier waker that has not run.
    pub fn on_gone(&self, waker: Box<dyn FnOnce() + Send>) {
        self.0.watched.store(true, Ordering::Relaxed);
        let mut slot = self.0.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_gone() {
            drop(slot);
            waker();
        } else {
            *slot = Some(waker);
        }
    }

    /// Drops a waker that has not run (the wait it would end is over).
    pub fn clear(&self) {
        self.0.watched.store(false, Ordering::Relaxed);
        self.0
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Marks the client gone and runs the waker, if any.
    pub(crate) fn fire(&self) {
        let waker = {
            let mut slot = self.0.waker.lock().unwrap_or_else(PoisonError::into_inner);
            self.0.gone.store(true, Ordering::SeqCst);
            slot.take()
        };
        if let Some(waker) = waker {
            waker();
        }
    }
}

impl fmt::Debug for GoneWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoneWatch(gone: {})", self.is_gone())
    }
}

/// A whole HTTP request. Answer it with [`Request::respond`]; one dropped unanswered gets an
/// empty 500 from its connection thread.
pub struct Request {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// The request's HTTP/1.x minor version (0 or 1).
    pub(crate) minor_version: u8,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) secure: bool,
    pub(crate) received_at: Instant,
    pub(crate) gone: GoneWatch,
    pub(crate) reply_to: Sender<Response>,
}

impl Request {
    /// The method as sent (`HEAD` included: the connection thread drops the body of its
    /// answer).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target in origin form (`/path?query`; an absolute-form target is reduced
    /// to its path), always ASCII: other bytes arrive percent-encoded.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Header names as sent; values decoded as UTF-8, other bytes replaced.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// PATCH (foundry-emulator): takes the headers out, as [`Request::take_body`] does the
    /// body, so a handler that keeps them need not copy each one.
    pub fn take_headers(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.headers)
    }

    /// PATCH (foundry-emulator): the request's HTTP/1.x minor version, 0 or 1; an answer
    /// with a [`Response::stream`] needs 1 (HTTP/1.0 has no chunked coding).
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Takes the body out (it was read whole, capped at `max_body`).
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// True when the request came over TLS.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// When the first byte of the request arrived: deadlines count from here.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Fires when the client closes its connection before the answer is written.
    pub fn gone_watch(&self) -> GoneWatch {
        self.gone.clone()
    }

    /// Hands the answer to the connection thread; never blocks. When that thread has already
    /// ended, the answer's `on_delivered` is told `false` here.
    pub fn respond(self, response: Response) {
        if let Err(returned) = self.reply_to.send(response) {
            let mut response = returned.0;
            response.delivered(false);
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body_len", &self.body.len())
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}
