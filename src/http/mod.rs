//! HTTP plumbing: whole requests, replies, and the worker pool over the vendored tiny_http.
//!
//! **Boundary:** only `http::server` (and `ClientGone`, a wrapper) touches tiny_http; nothing
//! here knows a route or a job.

pub mod form;
pub mod reply;
pub mod req;
pub mod server;

pub use form::Form;
pub use reply::Reply;
pub use req::{ClientGone, Req};
pub use server::{Handler, HttpServer, Permit, Permits, ServerOptions};
