//! The servers the bench talks to: the emulator under test as a child process, and the floor
//! (a trivial tiny_http server in this process).

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::proc::{proc_stats, ProcStats};
use crate::sim::noise;
use crate::{Settings, APP_RID, MIB, RUNTIME_ID};

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// From spawn to the "listening" line.
    pub listening_after: Duration,
    pub stderr: Arc<Mutex<String>>,
    /// `perf record` attached during the measured window (`BENCH_PERF=DIR`).
    pub perf: Option<Child>,
}

impl Server {
    pub fn start(s: &Settings, extra: &[String]) -> Server {
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
    pub fn begin(&mut self, scenario: &str) -> ProcStats {
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
    pub fn end(&mut self) -> ProcStats {
        let stats = self.stats();
        if let Some(dir) = std::env::var_os("BENCH_SMAPS").filter(|d| !d.is_empty()) {
            let _ = std::fs::create_dir_all(&dir);
            let from = format!("/proc/{}/smaps", self.pid());
            let _ = std::fs::copy(from, Path::new(&dir).join(format!("{}.smaps", self.pid())));
        }
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

    pub fn stats(&self) -> ProcStats {
        proc_stats(self.pid())
    }

    /// Fails loudly (with the server's stderr) if the server died.
    pub fn check_alive(&mut self) {
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
pub fn serve_accepts(s: &Settings, flag: &str) -> bool {
    Command::new(&s.bin)
        .args(["serve", "--help"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
        .unwrap_or(false)
}

pub fn write_seed(path: &Path) {
    let seed = serde_json::json!({"foundry": {"compute_modules": {
        "runtimes": [{"runtime_id": RUNTIME_ID, "display_name": "bench runtime"}],
        "deployed_apps": [{"deployed_app_rid": APP_RID, "runtime_id": RUNTIME_ID}],
    }}});
    std::fs::write(path, seed.to_string()).expect("writing the seed file");
}

pub struct Floor {
    pub server: Arc<tiny_http::Server>,
    pub stopping: Arc<AtomicBool>,
    pub workers: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Floor {
    /// Four workers, as many as the emulator's default front threads. A request with an
    /// `X-Reply-Len` header gets that many bytes back; any other gets `ok`.
    pub fn start() -> Floor {
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

    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}
