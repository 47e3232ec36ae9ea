//! A streamed result: the bounded hand-off of a result's pieces from the runtime's result
//! post (written by its connection thread as each chunk is decoded) to a sync execute's
//! answer (read by the application's connection thread as it writes them).
//!
//! The writer never blocks: past [`STREAM_BUFFER_MAX`] bytes buffered and not yet taken by
//! the reader (a slow application), the stream is cut off: its buffer is dropped, the reader
//! sees it broken (the answer ends truncated), and later pieces are ignored. The job is not
//! affected: the result post is still read whole and stored by `JobTable::complete`.
//!
//! The stream ends when its job ends (`turn_terminal` in the table): whole when the job
//! succeeded, broken otherwise. So an answer ends whole only once the result is stored.
//!
//! **Invariant:** the stream's lock is a leaf: nothing else is locked while it is held (the
//! table's `turn_terminal` ends a stream under the table lock, which is allowed: table, then
//! leaf).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of a streamed result held for a reader that has not taken them yet; past it the
/// application's answer is cut off (it ends truncated) and the job goes on. 1 MiB: a slow
/// reader holds at most this much memory on top of the result post itself (capped by
/// `--max-body`), and a runtime's post is never slowed by a reader.
pub const STREAM_BUFFER_MAX: usize = 1024 * 1024;

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The job succeeded: what was streamed is its whole result.
    Whole,
    /// The job failed (the post broke off, a cancel, a reset, shutdown, a limit).
    Broken,
    /// More than [`STREAM_BUFFER_MAX`] waited for the reader.
    CutOff,
}

/// What the reader gets.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamPiece {
    /// Every byte buffered since the last take (never empty).
    Data(Vec<u8>),
    /// Nothing new within the wait.
    Wait,
    /// The stream ended whole and everything was taken.
    Whole,
    /// The stream cannot end whole (broken or cut off).
    Broken,
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    buffered: usize,
    end: Option<StreamEnd>,
    /// The reader was dropped: nothing more is kept.
    reader_gone: bool,
    /// The reader was handed out (at most once).
    taken: bool,
}

/// One job's streamed result, shared by its writer, its reader and the job table.
#[derive(Default)]
pub struct ResultStream {
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("ResultStream")
            .field("buffered", &state.buffered)
            .field("end", &state.end)
            .finish()
    }
}

impl ResultStream {
    pub fn new() -> Arc<ResultStream> {
        Arc::new(ResultStream::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the next bytes of the result; never blocks. Ignored once the stream ended or
    /// its reader left; past [`STREAM_BUFFER_MAX`] buffered, the stream is cut off.
    pub fn push(&self, data: &[u8]) {
        let mut state = self.lock();
        if state.end.is_some() || state.reader_gone || data.is_empty() {
            return;
        }
        if state.buffered + data.len() > STREAM_BUFFER_MAX {
            state.chunks.clear();
            state.buffered = 0;
            state.end = Some(StreamEnd::CutOff);
            log::debug!("a streamed result passed {STREAM_BUFFER_MAX} bytes buffered; cut off");
        } else {
            state.buffered += data.len();
            state.chunks.push_back(data.to_vec());
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Ends the stream (the first end counts). A broken or cut-off stream drops its buffer.
    pub fn end(&self, end: StreamEnd) {
        let mut state = self.lock();
        if state.end.is_some() {
            return;
        }
        state.end = Some(end);
        if end != StreamEnd::Whole {
            state.chunks.clear();
            state.buffered = 0;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// How the stream ended, if it has.
    pub fn ended(&self) -> Option<StreamEnd> {
        self.lock().end
    }

    /// The reader, the first time it is asked for; `None` afterwards or once the stream is
    /// cut off (its start is lost: the caller answers with the whole result instead).
    pub fn reader(self: &Arc<Self>) -> Option<StreamReader> {
        let mut state = self.lock();
        if state.taken || state.end == Some(StreamEnd::CutOff) {
            return None;
        }
        state.taken = true;
        Some(StreamReader(self.clone()))
    }
}

/// The reading end of a [`ResultStream`]; dropping it tells the writer to keep nothing more.
#[derive(Debug)]
pub struct StreamReader(Arc<ResultStream>);

impl StreamReader {
    /// The next piece.
    ///
    /// # Blocking
    /// Waits on the stream's condvar (its own leaf lock, not the table's) for at most `wait`;
    /// woken by `push` (the runtime's connection thread, for each chunk) and by `end` (the
    /// job's `turn_terminal`: its result stored, or its failure, which covers reset, shutdown, a
    /// cancel and the post breaking off). On timeout: [`StreamPiece::Wait`]. The caller (a
    /// connection thread) asks again within its own deadline.
    pub fn next(&mut self, wait: Duration) -> StreamPiece {
        let deadline = Instant::now() + wait;
        let mut state = self.0.lock();
        loop {
            match state.end {
                Some(StreamEnd::Broken | StreamEnd::CutOff) => return StreamPiece::Broken,
                Some(StreamEnd::Whole) if state.chunks.is_empty() => return StreamPiece::Whole,
                _ => {}
            }
            if !state.chunks.is_empty() {
                let mut data = Vec::with_capacity(state.buffered);
                for chunk in state.chunks.drain(..) {
                    data.extend_from_slice(&chunk);
                }
                state.buffered = 0;
                return StreamPiece::Data(data);
            }
            let now = Instant::now();
            if now >= deadline {
                return StreamPiece::Wait;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// True once the stream can no longer end whole.
    pub fn is_broken(&self) -> bool {
        matches!(self.0.ended(), Some(StreamEnd::Broken | StreamEnd::CutOff))
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.reader_gone = true;
        state.chunks.clear();
        state.buffered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    #[test]
    fn pieces_come_in_order_and_end_whole() {
        let stream = ResultStream::new();
        let mut reader = stream.reader().expect("a reader");
        assert!(stream.reader().is_none(), "one reader only");
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Wait);
        stream.push(b"ab");
        stream.push(b"");
        stream.push(b"c");
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Data(b"abc".to_vec()));
        stream.push(b"d");
        stream.end(StreamEnd::Whole);
        stream.push(b"ignored");
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Data(b"d".to_vec()));
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Whole);
        assert!(!reader.is_broken());
    }

    #[test]
    fn a_broken_stream_drops_what_it_buffered() {
        let stream = ResultStream::new();
        let mut reader = stream.reader().unwrap();
        stream.push(b"partial");
        stream.end(StreamEnd::Broken);
        stream.end(StreamEnd::Whole);
        assert_eq!(
            stream.ended(),
            Some(StreamEnd::Broken),
            "the first end counts"
        );
        assert!(reader.is_broken());
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Broken);
    }

    #[test]
    fn past_the_bound_the_stream_is_cut_off_and_the_writer_goes_on() {
        let stream = ResultStream::new();
        let mut reader = stream.reader().unwrap();
        let piece = vec![7u8; 64 * 1024];
        for _ in 0..STREAM_BUFFER_MAX / piece.len() {
            stream.push(&piece);
        }
        assert_eq!(stream.ended(), None, "exactly the bound still fits");
        stream.push(b"x");
        assert_eq!(stream.ended(), Some(StreamEnd::CutOff));
        stream.push(&piece);
        stream.end(StreamEnd::Whole);
        assert_eq!(reader.next(NO_WAIT), StreamPiece::Broken);
        assert!(stream.reader().is_none());
    }

    #[test]
    fn a_cut_off_stream_gives_no_reader() {
        let stream = ResultStream::new();
        stream.push(&vec![0u8; STREAM_BUFFER_MAX + 1]);
        assert!(stream.reader().is_none());
    }

    #[test]
    fn a_waiting_reader_wakes_for_a_piece() {
        let stream = ResultStream::new();
        let mut reader = stream.reader().unwrap();
        let writer = {
            let stream = stream.clone();
            std::thread::spawn(move || {
                stream.push(b"late");
                stream.end(StreamEnd::Whole);
            })
        };
        // Bounded: a lost wake-up fails the test after a minute instead of hanging it.
        let mut got = Vec::new();
        loop {
            match reader.next(Duration::from_secs(60)) {
                StreamPiece::Data(data) => got.extend_from_slice(&data),
                StreamPiece::Whole => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(got, b"late");
    }

    #[test]
    fn a_gone_reader_keeps_nothing() {
        let stream = ResultStream::new();
        let reader = stream.reader().unwrap();
        stream.push(b"a");
        drop(reader);
        stream.push(&vec![0u8; STREAM_BUFFER_MAX]);
        assert_eq!(
            stream.ended(),
            None,
            "no cut-off: nothing is buffered any more"
        );
        assert_eq!(stream.lock().buffered, 0);
    }
}
