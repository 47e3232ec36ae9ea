//! The runtime simulator (threads polling for jobs and posting results, as the SDKs do) and
//! the payloads both sides compute.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::{connect, ClientKind};
use crate::server::Server;
use crate::{APP_RID, MIB, RUNTIMES, RUNTIME_ID};

/// Creates (or resets) the bench runtime session, bound to the bench app; returns its token.
pub fn create_runtime(kind: ClientKind, addr: SocketAddr) -> Arc<str> {
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
pub struct RuntimeStats {
    pub jobs: u64,
    pub empty_polls: u64,
    pub errors: u64,
    /// (job id, when the result post was answered 204), when recording.
    pub completions: Vec<(String, Instant)>,
}

/// Counters shared by the runtime threads of one scenario, readable while they run.
#[derive(Default)]
struct RuntimeShared {
    stop: AtomicBool,
    completed: AtomicU64,
    empty_polls: AtomicU64,
}

/// Simulated runtimes to start: how many threads, what they answer, whether they record.
/// Built with [`Runtimes::echo`] or [`Runtimes::payload`], started with [`Runtimes::spawn`].
#[derive(Clone, Copy)]
pub struct Runtimes {
    threads: usize,
    mode: RuntimeMode,
    record: bool,
}

impl Runtimes {
    /// `threads` runtimes that post each query's JSON text back.
    pub fn echo(threads: usize) -> Runtimes {
        Runtimes {
            threads,
            mode: RuntimeMode::Echo,
            record: false,
        }
    }

    /// `threads` runtimes that post 1 MiB of binary derived from the query's nonce.
    pub fn payload(threads: usize) -> Runtimes {
        Runtimes {
            mode: RuntimeMode::Payload,
            ..Runtimes::echo(threads)
        }
    }

    /// Also records (job id, when its result post was answered) of every completion.
    pub fn recording(self) -> Runtimes {
        Runtimes {
            record: true,
            ..self
        }
    }

    /// Starts the threads, each on its own connection to `addr`, polling with `token`.
    pub fn spawn(self, kind: ClientKind, addr: SocketAddr, token: &Arc<str>) -> Simulated {
        let shared = Arc::new(RuntimeShared::default());
        let handles = (0..self.threads)
            .map(|_| {
                let (token, shared) = (token.clone(), shared.clone());
                std::thread::spawn(move || runtime_loop(self, kind, addr, &token, &shared))
            })
            .collect();
        Simulated { shared, handles }
    }
}

/// Running simulated runtimes.
pub struct Simulated {
    shared: Arc<RuntimeShared>,
    handles: Vec<JoinHandle<RuntimeStats>>,
}

impl Simulated {
    /// Results posted so far, by all threads.
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Polls answered 204 so far, by all threads.
    pub fn empty_polls(&self) -> u64 {
        self.shared.empty_polls.load(Ordering::SeqCst)
    }

    /// Stops the threads: they sit in long polls, so the server is killed to free them.
    pub fn stop(self, server: Server) -> RuntimeStats {
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(server);
        let mut total = RuntimeStats::default();
        for handle in self.handles {
            if let Ok(mut s) = handle.join() {
                total.jobs += s.jobs;
                total.empty_polls += s.empty_polls;
                total.errors += s.errors;
                total.completions.append(&mut s.completions);
            }
        }
        total
    }
}

fn runtime_loop(
    Runtimes { mode, record, .. }: Runtimes,
    kind: ClientKind,
    addr: SocketAddr,
    token: &str,
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

/// 1 MiB of pseudo-random bytes, made once.
pub fn noise() -> &'static [u8] {
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
pub fn payload_result(nonce: u64, out: &mut Vec<u8>) {
    let noise = noise();
    let off = (nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % MIB;
    out.clear();
    out.extend_from_slice(&noise[off..]);
    out.extend_from_slice(&noise[..off]);
    out[..8].copy_from_slice(&nonce.to_le_bytes());
}

/// A sync execute body whose query is exactly 1 MiB of JSON text:
/// `{"nonce":"<20 digits>","data":"<filler>"}`; returns the body and the nonce's offset.
pub fn payload_body() -> (Vec<u8>, usize) {
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

pub fn set_nonce(body: &mut [u8], at: usize, nonce: u64) {
    body[at..at + 20].copy_from_slice(format!("{nonce:020}").as_bytes());
}

/// A ~100-byte query, unique per (thread, sequence number).
pub fn small_query(thread: usize, seq: u64) -> String {
    let mut q = format!(r#"{{"thread":{thread},"seq":{seq},"pad":""#);
    while q.len() < 98 {
        q.push('x');
    }
    q.push_str("\"}");
    q
}

pub fn execute_body(query: &str) -> String {
    format!(r#"{{"deployedAppRid":"{APP_RID}","queryType":"echo","query":{query}}}"#)
}
