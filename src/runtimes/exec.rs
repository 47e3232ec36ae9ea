//! The `exec` built-in runtime's command: one child process per job, waited on without polling.
//!
//! The command runs in its own process group (so a kill reaches its children too), with the
//! query JSON on stdin and `FOUNDRY_JOB_ID`, `FOUNDRY_QUERY_TYPE` in its environment; stdout
//! becomes the result. A non-zero exit fails the job with the exit status and the tail of
//! stderr.
//!
//! **Threads:** one helper per job feeds stdin and drains stdout and stderr with poll(2), so
//! a command that writes a lot before reading (or never reads) cannot deadlock against us;
//! once both output pipes are closed it reaps the child and hands the outcome over. The
//! runtime thread meanwhile sleeps in [`JobTable::wait_terminal`] on the job itself, with the
//! helper's end as that wait's early wake-up ([`Ended`]), so one wait sees all three ends:
//! the command done, its deadline, and the job ended without it (cancel, restart, reset,
//! `--max-job-runtime`, shutdown: nobody can store its result, so the group is killed).
//! One deadline covers the exit *and* both pipes: a background child that keeps stdout open
//! does not stretch the job past its timeout.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::builtin::ExecSpec;
use crate::jobs::{Abandon, Dispatched, JobTable, WaitOutcome};
use crate::sys::{self, PollFd};

/// How much of stderr a failure message keeps.
const STDERR_TAIL: usize = 2048;

/// The largest result an exec command may write, as `--max-body` by default.
const MAX_STDOUT: usize = 64 * 1024 * 1024;

/// After a deadline kill, how long the runtime thread waits for the helper's stderr; the group
/// is dead, so its pipes close at once unless a child left the group (then the message has no
/// stderr).
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Runs the command for one job; `Ok(stdout)` on exit status 0, else the failure message.
///
/// # Blocking
/// In [`JobTable::wait_terminal`] on the job (no lock held meanwhile), until the helper
/// fires [`Ended`] (the command exited and closed its pipes), `spec.timeout` from entry
/// passes, or the job ends through `turn_terminal` (cancel, restart, reset, runtime limit,
/// shutdown). On the deadline and on the job's end the process group is killed (SIGKILL);
/// after a deadline kill the same wait runs once more, at most [`KILL_GRACE`], for the
/// helper's stderr. Every blocking wait is thus the table's one condvar wait.
pub(super) fn run(
    spec: &ExecSpec,
    job: &Dispatched,
    table: &Arc<JobTable>,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + spec.timeout;
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| "exec runtime has an empty command".to_string())?;
    // Registered before the command starts, so no end of the job can be missed.
    let watch = table
        .watch(&job.job_id)
        .map_err(|e| format!("exec runtime lost its job before starting the command: {e}"))?;
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
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches the command's children too.
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| format!("exec runtime could not start {:?}: {e}", spec.command))?;
    let pgid = child.id();

    let (output_tx, output) = crossbeam_channel::bounded(1);
    let ended = Arc::new(Ended::default());
    let helper = {
        let (ended, query) = (ended.clone(), job.query.clone());
        std::thread::Builder::new()
            .name("exec-helper".into())
            .spawn(move || {
                let _ = output_tx.send(collect(child, query.as_bytes()));
                ended.fire();
            })
    };
    if let Err(e) = helper {
        kill(pgid);
        return Err(format!(
            "exec runtime could not start a thread for its command: {e}"
        ));
    }

    match table.wait_terminal(&watch, deadline, &*ended) {
        // The helper sends before it fires: the outcome is there.
        WaitOutcome::Abandoned => match output.try_recv() {
            Ok(done) => judge(done),
            Err(_) => Err("exec runtime lost its command's outcome".to_string()),
        },
        WaitOutcome::TimedOut => {
            if let Ok(done) = output.try_recv() {
                return judge(done); // it ended just as the deadline passed
            }
            kill(pgid);
            // The same wait once more, for the helper's stderr: the group is dead, so its
            // pipes close at once (unless a child left the group); a shutdown still wakes it.
            let _ = table.wait_terminal(&watch, Instant::now() + KILL_GRACE, &*ended);
            let err = output
                .try_recv()
                .map(|done| done.stderr)
                .unwrap_or_default();
            Err(format!(
                "exec runtime command timed out after {}s and was killed{}",
                spec.timeout.as_secs_f64(),
                stderr_suffix(&err)
            ))
        }
        // `wait_terminal` (unlike `wait_answer`) never hands a stream over; were it to, the
        // job is being answered elsewhere, so the command has nothing left to do.
        WaitOutcome::Streaming(_) => {
            kill(pgid);
            Err("exec runtime's job is being answered by a streamed result".to_string())
        }
        WaitOutcome::Finished(view) => {
            kill(pgid);
            Err(format!(
                "exec runtime command was killed: its job ended ({})",
                view.state.as_str()
            ))
        }
    }
}

fn kill(pgid: u32) {
    if let Err(e) = sys::kill_group(pgid) {
        // ESRCH: the whole group had exited already.
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("exec runtime cannot kill process group {pgid}: {e}");
        }
    }
}

/// The early wake-up of the runtime thread's wait: fired by the helper when the command is
/// done. (The table's wait calls it "abandon": anything that ends a wait before its job.)
#[derive(Default)]
struct Ended(Mutex<EndedState>);

#[derive(Default)]
struct EndedState {
    fired: bool,
    waker: Option<Box<dyn FnOnce() + Send>>,
}

impl Ended {
    fn state(&self) -> std::sync::MutexGuard<'_, EndedState> {
        // A leaf lock; the code under it cannot panic, so a poisoned one is consistent.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks the command done and runs the waiting thread's waker, outside this lock.
    fn fire(&self) {
        let waker = {
            let mut state = self.state();
            state.fired = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker();
        }
    }
}

impl Abandon for Ended {
    fn is_abandoned(&self) -> bool {
        self.state().fired
    }

    fn on_abandon(&self, waker: Box<dyn FnOnce() + Send>) {
        let mut state = self.state();
        if state.fired {
            drop(state);
            waker();
        } else {
            state.waker = Some(waker);
        }
    }

    fn clear(&self) {
        self.state().waker = None;
    }
}

/// What the helper found: the exit status and what the command wrote.
struct Output {
    status: io::Result<ExitStatus>,
    stdout: Vec<u8>,
    /// stdout went past [`MAX_STDOUT`].
    overflow: bool,
    stderr: Vec<u8>,
}

/// The helper's work: feeds `query` to stdin and drains stdout and stderr, all with poll(2),
/// until both output pipes are closed; then reaps the child.
///
/// # Blocking
/// In poll(2) on the pipes and then in `wait()`, with no deadline of its own: the command's
/// end closes the pipes, and the runtime thread kills the group on the deadline or when the
/// job ends. stdin is closed once the query is written, when the command stops reading it
/// (EPIPE), or when both outputs have closed.
fn collect(mut child: Child, query: &[u8]) -> Output {
    let mut stdin = child.stdin.take();
    if let Some(Err(e)) = stdin.as_ref().map(sys::set_nonblocking) {
        log::warn!("exec runtime cannot feed its command's stdin: {e}");
        stdin = None;
    }
    let mut written = 0;
    let mut out = Drain::new(child.stdout.take(), Keep::Head(MAX_STDOUT));
    let mut err = Drain::new(child.stderr.take(), Keep::Tail(STDERR_TAIL));
    while out.fd().is_some() || err.fd().is_some() {
        if written == query.len() {
            stdin = None;
        }
        let want = [
            stdin.as_ref().map(|pipe| (pipe.as_raw_fd(), true)),
            out.fd().map(|fd| (fd, false)),
            err.fd().map(|fd| (fd, false)),
        ];
        let mut fds: Vec<PollFd> = want
            .iter()
            .flatten()
            .map(|&(fd, write)| PollFd {
                fd,
                write,
                ready: false,
            })
            .collect();
        if let Err(e) = sys::poll(&mut fds) {
            log::warn!("exec runtime cannot watch its command's pipes: {e}");
            break;
        }
        let ready =
            |fd: Option<RawFd>| fd.is_some_and(|fd| fds.iter().any(|p| p.fd == fd && p.ready));
        if ready(stdin.as_ref().map(AsRawFd::as_raw_fd)) {
            if let Some(pipe) = stdin.as_mut() {
                match pipe.write(&query[written..]) {
                    Ok(n) => written += n,
                    Err(e) if is_retry(&e) => {}
                    Err(_) => stdin = None, // the command stopped reading (EPIPE)
                }
            }
        }
        if ready(out.fd()) {
            out.read_some();
        }
        if ready(err.fd()) {
            err.read_some();
        }
    }
    drop(stdin);
    let status = child.wait();
    Output {
        status,
        stdout: out.kept,
        overflow: out.dropped,
        stderr: err.kept,
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// What a pipe reader keeps: the first or the last bytes, up to a limit.
#[derive(Clone, Copy)]
enum Keep {
    Head(usize),
    Tail(usize),
}

/// One output pipe being read, keeping at most its limit.
struct Drain<R> {
    pipe: Option<R>,
    keep: Keep,
    kept: Vec<u8>,
    dropped: bool,
}

impl<R: Read + AsRawFd> Drain<R> {
    fn new(pipe: Option<R>, keep: Keep) -> Drain<R> {
        Drain {
            pipe,
            keep,
            kept: Vec::new(),
            dropped: false,
        }
    }

    /// The descriptor while the pipe is open.
    fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// One read of a pipe poll(2) found ready (so it does not block); closes it at its end.
    fn read_some(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 8192];
        let n = match pipe.read(&mut chunk) {
            Ok(0) => return self.pipe = None,
            Ok(n) => n,
            Err(e) if is_retry(&e) => return,
            Err(_) => return self.pipe = None,
        };
        self.kept.extend_from_slice(&chunk[..n]);
        match self.keep {
            Keep::Head(limit) if self.kept.len() > limit => {
                self.kept.truncate(limit);
                self.dropped = true;
            }
            Keep::Tail(limit) if self.kept.len() > 2 * limit => {
                self.kept.drain(..self.kept.len() - limit);
                self.dropped = true;
            }
            _ => {}
        }
    }
}

/// The job's answer from a command that ended by itself.
fn judge(done: Output) -> Result<Vec<u8>, String> {
    let err = stderr_suffix(&done.stderr);
    match done.status {
        Ok(status) if status.success() && done.overflow => Err(format!(
            "exec runtime command wrote more than {MAX_STDOUT} bytes to stdout{err}"
        )),
        Ok(status) if status.success() => Ok(done.stdout),
        Ok(status) => Err(format!("exec runtime command {}{err}", describe(status))),
        Err(e) => Err(format!("exec runtime could not wait for its command: {e}")),
    }
}

/// `": <last stderr lines>"`, or nothing when the command wrote nothing to stderr.
fn stderr_suffix(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let err = String::from_utf8_lossy(&stderr[start..]).trim().to_string();
    if err.is_empty() {
        String::new()
    } else {
        format!(": {err}")
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_query_many_pipes_long_comes_back_whole_from_one_thread() {
        // 3 MiB through `cat`: stdin and stdout both fill their pipes many times over, so a
        // helper that wrote stdin to its end before reading stdout would deadlock.
        let query: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let done = collect(child("cat; echo done >&2"), &query);
        assert!(done.status.unwrap().success());
        assert!(done.stdout == query, "stdout differs from stdin");
        assert!(!done.overflow);
        assert_eq!(done.stderr, b"done\n");
    }

    #[test]
    fn a_command_that_never_reads_its_stdin_still_ends() {
        let query = vec![b'x'; 1 << 20];
        let done = collect(child("head -c 200000 /dev/zero; exit 3"), &query);
        assert_eq!(done.status.unwrap().code(), Some(3));
        assert_eq!(done.stdout.len(), 200_000);
    }

    #[test]
    fn ended_runs_a_waker_set_before_or_after_it_fires() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let before = Ended::default();
        let sender = tx.clone();
        before.on_abandon(Box::new(move || sender.send("before").unwrap()));
        assert!(!before.is_abandoned());
        before.fire();
        assert!(before.is_abandoned());
        let after = Ended::default();
        after.fire();
        after.on_abandon(Box::new(move || tx.send("after").unwrap()));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["before", "after"]);
    }
}
