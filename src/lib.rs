//! foundry-emulator: Palantir Foundry's compute-module job execution, in one small binary.
//!
//! Three participants meet here. An **application** submits jobs over the Contour API
//! (bearer token); the **emulator** keeps runtimes, deployed-app bindings, jobs and schemas;
//! a **runtime** (a compute module) polls for jobs and posts raw result bytes back, with a
//! `Module-Auth-Token`. See `ARCHITECTURE.md` for the map and `README.md` for the routes.
//!
//! # Starting one in a test
//!
//! ```
//! use foundry_emulator::{Config, Emulator};
//!
//! let config = Config { port: 0, ..Config::default() };
//! let running = Emulator::start(config).unwrap();
//! println!("serving on {}", running.base_url());
//! running.shutdown();
//! ```

// `unsafe` lives in one module only (`sys`, libc calls std has no equivalent for).
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
mod clock;
pub mod config;
pub(crate) mod emulator;
pub(crate) mod error;
pub mod http;
mod ids;
pub mod jobs;
pub(crate) mod journal;
pub(crate) mod paths;
pub(crate) mod router;
pub mod runtimes;
#[cfg(unix)]
mod sys;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{Config, ConfigError, Seed, TlsOptions};
pub use emulator::{Emulator, Running};
pub use error::Error;
pub use jobs::{JobId, JobSource, JobState, JobView};
