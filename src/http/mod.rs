//! HTTP plumbing: whole requests, replies, and the worker pool over the vendored tiny_http.
//!
//! **Boundary:** only `http::server` (and the wrappers: `ClientGone`, `Reply::into_response`,
//! and the body-in-pieces traits re-exported below) touches tiny_http; nothing here knows a
//! route or a job. Handlers see tiny_http's types only through these names.

pub mod form;
pub mod reply;
pub mod req;
pub mod server;

pub use form::Form;
pub use reply::Reply;
pub use req::{ClientGone, Req};
pub use server::{Handler, HttpServer, Permit, Permits, ServerOptions};
/// Bodies in pieces: a chunked request body seen as it arrives, an answer written as it is
/// produced (the vendored tiny_http's types, named here so that handlers need not know it).
pub use tiny_http::{BodySink, BodySource, Piece};
