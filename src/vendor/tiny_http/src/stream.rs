//! PATCH (foundry-emulator): new module. What a connection thread reads and writes: a plain
//! TCP socket, or (feature `tls`) a rustls server connection over one.
//!
//! Both are driven the same way by `conn.rs`: blocking calls on a socket whose read and write
//! timeouts are one tick, so a TLS connection is an ordinary connection with the same
//! deadlines, limits and delivery reports as a plain one. No extra thread, no proxy hop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// A connection's byte stream.
pub(crate) trait Stream: Read + Write + Send + 'static {
    /// The socket underneath, for timeouts, non-blocking peeks and the peer address.
    fn socket(&self) -> &TcpStream;

    /// Whether the bytes are encrypted (reported by `Request::secure`).
    fn secure(&self) -> bool;

    /// Stops sending: the client reads the end of our answers (TLS: a `close_notify` first).
    fn end_writes(&mut self);
}

impl Stream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn secure(&self) -> bool {
        false
    }

    fn end_writes(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

#[cfg(feature = "tls")]
pub(crate) use tls::handshake;

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::sync::Arc;
    use std::time::Instant;

    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use super::Stream;

    /// Plaintext over a rustls server connection. Reads and writes return `WouldBlock` when
    /// the socket's tick timeout passes, exactly like the plain socket's, and rustls keeps
    /// any partial record for the next call.
    pub(crate) struct TlsStream(StreamOwned<ServerConnection, TcpStream>);

    /// Does the TLS handshake on `socket` (its timeouts already one tick) by `deadline`.
    /// `Err`: the client closed, sent something that is not TLS, did not trust our
    /// certificate, or was too slow; the caller drops the connection (rustls has already
    /// sent the client an alert where it had one).
    ///
    /// # Blocking
    /// Socket reads and writes of one tick each, until the handshake completes or `deadline`
    /// (or `give_up()`).
    pub(crate) fn handshake(
        config: Arc<ServerConfig>,
        mut socket: TcpStream,
        deadline: Instant,
        give_up: impl Fn() -> bool,
    ) -> io::Result<TlsStream> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            match tls.complete_io(&mut socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if give_up() || Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the TLS handshake did not complete in time",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(TlsStream(StreamOwned::new(tls, socket)))
    }

    impl Read for TlsStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for TlsStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }

        /// Pushes the records rustls still holds onto the socket; `WouldBlock` while the
        /// client does not read (the caller retries until its deadline).
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl Stream for TlsStream {
        fn socket(&self) -> &TcpStream {
            self.0.get_ref()
        }

        fn secure(&self) -> bool {
            true
        }

        fn end_writes(&mut self) {
            self.0.conn.send_close_notify();
            let _ = self.0.flush();
            let _ = self.0.sock.shutdown(Shutdown::Write);
        }
    }
}

/// Ticks: the socket timeout passed (or a signal interrupted the call); the caller re-checks
/// its deadline and the stop flags, then tries again.
pub(crate) fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
