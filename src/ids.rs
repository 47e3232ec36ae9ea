//! Random identifiers and credentials drawn from the operating system's random source.
//!
//! Job ids and module auth tokens must not be guessable (tokens are credentials), so they come
//! from the kernel ([`crate::sys::fill_random`]: getrandom(2) on Linux, a `/dev/urandom`
//! descriptor kept open elsewhere) rather than from a seeded PRNG, and minting never opens a
//! file: it works when every descriptor is taken. It is the program's one random source (the
//! TLS start-up CA's name tag draws here too) and holds its one hex encoder.
//!
//! **Failure:** [`init`], called by `Emulator::start`, draws once, so a host without a random
//! source fails to start with an error. Afterwards a draw cannot fail on Linux (getrandom only
//! reports EINTR, which is retried) nor from the already-open `/dev/urandom`; the infallible
//! [`random_bytes`]/[`random_id`] its callers use would panic (a JSON 500 in a request) only if
//! the kernel broke that promise. [`try_random_bytes`] is the fallible form.

use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard};

/// 128 bits of randomness, hex-encoded: 32 characters.
const RANDOM_BYTES: usize = 16;

/// Random bytes drawn ahead of need, so a job id costs no system call most of the time.
static POOL: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Returns `prefix` followed by 32 random lowercase hex characters.
pub fn random_id(prefix: &str) -> String {
    let bytes = random_bytes();
    let mut id = String::with_capacity(prefix.len() + 2 * RANDOM_BYTES);
    id.push_str(prefix);
    push_hex(&mut id, &bytes);
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lower-case hex: the one hex encoder (ids, tokens, job ids, the CA's name).
pub fn write_hex<W: fmt::Write + ?Sized>(out: &mut W, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|&b| {
        out.write_char(char::from(HEX[usize::from(b >> 4)]))?;
        out.write_char(char::from(HEX[usize::from(b & 0xf)]))
    })
}

/// Appends `bytes` as lower-case hex to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let _ = write_hex(out, bytes); // a String never refuses a write
}

/// 16 random bytes; see the module docs for the (unreachable after [`init`]) failure.
pub fn random_bytes() -> [u8; RANDOM_BYTES] {
    try_random_bytes().unwrap_or_else(|e| panic!("no random bytes for an id or token: {e}"))
}

/// 16 random bytes, or why the operating system gave none.
pub fn try_random_bytes() -> io::Result<[u8; RANDOM_BYTES]> {
    let mut pool = pool()?;
    let at = pool.len() - RANDOM_BYTES;
    let mut out = [0u8; RANDOM_BYTES];
    out.copy_from_slice(&pool[at..]);
    pool.truncate(at);
    Ok(out)
}

/// Proves the random source works (opening the `/dev/urandom` fallback now, where one is
/// used) and fills the pool; `Emulator::start` calls it.
pub fn init() -> io::Result<()> {
    pool().map(drop)
}

/// The locked pool, holding at least [`RANDOM_BYTES`].
fn pool() -> io::Result<MutexGuard<'static, Vec<u8>>> {
    let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
    if pool.len() < RANDOM_BYTES {
        let mut fresh = [0u8; 4096];
        fill(&mut fresh).map_err(|e| io::Error::new(e.kind(), format!("no random source: {e}")))?;
        pool.extend_from_slice(&fresh);
    }
    Ok(pool)
}

#[cfg(unix)]
use crate::sys::fill_random as fill;

#[cfg(not(unix))]
fn fill(_: &mut [u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "random ids need a Unix random source",
    ))
}

/// Reads exactly 32 lowercase hex characters (what [`random_id`] and [`push_hex`] write) back into
/// bytes.
pub fn parse_hex16(text: &str) -> Option<[u8; RANDOM_BYTES]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * RANDOM_BYTES {
        return None;
    }
    let nibble = |c: u8| HEX.iter().position(|&h| h == c).map(|n| n as u8);
    let mut out = [0u8; RANDOM_BYTES];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_hex_and_differ() {
        let a = random_id("foundry_job_");
        let b = random_id("foundry_job_");
        assert!(a.starts_with("foundry_job_"));
        assert_eq!(a.len(), "foundry_job_".len() + 32);
        assert!(a["foundry_job_".len()..].bytes().all(|c| HEX.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_round_trips_and_rejects_other_text() {
        let id = random_id("");
        let bytes = parse_hex16(&id).unwrap();
        let again: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(again, id);
        let mut ours = String::new();
        push_hex(&mut ours, &bytes);
        assert_eq!(ours, id);
        for bad in [
            "",
            "abc",
            &id.to_uppercase(),
            &format!("{}g", &id[..31]),
            &format!("{id}0"),
        ] {
            assert_eq!(parse_hex16(bad), None, "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn minting_opens_no_file() {
        use crate::sys::tests::{in_child, run_in_child, set_soft_nofile};
        const NAME: &str = "ids::tests::minting_opens_no_file";
        // A child process: no other test may open a file while no descriptor is allowed.
        if !in_child(NAME) {
            return run_in_child(NAME);
        }
        init().unwrap(); // as Emulator::start does: opens the fallback file where one is used
        set_soft_nofile(0);
        let opened = std::fs::File::open("/dev/null");
        assert_eq!(
            opened.err().and_then(|e| e.raw_os_error()),
            Some(libc::EMFILE)
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = random_id("foundry_job_");
            assert_eq!(id.len(), "foundry_job_".len() + 32);
            assert!(parse_hex16(&id["foundry_job_".len()..]).is_some());
            assert!(seen.insert(id));
        }
    }
}
