//! The scenarios, each printing one line, and what they share: the timed client loops, the
//! latency histogram, and one set-up (an emulator, its runtime session, simulated runtimes).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::{connect, ClientKind, Http, RawClient};
use crate::proc::{cpu_secs, cpu_us_per, mib, other_load, switches_per};
use crate::server::{serve_accepts, Floor, Server};
use crate::sim::{
    self, execute_body, payload_body, payload_result, set_nonce, small_query, Simulated,
};
use crate::{Settings, BEARER, CONTOUR, MIB};

/// Latencies in µs.
#[derive(Default)]
struct Lat(Vec<u32>);

impl Lat {
    pub fn push(&mut self, d: Duration) {
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

pub fn ratio(value: f64, floor: f64) -> String {
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
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub overloaded: u64,
    pub lat: Lat,
    pub bytes: u64,
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
        let answer = client.call("POST", &path, APP_JSON, body.as_bytes(), &mut out);
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

#[derive(Default, Clone, Copy)]
pub struct FloorFigures {
    pub p50: f64,
    pub p99: f64,
    pub rps_1: f64,
    pub rps: f64,
    pub mib_s: f64,
}

pub fn floor(s: &Settings) -> FloorFigures {
    let floor = Floor::start();
    let body = execute_body(&small_query(0, 0));
    let small = |_t: usize, client: &mut dyn Http, deadline: Instant| {
        let mut tally = Tally::default();
        let mut out = Vec::new();
        while Instant::now() < deadline {
            let started = Instant::now();
            match client.call("POST", "/floor", APP_JSON, body.as_bytes(), &mut out) {
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

/// An application's headers for a JSON body.
const APP_JSON: &[(&str, &str)] = &[
    ("Authorization", BEARER),
    ("Content-Type", "application/json"),
];

/// The set-up every emulator scenario shares: the server started with `extra` flags, the
/// bench runtime's session (created over HTTP), and `runtimes` polling it.
fn start(s: &Settings, extra: &[String], runtimes: sim::Runtimes) -> (Server, Simulated) {
    let server = Server::start(s, extra);
    let token = sim::create_runtime(s.client, server.addr);
    let runtimes = runtimes.spawn(s.client, server.addr, &token);
    (server, runtimes)
}

/// Waits until the runtimes have posted `n` results or `deadline` passes; panics (with the
/// server's stderr) if the server died meanwhile.
fn wait_completed(server: &mut Server, runtimes: &Simulated, n: u64, deadline: Instant) {
    while runtimes.completed() < n && Instant::now() < deadline {
        server.check_alive();
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn startup(s: &Settings) {
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

pub fn sync_latency(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "sync-latency";
    let (mut server, runtimes) = start(s, &[], sim::Runtimes::echo(1));
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
    let rt = runtimes.stop(server);
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

pub fn sync_throughput(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "sync-throughput";
    let (mut server, runtimes) = start(s, &[], sim::Runtimes::echo(s.runtime_threads));
    let before = server.begin(SCENARIO);
    let (tallies, window) =
        timed_threads(s.app_threads, s.client, server.addr, s.secs, execute_loop);
    let after = server.end();
    let rt = runtimes.stop(server);
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
    pub id: String,
    pub thread: usize,
    pub seq: u64,
    pub at: Instant,
}

#[derive(Deserialize)]
struct SubmitAnswer<'a> {
    #[serde(borrow)]
    pub id: &'a str,
}

pub fn async_throughput(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "async-throughput";
    // Nothing may be evicted or refused before the read-back: lift both limits if they exist.
    let mut extra = vec!["--max-queued".to_string(), "100000000".to_string()];
    if serve_accepts(s, "--max-retained-jobs") {
        extra.extend(["--max-retained-jobs".to_string(), "100000000".to_string()]);
    }
    let (mut server, runtimes) = start(
        s,
        &extra,
        sim::Runtimes::echo(s.runtime_threads).recording(),
    );
    let addr = server.addr;
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
                let answer = client.call("POST", &path, APP_JSON, body.as_bytes(), &mut out);
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
    let backlog_at_end = (submitted.len() as u64).saturating_sub(runtimes.completed());
    // Let the runtimes drain the queue (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(60).max(s.secs * 10);
    wait_completed(
        &mut server,
        &runtimes,
        submitted.len() as u64,
        drain_deadline,
    );
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
                            APP_JSON,
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
    let rt = runtimes.stop(server);
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

pub fn payload(s: &Settings, f: &FloorFigures) {
    const SCENARIO: &str = "payload";
    let (mut server, runtimes) = start(s, &[], sim::Runtimes::payload(s.payload_threads));
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
                let answer = client.call("POST", &path, APP_JSON, &body, &mut out);
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
    let rt = runtimes.stop(server);
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

pub fn idle(s: &Settings) {
    const SCENARIO: &str = "idle";
    let (mut server, runtimes) = start(s, &[], sim::Runtimes::echo(s.runtime_threads));
    // Let every poller connect and park its first poll.
    std::thread::sleep(Duration::from_millis(if s.smoke { 100 } else { 500 }));
    let before = server.begin(SCENARIO);
    let polls_before = runtimes.empty_polls();
    std::thread::sleep(s.idle_secs);
    let after = server.end();
    let polls = runtimes.empty_polls() - polls_before;
    let rt = runtimes.stop(server);
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

pub fn retention(s: &Settings) {
    const SCENARIO: &str = "retention";
    let supported = serve_accepts(s, "--max-retained-jobs");
    let mut extra = Vec::new();
    if supported {
        extra.extend([
            "--max-retained-jobs".to_string(),
            s.max_retained.to_string(),
        ]);
    }
    let (mut server, runtimes) = start(s, &extra, sim::Runtimes::echo(s.runtime_threads));
    let addr = server.addr;
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
                let (claimed, cap_hit, runtimes, path) = (&claimed, &cap_hit, &runtimes, &path);
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
                        if n.saturating_sub(runtimes.completed()) > max_ahead {
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        if claimed.fetch_add(1, Ordering::Relaxed) >= s.retention_jobs {
                            break;
                        }
                        match client.call("POST", path, APP_JSON, body.as_bytes(), &mut out) {
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
    wait_completed(
        &mut server,
        &runtimes,
        pushed,
        Instant::now() + Duration::from_secs(60),
    );
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(if s.smoke { 50 } else { 500 }));
    let after = server.end();
    let rt = runtimes.stop(server);
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
