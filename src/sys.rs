//! What std cannot do, through libc; the only `unsafe` in the crate lives here.
//!
//! [`catch_termination`] and [`Termination::wait`] block until SIGTERM or SIGINT, so `serve` stops gracefully
//! (open jobs fail with a message, waiting clients get their answer, exec commands are
//! killed, the TLS CA file is removed). It is the classic self-pipe: the handler
//! (async-signal-safe) writes one byte to a pipe, and the main thread blocks reading it.
//!
//! Resource exhaustion must be an error, never a panic, so `Emulator::start` also
//! [raises the open-file limit](raise_fd_limit_once), [widens the listen
//! backlog](widen_backlog) of its listeners, and random ids come from [`fill_random`],
//! which opens no file per call.
//!
//! The `exec` runtime's helper multiplexes its command's pipes with [`poll`] (one thread per
//! job instead of one per pipe) and kills the command's process group with [`kill_group`].

#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Once, OnceLock};

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

/// SIGTERM and SIGINT, caught from [`catch_termination`] on; [`Termination::wait`] blocks
/// until one arrives (at once if one already did).
pub struct Termination {
    wake: File,
}

/// Installs the SIGTERM and SIGINT handlers. `serve` calls it before it announces its address:
/// a supervisor may signal as soon as it read that line, and the stop must still be graceful.
pub fn catch_termination() -> std::io::Result<Termination> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills the two-element array we pass.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Close-on-exec: an exec runtime's command must not inherit the pipe.
    for fd in fds {
        // SAFETY: fcntl(2) on a descriptor pipe(2) just gave us.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
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
    let wake = unsafe { File::from_raw_fd(fds[0]) };
    Ok(Termination { wake })
}

impl Termination {
    /// Blocks until the process received SIGTERM or SIGINT.
    pub fn wait(mut self) -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        loop {
            match self.wake.read(&mut byte) {
                Ok(1..) => return Ok(()),
                Ok(0) => return Err(std::io::Error::other("signal pipe closed")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit (before, after).
///
/// Every connection is a descriptor, and the common soft default of 1,024 is reached long
/// before the hard one (often 2^19 or more). An infinite hard limit means `fs.nr_open` on
/// Linux (the kernel refuses more); macOS caps at `OPEN_MAX`. A soft limit already at the
/// target (or above it) is left alone.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    #[allow(unused_mut)]
    let mut target = limit.rlim_max;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if target == libc::RLIM_INFINITY {
        target = read_proc_number("/proc/sys/fs/nr_open").unwrap_or(1 << 20);
    }
    #[cfg(target_os = "macos")]
    {
        // <sys/syslimits.h>; setrlimit refuses more than kern.maxfilesperproc.
        const OPEN_MAX: libc::rlim_t = 10_240;
        target = target.min(OPEN_MAX);
    }
    if before == libc::RLIM_INFINITY || target <= before {
        return Ok((to_u64(before), to_u64(before)));
    }
    limit.rlim_cur = target;
    // SAFETY: setrlimit(2) reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((to_u64(before), to_u64(target)))
}

/// [`raise_fd_limit`] once per process, logged: at debug what it did, a warning if it failed
/// (the emulator still runs, with fewer simultaneous connections).
pub fn raise_fd_limit_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match raise_fd_limit() {
        Ok((before, after)) if before == after => {
            log::debug!("open-file limit (RLIMIT_NOFILE) already {before}");
        }
        Ok((before, after)) => {
            log::debug!("raised the open-file limit (RLIMIT_NOFILE) from {before} to {after}");
        }
        Err(e) => log::warn!(
            "cannot raise the open-file limit (RLIMIT_NOFILE): {e}; connections beyond it fail"
        ),
    });
}

/// Caps glibc's malloc at two arenas, and turns off its fast bins.
///
/// Payloads (bodies, queries, results up to `--max-body`) are large, short-lived allocations
/// made on many threads. glibc gives each thread that meets contention an arena of its own
/// (up to 8 per core), and each arena keeps the freed 1 MiB buffers it once held: the payload
/// benchmark's high-water mark was 189 MiB with the default, 118 MiB with two arenas, whose
/// freed buffers every thread reuses. (A fixed mmap threshold gave 81 MiB but cost 2.5× the
/// CPU per payload in page faults.)
///
/// Retained jobs are many small records, queries and results, freed oldest first as new ones
/// come: chunks in fast bins are never merged with their free neighbours, so the heap kept
/// holes it could not reuse. Without them, RSS after the benchmark's 1,000,000 async jobs was
/// 60.8–63.6 MiB against 64.1–65.9 MiB with them, at the same throughput within the noise.
/// No effect (and not compiled) on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            for (name, param, value) in [
                ("M_ARENA_MAX", libc::M_ARENA_MAX, 2),
                ("M_MXFAST", libc::M_MXFAST, 0),
            ] {
                // SAFETY: mallopt only sets allocator parameters and takes glibc's own
                // locks; set once per process.
                if unsafe { libc::mallopt(param, value) } != 1 {
                    log::debug!("mallopt refused {name} {value}; memory use may be higher");
                }
            }
        });
    }
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, i64 on some BSDs
fn to_u64(value: libc::rlim_t) -> u64 {
    value as u64
}

/// Listens again on a bound listener with the largest backlog the system allows.
///
/// std listens with a backlog of 128, so a burst of connects beyond it waits for a SYN retry
/// (about a second). A second listen(2) on a listening socket only changes its backlog. The
/// backlog asked for is the larger of `libc::SOMAXCONN` (4,096 on glibc, but 128 on musl) and
/// Linux's `net.core.somaxconn`, the ceiling the kernel silently truncates to (read once).
pub fn widen_backlog(listener: &TcpListener) -> io::Result<()> {
    static BACKLOG: OnceLock<libc::c_int> = OnceLock::new();
    let backlog = *BACKLOG.get_or_init(|| {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let system = read_proc_number("/proc/sys/net/core/somaxconn").unwrap_or(0);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let system = 0;
        system.max(libc::SOMAXCONN)
    });
    // SAFETY: listen(2) on the descriptor `listener` owns for the duration of the call.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    log::debug!("listen backlog {backlog} on {addr}");
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_proc_number<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fills `buf` with random bytes from the operating system, opening no file per call.
///
/// Linux and Android use getrandom(2) (flags 0: blocks only until the kernel's pool is first
/// seeded at boot; EINTR and short reads are retried, so it cannot fail afterwards). Other
/// unixes, and Linux before 3.17 (ENOSYS), read a `/dev/urandom` descriptor opened on first
/// use and kept for the life of the process: `Emulator::start` draws once, so it is opened
/// then, never when descriptors have run out.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static NO_GETRANDOM: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        if !NO_GETRANDOM.load(Ordering::Relaxed) {
            match getrandom(buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_GETRANDOM.store(true, Ordering::Relaxed);
                }
                done => return done,
            }
        }
    }
    urandom()?.read_exact(buf)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn getrandom(mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: getrandom(2) writes at most `buf.len()` bytes to `buf`.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &mut buf[n as usize..];
    }
    Ok(())
}

/// The kept `/dev/urandom` descriptor (opened at the first call).
fn urandom() -> io::Result<&'static File> {
    static URANDOM: OnceLock<File> = OnceLock::new();
    if let Some(file) = URANDOM.get() {
        return Ok(file);
    }
    let file = File::open("/dev/urandom")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/urandom: {e}")))?;
    // A racing thread's file may win; ours is then closed.
    Ok(URANDOM.get_or_init(|| file))
}

/// Sends SIGKILL to the process group `pgid`: the `exec` runtime's command (spawned with
/// `process_group(0)`, so its group id is its pid) and every child it started.
///
/// Refuses 0 and ids that do not fit a `pid_t`: `kill(0)` and `kill(-1)` would reach the
/// emulator's own group or every process it may signal.
pub fn kill_group(pgid: u32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&pgid| pgid > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process group id"))?;
    // SAFETY: kill(2) takes plain integers; a negative pid names the process group.
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One descriptor for [`poll`]: wait until it can be read (or, with `write`, written)
/// without blocking; `ready` says whether it can, or has hung up or failed.
#[derive(Debug, Clone, Copy)]
pub struct PollFd {
    pub fd: RawFd,
    pub write: bool,
    pub ready: bool,
}

/// Blocks in poll(2) until at least one of `fds` is ready (readable, writable, hung up or
/// failed), and marks which. No timeout: the `exec` helper waits on its command's pipes, and
/// the command's end (its exit, or the kill of its group) closes them. EINTR is retried.
pub fn poll(fds: &mut [PollFd]) -> io::Result<()> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd,
            events: if p.write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: poll(2) reads and writes exactly `raw.len()` entries of the vector we pass.
        let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, -1) };
        if n >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    for (p, r) in fds.iter_mut().zip(&raw) {
        p.ready = r.revents != 0;
    }
    Ok(())
}

/// Sets `O_NONBLOCK` on a descriptor (std has it for sockets only): a write to a full pipe
/// then returns `WouldBlock` instead of waiting.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl(2) with F_GETFL/F_SETFL takes and returns plain integers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs the test `name` of this binary in a child process with `FOUNDRY_EMULATOR_CHILD`
    /// set, for tests that change process-wide state (resource limits) other tests share.
    pub(crate) fn run_in_child(name: &str) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env("FOUNDRY_EMULATOR_CHILD", name)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name} failed in a child process:\n{text}"
        );
        assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
    }

    /// True in the child process [`run_in_child`] started for `name`.
    pub(crate) fn in_child(name: &str) -> bool {
        std::env::var("FOUNDRY_EMULATOR_CHILD").as_deref() == Ok(name)
    }

    fn nofile() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    pub(crate) fn set_soft_nofile(soft: libc::rlim_t) {
        let limit = libc::rlimit {
            rlim_cur: soft,
            ..nofile()
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }

    #[test]
    fn raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() {
        const NAME: &str = "sys::tests::raise_fd_limit_lifts_the_soft_limit_to_the_hard_one";
        if !in_child(NAME) {
            return run_in_child(NAME);
        }
        let hard = nofile().rlim_max;
        if hard == libc::RLIM_INFINITY || hard <= 64 {
            return; // nothing finite to raise to
        }
        set_soft_nofile(64);
        let (before, after) = raise_fd_limit().unwrap();
        assert_eq!(before, 64);
        #[cfg(not(target_os = "macos"))]
        assert_eq!(after, to_u64(hard));
        assert_eq!(to_u64(nofile().rlim_cur), after);
        // Already raised: a second call changes nothing.
        assert_eq!(raise_fd_limit().unwrap(), (after, after));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn getrandom_fills_any_length() {
        for len in [0, 1, 16, 255, 256, 4096, 100_000] {
            let mut buf = vec![0u8; len];
            getrandom(&mut buf).unwrap();
            // 32 zero bytes in a row from a working source: about 2^-256.
            assert!(buf
                .chunks(32)
                .all(|c| c.len() < 32 || c.iter().any(|&b| b != 0)));
        }
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn widened_backlog_takes_a_burst_of_connects_without_accepting() {
        const NAME: &str =
            "sys::tests::widened_backlog_takes_a_burst_of_connects_without_accepting";
        const CONNECTS: usize = 1_000;
        // A child, so its thousand descriptors cannot starve the other tests.
        if !in_child(NAME) {
            return run_in_child(NAME);
        }
        let _ = raise_fd_limit();
        if to_u64(nofile().rlim_cur) < 2 * CONNECTS as u64 {
            return; // too few descriptors allowed to try
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if read_proc_number::<usize>("/proc/sys/net/core/somaxconn").unwrap_or(0) < CONNECTS {
            return; // the kernel would cap the backlog below the burst
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        widen_backlog(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let started = std::time::Instant::now();
        let mut held = Vec::with_capacity(CONNECTS);
        for i in 0..CONNECTS {
            // Past a full backlog the kernel drops the SYN and connect waits ~1 s for a retry.
            let conn =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connect {i} of {CONNECTS} without accepting: {e}"));
            held.push(conn);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
