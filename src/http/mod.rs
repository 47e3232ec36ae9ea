//! HTTP plumbing: whole requests, replies, and the worker pool over the vendored tiny_http.
//!
//! **Boundary:** only `http::server` (and `ClientGone`, a wrapper) touches tiny_http; nothing
//! here knows a route or a job.

pub mod reply;
pub mod req;
pub mod server;

pub use reply::Reply;
pub use req::{ClientGone, Req};
pub use server::{Handler, HttpServer, Permit, Permits, ServerOptions};
/// Bodies in pieces: a chunked request body seen as it arrives, an answer written as it is
/// produced (the vendored tiny_http's types, named here so that handlers need not know it).
pub use tiny_http::{BodySink, BodySource, Piece};
