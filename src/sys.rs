//! What std cannot do, through libc; the only `unsafe` in the crate lives here.
//!
//! [`wait_for_termination`] blocks until SIGTERM or SIGINT, so `serve` stops gracefully
//! (open jobs fail with a message, waiting clients get their answer, exec commands are
//! killed, the TLS CA file is removed). It is the classic self-pipe: the handler
//! (async-signal-safe) writes one byte to a pipe, and the main thread blocks reading it.

#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler; -1 until installed.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid one-byte static.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// Blocks until the process receives SIGTERM or SIGINT.
pub fn wait_for_termination() -> std::io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills the two-element array we pass.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    WAKE_FD.store(fds[1], Ordering::Relaxed);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls write(2) on a valid descriptor.
        if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: fds[0] is a fresh descriptor from pipe(2) that nothing else owns.
    let mut wake = unsafe { File::from_raw_fd(fds[0]) };
    let mut byte = [0u8; 1];
    loop {
        match wake.read(&mut byte) {
            Ok(1..) => return Ok(()),
            Ok(0) => return Err(std::io::Error::other("signal pipe closed")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
