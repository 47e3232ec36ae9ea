//! PATCH (foundry-emulator): new module. Bodies that are not whole at once: a request body
//! observed chunk by chunk as its connection thread decodes it ([`BodyObserver`],
//! [`BodySink`]), and an answer body that its connection thread writes chunked as the caller
//! produces it ([`BodySource`]).
//!
//! Both run on a connection thread, so neither may block for long: a sink must return at
//! once (it buffers, boundedly, or drops), and a source waits at most the time it is given.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::framing::RequestHead;

/// Told, on the connection thread, each piece of a chunked request body as it is decoded.
///
/// Exactly one of [`BodySink::finish`] and [`BodySink::abort`] is called, after the last
/// [`BodySink::chunk`]; the request is then queued whole as usual (after `finish`) or refused
/// or dropped (after `abort`). None of them may block.
pub trait BodySink: Send {
    /// The next decoded bytes of the body (never empty).
    fn chunk(&mut self, data: &[u8]);
    /// The whole body arrived (the terminating chunk and trailers were read).
    fn finish(&mut self);
    /// The body broke off: the client closed mid-body, a chunk could not be decoded, the body
    /// passed `max_body`, the deadline passed, or the server is closing. `reason` is one
    /// English sentence ending with a period.
    fn abort(&mut self, reason: &str);
}

/// What a [`BodyObserver`] calls.
pub type ObserveFn = dyn Fn(&RequestHead) -> Option<Box<dyn BodySink>> + Send + Sync;

/// Called by a connection thread once it parsed the head of a request with a chunked body,
/// before it reads the body: the sink it returns (if any) sees the body as it arrives.
/// It must return at once.
#[derive(Clone)]
pub struct BodyObserver(pub Arc<ObserveFn>);

impl fmt::Debug for BodyObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyObserver(..)")
    }
}

/// What a [`BodySource`] has for the connection thread.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The next bytes of the body (never empty).
    Data(Vec<u8>),
    /// Nothing new within the time given; ask again.
    Wait,
    /// The body ended whole: the terminating chunk is written.
    End,
    /// The body cannot end whole: the connection is closed without the terminating chunk, so
    /// the client sees a truncated body, never a complete-looking one.
    Broken,
}

/// An answer body produced while it is written: the connection thread writes each
/// [`Piece::Data`] as one chunk of a `Transfer-Encoding: chunked` body.
pub trait BodySource: Send {
    /// The next piece, waiting at most `wait` for one.
    fn next(&mut self, wait: Duration) -> Piece;
    /// True once the body can no longer end whole; a write blocked on a slow client gives
    /// up when this turns true.
    fn is_broken(&self) -> bool;
}
