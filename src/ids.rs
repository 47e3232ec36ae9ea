//! Random identifiers and credentials drawn from the operating system's random source.
//!
//! Job ids and module auth tokens must not be guessable (tokens are credentials), so they come
//! from `/dev/urandom` rather than from a seeded PRNG. Reading a file keeps us free of a
//! `rand`/`getrandom` dependency; `/dev/urandom` exists on every Linux, macOS and BSD.

use std::fs::File;
use std::io::Read;
use std::sync::Mutex;

/// 128 bits of randomness, hex-encoded: 32 characters.
const RANDOM_BYTES: usize = 16;

/// Bytes read from `/dev/urandom` ahead of need, so a job id costs no system call most of the time.
static POOL: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Returns `prefix` followed by 32 random lowercase hex characters.
pub fn random_id(prefix: &str) -> String {
    let bytes = random_bytes();
    let mut id = String::with_capacity(prefix.len() + 2 * RANDOM_BYTES);
    id.push_str(prefix);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 16 random bytes.
pub fn random_bytes() -> [u8; RANDOM_BYTES] {
    let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
    if pool.len() < RANDOM_BYTES {
        refill(&mut pool);
    }
    let at = pool.len() - RANDOM_BYTES;
    let mut out = [0u8; RANDOM_BYTES];
    out.copy_from_slice(&pool[at..]);
    pool.truncate(at);
    out
}

/// Reads exactly 32 lowercase hex characters (what [`random_id`] writes) back into bytes.
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

fn refill(pool: &mut Vec<u8>) {
    let mut fresh = vec![0u8; 4096];
    // Without an OS random source we cannot mint credentials at all; this is not a
    // recoverable per-request condition, so it is one of the few deliberate panics.
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut fresh))
        .expect("reading /dev/urandom for random ids failed");
    pool.extend_from_slice(&fresh);
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
}
