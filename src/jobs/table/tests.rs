//! Unit tests of the job table: lifecycle, retention and the byte budget, waits, faults.
//!
//! About 650 lines: one test per behaviour of the table's concerns (one file each in
//! `src/jobs/`), all through the same few helpers (`table`, `enqueue`, `take`, `run_one`),
//! which is why they stay together rather than beside each concern's file.

use super::*;
use crate::error::Error;
use crate::jobs::stream::StreamReader;
use crate::jobs::*;
use serde_json::Value;

fn table(limits: Limits) -> (JobTable, String) {
    let table = JobTable::new(limits);
    let session = table.create_runtime(SessionSpec {
        runtime_id: "rt".into(),
        ..SessionSpec::default()
    });
    (table, session.token.expose().to_string())
}

fn request() -> EnqueueRequest {
    EnqueueRequest {
        target: Target::Runtime("rt".into()),
        query_type: "q".into(),
        query: "{}".into(),
        source: JobSource::RuntimeDirect,
        auth_header: None,
    }
}

fn enqueue(table: &JobTable) -> Result<JobId, Error> {
    table.enqueue(request())
}

/// Enqueues, claims and completes one job.
/// What a module's poll does: take the oldest job and have its envelope delivered.
fn take(table: &JobTable, token: &str) -> Dispatched {
    let job = table.try_take("rt", Some(token)).unwrap().job.unwrap();
    table.delivered(&job.job_id, true);
    job
}

fn run_one(table: &JobTable, token: &str) -> JobId {
    let id = enqueue(table).unwrap();
    let job = take(table, token);
    assert_eq!(job.job_id, id);
    table
        .complete("rt", Some(token), &id, b"ok".to_vec(), None)
        .unwrap();
    id
}

#[test]
fn oldest_finished_jobs_are_evicted_first_and_say_expired() {
    let (table, token) = table(Limits {
        max_retained_jobs: 2,
        ..Limits::default()
    });
    let ids: Vec<JobId> = (0..4).map(|_| run_one(&table, &token)).collect();
    for old in &ids[..2] {
        let err = table.job(old).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }
    for kept in &ids[2..] {
        assert_eq!(table.job(kept).unwrap().state, JobState::Succeeded);
    }
    let never = JobId::from_client("foundry_job_never");
    assert_eq!(
        table.job(&never).unwrap_err(),
        Error::job_not_found("foundry_job_never")
    );
}

#[test]
fn the_byte_budget_evicts_the_oldest_finished_jobs() {
    let (table, token) = table(Limits {
        max_retained_bytes: 10,
        ..Limits::default()
    });
    // Each job holds its query "{}" and its result "ok", 4 bytes: two fit in 10, three do not.
    let ids: Vec<JobId> = (0..3).map(|_| run_one(&table, &token)).collect();
    assert!(table.job(&ids[0]).is_err());
    assert!(table.job(&ids[1]).is_ok());
    assert!(table.job(&ids[2]).is_ok());
    assert_eq!(table.lock().ledger.finished_bytes, 4 + 4);
}

#[test]
fn queued_queries_count_against_the_byte_budget() {
    let (table, token) = table(Limits {
        max_retained_bytes: 10,
        ..Limits::default()
    });
    // Finished jobs (4 bytes each) make room for new queries: they are evicted, not the
    // submits, except the newest finished one, whose result stays readable.
    let older = run_one(&table, &token);
    let newest = run_one(&table, &token);
    let queued: Vec<JobId> = (0..5).map(|_| enqueue(&table).unwrap()).collect();
    assert!(table.job(&older).is_err(), "evicted to make room");
    assert!(
        table.job(&newest).is_ok(),
        "the newest finished job is kept"
    );
    // Five queued "{}" queries hold all 10 bytes: the sixth is refused, nothing is lost.
    let refused = enqueue(&table).unwrap_err();
    assert_eq!(refused.code(), "overloaded");
    assert!(
        refused.to_string().contains("--max-retained-bytes"),
        "{refused}"
    );
    assert_eq!(table.lock().ledger.open_bytes, 10);
    for id in &queued {
        assert_eq!(table.job(id).unwrap().state, JobState::Queued);
    }
    // Finishing one frees its query's bytes (its result then counts while it is kept).
    let first = take(&table, &token);
    table
        .complete("rt", Some(&token), &first.job_id, Vec::new(), None)
        .unwrap();
    assert_eq!(table.lock().ledger.open_bytes, 8);
    assert!(enqueue(&table).is_ok());
}

#[test]
fn a_result_larger_than_the_budget_is_refused_and_fails_the_job() {
    let (table, token) = table(Limits {
        max_retained_bytes: 10,
        ..Limits::default()
    });
    let id = enqueue(&table).unwrap();
    take(&table, &token);
    let err = table
        .complete("rt", Some(&token), &id, vec![b'x'; 11], None)
        .unwrap_err();
    assert_eq!(err.status(), 413);
    let job = table.job(&id).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job
        .error_message()
        .unwrap()
        .contains("--max-retained-bytes"));
    // Exactly the budget is kept, and readable: the newest finished job is never
    // evicted by bytes, even with its query on top.
    let id = enqueue(&table).unwrap();
    take(&table, &token);
    table
        .complete("rt", Some(&token), &id, vec![b'y'; 10], None)
        .unwrap();
    assert_eq!(table.job(&id).unwrap().result.unwrap().len(), 10);
}

#[test]
fn a_preview_keeps_the_first_bytes_and_gives_back_the_rest_of_the_budget() {
    let (table, token) = table(Limits::default());
    let id = enqueue(&table).unwrap();
    take(&table, &token);
    let result: Vec<u8> = (0..RESULT_PREVIEW * 3).map(|n| n as u8).collect();
    table
        .complete("rt", Some(&token), &id, result.clone(), None)
        .unwrap();
    assert_eq!(table.lock().ledger.finished_bytes, 2 + result.len() as u64);
    table.keep_preview(&id);
    table.keep_preview(&id);
    let job = table.job(&id).unwrap();
    assert_eq!(&job.result.as_ref().unwrap()[..], &result[..RESULT_PREVIEW]);
    assert_eq!(job.result_preview_of(), Some(result.len() as u64));
    assert_eq!(
        table.lock().ledger.finished_bytes,
        2 + RESULT_PREVIEW as u64
    );
}

#[test]
fn queued_and_running_jobs_are_never_evicted() {
    let (table, token) = table(Limits {
        max_retained_jobs: 0,
        job_ttl: Duration::ZERO,
        ..Limits::default()
    });
    let running = enqueue(&table).unwrap();
    take(&table, &token);
    let finished = run_one(&table, &token);
    let queued = enqueue(&table).unwrap();
    table.sweep();
    assert_eq!(table.job(&queued).unwrap().state, JobState::Queued);
    assert_eq!(table.job(&running).unwrap().state, JobState::Running);
    assert!(table.job(&finished).is_err());
}

#[test]
fn a_waiter_gets_its_result_even_when_the_job_is_evicted_at_once() {
    let (table, token) = table(Limits {
        max_retained_jobs: 0,
        ..Limits::default()
    });
    let table = Arc::new(table);
    let id = enqueue(&table).unwrap();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let waiter = {
        let (table, id) = (table.clone(), id.clone());
        std::thread::spawn(move || {
            let _ = started_tx.send(());
            let watch = table.watch(&id).unwrap();
            table.wait_terminal(
                &watch,
                Instant::now() + Duration::from_secs(30),
                &NeverAbandon,
            )
        })
    };
    started_rx.recv().unwrap();
    take(&table, &token);
    // Wait until the waiter sleeps on the job, so the eviction races it for real.
    while table
        .lock()
        .jobs
        .get(&id)
        .and_then(|job| job.open.as_ref())
        .is_some_and(|open| open.watch_slot.is_none())
    {
        std::thread::yield_now();
    }
    table
        .complete("rt", Some(&token), &id, b"kept".to_vec(), None)
        .unwrap();
    assert!(table.job(&id).is_err(), "evicted at once by the limit of 0");
    match waiter.join().unwrap() {
        WaitOutcome::Finished(view) => assert_eq!(view.result.as_deref(), Some(&b"kept"[..])),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_watch_taken_at_enqueue_sees_an_end_that_came_and_was_evicted_before_it_waited() {
    let (table, token) = table(Limits {
        max_retained_jobs: 0,
        ..Limits::default()
    });
    let watch = table
        .enqueue_watched(EnqueueRequest {
            target: Target::Runtime("rt".into()),
            query_type: "q".into(),
            query: "{}".into(),
            source: JobSource::ContourSync,
            auth_header: None,
        })
        .unwrap();
    take(&table, &token);
    table
        .complete("rt", Some(&token), watch.id(), b"early".to_vec(), None)
        .unwrap();
    assert!(
        table.job(watch.id()).is_err(),
        "evicted before anyone waited"
    );
    match Arc::new(table).wait_terminal(&watch, Instant::now(), &NeverAbandon) {
        WaitOutcome::Finished(view) => assert_eq!(view.result.as_deref(), Some(&b"early"[..])),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_running_ledger_forgets_finished_jobs() {
    let (table, token) = table(Limits::default());
    for _ in 0..3 {
        run_one(&table, &token);
    }
    assert!(table.lock().ledger.running.is_empty());
}

#[test]
fn ttl_expires_finished_jobs_on_sweep() {
    let (table, token) = table(Limits {
        job_ttl: Duration::ZERO,
        ..Limits::default()
    });
    let id = run_one(&table, &token);
    table.sweep();
    assert!(table.job(&id).unwrap_err().to_string().contains("expired"));
}

#[test]
fn running_jobs_fail_after_max_runtime() {
    let (table, token) = table(Limits {
        max_job_runtime: Duration::ZERO,
        ..Limits::default()
    });
    let id = enqueue(&table).unwrap();
    take(&table, &token);
    table.sweep();
    let job = table.job(&id).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error_message().unwrap().contains("--max-job-runtime"));
    let late = table.complete("rt", Some(&token), &id, Vec::new(), None);
    assert_eq!(late, Err(Error::result_conflict(&id)));
}

#[test]
fn queue_cap_rejects_without_harming_queued_jobs() {
    let (table, _) = table(Limits {
        max_queued: 2,
        ..Limits::default()
    });
    let a = enqueue(&table).unwrap();
    let b = enqueue(&table).unwrap();
    assert!(matches!(enqueue(&table), Err(Error::Overloaded(_))));
    assert_eq!(table.job(&a).unwrap().state, JobState::Queued);
    assert_eq!(table.job(&b).unwrap().state, JobState::Queued);
}

#[test]
fn a_wait_returns_when_another_thread_completes() {
    let (table, token) = table(Limits::default());
    let table = Arc::new(table);
    let id = enqueue(&table).unwrap();
    let waiter = {
        let (table, id) = (table.clone(), id.clone());
        std::thread::spawn(move || {
            let watch = table.watch(&id).unwrap();
            table.wait_terminal(
                &watch,
                Instant::now() + Duration::from_secs(30),
                &NeverAbandon,
            )
        })
    };
    take(&table, &token);
    table
        .complete("rt", Some(&token), &id, b"done".to_vec(), None)
        .unwrap();
    match waiter.join().unwrap() {
        WaitOutcome::Finished(view) => assert_eq!(view.result.as_deref(), Some(&b"done"[..])),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_canceled_queued_job_leaves_the_queue_and_is_never_taken() {
    let (table, token) = table(Limits::default());
    let canceled = enqueue(&table).unwrap();
    let next = enqueue(&table).unwrap();
    table.cancel(&canceled, "test").unwrap();
    assert_eq!(table.runtimes()[0].queued, 1);
    assert_eq!(take(&table, &token).job_id, next, "the stale id is skipped");
    let job = table.job(&canceled).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_message(), Some(&*canceled_message(&canceled)));
    let by = job.canceled().unwrap();
    assert_eq!((by.by, by.was), ("test", JobState::Queued));
    let again = table.cancel(&canceled, "test").unwrap_err();
    assert_eq!(again, Error::cancel_conflict(&canceled, "failed"));
    let late = table.complete("rt", Some(&token), &canceled, Vec::new(), None);
    assert_eq!(late, Err(Error::result_after_cancel(&canceled)));
    assert_eq!(
        table.lock().ledger.open_bytes,
        2,
        "only the running job's query"
    );
}

#[test]
fn an_unknown_function_fails_at_enqueue_once_schemas_are_posted() {
    let (table, token) = table(Limits::default());
    let before = enqueue(&table).unwrap();
    let schema = vec![("other".to_string(), Value::Null)];
    table.put_schemas("rt", Some(&token), schema).unwrap();
    let unknown = enqueue(&table).unwrap();
    let job = table.job(&unknown).unwrap();
    assert_eq!(job.state, JobState::Failed);
    let message = job.error_message().unwrap();
    assert!(
        message.contains("no function 'q'; its posted schemas name: other."),
        "{message}"
    );
    assert_eq!(table.runtimes()[0].queued, 1, "only the job from before");
    assert_eq!(take(&table, &token).job_id, before);
    assert!(table.try_take("rt", Some(&token)).unwrap().job.is_none());
}

/// A sync execute's watch on a new job, taken by the module; its waiter runs on a thread in
/// `wait_answer`, and this returns once it waits (so a stream can open).
fn streamed_job(
    table: &Arc<JobTable>,
    token: &str,
) -> (JobId, std::thread::JoinHandle<WaitOutcome>) {
    let watch = table
        .enqueue_streamed(EnqueueRequest {
            target: Target::Runtime("rt".into()),
            query_type: "q".into(),
            query: "{}".into(),
            source: JobSource::ContourSync,
            auth_header: None,
        })
        .unwrap();
    let id = watch.id().clone();
    take(table, token);
    let waiter = {
        let table = table.clone();
        std::thread::spawn(move || {
            table.wait_answer(
                &watch,
                Instant::now() + Duration::from_secs(30),
                &NeverAbandon,
            )
        })
    };
    (id, waiter)
}

fn streaming(outcome: WaitOutcome) -> StreamReader {
    match outcome {
        WaitOutcome::Streaming(reader) => reader,
        other => panic!("want a stream, got {other:?}"),
    }
}

#[test]
fn a_chunked_post_streams_to_the_waiting_execute_and_ends_whole_once_stored() {
    let (table, token) = table(Limits::default());
    let table = Arc::new(table);
    let (id, waiter) = streamed_job(&table, &token);
    assert!(table.open_stream("rt", Some("wrong"), &id).is_none());
    assert!(table.open_stream("other", Some(&token), &id).is_none());
    let stream = table
        .open_stream("rt", Some(&token), &id)
        .expect("a stream");
    assert!(
        table.open_stream("rt", Some(&token), &id).is_none(),
        "one stream per job"
    );
    let mut reader = streaming(waiter.join().unwrap());
    stream.push(b"ab");
    assert_eq!(
        reader.next(Duration::ZERO),
        crate::jobs::stream::StreamPiece::Data(b"ab".to_vec())
    );
    stream.push(b"c");
    table
        .complete("rt", Some(&token), &id, b"abc".to_vec(), None)
        .unwrap();
    assert_eq!(
        reader.next(Duration::ZERO),
        crate::jobs::stream::StreamPiece::Data(b"c".to_vec())
    );
    assert_eq!(
        reader.next(Duration::ZERO),
        crate::jobs::stream::StreamPiece::Whole
    );
    assert_eq!(table.job(&id).unwrap().result.as_deref(), Some(&b"abc"[..]));
}

#[test]
fn a_broken_off_stream_fails_its_job_and_its_answer() {
    let (table, token) = table(Limits::default());
    let table = Arc::new(table);
    let (id, waiter) = streamed_job(&table, &token);
    let stream = table.open_stream("rt", Some(&token), &id).unwrap();
    let mut reader = streaming(waiter.join().unwrap());
    stream.push(b"part");
    table.stream_broke(&id, &stream, "The connection closed.");
    assert_eq!(
        reader.next(Duration::ZERO),
        crate::jobs::stream::StreamPiece::Broken
    );
    let job = table.job(&id).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error_message(),
        Some(stream_broke_message(&id, "The connection closed.").as_str())
    );
    assert_eq!(
        table.complete("rt", Some(&token), &id, b"late".to_vec(), None),
        Err(Error::result_conflict(&id))
    );
}

#[test]
fn nobody_waiting_means_no_stream_and_a_reset_breaks_one() {
    let (table, token) = table(Limits::default());
    let table = Arc::new(table);
    // An async job: nobody reads a stream, the post is only stored whole.
    let id = enqueue(&table).unwrap();
    take(&table, &token);
    assert!(table.open_stream("rt", Some(&token), &id).is_none());
    // A streamed job ends broken when the emulator is reset.
    let (id, waiter) = streamed_job(&table, &token);
    let stream = table.open_stream("rt", Some(&token), &id).unwrap();
    let mut reader = streaming(waiter.join().unwrap());
    table.reset_to_seed();
    assert_eq!(
        reader.next(Duration::ZERO),
        crate::jobs::stream::StreamPiece::Broken
    );
    // The post's break-off after the reset finds no job: nothing happens.
    table.stream_broke(&id, &stream, "The connection closed.");
}

#[test]
fn a_wait_that_ended_takes_no_stream() {
    let (table, token) = table(Limits::default());
    let table = Arc::new(table);
    let watch = table
        .enqueue_streamed(EnqueueRequest {
            target: Target::Runtime("rt".into()),
            query_type: "q".into(),
            query: "{}".into(),
            source: JobSource::ContourSync,
            auth_header: None,
        })
        .unwrap();
    take(&table, &token);
    match table.wait_answer(&watch, Instant::now(), &NeverAbandon) {
        WaitOutcome::TimedOut => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        table.open_stream("rt", Some(&token), watch.id()).is_none(),
        "the execute answered 504: a later post is stored whole, its break-off fails nothing"
    );
}

#[test]
fn a_job_is_found_by_its_id_alone_and_a_forged_or_foreign_id_finds_nothing() {
    let (other_table, other_token) = table(Limits::default());
    let foreign = run_one(&other_table, &other_token);
    let (table, token) = table(Limits::default());
    let ids: Vec<JobId> = (0..3).map(|_| run_one(&table, &token)).collect();
    for (n, id) in ids.iter().enumerate() {
        let view = table.job(id).unwrap();
        assert_eq!((&view.id, view.seq), (id, n as u64 + 1));
        // Read back from its text, as a client sends it.
        assert_eq!(
            table.job(&JobId::from_client(&id.to_string())).unwrap().id,
            *id
        );
    }
    // The same seq under other random bytes (a guessed id) is not that job.
    let text = ids[1].to_string();
    let flipped = if text.as_bytes()[12] == b'0' {
        "1"
    } else {
        "0"
    };
    let forged = JobId::from_client(&format!("{}{flipped}{}", &text[..12], &text[13..]));
    assert_ne!(forged, ids[1]);
    assert!(matches!(table.job(&forged), Err(Error::NotFound(_))));
    // An id of another table (another key) finds nothing here.
    assert!(matches!(table.job(&foreign), Err(Error::NotFound(_))));
}

/// 100,000 finished jobs are kept by default: each byte of the record is 100 kB of RSS.
/// 120 bytes is what glibc's allocator serves from a 128-byte chunk (8 bytes of its header).
#[test]
fn a_retained_job_record_fits_a_128_byte_allocation() {
    assert!(
        std::mem::size_of::<Job>() <= 120,
        "{}",
        std::mem::size_of::<Job>()
    );
}

#[test]
fn the_job_list_stays_small_and_searchable_behind_a_job_that_never_ends() {
    let (table, token) = table(Limits {
        max_retained_jobs: 10,
        ..Limits::default()
    });
    table.create_runtime(SessionSpec {
        runtime_id: "idle".into(),
        ..SessionSpec::default()
    });
    let pinned = table
        .enqueue(EnqueueRequest {
            target: Target::Runtime("idle".into()),
            ..request()
        })
        .unwrap();
    let ids: Vec<JobId> = (0..1000).map(|_| run_one(&table, &token)).collect();
    {
        let inner = table.lock();
        // The pinned job holds the front: every evicted job behind it left a hole, and
        // compaction keeps the holes under half the jobs (plus the slack).
        assert_eq!(inner.jobs.len(), 11);
        assert!(inner.jobs.slots.len() <= 11 + 11 / 2 + SLACK_HOLES + 1);
        assert!(inner.jobs.slots.capacity() <= 4 * (11 + 11 / 2 + SLACK_HOLES + 1));
        let listed: Vec<u64> = inner
            .jobs
            .newest_first(u64::MAX)
            .map(|j| j.view.seq)
            .collect();
        let mut expected: Vec<u64> = (992..=1001).rev().collect();
        expected.push(1);
        assert_eq!(listed, expected);
    }
    assert_eq!(table.job(&pinned).unwrap().state, JobState::Queued);
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(table.job(id).is_ok(), n >= 990, "job {n}");
    }
    // A job removed from the middle leaves a hole that finds nothing; its neighbours stay.
    let mut inner = table.lock();
    let middle = inner.jobs.remove(996).expect("job 996");
    assert!(inner.jobs.get(&middle.view.id).is_none());
    assert!(inner.jobs.by_seq_mut(995).is_some() && inner.jobs.by_seq_mut(997).is_some());
    assert!(inner.jobs.remove(996).is_none());
    assert_eq!(inner.jobs.len(), 10);
}

#[test]
fn label_sets_with_long_strings_are_not_interned() {
    let (table, token) = table(Limits {
        max_retained_jobs: 1,
        ..Limits::default()
    });
    let long = |n: usize, fill: &str| format!("{n}{}", fill.repeat(1000));
    let mut last = None;
    for n in 0..20 {
        let id = table
            .enqueue(EnqueueRequest {
                query_type: long(n, "q"),
                ..request()
            })
            .unwrap();
        take(&table, &token);
        let content_type = Some(format!("text/x-{}", long(n, "c")));
        table
            .complete("rt", Some(&token), &id, b"ok".to_vec(), content_type)
            .unwrap();
        last = Some(id);
    }
    let job = table.job(&last.unwrap()).unwrap();
    assert_eq!(job.query_type(), long(19, "q"));
    assert_eq!(
        job.result_content_type(),
        Some(format!("text/x-{}", long(19, "c")).as_str())
    );
    // Nothing of theirs was interned, so the 19 evicted jobs took their strings with them.
    // (`names` refused long strings before too; `labels` kept every distinct set.)
    let inner = table.lock();
    assert_eq!((inner.names.len(), inner.labels.len()), (0, 0));
}
