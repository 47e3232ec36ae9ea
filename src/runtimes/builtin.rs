//! Built-in runtimes: compute modules that run inside the emulator as threads fed by the
//! runtime's crossbeam channel, with no HTTP on the way.
//!
//! - `echo` answers each job with its query, the JSON text exactly as the application sent it.
//! - `exec` runs a command per job (`runtimes::exec`): the query JSON on stdin,
//!   `FOUNDRY_JOB_ID` and `FOUNDRY_QUERY_TYPE` in the environment; stdout becomes the result.
//!   A non-zero exit, or running past the timeout (the whole process group is killed), fails
//!   the job with the exit status and the tail of stderr.
//!
//! A built-in runtime is an ordinary session: its jobs show in status and inspection. If its
//! id is reset over HTTP, its threads step aside (their token stops working) and the new
//! session owns the id.

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

/// How long a built-in thread blocks on its channel before re-checking for shutdown; the
/// channel is also closed at shutdown, so this only bounds a missed wake.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// Starts the threads of one built-in runtime whose session already exists with `token`.
pub fn spawn(
    table: Arc<JobTable>,
    runtime_id: &str,
    token: Secret,
    builtin: &Builtin,
) -> std::io::Result<Vec<RuntimeThread>> {
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

/// The join handle of one built-in runtime thread (not a Contour "job handle").
pub type RuntimeThread = JoinHandle<()>;

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
            #[cfg(unix)]
            Builtin::Exec(spec) => super::exec::run(spec, &job, &self.table),
            #[cfg(not(unix))]
            Builtin::Exec(_) => Err("the exec runtime needs a Unix host".to_string()),
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
