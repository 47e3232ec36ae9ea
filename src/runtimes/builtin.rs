//! Built-in runtimes: compute modules that run inside the emulator as threads fed by the
//! runtime's crossbeam channel, with no HTTP on the way.
//!
//! - `echo` answers each job with its query, the JSON text exactly as the application sent it.
//! - `exec` runs a command per job: the query JSON on stdin, `FOUNDRY_JOB_ID` and
//!   `FOUNDRY_QUERY_TYPE` in the environment; stdout becomes the result. A non-zero exit, or
//!   running past the timeout (the whole process group is killed), fails the job with the
//!   exit status and the tail of stderr.
//!
//! A built-in runtime is an ordinary session: its jobs show in status and inspection. If its
//! id is reset over HTTP, its threads step aside (their token stops working) and the new
//! session owns the id.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::auth::Secret;
use crate::jobs::{Dispatched, JobTable, NeverAbandon, Taker};

/// What a built-in runtime does with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    Echo,
    Exec(ExecSpec),
}

/// An `exec` runtime's command and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program and arguments (the CLI form is `["sh", "-c", COMMAND]`).
    pub command: Vec<String>,
    /// Jobs run at once. Default 1.
    pub concurrency: usize,
    /// A job still running after this is killed and fails. Default 30 s.
    pub timeout: Duration,
    /// Where the command runs (a seed file's directory, so relative paths in a seed resolve
    /// next to it); `None`: the emulator's working directory.
    pub dir: Option<std::path::PathBuf>,
}

impl ExecSpec {
    /// Jobs an `exec` runtime runs at once unless told (seed `concurrency`, `--exec-concurrency`).
    pub const DEFAULT_CONCURRENCY: usize = 1;
    /// How long a job's command may run unless told (seed `timeout_secs`, `--exec-timeout`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// How much of stderr a failure message keeps.
const STDERR_TAIL: usize = 2048;

/// How long a built-in thread blocks on its channel before re-checking for shutdown; the
/// channel is also closed at shutdown, so this only bounds a missed wake.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// Starts the threads of one built-in runtime whose session already exists with `token`.
pub fn spawn(
    table: Arc<JobTable>,
    runtime_id: &str,
    token: Secret,
    builtin: &Builtin,
) -> std::io::Result<Vec<JobHandle>> {
    let threads = match builtin {
        Builtin::Echo => 1,
        Builtin::Exec(spec) => spec.concurrency.max(1),
    };
    (0..threads)
        .map(|n| {
            let worker = Worker {
                table: table.clone(),
                runtime_id: runtime_id.to_string(),
                token: token.clone(),
                builtin: builtin.clone(),
            };
            std::thread::Builder::new()
                .name(format!("builtin-{runtime_id}-{n}"))
                .spawn(move || worker.run())
        })
        .collect()
}

/// A built-in runtime thread's handle.
pub type JobHandle = JoinHandle<()>;

struct Worker {
    table: Arc<JobTable>,
    runtime_id: String,
    token: Secret,
    builtin: Builtin,
}

impl Worker {
    fn run(self) {
        loop {
            let deadline = Instant::now() + IDLE_RECHECK;
            let next = self.table.next_job(
                &self.runtime_id,
                Some(self.token.expose()),
                deadline,
                Taker::Builtin,
                &NeverAbandon,
            );
            match next {
                Ok(Some(job)) => self.answer(job),
                Ok(None) if self.table.is_shutting_down() => return,
                Ok(None) => continue,
                Err(_) => {
                    log::info!(
                        "built-in runtime '{}' was reset; its thread stops",
                        self.runtime_id
                    );
                    return;
                }
            }
        }
    }

    fn answer(&self, job: Dispatched) {
        let outcome = match &self.builtin {
            Builtin::Echo => Ok(job.query.as_bytes().to_vec()),
            Builtin::Exec(spec) => run_exec(spec, &job, &self.table),
        };
        let token = Some(self.token.expose());
        let posted = match outcome {
            Ok(bytes) => self
                .table
                .complete(&self.runtime_id, token, &job.job_id, bytes, None),
            Err(message) => self
                .table
                .fail(&self.runtime_id, token, &job.job_id, message),
        };
        if let Err(e) = posted {
            // The job was ended meanwhile (reset, restart, shutdown): nothing left to do.
            log::debug!(
                "built-in runtime '{}': job {} not stored: {e}",
                self.runtime_id,
                job.job_id
            );
        }
    }
}

/// Runs the command for one job; `Ok(stdout)` on exit status 0, else the failure message.
fn run_exec(spec: &ExecSpec, job: &Dispatched, table: &JobTable) -> Result<Vec<u8>, String> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| "exec runtime has an empty command".to_string())?;
    let mut command = Command::new(program);
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    command
        .args(args)
        .env("FOUNDRY_JOB_ID", job.job_id.to_string())
        .env("FOUNDRY_QUERY_TYPE", &*job.query_type)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a timeout kills the command's children too.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("exec runtime could not start {:?}: {e}", spec.command))?;
    let pid = child.id();

    // Feed stdin and drain the pipes on their own threads, so a command that writes a lot
    // before reading (or never reads) cannot deadlock against us.
    let stdin = child.stdin.take();
    let query = job.query.clone();
    std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(query.as_bytes());
        }
    });
    let stdout = drain(child.stdout.take(), Keep::Head(MAX_STDOUT));
    let stderr = drain(child.stderr.take(), Keep::Tail(STDERR_TAIL));
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });

    // One deadline for the exit *and* both pipes: a background grandchild that keeps stdout
    // open must not stretch the job past its timeout.
    let deadline = Instant::now() + spec.timeout;
    let finished = (|| {
        let status = recv_until(&done, deadline, table)?;
        let out = recv_until(&stdout, deadline, table)?;
        let err = recv_until(&stderr, deadline, table)?;
        Some((status, out, err))
    })();
    let Some((status, (out, out_overflow), (err, _))) = finished else {
        kill_group(pid);
        // The group is dead, so the pipes close; bounded in case `kill` is missing here.
        let grace = Instant::now() + Duration::from_secs(10);
        let err = recv_until(&stderr, grace, table)
            .map(|(err, _)| err)
            .unwrap_or_default();
        return Err(format!(
            "exec runtime command timed out after {}s and was killed{}",
            spec.timeout.as_secs_f64(),
            stderr_suffix(&err)
        ));
    };
    let err = stderr_suffix(&err);
    match status {
        Ok(status) if status.success() && out_overflow => Err(format!(
            "exec runtime command wrote more than {MAX_STDOUT} bytes to stdout{err}"
        )),
        Ok(status) if status.success() => Ok(out),
        Ok(status) => Err(format!("exec runtime command {}{err}", describe(status))),
        Err(e) => Err(format!("exec runtime could not wait for its command: {e}")),
    }
}

/// The largest result an exec command may write, as `--max-body` by default.
const MAX_STDOUT: usize = 64 * 1024 * 1024;

/// Receives before `deadline`; `None` on the deadline, on shutdown, or if the sender died.
fn recv_until<T>(
    rx: &crossbeam_channel::Receiver<T>,
    deadline: Instant,
    table: &JobTable,
) -> Option<T> {
    loop {
        // Short steps, to notice shutdown; the deadline itself is exact.
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        match rx.recv_timeout(step) {
            Ok(value) => return Some(value),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline || table.is_shutting_down() {
                    return None;
                }
            }
        }
    }
}

/// What a pipe reader keeps: the first or the last bytes, up to a limit.
#[derive(Clone, Copy)]
enum Keep {
    Head(usize),
    Tail(usize),
}

/// Reads a pipe to its end on its own thread (so the command never blocks on a full pipe),
/// keeping at most the limit; sends (bytes, whether any were dropped).
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    keep: Keep,
) -> crossbeam_channel::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let (mut kept, mut dropped) = (Vec::new(), false);
        let mut chunk = [0u8; 8192];
        if let Some(mut pipe) = pipe {
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                kept.extend_from_slice(&chunk[..n]);
                match keep {
                    Keep::Head(limit) if kept.len() > limit => {
                        kept.truncate(limit);
                        dropped = true;
                    }
                    Keep::Tail(limit) if kept.len() > 2 * limit => {
                        kept.drain(..kept.len() - limit);
                        dropped = true;
                    }
                    _ => {}
                }
            }
        }
        let _ = tx.send((kept, dropped));
    });
    rx
}

/// `": <last stderr lines>"`, or nothing when the command wrote nothing to stderr.
fn stderr_suffix(stderr: &[u8]) -> String {
    let err = tail(stderr);
    if err.is_empty() {
        String::new()
    } else {
        format!(": {err}")
    }
}

fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_string()
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".to_string(),
    }
}

/// Kills the command's whole process group (std alone can only kill the direct child).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
