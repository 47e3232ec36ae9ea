//! The load generator: plays both sides of the emulator over real loopback HTTP.
//!
//! Application threads use the Contour routes; runtime threads poll
//! `GET .../runtimes/<id>/job` with no sleep after a 204 (as the real SDKs do) and post each
//! result at once. Every scenario starts its own emulator as a child process (the release
//! binary), so the server's CPU time and memory are read from `/proc/<pid>` for the server
//! alone. Every client thread owns one keep-alive connection.
//!
//! Run it with `cargo bench --bench bench` (cargo builds the release binary with it; to bench
//! another build, `cargo build --release` it and set `FOUNDRY_EMULATOR_BIN`), or pick scenarios
//! and options after `--`:
//!
//! ```text
//! cargo bench --bench bench -- [SCENARIO...] [--smoke | --full] [--secs S] [--client raw|ureq]
//! ```
//!
//! `cargo test --bench bench` (which runs this binary without the `--bench` flag that
//! `cargo bench` passes) does a smoke run, a few seconds that check every scenario works; so
//! does `--smoke` or `BENCH_SMOKE=1`. `--full` forces full length when run by hand.
//!
//! Scenarios: `startup sync-latency sync-throughput async-throughput payload idle retention`;
//! `floor` (a trivial in-process tiny_http server answering 200 at once) always runs first,
//! because every figure is also printed as a ratio to it. Each scenario prints one line.
//!
//! Environment (arguments win): `BENCH_SMOKE=1`, `BENCH_SECS` (seconds per timed scenario,
//! default 5), `BENCH_IDLE_SECS` (default 10), `BENCH_RETENTION_JOBS` (default 1000000),
//! `BENCH_RETENTION_SECS` (time cap of the retention push, default 150), `BENCH_CLIENT`
//! (`raw`, the default: a minimal HTTP/1.1 client on `std::net::TcpStream`; or `ureq`),
//! `BENCH_MAX_RETAINED_JOBS` (passed as `--max-retained-jobs` to the retention scenario when the
//! binary accepts that flag; default 100000), `FOUNDRY_EMULATOR_BIN` (the binary to run; else
//! the one cargo built for this bench, else `$CARGO_TARGET_DIR/release` or `target/release`).
//!
//! The full run takes about 2.5-3 minutes on a 2-core machine, most of it the retention push.
//! It never fails on numbers: they depend on the machine. It panics only when the emulator
//! cannot be started or stops answering.
//!
//! `BENCH_PERF=DIR` records `perf record -g` of the server during each measured window into
//! `DIR/<scenario>.perf.data` (build the binary with symbols for it to be useful:
//! `CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`).
//!
//! `BENCH_SMAPS=DIR` copies the server's `/proc/<pid>/smaps` at the end of each measured
//! window into `DIR/<pid>.smaps`, to see where its resident memory is (heap, arenas, stacks).
//!
//! Rooms: `client` (the two HTTP clients), `proc` (`/proc` readers), `server` (the emulator
//! as a child process, and the floor server), `sim` (the runtime simulator and the payloads
//! both sides compute), `scenarios` (the timed loops, the latency histogram and the
//! scenarios, each on one shared set-up); this file reads the settings and runs them.

mod client;
mod proc;
mod scenarios;
mod server;
mod sim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::ClientKind;
use proc::load_average;
use server::write_seed;

pub const CONTOUR: &str = "/contour-backend-multiplexer/api/module-group-multiplexer";
pub const RUNTIMES: &str = "/_emulate/foundry/compute-modules/runtimes";
pub const APP_RID: &str = "ri.foundry.main.deployed-app.bench";
pub const RUNTIME_ID: &str = "bench-runtime";
pub const BEARER: &str = "Bearer bench-token";
pub const MIB: usize = 1 << 20;
/// Read/write timeout of every client connection; longer than any server-side wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Settings {
    pub smoke: bool,
    /// Length of each timed window.
    pub secs: Duration,
    pub idle_secs: Duration,
    pub retention_jobs: u64,
    pub retention_cap: Duration,
    pub max_retained: u64,
    pub client: ClientKind,
    pub bin: PathBuf,
    pub seed: PathBuf,
    pub app_threads: usize,
    pub runtime_threads: usize,
    pub payload_threads: usize,
    pub startup_runs: usize,
    pub scenarios: Vec<String>,
}

const ALL: [&str; 7] = [
    "startup",
    "sync-latency",
    "sync-throughput",
    "async-throughput",
    "payload",
    "idle",
    "retention",
];

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn settings() -> Settings {
    let mut args = std::env::args().skip(1);
    let mut smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut secs = env_f64("BENCH_SECS");
    let mut client = std::env::var("BENCH_CLIENT").unwrap_or_default();
    let mut scenarios = Vec::new();
    // `cargo bench` passes --bench to every harness = false target; `cargo test` does not.
    let mut by_cargo_bench = false;
    let mut full = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => by_cargo_bench = true,
            "--full" => full = true,
            "--smoke" => smoke = true,
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()),
            "--client" => client = args.next().unwrap_or_default(),
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench bench -- [SCENARIO...] [--smoke | --full] [--secs S] \
                     [--client raw|ureq]\nscenarios: floor (always) {}",
                    ALL.join(" ")
                );
                std::process::exit(0);
            }
            name if ALL.contains(&name) || name == "floor" => scenarios.push(arg.clone()),
            other => {
                eprintln!("bench: unknown argument '{other}' (try --help)");
                std::process::exit(2);
            }
        }
    }
    if !by_cargo_bench && !full {
        smoke = true;
    }
    if scenarios.is_empty() {
        scenarios = ALL.iter().map(|s| s.to_string()).collect();
    }
    let client = match client.as_str() {
        "" | "raw" => ClientKind::Raw,
        "ureq" => ClientKind::Ureq,
        other => {
            eprintln!("bench: unknown client '{other}' (raw or ureq)");
            std::process::exit(2);
        }
    };
    let secs = secs.unwrap_or(if smoke { 0.3 } else { 5.0 });
    let idle = env_f64("BENCH_IDLE_SECS").unwrap_or(if smoke { 0.5 } else { 10.0 });
    let retention_jobs =
        env_f64("BENCH_RETENTION_JOBS").map_or(if smoke { 2_000 } else { 1_000_000 }, |n| n as u64);
    let retention_cap = env_f64("BENCH_RETENTION_SECS").unwrap_or(if smoke { 5.0 } else { 150.0 });
    let max_retained = env_f64("BENCH_MAX_RETAINED_JOBS").map_or(100_000, |n| n as u64);
    let seed = std::env::temp_dir().join(format!("foundry-bench-seed-{}.json", std::process::id()));
    Settings {
        smoke,
        secs: Duration::from_secs_f64(secs),
        idle_secs: Duration::from_secs_f64(idle),
        retention_jobs,
        retention_cap: Duration::from_secs_f64(retention_cap),
        max_retained,
        client,
        bin: find_binary(),
        seed,
        app_threads: 32,
        runtime_threads: 4,
        payload_threads: 2,
        startup_runs: if smoke { 1 } else { 5 },
        scenarios,
    }
}

/// The emulator binary: `FOUNDRY_EMULATOR_BIN`, else the one cargo built for this bench, else
/// `release/foundry-emulator` under `CARGO_TARGET_DIR` or the manifest's `target`.
fn find_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("FOUNDRY_EMULATOR_BIN") {
        return PathBuf::from(bin);
    }
    let mut candidates = vec![PathBuf::from(env!("CARGO_BIN_EXE_foundry-emulator"))];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&dir).join("release/foundry-emulator"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/foundry-emulator"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() {
    let s = settings();
    write_seed(&s.seed);
    // Removed on the way out, also when a scenario panics.
    let _seed = RemoveOnDrop(s.seed.clone());
    let wants = |name: &str| s.scenarios.iter().any(|x| x == name);
    println!(
        "# foundry-emulator bench: {} ({} cpus), binary {}, client {:?}, window {:.1}s{}",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        s.bin.display(),
        s.client,
        s.secs.as_secs_f64(),
        if s.smoke { ", smoke" } else { "" },
    );
    // Other processes on the machine skew every figure; say how busy it was.
    println!("# load average at start {}", load_average());
    let total = Instant::now();
    let f = scenarios::floor(&s);
    if wants("startup") {
        scenarios::startup(&s);
    }
    if wants("sync-latency") {
        scenarios::sync_latency(&s, &f);
    }
    if wants("sync-throughput") {
        scenarios::sync_throughput(&s, &f);
    }
    if wants("async-throughput") {
        scenarios::async_throughput(&s, &f);
    }
    if wants("payload") {
        scenarios::payload(&s, &f);
    }
    if wants("idle") {
        scenarios::idle(&s);
    }
    if wants("retention") {
        scenarios::retention(&s);
    }
    println!(
        "# total {:.1}s, load average at end {}",
        total.elapsed().as_secs_f64(),
        load_average()
    );
}
