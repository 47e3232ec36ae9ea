//! HTTP plumbing: owned requests, replies, and the tiny_http worker pool with its waiting lanes.
//!
//! **Boundary:** only `http::server` touches tiny_http; nothing here knows a route or a job.

pub mod reply;
pub mod req;
pub mod server;

pub use reply::Reply;
pub use req::{Body, Req};
pub use server::{Handler, HttpServer, LaneGate, LaneTicket, Outcome, ServerOptions};
