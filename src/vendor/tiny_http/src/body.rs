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
/// Exactly one of [`BodySink::end_of_body`] and [`BodySink::abort`] is called, after the last
/// [`BodySink::chunk`]; the request is then queued whole as usual (after `end_of_body`) or refused
/// or dropped (after `abort`). None of them may block.
pub trait BodySink: Send {
    /// The next decoded bytes of the body (never empty).
    fn chunk(&mut self, data: &[u8]);
    /// The whole body arrived (the terminating chunk and trailers were read).
    fn end_of_body(&mut self);
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

#[cfg(test)]
mod tests {
    //! The two hooks end to end, over loopback: a chunked request body seen piece by piece
    //! as it arrives, and an answer written chunked from a source, whole or truncated.

    use super::*;
    use crate::{Response, Server, ServerOptions};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc::{self, Receiver, Sender};
    use std::sync::Mutex;

    /// What the test's sink saw, in order.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Chunk(Vec<u8>),
        Finish,
        Abort(String),
    }

    struct Recorder(Sender<Seen>);

    impl BodySink for Recorder {
        fn chunk(&mut self, data: &[u8]) {
            let _ = self.0.send(Seen::Chunk(data.to_vec()));
        }
        fn end_of_body(&mut self) {
            let _ = self.0.send(Seen::Finish);
        }
        fn abort(&mut self, reason: &str) {
            let _ = self.0.send(Seen::Abort(reason.to_string()));
        }
    }

    /// A source fed by the test: `None` breaks it, an empty piece ends it whole.
    struct Fed(Mutex<Receiver<Option<Vec<u8>>>>, bool);

    impl BodySource for Fed {
        fn next(&mut self, wait: Duration) -> Piece {
            match self.0.lock().unwrap().recv_timeout(wait) {
                Ok(Some(data)) if data.is_empty() => Piece::End,
                Ok(Some(data)) => Piece::Data(data),
                Ok(None) => {
                    self.1 = true;
                    Piece::Broken
                }
                Err(_) => Piece::Wait,
            }
        }
        fn is_broken(&self) -> bool {
            self.1
        }
    }

    fn server(seen: Sender<Seen>) -> (Server, std::net::SocketAddr) {
        let seen = Mutex::new(seen);
        let observer = BodyObserver(Arc::new(move |head: &RequestHead| {
            let sink: Box<dyn BodySink> = Box::new(Recorder(seen.lock().unwrap().clone()));
            (head.target == "/observed").then_some(sink)
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServerOptions {
            io_timeout: Duration::from_secs(20),
            body_observer: Some(observer),
            ..ServerOptions::default()
        };
        (Server::from_listener(listener, options).unwrap(), addr)
    }

    fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// Reads until `want` has arrived (or the connection ends); returns everything read.
    fn read_until(stream: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) {
        let mut buf = [0u8; 4096];
        while !got.windows(want.len()).any(|w| w == want) {
            match stream.read(&mut buf).unwrap() {
                0 => panic!(
                    "closed before {:?}: {:?}",
                    want,
                    String::from_utf8_lossy(got)
                ),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn an_observed_body_is_seen_piece_by_piece_and_still_queued_whole() {
        let (seen_tx, seen) = mpsc::channel();
        let (server, addr) = server(seen_tx);
        let mut client = connect(addr);
        client
            .write_all(
                b"POST /observed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            )
            .unwrap();
        let wait = Duration::from_secs(20);
        assert_eq!(seen.recv_timeout(wait), Ok(Seen::Chunk(b"abc".to_vec())));
        client.write_all(b"2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(seen.recv_timeout(wait), Ok(Seen::Chunk(b"de".to_vec())));
        assert_eq!(seen.recv_timeout(wait), Ok(Seen::Finish));
        let mut request = server.recv().unwrap();
        assert_eq!(request.take_body(), b"abcde");
        request.respond(Response::new(204, Box::new(Vec::new())));

        // Broken off mid-body: the sink hears why, and nothing is queued.
        let mut client = connect(addr);
        client
            .write_all(
                b"POST /observed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            )
            .unwrap();
        assert_eq!(seen.recv_timeout(wait), Ok(Seen::Chunk(b"abc".to_vec())));
        drop(client);
        assert_eq!(
            seen.recv_timeout(wait),
            Ok(Seen::Abort(crate::conn::BROKE_OFF.to_string()))
        );
    }

    #[test]
    fn a_streamed_answer_is_written_chunk_by_chunk_then_ended_or_truncated() {
        let (seen_tx, _seen) = mpsc::channel();
        let (server, addr) = server(seen_tx);
        for whole in [true, false] {
            let mut client = connect(addr);
            client
                .write_all(b"GET /streamed HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let request = server.recv().unwrap();
            let (feed, fed) = mpsc::channel();
            let mut response = Response::new(200, Box::new(Vec::new()));
            response.stream = Some(Box::new(Fed(Mutex::new(fed), false)));
            request.respond(response);
            let mut got = Vec::new();
            feed.send(Some(b"hello".to_vec())).unwrap();
            read_until(&mut client, &mut got, b"5\r\nhello\r\n");
            let head = String::from_utf8_lossy(&got).to_string();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", head);
            assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{}", head);
            assert!(!head.contains("Content-Length"), "{}", head);
            feed.send(Some(b" world".to_vec())).unwrap();
            read_until(&mut client, &mut got, b"6\r\n world\r\n");
            if whole {
                feed.send(Some(Vec::new())).unwrap();
                read_until(&mut client, &mut got, b"0\r\n\r\n");
            } else {
                feed.send(None).unwrap();
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"", "closed without the terminating chunk");
                assert!(!got.ends_with(b"0\r\n\r\n"));
            }
        }
    }
}
