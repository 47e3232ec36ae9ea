//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Job counts, retention and per-runtime gauges come from the job table's own books (one
//! short lock); request counts and the sync-execute wait histogram are kept here, outside the
//! table lock, by the router and the execute handler.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::State;
use crate::error::Error;
use crate::http::{Reply, Req};

/// Upper bounds (seconds) of the sync-execute wait histogram's buckets (`+Inf` is implied).
const WAIT_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// What the HTTP side counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by route class and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Sync-execute waits: count per bucket (not cumulative here), then the sum.
    wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    wait_sum_micros: AtomicU64,
}

impl Metrics {
    /// Back to zero (`POST /_emulate/reset`).
    pub fn reset(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for bucket in &self.wait_buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.wait_sum_micros.store(0, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn request(&self, route: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((route, status)).or_default() += 1;
    }

    /// Records how long a sync execute waited for its job.
    pub fn execute_wait(&self, waited: Duration) {
        let secs = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.wait_sum_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }
}

/// `GET /metrics` (open in permissive mode, a Contour bearer in strict mode).
pub fn metrics(state: &State, req: Req) -> Result<Reply, Error> {
    super::emulate_access(state, &req)?;
    Ok(Reply::typed(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        render(state),
    ))
}

/// The whole exposition.
pub fn render(state: &State) -> String {
    let totals = state.table.totals();
    let runtimes = state.table.runtimes();
    let mut out = String::new();

    family(
        &mut out,
        "foundry_emulator_jobs_created_total",
        "counter",
        "Jobs created, by source.",
    );
    for (source, n) in &totals.counts.created {
        sample(
            &mut out,
            "foundry_emulator_jobs_created_total",
            &[("source", source)],
            *n as f64,
        );
    }
    family(
        &mut out,
        "foundry_emulator_jobs_finished_total",
        "counter",
        "Jobs finished, by source and status.",
    );
    for ((source, status), n) in &totals.counts.finished {
        let labels = [("source", *source), ("status", *status)];
        sample(
            &mut out,
            "foundry_emulator_jobs_finished_total",
            &labels,
            *n as f64,
        );
    }
    family(
        &mut out,
        "foundry_emulator_jobs_queued",
        "gauge",
        "Jobs queued, by runtime.",
    );
    for rt in &runtimes {
        sample(
            &mut out,
            "foundry_emulator_jobs_queued",
            &[("runtime", &rt.id)],
            rt.queued as f64,
        );
    }
    family(
        &mut out,
        "foundry_emulator_jobs_running",
        "gauge",
        "Jobs running, by runtime.",
    );
    for rt in &runtimes {
        sample(
            &mut out,
            "foundry_emulator_jobs_running",
            &[("runtime", &rt.id)],
            rt.running as f64,
        );
    }
    family(
        &mut out,
        "foundry_emulator_runtimes_connected",
        "gauge",
        "Runtimes whose session has polled.",
    );
    let connected = runtimes.iter().filter(|rt| rt.connected).count();
    sample(
        &mut out,
        "foundry_emulator_runtimes_connected",
        &[],
        connected as f64,
    );
    family(
        &mut out,
        "foundry_emulator_polls_held",
        "gauge",
        "Module long polls held now.",
    );
    sample(
        &mut out,
        "foundry_emulator_polls_held",
        &[],
        state.poll_permits.in_use() as f64,
    );
    family(
        &mut out,
        "foundry_emulator_retained_jobs",
        "gauge",
        "Finished jobs kept.",
    );
    sample(
        &mut out,
        "foundry_emulator_retained_jobs",
        &[],
        totals.retained_jobs as f64,
    );
    family(
        &mut out,
        "foundry_emulator_retained_bytes",
        "gauge",
        "Query and result bytes held against --max-retained-bytes.",
    );
    sample(
        &mut out,
        "foundry_emulator_retained_bytes",
        &[],
        totals.held_bytes as f64,
    );
    family(
        &mut out,
        "foundry_emulator_evictions_total",
        "counter",
        "Finished jobs dropped by retention.",
    );
    sample(
        &mut out,
        "foundry_emulator_evictions_total",
        &[],
        totals.counts.evicted as f64,
    );
    family(
        &mut out,
        "foundry_emulator_faults_total",
        "counter",
        "Jobs a fault rule hit, by effect.",
    );
    for (effect, n) in &totals.counts.faults {
        let labels = [("effect", *effect)];
        sample(
            &mut out,
            "foundry_emulator_faults_total",
            &labels,
            *n as f64,
        );
    }

    let metrics = &state.metrics;
    let name = "foundry_emulator_sync_execute_wait_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "How long sync executes waited for their job.",
    );
    let mut cumulative = 0;
    for (i, count) in metrics.wait_buckets.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let le = WAIT_BUCKETS
            .get(i)
            .map_or("+Inf".to_string(), |le| le.to_string());
        sample(
            &mut out,
            &format!("{name}_bucket"),
            &[("le", &le)],
            cumulative as f64,
        );
    }
    let sum = metrics.wait_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    sample(&mut out, &format!("{name}_sum"), &[], sum);
    sample(&mut out, &format!("{name}_count"), &[], cumulative as f64);

    family(
        &mut out,
        "foundry_emulator_http_requests_total",
        "counter",
        "Requests answered, by route and status.",
    );
    let requests = metrics
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for ((route, status), n) in requests {
        let status = status.to_string();
        let labels = [("route", route), ("status", status.as_str())];
        sample(
            &mut out,
            "foundry_emulator_http_requests_total",
            &labels,
            n as f64,
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and newlines (the exposition format's rule); runtime ids
/// come from clients.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
