//! Jobs: their identity, lifecycle and record, plus the [`JobTable`] that owns them.
//!
//! **Boundary:** this module knows nothing of HTTP or of the wire format; the API layer
//! converts [`JobView`] into JSON by hand in `api::wire`.

mod delays;
pub mod faults;
mod inspect;
mod lifecycle;
mod retention;
mod sessions;
pub mod stream;
mod table;
mod waits;

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use inspect::{Counts, JobFilter, JobPage, RuntimeView, Totals, LIST_SCAN_MAX};
pub use lifecycle::{
    canceled_message, stream_broke_message, Dispatched, EnqueueRequest, Taken, Taker, Target,
};
pub use sessions::{Session, SessionSpec, RESET_MESSAGE, RESTART_MESSAGE};
pub use table::{JobTable, Limits, ResetCounts, EMULATOR_RESET_MESSAGE, SHUTDOWN_MESSAGE};
pub use waits::{Abandon, NeverAbandon, WaitOutcome, Watch};

/// A job id, `foundry_job_<32 hex>`.
///
/// Ids the emulator mints are kept as their 16 bytes and formatted on output: no allocation
/// per job. The first 8 bytes are random; the last 8 are the job's submission number (`seq`)
/// masked with a random key of its table ([`JobId::mint`]), so the table finds a job by id
/// through its seq-ordered map alone, with no second index, and ids never repeat. The mask
/// only keeps ids from looking like a counter; it is no secret (whoever sees two ids can
/// tell how many jobs lie between them), and ids are no credential: every route checks the
/// caller's token. An id a client sends that is not of that form is kept as text;
/// it can only ever be "not found".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Minted([u8; 16]),
    Other(Arc<str>),
}

const JOB_PREFIX: &str = "foundry_job_";

impl JobId {
    /// The id of the job numbered `seq` in a table whose id key is `key`; `random` gives the
    /// first 8 bytes (drawn before the table lock is taken: it may refill the id pool).
    pub(crate) fn mint(random: [u8; 16], seq: u64, key: u64) -> JobId {
        let mut bytes = random;
        bytes[8..].copy_from_slice(&(seq ^ key).to_be_bytes());
        JobId(Repr::Minted(bytes))
    }

    /// The submission number this id names in a table with id key `key`, if it is an id of
    /// the emulator's form; the table still checks that the job under it has this very id.
    pub(crate) fn seq(&self, key: u64) -> Option<u64> {
        match &self.0 {
            Repr::Minted(bytes) => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&bytes[8..]);
                Some(u64::from_be_bytes(low) ^ key)
            }
            Repr::Other(_) => None,
        }
    }

    /// Reads an id received from a client; it may name no job at all.
    pub fn from_client(id: &str) -> JobId {
        match id
            .strip_prefix(JOB_PREFIX)
            .and_then(crate::ids::parse_hex16)
        {
            Some(bytes) => JobId(Repr::Minted(bytes)),
            None => JobId(Repr::Other(Arc::from(id))),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Minted(bytes) => {
                f.write_str(JOB_PREFIX)?;
                crate::ids::write_hex(f, bytes)
            }
            Repr::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// How a job entered the emulator; shown in job inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSource {
    /// `POST .../compute-modules/jobs/execute`.
    ContourSync,
    /// `POST .../deployed-apps/jobs`.
    ContourAsync,
    /// Enqueued through the library API (`Running::enqueue_direct`), not through Contour.
    RuntimeDirect,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::ContourSync => "contour-sync",
            JobSource::ContourAsync => "contour-async",
            JobSource::RuntimeDirect => "runtime-direct",
        }
    }
}

/// The lifecycle: `Queued → Running → Succeeded | Failed` (a queued job may also fail directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

/// The failure message SPEC.md gives when nothing more specific is known.
pub const DEFAULT_FAILURE: &str = "Compute module job failed.";

/// A snapshot of one job, copied out of the table so no lock is held while it is used.
///
/// Large fields are `Arc`s, so taking a snapshot never copies a query or a result. The table
/// keeps up to 100,000 finished jobs (`--max-retained-jobs`), so the record is kept small (a
/// unit test holds its size): the strings every job of a route repeats are one shared
/// [`JobLabels`], timestamps use their zero niche, and what few jobs have sits in a box
/// ([`JobNotes`]). Read those through the accessor methods.
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: JobId,
    /// Submission order (1, 2, …): the listing's order and cursor.
    pub seq: u64,
    /// Interned: jobs of one runtime, app, branch, query type and result content type
    /// share one.
    pub(crate) labels: Arc<JobLabels>,
    /// The query as JSON text, exactly as the application sent it.
    pub query: Arc<str>,
    pub source: JobSource,
    pub state: JobState,
    /// Epoch milliseconds.
    pub submitted_at: u64,
    /// Epoch milliseconds (never 0, so `None` costs nothing).
    pub(crate) dispatched: Option<NonZeroU64>,
    pub(crate) finished: Option<NonZeroU64>,
    pub result: Option<Arc<[u8]>>,
    /// `None` for most jobs: a succeeded job without a fault or a preview.
    pub(crate) notes: Option<Box<JobNotes>>,
}

/// Where a job went, what it asked and what its result's type was: the same few strings for
/// every job of a route and query type, so the table shares one copy between them (interned,
/// bounded; a job's labels are replaced when its result arrives).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobLabels {
    pub runtime_id: Arc<str>,
    /// `None` for a runtime-direct job.
    pub deployed_app_rid: Option<Arc<str>>,
    pub branch: Option<Arc<str>>,
    pub query_type: Arc<str>,
    /// The `Content-Type` the runtime posted its result with, if it gave one.
    pub result_content_type: Option<Arc<str>>,
}

/// What only some jobs carry, boxed apart from the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobNotes {
    /// Set when the job failed.
    pub(crate) error_message: Option<Box<str>>,
    /// Which fault rule hit this job and what it did, if one did.
    pub(crate) fault: Option<Arc<str>>,
    /// Set when an application canceled the job (it is then `failed`).
    pub(crate) canceled: Option<Cancellation>,
    /// `Some(size)` once a sync execute delivered the result: `result` then keeps only its
    /// first [`RESULT_PREVIEW`] bytes, for inspection, of a result of `size` bytes.
    pub(crate) result_preview_of: Option<NonZeroU64>,
}

impl JobView {
    pub fn runtime_id(&self) -> &str {
        &self.labels.runtime_id
    }

    /// `None` for a runtime-direct job.
    pub fn deployed_app_rid(&self) -> Option<&str> {
        self.labels.deployed_app_rid.as_deref()
    }

    pub fn branch(&self) -> Option<&str> {
        self.labels.branch.as_deref()
    }

    pub fn query_type(&self) -> &str {
        &self.labels.query_type
    }

    /// The `Content-Type` the runtime posted the result with, if it gave one.
    pub fn result_content_type(&self) -> Option<&str> {
        self.labels.result_content_type.as_deref()
    }

    /// When a runtime took it (epoch milliseconds).
    pub fn dispatched_at(&self) -> Option<u64> {
        self.dispatched.map(NonZeroU64::get)
    }

    /// When it turned terminal (epoch milliseconds).
    pub fn finished_at(&self) -> Option<u64> {
        self.finished.map(NonZeroU64::get)
    }

    /// Why it failed; `None` unless it is `failed`.
    pub fn error_message(&self) -> Option<&str> {
        self.notes.as_ref()?.error_message.as_deref()
    }

    /// Which fault rule hit this job and what it did, if one did.
    pub fn fault(&self) -> Option<&str> {
        self.notes.as_ref()?.fault.as_deref()
    }

    /// Who canceled it, if an application did (it is then `failed`).
    pub fn canceled(&self) -> Option<Cancellation> {
        self.notes.as_ref()?.canceled
    }

    /// `Some(size)` once a sync execute delivered the result: [`JobView::result`] then holds
    /// only its first [`RESULT_PREVIEW`] bytes of a result of `size` bytes.
    pub fn result_preview_of(&self) -> Option<u64> {
        self.notes.as_ref()?.result_preview_of.map(NonZeroU64::get)
    }

    /// The result's full size, whether the job keeps all of it or a preview.
    pub fn result_size(&self) -> Option<u64> {
        self.result_preview_of()
            .or(self.result.as_ref().map(|r| r.len() as u64))
    }

    /// The notes, created empty if the job had none (the table sets them).
    pub(crate) fn notes_mut(&mut self) -> &mut JobNotes {
        self.notes.get_or_insert_with(Box::default)
    }
}

/// Who canceled a job, and what it was doing then; shown in inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    /// What asked for it, as the API names it (the route; never a credential).
    pub by: &'static str,
    /// The state the job was in: `Queued` or `Running`.
    pub was: JobState,
}

/// How much of a result a job keeps once a sync execute delivered it.
pub const RESULT_PREVIEW: usize = 4096;

/// Now as a job's timestamp: never 0 (a clock before 1970 reads as 1 ms after it).
pub(crate) fn stamp_now() -> NonZeroU64 {
    NonZeroU64::new(now_millis()).unwrap_or(NonZeroU64::MIN)
}

/// Milliseconds since the Unix epoch, the unit of every timestamp the API shows.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
