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

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

const CONTOUR: &str = "/contour-backend-multiplexer/api/module-group-multiplexer";
const RUNTIMES: &str = "/_emulate/foundry/compute-modules/runtimes";
const APP_RID: &str = "ri.foundry.main.deployed-app.bench";
const RUNTIME_ID: &str = "bench-runtime";
const BEARER: &str = "Bearer bench-token";
const MIB: usize = 1 << 20;
/// Read/write timeout of every client connection; longer than any server-side wait.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientKind {
    Raw,
    Ureq,
}

#[derive(Clone, Debug)]
struct Settings {
    smoke: bool,
    /// Length of each timed window.
    secs: Duration,
    idle_secs: Duration,
    retention_jobs: u64,
    retention_cap: Duration,
    max_retained: u64,
    client: ClientKind,
    bin: PathBuf,
    seed: PathBuf,
    app_threads: usize,
    runtime_threads: usize,
    payload_threads: usize,
    startup_runs: usize,
    scenarios: Vec<String>,
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

// ---------------------------------------------------------------------------------------------
// HTTP clients: one keep-alive connection each
// ---------------------------------------------------------------------------------------------

trait Http: Send {
    /// Sends one request and reads the whole answer into `out`; returns the status.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16>;
}

fn connect(kind: ClientKind, addr: SocketAddr) -> Box<dyn Http> {
    match kind {
        ClientKind::Raw => Box::new(RawClient::new(addr)),
        ClientKind::Ureq => Box::new(UreqClient::new(addr)),
    }
}

/// A minimal HTTP/1.1 client: one request at a time, keep-alive, Content-Length or chunked.
struct RawClient {
    addr: SocketAddr,
    host: String,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
    head: Vec<u8>,
    line: Vec<u8>,
}

/// A failure on a reused connection before any byte of the answer: safe to retry once.
enum CallError {
    Stale(io::Error),
    Other(io::Error),
}

impl RawClient {
    fn new(addr: SocketAddr) -> RawClient {
        RawClient {
            addr,
            host: addr.to_string(),
            conn: None,
            head: Vec::with_capacity(512),
            line: Vec::with_capacity(256),
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        self.conn = Some((reader, stream));
        Ok(())
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u16, CallError> {
        if self.conn.is_none() {
            self.open().map_err(CallError::Other)?;
        }
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        );
        for (name, value) in headers {
            let _ = write!(self.head, "{name}: {value}\r\n");
        }
        if method != "GET" || !body.is_empty() {
            let _ = write!(self.head, "Content-Length: {}\r\n", body.len());
        }
        self.head.extend_from_slice(b"\r\n");
        let small = body.len() <= 16 * 1024;
        if small {
            self.head.extend_from_slice(body);
        }
        let (reader, stream) = self.conn.as_mut().expect("opened above");
        let sent = stream.write_all(&self.head).and_then(|_| {
            if small {
                Ok(())
            } else {
                stream.write_all(body)
            }
        });
        sent.map_err(CallError::Stale)?;

        // Status line.
        self.line.clear();
        match reader.read_until(b'\n', &mut self.line) {
            Ok(0) => {
                return Err(CallError::Stale(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the answer",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(CallError::Stale(e)),
        }
        let status = parse_status(&self.line).map_err(CallError::Other)?;
        // Headers.
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .map_err(CallError::Other)?;
            if n == 0 {
                return Err(CallError::Other(eof("in the headers")));
            }
            let line = trim_crlf(&self.line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim_ascii(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case(b"close");
            }
        }
        // Body.
        out.clear();
        let result = if status == 204 || status == 304 || (100..200).contains(&status) {
            Ok(())
        } else if chunked {
            read_chunked(reader, &mut self.line, out)
        } else if let Some(n) = length {
            out.resize(n, 0);
            reader.read_exact(out)
        } else {
            close = true;
            reader.read_to_end(out).map(|_| ())
        };
        if let Err(e) = result {
            self.conn = None;
            return Err(CallError::Other(e));
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

impl Http for RawClient {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16> {
        let reused = self.conn.is_some();
        match self.try_call(method, path, headers, body, out) {
            Ok(status) => Ok(status),
            Err(CallError::Stale(_)) if reused => {
                // The server closed the idle connection: what every keep-alive client does.
                self.conn = None;
                self.try_call(method, path, headers, body, out)
                    .map_err(|e| match e {
                        CallError::Stale(e) | CallError::Other(e) => e,
                    })
                    .inspect_err(|_| self.conn = None)
            }
            Err(CallError::Stale(e) | CallError::Other(e)) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn eof(where_: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {where_}"),
    )
}

fn parse_status(line: &[u8]) -> io::Result<u16> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad status line");
    if line.len() < 12 || !line.starts_with(b"HTTP/1.") {
        return Err(bad());
    }
    std::str::from_utf8(&line[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        line.clear();
        if reader.read_until(b'\n', line)? == 0 {
            return Err(eof("in a chunk header"));
        }
        let text = std::str::from_utf8(trim_crlf(line)).unwrap_or("");
        let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if reader.read_until(b'\n', line)? == 0 || trim_crlf(line).is_empty() {
                    return Ok(());
                }
            }
        }
        let at = out.len();
        out.resize(at + size, 0);
        reader.read_exact(&mut out[at..])?;
        line.clear();
        reader.read_until(b'\n', line)?;
    }
}

/// The same calls through ureq 3 (one agent, so one pooled connection, per thread).
struct UreqClient {
    agent: ureq::Agent,
    base: String,
}

impl UreqClient {
    fn new(addr: SocketAddr) -> UreqClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(IO_TIMEOUT))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .build();
        UreqClient {
            agent: ureq::Agent::new_with_config(config),
            base: format!("http://{addr}"),
        }
    }
}

impl Http for UreqClient {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<u16> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => {
                let mut rb = self.agent.get(&url);
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.call()
            }
            _ => {
                let mut rb = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                for (name, value) in headers {
                    rb = rb.header(*name, *value);
                }
                rb.send(body)
            }
        };
        let mut response = result.map_err(io::Error::other)?;
        let status = response.status().as_u16();
        *out = response
            .body_mut()
            .with_config()
            .limit(256 * MIB as u64)
            .read_to_vec()
            .map_err(io::Error::other)?;
        Ok(status)
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test, as a child process
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct ProcStats {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// Voluntary + involuntary context switches, summed over the live threads.
    ctx_switches: u64,
    /// Machine-wide busy and total CPU ticks (`/proc/stat`), and this bench's own CPU ticks:
    /// what is left of busy is other processes, which skew every figure.
    machine_busy: u64,
    machine_total: u64,
    bench_ticks: u64,
}

fn clock_ticks_per_sec() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (`pid` or `self`), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn proc_stats(pid: u32) -> ProcStats {
    let mut stats = ProcStats {
        cpu_ticks: cpu_ticks(&pid.to_string()),
        bench_ticks: cpu_ticks("self"),
        ..ProcStats::default()
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        stats.machine_total = ticks.iter().sum();
        // idle and iowait are fields 4 and 5.
        stats.machine_busy =
            stats.machine_total - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0);
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let value = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                stats.rss_kib = value(line);
            } else if line.starts_with("VmHWM:") {
                stats.hwm_kib = value(line);
            } else if line.starts_with("Threads:") {
                stats.threads = value(line);
            }
        }
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            stats.ctx_switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    stats
}

/// What else ran during the window, as shares of the whole machine: this bench's own CPU (the
/// clients, and the floor server), then other processes (neither the server nor this bench).
/// Above a few percent of `other_load` the machine was not quiet.
fn other_load(from: ProcStats, to: ProcStats) -> String {
    let total = to.machine_total.saturating_sub(from.machine_total);
    if total == 0 {
        return "n/a".into();
    }
    let busy = to.machine_busy.saturating_sub(from.machine_busy);
    let bench = to.bench_ticks.saturating_sub(from.bench_ticks);
    let ours = to.cpu_ticks.saturating_sub(from.cpu_ticks) + bench;
    let share = |ticks: u64| 100.0 * ticks as f64 / total as f64;
    format!(
        "bench_cpu={:.0}% other_load={:.0}%",
        share(bench),
        share(busy.saturating_sub(ours))
    )
}

/// Server context switches per unit of work between two snapshots.
fn switches_per(from: ProcStats, to: ProcStats, units: u64) -> String {
    if units == 0 {
        return "n/a".into();
    }
    format!(
        "{:.1}",
        to.ctx_switches.saturating_sub(from.ctx_switches) as f64 / units as f64
    )
}

/// Server CPU time per unit of work, in µs.
fn cpu_us_per(from: ProcStats, to: ProcStats, units: u64) -> String {
    if units == 0 {
        return "n/a".into();
    }
    format!("{:.0}", cpu_secs(from, to) * 1e6 / units as f64)
}

fn cpu_secs(from: ProcStats, to: ProcStats) -> f64 {
    to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / clock_ticks_per_sec()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// From spawn to the "listening" line.
    listening_after: Duration,
    stderr: Arc<Mutex<String>>,
    /// `perf record` attached during the measured window (`BENCH_PERF=DIR`).
    perf: Option<Child>,
}

impl Server {
    fn start(s: &Settings, extra: &[String]) -> Server {
        let started = Instant::now();
        let mut child = Command::new(&s.bin)
            .arg("serve")
            .args(["--port", "0", "--host", "127.0.0.1"])
            .arg("--seed")
            .arg(&s.seed)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); build it with `cargo build --release` or set \
                     FOUNDRY_EMULATOR_BIN",
                    s.bin.display()
                )
            });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = sink.lock() {
                    if text.len() < 64 * 1024 {
                        text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let listening_after = started.elapsed();
        // Keep draining stdout so the server can never block on a full pipe.
        std::thread::spawn(move || {
            let _ = io::copy(&mut out, &mut io::sink());
        });
        let addr = line
            .trim()
            .strip_prefix("foundry-emulator listening on http://")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "the emulator did not announce its address (stdout: {line:?}, stderr: {:?})",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        };
        Server {
            child,
            addr,
            listening_after,
            stderr,
            perf: None,
        }
    }

    /// Starts a measured window: the server's counters now, and `perf record -g` on the server
    /// into `$BENCH_PERF/<scenario>.perf.data` when `BENCH_PERF` names a directory.
    fn begin(&mut self, scenario: &str) -> ProcStats {
        if let Some(dir) = std::env::var_os("BENCH_PERF").filter(|d| !d.is_empty()) {
            let _ = std::fs::create_dir_all(&dir);
            let out = Path::new(&dir).join(format!("{scenario}.perf.data"));
            self.perf = Command::new("perf")
                .args(["record", "-g", "-q", "-o"])
                .arg(&out)
                .args(["-p", &self.pid().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
            // perf needs a moment to attach to every thread.
            std::thread::sleep(Duration::from_millis(300));
        }
        self.stats()
    }

    /// Ends a measured window: stops `perf record` (SIGINT, so it writes its file).
    fn end(&mut self) -> ProcStats {
        let stats = self.stats();
        if let Some(mut perf) = self.perf.take() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        stats
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stats(&self) -> ProcStats {
        proc_stats(self.pid())
    }

    /// Fails loudly (with the server's stderr) if the server died.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the emulator exited ({status}); stderr: {}",
                self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `serve` accepts `flag` (read from `serve --help`).
fn serve_accepts(s: &Settings, flag: &str) -> bool {
    Command::new(&s.bin)
        .args(["serve", "--help"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
        .unwrap_or(false)
}

fn write_seed(path: &Path) {
    let seed = serde_json::json!({"foundry": {"compute_modules": {
        "runtimes": [{"runtime_id": RUNTIME_ID, "display_name": "bench runtime"}],
        "deployed_apps": [{"deployed_app_rid": APP_RID, "runtime_id": RUNTIME_ID}],
    }}});
    std::fs::write(path, seed.to_string()).expect("writing the seed file");
}

// ---------------------------------------------------------------------------------------------
// Runtime side
// ---------------------------------------------------------------------------------------------

/// Creates (or resets) the bench runtime session, bound to the bench app; returns its token.
fn create_runtime(kind: ClientKind, addr: SocketAddr) -> Arc<str> {
    let mut client = connect(kind, addr);
    let body = serde_json::json!({"runtimeId": RUNTIME_ID, "deployedAppRid": APP_RID}).to_string();
    let mut out = Vec::new();
    let status = client
        .call(
            "POST",
            RUNTIMES,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            &mut out,
        )
        .expect("creating the runtime session");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out).expect("session JSON");
    Arc::from(
        answer["moduleAuthToken"]
            .as_str()
            .expect("moduleAuthToken in the session answer"),
    )
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "computeModuleJobV1", borrow)]
    job: EnvelopeJob<'a>,
}

#[derive(Deserialize)]
struct EnvelopeJob<'a> {
    #[serde(rename = "jobId")]
    job_id: &'a str,
    #[serde(borrow)]
    query: &'a RawValue,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RuntimeMode {
    /// Posts the query's JSON text back as the result.
    Echo,
    /// Posts 1 MiB of binary derived from the query's nonce.
    Payload,
}

#[derive(Default)]
struct RuntimeStats {
    jobs: u64,
    empty_polls: u64,
    errors: u64,
    /// (job id, when the result post was answered 204), when recording.
    completions: Vec<(String, Instant)>,
}

/// Counters shared by the runtime threads of one scenario, readable while they run.
#[derive(Default)]
struct RuntimeShared {
    stop: AtomicBool,
    completed: AtomicU64,
    empty_polls: AtomicU64,
}

fn spawn_runtimes(
    n: usize,
    kind: ClientKind,
    addr: SocketAddr,
    token: &Arc<str>,
    mode: RuntimeMode,
    record: bool,
    shared: &Arc<RuntimeShared>,
) -> Vec<JoinHandle<RuntimeStats>> {
    (0..n)
        .map(|_| {
            let (token, shared) = (token.clone(), shared.clone());
            std::thread::spawn(move || runtime_loop(kind, addr, &token, mode, record, &shared))
        })
        .collect()
}

fn runtime_loop(
    kind: ClientKind,
    addr: SocketAddr,
    token: &str,
    mode: RuntimeMode,
    record: bool,
    shared: &RuntimeShared,
) -> RuntimeStats {
    let mut client = connect(kind, addr);
    let mut stats = RuntimeStats::default();
    let poll_path = format!("{RUNTIMES}/{RUNTIME_ID}/job");
    let results_prefix = format!("{RUNTIMES}/{RUNTIME_ID}/results/");
    let (mut envelope, mut result, mut answer) = (Vec::new(), Vec::new(), Vec::new());
    let mut path = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let polled = client.call(
            "GET",
            &poll_path,
            &[("Module-Auth-Token", token)],
            &[],
            &mut envelope,
        );
        match polled {
            Ok(204) => {
                stats.empty_polls += 1;
                shared.empty_polls.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(200) => {}
            _ => {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                stats.errors += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let job_id = match mode {
            RuntimeMode::Echo => match serde_json::from_slice::<Envelope>(&envelope) {
                Ok(env) => {
                    result.clear();
                    result.extend_from_slice(env.job.query.get().as_bytes());
                    env.job.job_id.to_string()
                }
                Err(_) => {
                    stats.errors += 1;
                    continue;
                }
            },
            RuntimeMode::Payload => {
                // The 1 MiB envelope is not parsed: jobId and the nonce come first.
                match (find_str(&envelope, b"\"jobId\":\""), find_nonce(&envelope)) {
                    (Some(id), Some(nonce)) => {
                        payload_result(nonce, &mut result);
                        id
                    }
                    _ => {
                        stats.errors += 1;
                        continue;
                    }
                }
            }
        };
        path.clear();
        path.push_str(&results_prefix);
        path.push_str(&job_id);
        let posted = client.call(
            "POST",
            &path,
            &[
                ("Module-Auth-Token", token),
                ("Content-Type", "application/octet-stream"),
            ],
            &result,
            &mut answer,
        );
        match posted {
            Ok(204) => {
                stats.jobs += 1;
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if record {
                    stats.completions.push((job_id, Instant::now()));
                }
            }
            _ => stats.errors += 1,
        }
    }
    stats
}

fn join_runtimes(handles: Vec<JoinHandle<RuntimeStats>>) -> RuntimeStats {
    let mut total = RuntimeStats::default();
    for handle in handles {
        if let Ok(mut s) = handle.join() {
            total.jobs += s.jobs;
            total.empty_polls += s.empty_polls;
            total.errors += s.errors;
            total.completions.append(&mut s.completions);
        }
    }
    total
}

/// Stops the runtime threads: they sit in long polls, so the server is killed to free them.
fn stop_runtimes(
    shared: &RuntimeShared,
    server: Server,
    handles: Vec<JoinHandle<RuntimeStats>>,
) -> RuntimeStats {
    shared.stop.store(true, Ordering::SeqCst);
    drop(server);
    join_runtimes(handles)
}

/// The string value that follows `key` (a JSON string without escapes), in the first 4 KiB.
fn find_str(hay: &[u8], key: &[u8]) -> Option<String> {
    let head = &hay[..hay.len().min(4096)];
    let at = head.windows(key.len()).position(|w| w == key)? + key.len();
    let len = head[at..].iter().position(|&b| b == b'"')?;
    String::from_utf8(head[at..at + len].to_vec()).ok()
}

fn find_nonce(hay: &[u8]) -> Option<u64> {
    find_str(hay, b"\"nonce\":\"")?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// 1 MiB of pseudo-random bytes, made once.
fn noise() -> &'static [u8] {
    static NOISE: OnceLock<Vec<u8>> = OnceLock::new();
    NOISE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// The 1 MiB binary result of the payload job with `nonce`: the noise rotated by an offset
/// derived from the nonce, with the nonce itself in the first 8 bytes. Both sides compute it.
fn payload_result(nonce: u64, out: &mut Vec<u8>) {
    let noise = noise();
    let off = (nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % MIB;
    out.clear();
    out.extend_from_slice(&noise[off..]);
    out.extend_from_slice(&noise[..off]);
    out[..8].copy_from_slice(&nonce.to_le_bytes());
}

/// A sync execute body whose query is exactly 1 MiB of JSON text:
/// `{"nonce":"<20 digits>","data":"<filler>"}`; returns the body and the nonce's offset.
fn payload_body() -> (Vec<u8>, usize) {
    let prefix =
        format!(r#"{{"deployedAppRid":"{APP_RID}","queryType":"payload","query":{{"nonce":""#);
    let nonce_at = prefix.len();
    let query_head = r#"{"nonce":"00000000000000000000","data":""#;
    let query_tail = r#""}"#;
    let filler = MIB - query_head.len() - query_tail.len();
    let mut body = prefix.into_bytes();
    body.extend_from_slice(b"00000000000000000000\",\"data\":\"");
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    body.extend(noise()[..filler].iter().map(|&b| alphabet[b as usize % 62]));
    body.extend_from_slice(query_tail.as_bytes());
    body.push(b'}');
    (body, nonce_at)
}

fn set_nonce(body: &mut [u8], at: usize, nonce: u64) {
    body[at..at + 20].copy_from_slice(format!("{nonce:020}").as_bytes());
}

/// A ~100-byte query, unique per (thread, sequence number).
fn small_query(thread: usize, seq: u64) -> String {
    let mut q = format!(r#"{{"thread":{thread},"seq":{seq},"pad":""#);
    while q.len() < 98 {
        q.push('x');
    }
    q.push_str("\"}");
    q
}

fn execute_body(query: &str) -> String {
    format!(r#"{{"deployedAppRid":"{APP_RID}","queryType":"echo","query":{query}}}"#)
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Latencies in µs.
#[derive(Default)]
struct Lat(Vec<u32>);

impl Lat {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }
    fn merge(parts: impl IntoIterator<Item = Lat>) -> Lat {
        let mut all: Vec<u32> = parts.into_iter().flat_map(|l| l.0).collect();
        all.sort_unstable();
        Lat(all)
    }
    /// Percentile of the sorted samples (`merge` sorts).
    fn pct(&self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }
    fn max(&self) -> u32 {
        self.0.last().copied().unwrap_or(0)
    }
}

fn ratio(value: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}", value / floor)
    } else {
        "n/a".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Timed client loops
// ---------------------------------------------------------------------------------------------

/// Outcome of one application thread's timed loop.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    timeouts: u64,
    overloaded: u64,
    lat: Lat,
    bytes: u64,
}

/// Runs `n` threads; each connects, passes the barrier with the others, then runs
/// `body(thread, client, deadline)`. Returns their results and the measured window.
fn timed_threads<T: Send>(
    n: usize,
    kind: ClientKind,
    addr: SocketAddr,
    window: Duration,
    body: impl Fn(usize, &mut dyn Http, Instant) -> T + Sync,
) -> (Vec<T>, Duration) {
    let barrier = Barrier::new(n + 1);
    let (results, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let (barrier, body) = (&barrier, &body);
                scope.spawn(move || {
                    let mut client = connect(kind, addr);
                    barrier.wait();
                    let deadline = Instant::now() + window;
                    body(t, &mut *client, deadline)
                })
            })
            .collect();
        barrier.wait();
        let results: Vec<T> = handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect();
        // Each thread counts only what finished inside its own window.
        (results, window)
    });
    (results, elapsed)
}

/// Sequential sync executes of ~100-byte queries until the deadline.
fn execute_loop(t: usize, client: &mut dyn Http, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let path = format!("{CONTOUR}/compute-modules/jobs/execute");
    let mut seq = 0u64;
    loop {
        let query = small_query(t, seq);
        let body = execute_body(&query);
        seq += 1;
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let answer = client.call(
            "POST",
            &path,
            &[
                ("Authorization", BEARER),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
            &mut out,
        );
        let took = started.elapsed();
        match answer {
            Ok(200) if out == query.as_bytes() => {
                tally.ok += 1;
                tally.lat.push(took);
            }
            Ok(504) => tally.timeouts += 1,
            Ok(503) => tally.overloaded += 1,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                tally.timeouts += 1
            }
            _ => tally.errors += 1,
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------------
// Floor: a trivial tiny_http server in this process
// ---------------------------------------------------------------------------------------------

struct Floor {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Floor {
    /// Four workers, as many as the emulator's default front threads. A request with an
    /// `X-Reply-Len` header gets that many bytes back; any other gets `ok`.
    fn start() -> Floor {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("floor listener");
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, tiny_http::ServerOptions::default())
                .expect("floor server"),
        );
        let addr = server.server_addr().expect("the floor listens");
        let stopping = Arc::new(AtomicBool::new(false));
        let noise = noise();
        let workers = (0..4)
            .map(|_| {
                let (server, stopping) = (server.clone(), stopping.clone());
                std::thread::spawn(move || loop {
                    let Some(rq) = server.recv() else {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        continue;
                    };
                    let len = rq
                        .headers()
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("X-Reply-Len"))
                        .and_then(|(_, value)| value.parse::<usize>().ok())
                        .map_or(2, |n| n.min(MIB));
                    let data: &'static [u8] = if len == 2 { b"ok" } else { &noise[..len] };
                    rq.respond(tiny_http::Response::new(200, Box::new(data)));
                })
            })
            .collect();
        Floor {
            server,
            stopping,
            workers,
            addr,
        }
    }

    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

#[derive(Default, Clone, Copy)]
struct FloorFigures {
    p50: f64,
    p99: f64,
    rps_1: f64,
    rps: f64,
    mib_s: f64,
}

fn floor(s: &Settings) -> FloorFigures {
    let floor = Floor::start();
    let body = execute_body(&small_query(0, 0));
    let small = |_t: usize, client: &mut dyn Http, deadline: Instant| {
        let mut tally = Tally::default();
        let mut out = Vec::new();
        while Instant::now() < deadline {
            let started = Instant::now();
            match client.call(
                "POST",
                "/floor",
                &[
                    ("Authorization", BEARER),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
                &mut out,
            ) {
                Ok(200) => {
                    tally.ok += 1;
                    tally.lat.push(started.elapsed());
                }
                _ => tally.errors += 1,
            }
        }
        tally
    };
    let (one, window1) = timed_threads(1, s.client, floor.addr, s.secs, small);
    let (many, window) = timed_threads(s.app_threads, s.client, floor.addr, s.secs, small);
    let (mb, _) = payload_body();
    let len = MIB.to_string();
    let (big, window_big) = timed_threads(
        s.payload_threads,
        s.client,
        floor.addr,
        s.secs,
        |_t, client, deadline| {
            let mut tally = Tally::default();
            let mut out = Vec::with_capacity(MIB);
            while Instant::now() < deadline {
                let started = Instant::now();
                match client.call(
                    "POST",
                    "/floor",
                    &[("X-Reply-Len", &len), ("Content-Type", "application/json")],
                    &mb,
                    &mut out,
                ) {
                    Ok(200) if out.len() == MIB => {
                        tally.ok += 1;
                        tally.bytes += (mb.len() + out.len()) as u64;
                        tally.lat.push(started.elapsed());
                    }
                    _ => tally.errors += 1,
                }
            }
            tally
        },
    );
    floor.stop();
    let one_ok: u64 = one.iter().map(|t| t.ok).sum();
    let lat1 = Lat::merge(one.into_iter().map(|t| t.lat));
    let many_ok: u64 = many.iter().map(|t| t.ok).sum();
    let errors: u64 =
        many.iter().map(|t| t.errors).sum::<u64>() + big.iter().map(|t| t.errors).sum::<u64>();
    let bytes: u64 = big.iter().map(|t| t.bytes).sum();
    let big_lat = Lat::merge(big.into_iter().map(|t| t.lat));
    let f = FloorFigures {
        p50: lat1.pct(50.0) as f64,
        p99: lat1.pct(99.0) as f64,
        rps_1: one_ok as f64 / window1.as_secs_f64(),
        rps: many_ok as f64 / window.as_secs_f64(),
        mib_s: bytes as f64 / MIB as f64 / window_big.as_secs_f64(),
    };
    println!(
        "floor p50={:.0}us p90={}us p99={:.0}us max={}us rps_1thread={:.0} rps_{}threads={:.0} \
         payload_mib_s={:.0} ({} threads, 1 MiB up + 1 MiB down, p50={}us p99={}us) \
         errors={errors} client={:?}",
        f.p50,
        lat1.pct(90.0),
        f.p99,
        lat1.max(),
        f.rps_1,
        s.app_threads,
        f.rps,
        f.mib_s,
        s.payload_threads,
        big_lat.pct(50.0),
        big_lat.pct(99.0),
        s.client,
    );
    f
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

fn startup(s: &Settings) {
    let mut to_answer = Vec::new();
    let mut to_line = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..s.startup_runs {
        let started = Instant::now();
        let server = Server::start(s, &[]);
        let mut out = Vec::new();
        loop {
            let mut client = RawClient::new(server.addr);
            if let Ok(200) = client.call("GET", "/_emulate/health", &[], &[], &mut out) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the emulator never answered /_emulate/health"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        to_answer.push(started.elapsed().as_secs_f64() * 1e3);
        to_line.push(server.listening_after.as_secs_f64() * 1e3);
        let stats = server.stats();
        rss.push((stats.rss_kib, stats.threads));
        drop(server);
    }
    // Floor: spawning the same binary to print its help and exit.
    let mut spawn = Vec::new();
    for _ in 0..s.startup_runs {
        let started = Instant::now();
        let _ = Command::new(&s.bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        spawn.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let max = to_answer.iter().copied().fold(0.0, f64::max);
    let (first_answer, line, floor_spawn) = (
        median(&mut to_answer),
        median(&mut to_line),
        median(&mut spawn),
    );
    rss.sort();
    let (rss_kib, threads) = rss[rss.len() / 2];
    println!(
        "startup first_answer_ms={first_answer:.1} (median of {}, max {max:.1}) listening_line_ms={line:.1} \
         rss_at_start={:.1}MiB threads={threads} floor_spawn_ms={floor_spawn:.1} ratio={}",
        s.startup_runs,
        mib(rss_kib),
        ratio(first_answer, floor_spawn),
    );
}

fn sync_latency(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "sync-latency";
    let mut server = Server::start(s, &[]);
    let token = create_runtime(s.client, server.addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        1,
        s.client,
        server.addr,
        &token,
        RuntimeMode::Echo,
        false,
        &shared,
    );
    // Warm-up: connections, lane threads, allocator.
    let warm = if s.smoke { 20 } else { 500 };
    {
        let mut c = connect(s.client, server.addr);
        let mut out = Vec::new();
        let path = format!("{CONTOUR}/compute-modules/jobs/execute");
        for i in 0..warm {
            let body = execute_body(&small_query(99, i));
            let _ = c.call(
                "POST",
                &path,
                &[("Authorization", BEARER)],
                body.as_bytes(),
                &mut out,
            );
        }
    }
    let before = server.begin(SCENARIO);
    let (tallies, window) = timed_threads(1, s.client, server.addr, s.secs, execute_loop);
    let after = server.end();
    let rt = stop_runtimes(&shared, server, runtimes);
    let (errors, timeouts) = (t_errors(&tallies[0]), tallies[0].timeouts);
    let lat = Lat::merge(tallies.into_iter().map(|t| t.lat));
    let (p50, p99) = (lat.pct(50.0) as f64, lat.pct(99.0) as f64);
    let ok = lat.0.len() as u64;
    println!(
        "sync-latency p50={p50:.0}us p90={}us p99={p99:.0}us max={}us jobs={ok} errors={} \
         timeouts={} rt_errors={} srv_cpu={:.2}s ({:.0}% of a core) srv_cpu_per_job={}us \
         srv_ctx_switches_per_job={} floor_p50={:.0}us ratio_p50={} ratio_p99={} \
         {} [target p50<=250us p99<=1000us]",
        lat.pct(90.0),
        lat.max(),
        errors,
        timeouts,
        rt.errors,
        cpu_secs(before, after),
        100.0 * cpu_secs(before, after) / window.as_secs_f64(),
        cpu_us_per(before, after, ok),
        switches_per(before, after, ok),
        f.p50,
        ratio(p50, f.p50),
        ratio(p99, f.p99),
        other_load(before, after),
    );
}

fn t_errors(t: &Tally) -> u64 {
    t.errors + t.overloaded
}

fn sync_throughput(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "sync-throughput";
    let mut server = Server::start(s, &[]);
    let token = create_runtime(s.client, server.addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        s.runtime_threads,
        s.client,
        server.addr,
        &token,
        RuntimeMode::Echo,
        false,
        &shared,
    );
    let before = server.begin(SCENARIO);
    let (tallies, window) =
        timed_threads(s.app_threads, s.client, server.addr, s.secs, execute_loop);
    let after = server.end();
    let rt = stop_runtimes(&shared, server, runtimes);
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let errors: u64 = tallies.iter().map(t_errors).sum();
    let overloaded: u64 = tallies.iter().map(|t| t.overloaded).sum();
    let timeouts: u64 = tallies.iter().map(|t| t.timeouts).sum();
    let lat = Lat::merge(tallies.into_iter().map(|t| t.lat));
    let jobs_s = ok as f64 / window.as_secs_f64();
    println!(
        "sync-throughput jobs_s={jobs_s:.0} p50={}us p99={}us max={}us jobs={ok} errors={errors} \
         (overloaded={overloaded}) timeouts={timeouts} rt_errors={} srv_cpu={:.2}s ({:.0}% of a core) \
         srv_cpu_per_job={}us srv_ctx_switches_per_job={} srv_rss={:.1}MiB floor_rps={:.0} \
         ratio={} {} [target >=12000 jobs/s, 0 errors]",
        lat.pct(50.0),
        lat.pct(99.0),
        lat.max(),
        rt.errors,
        cpu_secs(before, after),
        100.0 * cpu_secs(before, after) / window.as_secs_f64(),
        cpu_us_per(before, after, ok),
        switches_per(before, after, ok),
        mib(after.rss_kib),
        f.rps,
        ratio(jobs_s, f.rps),
        other_load(before, after),
    );
}

/// One accepted async submit.
struct Submitted {
    id: String,
    thread: usize,
    seq: u64,
    at: Instant,
}

#[derive(Deserialize)]
struct SubmitAnswer<'a> {
    #[serde(borrow)]
    id: &'a str,
}

fn async_throughput(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "async-throughput";
    // Nothing may be evicted or refused before the read-back: lift both limits if they exist.
    let mut extra = vec!["--max-queued".to_string(), "100000000".to_string()];
    if serve_accepts(s, "--max-retained-jobs") {
        extra.extend(["--max-retained-jobs".to_string(), "100000000".to_string()]);
    }
    let mut server = Server::start(s, &extra);
    let addr = server.addr;
    let token = create_runtime(s.client, addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        s.runtime_threads,
        s.client,
        addr,
        &token,
        RuntimeMode::Echo,
        true,
        &shared,
    );
    let before = server.begin(SCENARIO);
    let started = Instant::now();
    let path = format!("{CONTOUR}/deployed-apps/jobs");
    let (parts, window) = timed_threads(
        s.app_threads,
        s.client,
        addr,
        s.secs,
        |t, client, deadline| {
            let mut done = Vec::new();
            let mut tally = Tally::default();
            let mut out = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let body = execute_body(&small_query(t, seq));
                let at = Instant::now();
                let answer = client.call(
                    "POST",
                    &path,
                    &[
                        ("Authorization", BEARER),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                    &mut out,
                );
                match answer {
                    Ok(200) => match serde_json::from_slice::<SubmitAnswer>(&out) {
                        Ok(a) => {
                            tally.ok += 1;
                            tally.lat.push(at.elapsed());
                            done.push(Submitted {
                                id: a.id.to_string(),
                                thread: t,
                                seq,
                                at,
                            });
                        }
                        Err(_) => tally.errors += 1,
                    },
                    Ok(503) => tally.overloaded += 1,
                    _ => tally.errors += 1,
                }
                seq += 1;
            }
            (done, tally)
        },
    );
    let submit_errors: u64 = parts.iter().map(|(_, t)| t_errors(t)).sum();
    let (submitted, tallies): (Vec<Vec<Submitted>>, Vec<Tally>) = parts.into_iter().unzip();
    let submitted: Vec<Submitted> = submitted.into_iter().flatten().collect();
    let submit_lat = Lat::merge(tallies.into_iter().map(|t| t.lat));
    let backlog_at_end =
        (submitted.len() as u64).saturating_sub(shared.completed.load(Ordering::SeqCst));
    // Let the runtimes drain the queue (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(60).max(s.secs * 10);
    while shared.completed.load(Ordering::SeqCst) < submitted.len() as u64
        && Instant::now() < drain_deadline
    {
        server.check_alive();
        std::thread::sleep(Duration::from_millis(5));
    }
    let drained = started.elapsed();
    let after = server.end();
    // Read every job back through the Contour routes and check it.
    let readback_started = Instant::now();
    let chunk = submitted.len().div_ceil(s.app_threads).max(1);
    let checks: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = submitted
            .chunks(chunk)
            .map(|jobs| {
                scope.spawn(move || {
                    let mut client = connect(s.client, addr);
                    let (mut lost, mut wrong) = (0u64, 0u64);
                    let mut out = Vec::new();
                    for job in jobs {
                        let status_path = format!("{CONTOUR}/jobs/{}/status", job.id);
                        let status = client.call(
                            "GET",
                            &status_path,
                            &[("Authorization", BEARER)],
                            &[],
                            &mut out,
                        );
                        if !matches!(status, Ok(200)) || !out.starts_with(br#"{"type":"succeeded""#)
                        {
                            lost += 1;
                            continue;
                        }
                        let body = format!(r#"{{"id":"{}"}}"#, job.id);
                        let result = client.call(
                            "PUT",
                            &format!("{CONTOUR}/jobs/result/v2"),
                            &[
                                ("Authorization", BEARER),
                                ("Content-Type", "application/json"),
                            ],
                            body.as_bytes(),
                            &mut out,
                        );
                        if !matches!(result, Ok(200))
                            || out != small_query(job.thread, job.seq).as_bytes()
                        {
                            wrong += 1;
                        }
                    }
                    (lost, wrong)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("read-back thread"))
            .collect()
    });
    let readback = readback_started.elapsed();
    let rss = server.stats();
    let rt = stop_runtimes(&shared, server, runtimes);
    let lost: u64 = checks.iter().map(|c| c.0).sum();
    let wrong: u64 = checks.iter().map(|c| c.1).sum();
    // End to end: submit sent → result post answered.
    let done: HashMap<&str, Instant> = rt
        .completions
        .iter()
        .map(|(id, at)| (id.as_str(), *at))
        .collect();
    let mut e2e = Lat::default();
    let mut last_done = started;
    for job in &submitted {
        if let Some(&at) = done.get(job.id.as_str()) {
            e2e.push(at.saturating_duration_since(job.at));
            last_done = last_done.max(at);
        }
    }
    let e2e = Lat::merge([e2e]);
    let submits_s = submitted.len() as f64 / window.as_secs_f64();
    let completions_s =
        rt.completions.len() as f64 / last_done.duration_since(started).as_secs_f64().max(1e-9);
    println!(
        "async-throughput submits_s={submits_s:.0} completions_s={completions_s:.0} e2e_p50={}us \
         e2e_p99={}us submit_p50={}us submit_p99={}us jobs={} lost={lost} wrong={wrong} \
         submit_errors={submit_errors} rt_errors={} backlog_at_submit_end={backlog_at_end} \
         drain_s={:.2} readback_s={:.2} srv_cpu={:.2}s srv_cpu_per_job={}us \
         srv_ctx_switches_per_job={} srv_rss={:.1}MiB floor_rps={:.0} \
         ratio_submits={} ratio_completions={} {} [target >=20000 submits/s, >=12000 completions/s, 0 lost]",
        e2e.pct(50.0),
        e2e.pct(99.0),
        submit_lat.pct(50.0),
        submit_lat.pct(99.0),
        submitted.len(),
        rt.errors,
        drained.as_secs_f64(),
        readback.as_secs_f64(),
        cpu_secs(before, after),
        cpu_us_per(before, after, submitted.len() as u64),
        switches_per(before, after, submitted.len() as u64),
        mib(rss.rss_kib),
        f.rps,
        ratio(submits_s, f.rps),
        ratio(completions_s, f.rps),
        other_load(before, after),
    );
}

fn payload(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "payload";
    let mut server = Server::start(s, &[]);
    let token = create_runtime(s.client, server.addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        s.payload_threads,
        s.client,
        server.addr,
        &token,
        RuntimeMode::Payload,
        false,
        &shared,
    );
    let (template, nonce_at) = payload_body();
    let path = format!("{CONTOUR}/compute-modules/jobs/execute");
    let before = server.begin(SCENARIO);
    let (tallies, window) = timed_threads(
        s.payload_threads,
        s.client,
        server.addr,
        s.secs,
        |t, client, deadline| {
            let mut tally = Tally::default();
            let mut body = template.clone();
            let (mut out, mut expected) = (Vec::with_capacity(MIB), Vec::with_capacity(MIB));
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let nonce = (t as u64) << 40 | seq;
                seq += 1;
                set_nonce(&mut body, nonce_at, nonce);
                let started = Instant::now();
                let answer = client.call(
                    "POST",
                    &path,
                    &[
                        ("Authorization", BEARER),
                        ("Content-Type", "application/json"),
                    ],
                    &body,
                    &mut out,
                );
                let took = started.elapsed();
                payload_result(nonce, &mut expected);
                match answer {
                    Ok(200) if out == expected => {
                        tally.ok += 1;
                        tally.bytes += (MIB + out.len()) as u64;
                        tally.lat.push(took);
                    }
                    Ok(200) => tally.errors += 1,
                    Ok(504) => tally.timeouts += 1,
                    _ => tally.overloaded += 1,
                }
            }
            tally
        },
    );
    let after = server.end();
    let rt = stop_runtimes(&shared, server, runtimes);
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let mismatched: u64 = tallies.iter().map(|t| t.errors).sum();
    let failed: u64 = tallies.iter().map(|t| t.overloaded + t.timeouts).sum();
    let bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
    let lat = Lat::merge(tallies.into_iter().map(|t| t.lat));
    let mib_s = bytes as f64 / MIB as f64 / window.as_secs_f64();
    println!(
        "payload mib_s={mib_s:.0} (1 MiB JSON up + 1 MiB binary down per job, {} app threads) \
         jobs_s={:.0} p50={}us p99={}us byte_exact={}/{} failed={failed} rt_errors={} \
         srv_cpu={:.2}s ({:.0}% of a core) srv_cpu_per_job={}us srv_hwm={:.1}MiB floor_mib_s={:.0} ratio={} \
         {} [target >=600 MiB/s, byte-exact]",
        s.payload_threads,
        ok as f64 / window.as_secs_f64(),
        lat.pct(50.0),
        lat.pct(99.0),
        ok,
        ok + mismatched,
        rt.errors,
        cpu_secs(before, after),
        100.0 * cpu_secs(before, after) / window.as_secs_f64(),
        cpu_us_per(before, after, ok),
        mib(after.hwm_kib),
        f.mib_s,
        ratio(mib_s, f.mib_s),
        other_load(before, after),
    );
}

fn idle(s: &Settings) {
    const SCENARIO: &str = "idle";
    let mut server = Server::start(s, &[]);
    let token = create_runtime(s.client, server.addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        s.runtime_threads,
        s.client,
        server.addr,
        &token,
        RuntimeMode::Echo,
        false,
        &shared,
    );
    // Let every poller connect and park its first poll.
    std::thread::sleep(Duration::from_millis(if s.smoke { 100 } else { 500 }));
    let before = server.begin(SCENARIO);
    let polls_before = shared.empty_polls.load(Ordering::SeqCst);
    std::thread::sleep(s.idle_secs);
    let after = server.end();
    let polls = shared.empty_polls.load(Ordering::SeqCst) - polls_before;
    let rt = stop_runtimes(&shared, server, runtimes);
    let cpu = cpu_secs(before, after);
    println!(
        "idle window={:.1}s pollers={} srv_cpu={cpu:.3}s ({:.2}% of a core) polls_answered={polls} \
         ({:.1}/s) rt_errors={} srv_rss={:.1}MiB threads={} floor=n/a {} [target <=1% of a core]",
        s.idle_secs.as_secs_f64(),
        s.runtime_threads,
        100.0 * cpu / s.idle_secs.as_secs_f64(),
        polls as f64 / s.idle_secs.as_secs_f64(),
        rt.errors,
        mib(after.rss_kib),
        after.threads,
        other_load(before, after),
    );
}

fn retention(s: &Settings) {
    const SCENARIO: &str = "retention";
    let supported = serve_accepts(s, "--max-retained-jobs");
    let mut extra = Vec::new();
    if supported {
        extra.extend([
            "--max-retained-jobs".to_string(),
            s.max_retained.to_string(),
        ]);
    }
    let mut server = Server::start(s, &extra);
    let addr = server.addr;
    let token = create_runtime(s.client, addr);
    let shared = Arc::new(RuntimeShared::default());
    let runtimes = spawn_runtimes(
        s.runtime_threads,
        s.client,
        addr,
        &token,
        RuntimeMode::Echo,
        false,
        &shared,
    );
    std::thread::sleep(Duration::from_millis(50));
    let before = server.begin(SCENARIO);
    let started = Instant::now();
    let claimed = AtomicU64::new(0);
    let cap_hit = AtomicBool::new(false);
    let submitters = 8usize;
    // Submitters stay at most this far ahead of the runtimes, so the queue stays short and
    // what accumulates is terminal jobs, which is what retention is about.
    let max_ahead = 4096u64;
    let path = format!("{CONTOUR}/deployed-apps/jobs");
    let (errors, overloaded): (u64, u64) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..submitters)
            .map(|t| {
                let (claimed, cap_hit, shared, path) = (&claimed, &cap_hit, &shared, &path);
                scope.spawn(move || {
                    let mut client = connect(s.client, addr);
                    let (mut errors, mut overloaded) = (0u64, 0u64);
                    let mut out = Vec::new();
                    let body = execute_body(&small_query(t, 0));
                    loop {
                        if started.elapsed() > s.retention_cap {
                            cap_hit.store(true, Ordering::SeqCst);
                            break;
                        }
                        let n = claimed.load(Ordering::Relaxed);
                        if n >= s.retention_jobs {
                            break;
                        }
                        if n.saturating_sub(shared.completed.load(Ordering::Relaxed)) > max_ahead {
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        if claimed.fetch_add(1, Ordering::Relaxed) >= s.retention_jobs {
                            break;
                        }
                        match client.call(
                            "POST",
                            path,
                            &[
                                ("Authorization", BEARER),
                                ("Content-Type", "application/json"),
                            ],
                            body.as_bytes(),
                            &mut out,
                        ) {
                            Ok(200) => {}
                            Ok(503) => {
                                overloaded += 1;
                                claimed.fetch_sub(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            _ => {
                                errors += 1;
                                claimed.fetch_sub(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    (errors, overloaded)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("submitter"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let pushed = claimed.load(Ordering::SeqCst).min(s.retention_jobs);
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while shared.completed.load(Ordering::SeqCst) < pushed && Instant::now() < drain_deadline {
        server.check_alive();
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(if s.smoke { 50 } else { 500 }));
    let after = server.end();
    let rt = stop_runtimes(&shared, server, runtimes);
    println!(
        "retention jobs={pushed} of {} completed={}{} secs={:.1} jobs_s={:.0} rss_before={:.1}MiB \
         rss_peak={:.1}MiB rss_after={:.1}MiB srv_cpu={:.1}s errors={errors} overloaded={overloaded} \
         rt_errors={} max_retained_jobs={} floor=n/a {} [target after 1M jobs <=64MiB]",
        s.retention_jobs,
        rt.jobs,
        if cap_hit.load(Ordering::SeqCst) {
            " (time cap hit)"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        pushed as f64 / elapsed.as_secs_f64(),
        mib(before.rss_kib),
        mib(after.hwm_kib),
        mib(after.rss_kib),
        cpu_secs(before, after),
        rt.errors,
        if supported {
            s.max_retained.to_string()
        } else {
            "unsupported".into()
        },
        other_load(before, after),
    );
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The 1/5/15-minute load averages, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
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
    let f = floor(&s);
    if wants("startup") {
        startup(&s);
    }
    if wants("sync-latency") {
        sync_latency(&s, &f);
    }
    if wants("sync-throughput") {
        sync_throughput(&s, &f);
    }
    if wants("async-throughput") {
        async_throughput(&s, &f);
    }
    if wants("payload") {
        payload(&s, &f);
    }
    if wants("idle") {
        idle(&s);
    }
    if wants("retention") {
        retention(&s);
    }
    println!(
        "# total {:.1}s, load average at end {}",
        total.elapsed().as_secs_f64(),
        load_average()
    );
}
