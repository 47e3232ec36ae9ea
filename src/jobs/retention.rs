//! What the table keeps and for how long: the ledger of finished and running jobs, eviction
//! (count, the byte budget, `--job-ttl`), the janitor's sweep (which also fails jobs past
//! `--max-job-runtime`), the memory of expired ids for their 404, and the interning of the
//! short strings every job repeats (query and content types, and each job's labels).
//!
//! **Invariant:** `sweep` and `keep_preview` take the table lock once each; `evict`, `missing`
//! and `intern` run under their caller's hold. `Ledger::finished` holds the terminal jobs in
//! the order they finished (`finish_marks` their finish times, run-length coded; its counts
//! add up to `finished`'s length) and `Ledger::running` the running jobs by deadline, so
//! expiry never scans the table; `finished_bytes` counts the query and result bytes of the
//! jobs in `finished`, `open_bytes` the query bytes of the queued and running ones. All of it
//! changes only under the table lock, and agrees with the job map whenever the lock is
//! released. Every
//! bound here is a count (`REMEMBERED_EXPIRED`, `MAX_NAMES`), and interned strings are short
//! (`MAX_NAME_BYTES`), so no client can grow these sets without limit.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::jobs::inspect::Counts;
use crate::jobs::lifecycle::turn_terminal;
use crate::jobs::table::{Inner, Limits};
use crate::jobs::{JobId, JobLabels, JobState, JobTable, JobView, RESULT_PREVIEW};

/// Distinct interned values of each kind (names, label sets).
const MAX_NAMES: usize = 4096;

/// The longest string interned: a longer one is not a name, and would outlive its job in the
/// set.
const MAX_NAME_BYTES: usize = 128;

/// How many evicted ids are remembered so their 404 can say "expired".
const REMEMBERED_EXPIRED: usize = 10_000;

/// Jobs that finish within this span of each other share one finish time in the ledger
/// (the last of theirs), so the ledger makes `--job-ttl` evict a job at most this late, never
/// early (the janitor's once-a-second sweep adds up to another second).
const FINISH_MARK_SPAN: Duration = Duration::from_secs(1);

/// Jobs ordered for the two time limits; both are kept so expiry never scans the table.
#[derive(Default)]
pub(super) struct Ledger {
    /// Terminal jobs (by seq) in the order they finished: eviction pops the front, O(1).
    pub(super) finished: VecDeque<u64>,
    /// When the jobs of `finished` finished, run-length coded front to back (see
    /// [`FinishMark`]): 8 bytes per retained job instead of 24 with a time each.
    pub(super) finish_marks: VecDeque<FinishMark>,
    /// Running jobs (by seq) by runtime deadline; `turn_terminal` removes its entry
    /// (O(log n)), so only jobs still running are here.
    pub(super) running: BTreeSet<(Instant, u64)>,
    /// Query and result bytes of the jobs in `finished`.
    pub(super) finished_bytes: u64,
    /// Query bytes of the queued and running jobs.
    pub(super) open_bytes: u64,
    pub(super) counts: Counts,
    /// Where finished jobs are reported (the `--journal` writer); sends never block.
    pub(super) journal: Option<crossbeam_channel::Sender<Box<JobView>>>,
}

/// The next `count` jobs of `Ledger::finished` finished from `opened` to `last`, a span of
/// at most [`FINISH_MARK_SPAN`].
pub(super) struct FinishMark {
    opened: Instant,
    last: Instant,
    count: usize,
}

impl Ledger {
    /// What the jobs hold against `max_retained_bytes`.
    pub(super) fn held_bytes(&self) -> u64 {
        self.finished_bytes + self.open_bytes
    }

    /// How many terminal jobs are retained.
    pub(super) fn finished_len(&self) -> usize {
        self.finished.len()
    }

    /// Job `seq` turned terminal at `now` (later than every job before it).
    pub(super) fn push_finished(&mut self, seq: u64, now: Instant) {
        self.finished.push_back(seq);
        match self.finish_marks.back_mut() {
            Some(mark) if now.saturating_duration_since(mark.opened) < FINISH_MARK_SPAN => {
                mark.last = mark.last.max(now);
                mark.count += 1;
            }
            _ => self.finish_marks.push_back(FinishMark {
                opened: now,
                last: now,
                count: 1,
            }),
        }
    }

    /// When the oldest retained job finished, or a little later (at most
    /// [`FINISH_MARK_SPAN`]); `None` if none is retained.
    fn oldest_finish(&self) -> Option<Instant> {
        self.finish_marks.front().map(|mark| mark.last)
    }

    /// Takes the oldest retained job's seq off the ledger.
    fn pop_finished(&mut self) -> Option<u64> {
        let seq = self.finished.pop_front()?;
        if let Some(mark) = self.finish_marks.front_mut() {
            mark.count -= 1;
            if mark.count == 0 {
                self.finish_marks.pop_front();
            }
        }
        Some(seq)
    }
}

impl JobTable {
    /// Fails running jobs past `max_job_runtime` and evicts terminal jobs past the retention
    /// limits. Called about once a second by the janitor thread, so expiry happens even when
    /// no request arrives; costs O(1) per expired job.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        while let Some(&(deadline, seq)) = inner.ledger.running.first() {
            if deadline > now {
                break;
            }
            match inner.jobs.by_seq_mut(seq) {
                Some(job) => {
                    let message = format!(
                        "the compute module posted no result within {}s (--max-job-runtime)",
                        self.limits.max_job_runtime.as_secs_f64()
                    );
                    // Removes the entry from `running`.
                    turn_terminal(
                        job,
                        JobState::Failed,
                        Some(message),
                        &mut inner.ledger,
                        &mut inner.registry,
                    );
                }
                None => {
                    inner.ledger.running.remove(&(deadline, seq));
                }
            }
        }
        inner.evict(&self.limits, now);
    }

    /// A sync execute answered with the result of job `id`: the job keeps only its first
    /// [`RESULT_PREVIEW`] bytes (for inspection). No one else can ask for the bytes (the
    /// execute never told its caller the id), so a full copy would only hold memory until
    /// eviction.
    pub fn keep_preview(&self, id: &JobId) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get_mut(id) else {
            return;
        };
        let Some(result) = &job.view.result else {
            return;
        };
        if job.view.result_preview_of().is_some() || result.len() <= RESULT_PREVIEW {
            return;
        }
        let full = result.len();
        job.view.result = Some(Arc::from(&result[..RESULT_PREVIEW]));
        job.view.notes_mut().result_preview_of = std::num::NonZeroU64::new(full as u64);
        inner.ledger.finished_bytes -= (full - RESULT_PREVIEW) as u64;
    }
}

impl Inner {
    /// Drops terminal jobs beyond `max_retained_jobs`, past the byte budget, or older than
    /// `job_ttl`, oldest first. The byte budget never evicts the newest finished job: its
    /// result (at most the whole budget, see `complete`) stays readable until another ends.
    pub(super) fn evict(&mut self, limits: &Limits, now: Instant) {
        while let Some(finished_at) = self.ledger.oldest_finish() {
            let retained = self.ledger.finished_len();
            let over_bytes = self.ledger.held_bytes() > limits.max_retained_bytes && retained > 1;
            let over = retained > limits.max_retained_jobs || over_bytes;
            let expired = finished_at
                .checked_add(limits.job_ttl)
                .is_some_and(|end| end <= now);
            if !over && !expired {
                break;
            }
            let Some(seq) = self.ledger.pop_finished() else {
                break;
            };
            let Some(job) = self.jobs.remove(seq) else {
                continue;
            };
            self.ledger.finished_bytes -= retained_bytes(&job.view);
            self.ledger.counts.evicted += 1;
            if self.expired.len() >= REMEMBERED_EXPIRED {
                if let Some(old) = self.expired.pop_front() {
                    self.expired_set.remove(&old);
                }
            }
            let id = job.view.id.clone();
            self.expired_set.insert(id.clone());
            self.expired.push_back(id);
        }
    }

    /// The 404 for a job id not in the table.
    pub(super) fn missing(&self, id: &JobId) -> Error {
        if self.expired_set.contains(id) {
            Error::NotFound(format!(
                "Compute-module job '{id}' expired: finished jobs are kept for --job-ttl, up to --max-retained-jobs."
            ))
        } else {
            Error::job_not_found(&id.to_string())
        }
    }

    /// A shared copy of a short string that many jobs repeat (query types, content types),
    /// so 100,000 retained jobs do not hold 100,000 copies. A long one, or one past
    /// [`MAX_NAMES`] distinct values, is a fresh copy instead.
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.find(name) {
            return shared;
        }
        let fresh: Arc<str> = Arc::from(name);
        self.names.offer(&fresh, is_name(name));
        fresh
    }
}

/// The copy of a job's labels in `shared` (`Inner::labels`), as [`Inner::intern`] does for
/// names: a set with a long string in it is the job's own. A function of the set alone, so
/// it can run while a job of the table is borrowed.
pub(super) fn share_labels(shared: &mut Interner<JobLabels>, labels: JobLabels) -> Arc<JobLabels> {
    if let Some(found) = shared.find(&labels) {
        return found;
    }
    let optional = |s: &Option<Arc<str>>| s.as_deref().is_none_or(is_name);
    let keep = is_name(&labels.runtime_id)
        && is_name(&labels.query_type)
        && optional(&labels.deployed_app_rid)
        && optional(&labels.branch)
        && optional(&labels.result_content_type);
    let fresh = Arc::new(labels);
    shared.offer(&fresh, keep);
    fresh
}

/// Whether `s` is short enough to be interned ([`MAX_NAME_BYTES`]).
fn is_name(s: &str) -> bool {
    s.len() <= MAX_NAME_BYTES
}

/// Shared copies of values that many jobs repeat: at most [`MAX_NAMES`] of them, each made
/// of strings of at most [`MAX_NAME_BYTES`], so what it holds is bounded in bytes too.
pub(super) struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>>,
    /// Values turned away for want of room since the set last shed its dead copies.
    turned_away: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            set: HashSet::new(),
            turned_away: 0,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    pub(super) fn find(&self, value: &T) -> Option<Arc<T>> {
        self.set.get(value).cloned()
    }

    /// Keeps `fresh` for the values equal to it that come later, if `keep` and there is room.
    pub(super) fn offer(&mut self, fresh: &Arc<T>, keep: bool) {
        if keep && self.has_room() {
            self.set.insert(fresh.clone());
        }
    }

    /// Whether one more copy fits. A full set sheds the copies that nothing else holds any
    /// more (no job, no interned label set: their jobs were evicted or reset; a name held by
    /// a dead label set goes a sweep later), but only once per [`MAX_NAMES`] values turned
    /// away: a table whose 4096 distinct values are all in use does not sweep on every job.
    fn has_room(&mut self) -> bool {
        if self.set.len() < MAX_NAMES {
            return true;
        }
        self.turned_away += 1;
        if self.turned_away < MAX_NAMES {
            return false;
        }
        self.turned_away = 0;
        self.set.retain(|shared| Arc::strong_count(shared) > 1);
        self.set.len() < MAX_NAMES
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}

/// What a finished job costs against `max_retained_bytes`.
pub(super) fn retained_bytes(view: &JobView) -> u64 {
    (view.query.len() + view.result.as_ref().map_or(0, |r| r.len())) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_interner_sheds_the_copies_no_job_holds_only_now_and_then() {
        let mut names: Interner<str> = Interner::default();
        let offer = |names: &mut Interner<str>, name: String| {
            let fresh: Arc<str> = Arc::from(name);
            names.offer(&fresh, true);
            fresh
        };
        let held: Vec<Arc<str>> = (0..MAX_NAMES)
            .map(|n| offer(&mut names, format!("held{n}")))
            .collect();
        // A kept copy is the one handed to every later equal value.
        assert!(Arc::ptr_eq(&names.find("held7").unwrap(), &held[7]));
        // Full of copies in use: newcomers are turned away, and the sweeps free nothing.
        for n in 0..2 * MAX_NAMES {
            let turned_away = offer(&mut names, format!("away{n}"));
            assert!(names.find(&turned_away).is_none());
        }
        assert_eq!(names.len(), MAX_NAMES);
        // Their jobs gone, the held copies are shed at the next sweep: MAX_NAMES values on.
        drop(held);
        for n in 0..MAX_NAMES - 1 {
            offer(&mut names, format!("later{n}"));
        }
        assert_eq!(names.len(), MAX_NAMES);
        let kept = offer(&mut names, "last".to_string());
        assert_eq!(names.len(), 1);
        assert!(names.find(&kept).is_some());
    }

    #[test]
    fn finish_marks_never_date_a_job_earlier_than_it_finished() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut ledger = Ledger::default();
        for (seq, ms) in [(1, 0), (2, 500), (3, 1200), (4, 2199), (5, 2200)] {
            ledger.push_finished(seq, at(ms));
        }
        // Marks open at 0, 1200 and 2200 ms: each holds the last finish within its span.
        let marks: Vec<_> = ledger.finish_marks.iter().map(|m| m.count).collect();
        assert_eq!(marks, [2, 2, 1]);
        let mut popped = Vec::new();
        while let Some(oldest) = ledger.oldest_finish() {
            popped.push((oldest, ledger.pop_finished().unwrap()));
        }
        assert_eq!(
            popped,
            [
                (at(500), 1),
                (at(500), 2),
                (at(2199), 3),
                (at(2199), 4),
                (at(2200), 5)
            ]
        );
        assert_eq!(ledger.finished_len(), 0);
        assert!(ledger.pop_finished().is_none());
    }
}
