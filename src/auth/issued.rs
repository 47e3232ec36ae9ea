//! Credentials the token endpoint issued: access tokens, refresh tokens, authorization codes.
//!
//! **Keyed by digest.** Each credential is stored under the SHA-256 of its text, never the
//! text: a lookup hashes what was presented, so the time a lookup takes says nothing about
//! how much of a real token a guess shares, and a dump of this table holds no usable token.
//!
//! **Families.** Every credential carries the id of the grant it came from (one
//! authorization, one client-credentials request). Reusing a spent code or a rotated refresh
//! token revokes the whole family (RFC 6749 §4.1.2, RFC 9700 §4.14.2): whoever replays it
//! has the other half of a stolen pair.
//!
//! **Bounded.** Each kind keeps at most [`MAX_PER_KIND`] entries; past it, the oldest is
//! forgotten. An expired entry is kept for [`EXPIRED_MEMORY`] so its holder learns "expired"
//! rather than "unknown", then swept. The table's lock is taken alone (never with the job
//! table's) and held for a lookup or an insert only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sha256;
use super::Principal;

/// Entries of each kind kept at most (a client minting a token per request cannot grow the
/// table without bound).
pub const MAX_PER_KIND: usize = 50_000;

/// How long an expired entry is remembered, to answer "expired".
pub const EXPIRED_MEMORY: Duration = Duration::from_secs(3600);

/// How long an authorization code may be exchanged (RFC 6749 §4.1.2 recommends ≤ 10 min).
pub const CODE_LIFE: Duration = Duration::from_secs(600);

type Digest = [u8; 32];

/// What an access or refresh token stands for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub principal: Principal,
    pub client_id: String,
    pub expires_at: Instant,
    family: u64,
}

/// A code from `authorize`, waiting for its exchange.
#[derive(Debug, Clone)]
pub struct Code {
    pub principal: Principal,
    pub client_id: String,
    pub redirect_uri: String,
    /// The PKCE challenge and its method (`S256` or `plain`), when one was sent.
    pub challenge: Option<(String, String)>,
    pub expires_at: Instant,
}

/// Why a presented credential is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    /// A code or refresh token already exchanged: its family is now revoked.
    Reused,
}

struct Entry<T> {
    value: T,
    expires_at: Instant,
    family: u64,
    /// Set on a spent code or a rotated refresh token (kept to detect replays).
    spent: bool,
}

/// One kind of credential: the entries and their insertion order, for sweeping.
struct Kind<T> {
    entries: HashMap<Digest, Entry<T>>,
    order: VecDeque<Digest>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> Kind<T> {
    fn insert(&mut self, key: Digest, entry: Entry<T>, now: Instant) {
        // Forget what expired long ago, then the oldest while full. Entries are inserted in
        // order of issue and every entry of a kind lives as long, so the front is the oldest.
        while let Some(front) = self.order.front() {
            let stale = match self.entries.get(front) {
                None => true,
                Some(e) => e.expires_at + EXPIRED_MEMORY <= now,
            };
            if !stale && self.order.len() < MAX_PER_KIND {
                break;
            }
            let front = self.order.pop_front().expect("front exists");
            self.entries.remove(&front);
        }
        self.order.push_back(key);
        self.entries.insert(key, entry);
    }

    fn revoke_family(&mut self, family: u64) {
        self.entries.retain(|_, e| e.family != family);
    }
}

#[derive(Default)]
struct Tables {
    access: Kind<Grant>,
    refresh: Kind<Grant>,
    codes: Kind<Code>,
    next_family: u64,
}

impl Tables {
    fn revoke_family(&mut self, family: u64) {
        self.access.revoke_family(family);
        self.refresh.revoke_family(family);
        self.codes.revoke_family(family);
    }
}

/// The issued credentials, behind one lock.
#[derive(Default)]
pub struct Issued(Mutex<Tables>);

/// A fresh random credential with a prefix that says what it is (`access`, `refresh`, `code`).
fn mint(kind: &str) -> String {
    let a = crate::ids::random_id("");
    let b = crate::ids::random_id("");
    format!("foundry_emulator_{kind}_{a}{b}")
}

fn key(token: &str) -> Digest {
    sha256::digest(token.as_bytes())
}

impl Issued {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A new grant family (one authorization).
    pub fn new_family(&self) -> u64 {
        let mut t = self.lock();
        t.next_family += 1;
        t.next_family
    }

    /// Issues an access token (and a refresh token when `refresh_life` is set) in `family`.
    pub fn issue(
        &self,
        principal: &Principal,
        client_id: &str,
        life: Duration,
        refresh_life: Option<Duration>,
        family: u64,
    ) -> (String, Option<String>) {
        let now = Instant::now();
        let access = mint("access");
        let refresh = refresh_life.map(|_| mint("refresh"));
        let grant = |life: Duration| Grant {
            principal: principal.clone(),
            client_id: client_id.to_string(),
            expires_at: crate::api::deadline(now, life),
            family,
        };
        let mut t = self.lock();
        let access_grant = grant(life);
        let expires_at = access_grant.expires_at;
        t.access.insert(
            key(&access),
            Entry {
                value: access_grant,
                expires_at,
                family,
                spent: false,
            },
            now,
        );
        if let (Some(refresh), Some(refresh_life)) = (&refresh, refresh_life) {
            let refresh_grant = grant(refresh_life);
            let expires_at = refresh_grant.expires_at;
            t.refresh.insert(
                key(refresh),
                Entry {
                    value: refresh_grant,
                    expires_at,
                    family,
                    spent: false,
                },
                now,
            );
        }
        (access, refresh)
    }

    /// What a presented access token stands for.
    pub fn access(&self, token: &str) -> Result<Grant, Refusal> {
        let t = self.lock();
        let entry = t.access.entries.get(&key(token)).ok_or(Refusal::Unknown)?;
        if entry.expires_at <= Instant::now() {
            return Err(Refusal::Expired);
        }
        Ok(entry.value.clone())
    }

    /// Stores a code for `authorize`; answers the code to send back.
    pub fn issue_code(&self, code: Code, family: u64) -> String {
        let now = Instant::now();
        let text = mint("code");
        let expires_at = code.expires_at;
        self.lock().codes.insert(
            key(&text),
            Entry {
                value: code,
                expires_at,
                family,
                spent: false,
            },
            now,
        );
        text
    }

    /// Spends a code (whatever the exchange's outcome: a code is good for one try). A second
    /// presentation revokes everything issued from the first.
    pub fn spend_code(&self, code: &str) -> Result<(Code, u64), Refusal> {
        let mut t = self.lock();
        let entry = t
            .codes
            .entries
            .get_mut(&key(code))
            .ok_or(Refusal::Unknown)?;
        if entry.spent {
            let family = entry.family;
            t.revoke_family(family);
            return Err(Refusal::Reused);
        }
        entry.spent = true;
        if entry.expires_at <= Instant::now() {
            return Err(Refusal::Expired);
        }
        Ok((entry.value.clone(), entry.family))
    }

    /// Spends a refresh token for rotation, if `accept` takes its grant (a request the
    /// client may make): the caller issues the family's next pair. A refused request spends
    /// nothing; a rotated token presented again revokes the family.
    pub fn spend_refresh<E>(
        &self,
        token: &str,
        refused: impl Fn(Refusal) -> E,
        accept: impl FnOnce(&Grant) -> Result<(), E>,
    ) -> Result<(Grant, u64), E> {
        let mut t = self.lock();
        let entry = t
            .refresh
            .entries
            .get_mut(&key(token))
            .ok_or_else(|| refused(Refusal::Unknown))?;
        if entry.spent {
            let family = entry.family;
            t.revoke_family(family);
            return Err(refused(Refusal::Reused));
        }
        if entry.expires_at <= Instant::now() {
            return Err(refused(Refusal::Expired));
        }
        accept(&entry.value)?;
        entry.spent = true;
        Ok((entry.value.clone(), entry.family))
    }

    /// Revokes a token (access or refresh; RFC 7009) if `client_id` owns it. A refresh token
    /// takes its family's access tokens with it. Unknown tokens change nothing.
    pub fn revoke(&self, token: &str, client_id: &str) {
        let k = key(token);
        let mut t = self.lock();
        if let Some(e) = t.access.entries.get(&k) {
            if e.value.client_id == client_id {
                t.access.entries.remove(&k);
            }
            return;
        }
        if let Some(e) = t.refresh.entries.get(&k) {
            if e.value.client_id == client_id {
                let family = e.family;
                t.revoke_family(family);
            }
        }
    }

    /// Live entries per kind (access, refresh, codes), for tests and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (
            t.access.entries.len(),
            t.refresh.entries.len(),
            t.codes.entries.len(),
        )
    }
}

impl Grant {
    /// The family this grant belongs to (a refresh continues it).
    pub fn family(&self) -> u64 {
        self.family
    }
}
