//! Credentials the token endpoint issued: access tokens, refresh tokens, authorization codes.
//!
//! **Keyed by digest.** Each credential is stored under the SHA-256 of its text, never the
//! text: a lookup hashes what was presented, so the time a lookup takes says nothing about
//! how much of a real token a guess shares, and a dump of this table holds no usable token.
//!
//! **Families.** Every credential carries the id of the grant it came from (one
//! authorization, one client-credentials request). Reusing a spent code or a rotated refresh
//! token revokes the whole family (RFC 6749 §4.1.2, RFC 9700 §4.14.2): whoever replays it
//! has the other half of a stolen pair. A revoked family is remembered, and issuing into it
//! is refused under the same lock, so a replay or revocation that races an exchange cannot
//! leave the exchange's new tokens alive.
//!
//! **Revoked and expired entries stay** (marked) for [`EXPIRED_MEMORY`] past their expiry, so
//! their holder learns "revoked" or "expired" rather than "unknown", in both modes.
//!
//! **Bounded.** Each client keeps at most [`MAX_PER_CLIENT`] entries of each kind (past it,
//! its own oldest goes, never another client's), and each kind at most [`MAX_PER_KIND`]
//! (the backstop for permissive mode, where any client id is accepted). The lock is taken
//! alone (never with the job table's) and held for one lookup, insert or exchange.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sha256;
use super::Principal;

/// Entries of each kind one client keeps at most.
pub const MAX_PER_CLIENT: usize = 10_000;

/// Entries of each kind kept at most, over all clients.
pub const MAX_PER_KIND: usize = 50_000;

/// Revoked families remembered at most (the oldest is forgotten first).
const MAX_REVOKED_FAMILIES: usize = 100_000;

/// How long an expired or revoked entry is remembered, to answer why it is refused.
pub const EXPIRED_MEMORY: Duration = Duration::from_secs(3600);

/// How long an authorization code may be exchanged (RFC 6749 §4.1.2 recommends ≤ 10 min).
pub const CODE_LIFE: Duration = Duration::from_secs(600);

type Digest = [u8; 32];

/// What an access or refresh token stands for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub principal: Principal,
    pub client_id: String,
}

/// A code from `authorize`, waiting for its exchange.
#[derive(Debug, Clone)]
pub struct Code {
    pub principal: Principal,
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether `authorize` was sent the redirect URI (then the exchange must repeat it).
    pub redirect_uri_sent: bool,
    /// The PKCE challenge and its method (`S256` or `plain`), when one was sent.
    pub challenge: Option<(String, String)>,
}

/// Why a presented credential is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    Revoked,
    /// A code or refresh token already exchanged: its family is now revoked.
    Reused,
}

struct Entry<T> {
    value: T,
    expires_at: Instant,
    family: u64,
    /// Set on a spent code or a rotated refresh token (kept to detect replays).
    spent: bool,
    revoked: bool,
}

impl<T> Entry<T> {
    fn refusal(&self, now: Instant) -> Option<Refusal> {
        if self.revoked {
            Some(Refusal::Revoked)
        } else if self.spent {
            Some(Refusal::Reused)
        } else if self.expires_at <= now {
            Some(Refusal::Expired)
        } else {
            None
        }
    }
}

/// One kind of credential: the entries, and their order of issue overall and per client.
struct Kind<T> {
    entries: HashMap<Digest, Entry<T>>,
    order: VecDeque<Digest>,
    by_client: HashMap<String, VecDeque<Digest>>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            entries: HashMap::new(),
            order: VecDeque::new(),
            by_client: HashMap::new(),
        }
    }
}

impl<T> Kind<T> {
    fn insert(&mut self, client: &str, key: Digest, entry: Entry<T>, now: Instant) {
        // The client's own oldest go first once it holds its share.
        let mine = self.by_client.entry(client.to_string()).or_default();
        while mine.len() >= MAX_PER_CLIENT {
            if let Some(old) = mine.pop_front() {
                self.entries.remove(&old);
            }
        }
        mine.push_back(key);
        // Then what expired long ago, and the oldest of all while the kind is full. Entries
        // of a kind are inserted in order of issue and live as long, so the front is oldest.
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
        // Per-client queues may name entries already gone; drop empty queues of departed
        // clients now and then so permissive mode's made-up ids do not pile up.
        if self.by_client.len() > MAX_PER_KIND {
            let entries = &self.entries;
            self.by_client
                .retain(|_, keys| keys.iter().any(|k| entries.contains_key(k)));
        }
    }

    fn revoke_family(&mut self, family: u64) {
        for entry in self.entries.values_mut().filter(|e| e.family == family) {
            entry.revoked = true;
        }
    }
}

#[derive(Default)]
struct Tables {
    access: Kind<Grant>,
    refresh: Kind<Grant>,
    codes: Kind<Code>,
    next_family: u64,
    revoked: HashSet<u64>,
    revoked_order: VecDeque<u64>,
}

impl Tables {
    fn revoke_family(&mut self, family: u64) {
        self.access.revoke_family(family);
        self.refresh.revoke_family(family);
        self.codes.revoke_family(family);
        if self.revoked.insert(family) {
            self.revoked_order.push_back(family);
            if self.revoked_order.len() > MAX_REVOKED_FAMILIES {
                if let Some(old) = self.revoked_order.pop_front() {
                    self.revoked.remove(&old);
                }
            }
        }
    }

    /// Inserts an access token (and a refresh token) for `principal` in `family`; `None`
    /// when the family was revoked meanwhile.
    fn issue(&mut self, issue: &Issue, now: Instant) -> Option<(String, Option<String>)> {
        if self.revoked.contains(&issue.family) {
            return None;
        }
        let access = mint("access");
        let entry = |life: Duration| Entry {
            value: Grant {
                principal: issue.principal.clone(),
                client_id: issue.client_id.clone(),
            },
            expires_at: crate::api::deadline(now, life),
            family: issue.family,
            spent: false,
            revoked: false,
        };
        self.access
            .insert(&issue.client_id, key(&access), entry(issue.life), now);
        let refresh = issue.refresh_life.map(|life| {
            let refresh = mint("refresh");
            self.refresh
                .insert(&issue.client_id, key(&refresh), entry(life), now);
            refresh
        });
        Some((access, refresh))
    }
}

impl Tables {
    /// A presented code or refresh token (in the kind `pick` names): its family, or why it is
    /// refused. A spent one presented again is a replay: its whole family is revoked.
    fn presented<T>(
        &mut self,
        pick: impl Fn(&mut Tables) -> &mut Kind<T>,
        key: &Digest,
        now: Instant,
    ) -> Result<u64, Refusal> {
        let entry = pick(self).entries.get(key).ok_or(Refusal::Unknown)?;
        let family = entry.family;
        match entry.refusal(now) {
            None => Ok(family),
            Some(Refusal::Reused) => {
                self.revoke_family(family);
                Err(Refusal::Reused)
            }
            Some(refusal) => Err(refusal),
        }
    }

    /// The end of an exchange or rotation: issues `issue` into the spent credential's
    /// `family`, or refuses it as revoked (a replay or revocation got there first).
    fn issue_into<E>(
        &mut self,
        mut issue: Issue,
        family: u64,
        now: Instant,
        refused: impl Fn(Refusal) -> E,
    ) -> Result<(Principal, String, Option<String>), E> {
        issue.family = family;
        let (access, refresh) = self
            .issue(&issue, now)
            .ok_or_else(|| refused(Refusal::Revoked))?;
        Ok((issue.principal, access, refresh))
    }
}

/// What to issue: for whom, to which client, for how long, in which family.
#[derive(Debug, Clone)]
pub struct Issue {
    pub principal: Principal,
    pub client_id: String,
    pub life: Duration,
    /// A refresh token too, living this long.
    pub refresh_life: Option<Duration>,
    pub family: u64,
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

    /// Issues an access token (and a refresh token when asked) in a fresh family.
    pub fn issue(&self, issue: &Issue) -> Option<(String, Option<String>)> {
        self.lock().issue(issue, Instant::now())
    }

    /// What a presented access token stands for.
    pub fn access(&self, token: &str) -> Result<Grant, Refusal> {
        let t = self.lock();
        let entry = t.access.entries.get(&key(token)).ok_or(Refusal::Unknown)?;
        match entry.refusal(Instant::now()) {
            Some(refusal) => Err(refusal),
            None => Ok(entry.value.clone()),
        }
    }

    /// Stores a code for `authorize` (good for [`CODE_LIFE`]); answers the code to send back.
    pub fn issue_code(&self, code: Code) -> String {
        let now = Instant::now();
        let text = mint("code");
        let mut t = self.lock();
        t.next_family += 1;
        let family = t.next_family;
        let client = code.client_id.clone();
        let entry = Entry {
            expires_at: crate::api::deadline(now, CODE_LIFE),
            value: code,
            family,
            spent: false,
            revoked: false,
        };
        t.codes.insert(&client, key(&text), entry, now);
        text
    }

    /// Exchanges a code: spends it (whatever the outcome: a code is good for one try), lets
    /// `check` judge it, and issues what `issue` says into its family, all under one lock. A
    /// second presentation revokes everything issued from the first.
    pub fn exchange_code<E>(
        &self,
        code: &str,
        refused: impl Fn(Refusal) -> E,
        check: impl FnOnce(&Code) -> Result<Issue, E>,
    ) -> Result<(Principal, String, Option<String>), E> {
        let now = Instant::now();
        let mut t = self.lock();
        let k = key(code);
        let presented = t.presented(|t| &mut t.codes, &k, now);
        if let Some(entry) = t.codes.entries.get_mut(&k) {
            entry.spent = true;
        }
        let family = presented.map_err(&refused)?;
        let code = t.codes.entries[&k].value.clone();
        let issue = check(&code)?;
        t.issue_into(issue, family, now, refused)
    }

    /// Rotates a refresh token, if `accept` takes its grant (a request the client may make):
    /// spends it and issues the family's next pair under one lock. A refused request spends
    /// nothing; a rotated token presented again revokes the family.
    pub fn rotate_refresh<E>(
        &self,
        token: &str,
        refused: impl Fn(Refusal) -> E,
        accept: impl FnOnce(&Grant) -> Result<Issue, E>,
    ) -> Result<(Principal, String, Option<String>), E> {
        let now = Instant::now();
        let mut t = self.lock();
        let k = key(token);
        let family = t.presented(|t| &mut t.refresh, &k, now).map_err(&refused)?;
        let grant = t.refresh.entries[&k].value.clone();
        let issue = accept(&grant)?;
        if let Some(entry) = t.refresh.entries.get_mut(&k) {
            entry.spent = true;
        }
        t.issue_into(issue, family, now, refused)
    }

    /// Revokes a token (access or refresh; RFC 7009) if `client_id` owns it. A refresh token
    /// takes its family's access tokens with it. Unknown tokens change nothing.
    pub fn revoke(&self, token: &str, client_id: &str) {
        let k = key(token);
        let mut t = self.lock();
        if let Some(e) = t.access.entries.get_mut(&k) {
            if e.value.client_id == client_id {
                e.revoked = true;
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

    /// Entries per kind (access, refresh, codes), for tests.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (
            t.access.entries.len(),
            t.refresh.entries.len(),
            t.codes.entries.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::User;
    use std::sync::Arc;

    fn principal() -> Principal {
        Principal {
            user: Arc::new(User::named("u")),
            scopes: Vec::new(),
            operator: true,
        }
    }

    fn issue_for(p: &Principal, client: &str, family: u64) -> Issue {
        Issue {
            principal: p.clone(),
            client_id: client.to_string(),
            life: Duration::from_secs(60),
            refresh_life: None,
            family,
        }
    }

    #[test]
    fn a_storm_of_one_client_evicts_only_its_own_tokens() {
        let issued = Issued::default();
        let p = principal();
        let (victim, _) = issued.issue(&issue_for(&p, "victim", 1)).unwrap();
        for _ in 0..MAX_PER_CLIENT + 10 {
            issued.issue(&issue_for(&p, "storm", 2)).unwrap();
        }
        assert!(
            issued.access(&victim).is_ok(),
            "the victim's token survives"
        );
        assert_eq!(issued.counts().0, MAX_PER_CLIENT + 1);
    }

    #[test]
    fn nothing_is_issued_into_a_revoked_family() {
        let issued = Issued::default();
        let p = principal();
        let family = issued.new_family();
        let (_, refresh) = issued
            .issue(&Issue {
                refresh_life: Some(Duration::from_secs(60)),
                ..issue_for(&p, "c", family)
            })
            .unwrap();
        let refresh = refresh.unwrap();
        issued.revoke(&refresh, "c");
        assert!(issued.issue(&issue_for(&p, "c", family)).is_none());
        assert_eq!(
            issued
                .access(&issued.issue(&issue_for(&p, "c", family + 1)).unwrap().0)
                .err(),
            None
        );
    }

    #[test]
    fn revoked_tokens_say_so() {
        let issued = Issued::default();
        let p = principal();
        let (token, _) = issued.issue(&issue_for(&p, "c", 1)).unwrap();
        issued.revoke(&token, "other");
        assert!(
            issued.access(&token).is_ok(),
            "another client cannot revoke it"
        );
        issued.revoke(&token, "c");
        assert_eq!(issued.access(&token).err(), Some(Refusal::Revoked));
        assert_eq!(issued.access("nope").err(), Some(Refusal::Unknown));
    }
}
