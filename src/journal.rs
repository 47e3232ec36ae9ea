//! `--journal FILE`: one JSON line per finished job, appended and flushed per line, so a CI
//! job can keep the file as an artifact.
//!
//! The job table sends each finished job's view down an unbounded channel (never blocking
//! under its lock); this module's one thread formats and writes the lines. A write error is
//! logged once and never fails a job: the thread keeps draining, so nothing backs up.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::jobs::JobView;

/// The journal writer thread.
pub struct Journal {
    thread: Option<JoinHandle<()>>,
}

impl Journal {
    /// Opens (creating, appending) `path` and starts the writer; the sender is what the job
    /// table reports finished jobs to. A missing directory or an unwritable file is an error
    /// here, at start-up.
    pub fn open(path: &Path, payloads: bool) -> io::Result<(Journal, Sender<Box<JobView>>)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open the journal {}: {e}", path.display()),
                )
            })?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || write_lines(file, &rx, payloads, &shown))?;
        Ok((
            Journal {
                thread: Some(thread),
            },
            tx,
        ))
    }

    /// Waits for the lines already reported to be written. Every sender must be dropped
    /// first (`JobTable::stop_reporting`), or this waits for them.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// # Blocking
/// Receives until every sender is dropped (the table stopped reporting at shutdown).
fn write_lines(mut file: File, jobs: &Receiver<Box<JobView>>, payloads: bool, path: &str) {
    let mut failed = false;
    for job in jobs {
        let mut line = crate::api::observe::journal_line(&job, payloads).to_string();
        line.push('\n');
        let written = file.write_all(line.as_bytes()).and_then(|()| file.flush());
        match written {
            Err(e) if !failed => {
                log::warn!("cannot write the journal {path}: {e}; later lines may be missing");
                failed = true;
            }
            Ok(()) if failed => {
                log::info!("the journal {path} is being written again");
                failed = false;
            }
            _ => {}
        }
    }
}
