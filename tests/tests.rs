//! Integration tests: each module starts real emulators on 127.0.0.1:0 and speaks HTTP to them.

// Harness: TestServer, app and runtime agents, raw sockets, exact-assertion helpers.
mod util;

// Contour API: execute, submit, status, result/v2, bearer policy, deployed-app resolution.
mod contour;

// Authentication: the OAuth2 token endpoint, authorize, revoke, the current user, both modes.
mod oauth;

// The rest of the job service: cancel, status/v2, GET result, schemas, unknown functions.
mod job_service;

// Runtime API: sessions and resets, polls, results, restart, schemas, inspection.
mod runtime;

// One table of malformed requests, each followed by a good one.
mod bad_input;

// Concurrent executes, long-poll wake-ups, small pools and load shedding, shutdown.
mod concurrency;

// Bounded resources: retention, expiry, the queue cap, the running-job limit.
mod limits;

// Built-in runtimes in process: echo, and exec with the fixtures/exec-handler.sh script.
mod builtin;

// The binary: serve flags and seed errors, the client subcommands' stdout, stderr, exit codes.
mod cli;

// HTTPS: generated CA and given certificates, keep-alive, bad clients, chunked bodies.
#[cfg(feature = "tls")]
mod tls;

// The real Python and TypeScript compute-module SDKs run as modules (needs .ci/setup-sdks.sh).
mod sdk;

// HTTP/1.1 framing: smuggling, limits, versions, HEAD, ids and log escaping, raw sockets.
mod framing;

// Availability: slow, stalled, vanished and idle clients; abandoned polls; fd limits; SIGTERM.
mod availability;

// Seeing what went through: listings, one job in full, the journal, metrics, dashboard HTML.
mod observe;

// The dashboard in headless Chromium (installed by .ci/run): rendered DOM and screenshots.
mod dashboard;

// Steering from a test: runtime-direct jobs over HTTP.
mod steer;

// Streamed results: a runtime's chunked post passed on to the sync execute as it arrives.
mod streaming;
