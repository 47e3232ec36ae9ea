//! Credentials: who a bearer token acts for, the OAuth2 clients and users, the credentials
//! the token endpoint issued, and the runtime `Module-Auth-Token` secret.
//!
//! **Two modes, fixed at start-up.** *Permissive* (nothing configured): any non-empty bearer
//! passes and any client gets a token. *Strict* (`--token`, seed `tokens`, seed
//! `oauth_clients` or `--strict-auth`): only static tokens and issued, unexpired, unrevoked
//! tokens pass, and only seeded clients get tokens.
//!
//! **Invariant:** no token, secret or code reaches a log line, an error description or
//! `Debug` output; [`Secret`] redacts itself, every comparison is constant-time, and issued
//! credentials are looked up by digest ([`issued`]).

pub mod issued;
pub mod oauth;
pub mod sha256;
pub mod users;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use issued::{Issued, Refusal};
use users::User;
/// A credential. Its `Debug` prints `Secret(..)`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Mints a fresh module auth token, `foundry_module_auth_<32 hex>`.
    pub fn random_module_token() -> Secret {
        Secret(crate::ids::random_id("foundry_module_auth_"))
    }

    /// The raw value, for the one place that must hand it out (session creation).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// Who a request acts for, and the scopes its token was granted.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Arc<User>,
    pub scopes: Vec<String>,
    /// May steer the emulator in strict mode (create or reset sessions, inspect, list,
    /// reset, faults): a static token, or a token issued to a client that proved its secret.
    /// A public client's sign-in proves nothing (anyone can sign in as anyone here), so its
    /// tokens reach the Contour routes only.
    pub operator: bool,
}

/// A static bearer token (`--token`, seed `tokens`), optionally acting for a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticToken {
    pub token: Secret,
    pub login: Option<String>,
    pub scopes: Vec<String>,
}

impl StaticToken {
    /// A token acting for the default user, with no scopes.
    pub fn plain(token: &str) -> StaticToken {
        StaticToken {
            token: Secret::new(token),
            login: None,
            scopes: Vec::new(),
        }
    }
}

/// A seeded OAuth2 client (`foundry.oauth_clients[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthClient {
    pub client_id: String,
    /// `None`: a public client (authorization code with PKCE only).
    pub client_secret: Option<Secret>,
    pub name: Option<String>,
    /// Exact redirect URIs `authorize` accepts.
    pub redirect_uris: Vec<String>,
    /// Grants the client may use; empty allows every grant.
    pub grant_types: Vec<String>,
    /// Scopes the client may be granted; empty allows any scope.
    pub allowed_scopes: Vec<String>,
}

/// What the seed and the command line say about authentication.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `--strict-auth`: strict even with nothing seeded.
    pub strict: bool,
    /// `--token-ttl`: the life of an issued access token.
    pub token_ttl: Duration,
    pub tokens: Vec<StaticToken>,
    pub users: Vec<User>,
    pub clients: Vec<OauthClient>,
    /// (runtime id, client id): the seeded client whose credentials a runtime's module gets.
    pub runtime_clients: Vec<(String, String)>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            strict: false,
            token_ttl: Duration::from_secs(3600),
            tokens: Vec::new(),
            users: Vec::new(),
            clients: Vec::new(),
            runtime_clients: Vec::new(),
        }
    }
}

/// The authentication state every handler checks against.
pub struct Auth {
    strict: bool,
    token_ttl: Duration,
    tokens: Vec<(Secret, Principal)>,
    users: Vec<Arc<User>>,
    clients: Vec<OauthClient>,
    runtime_clients: Vec<(String, String)>,
    default_user: Arc<User>,
    pub issued: Issued,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Auth {
    pub fn new(settings: AuthSettings) -> Auth {
        let strict = settings.strict || !settings.tokens.is_empty() || !settings.clients.is_empty();
        let users: Vec<Arc<User>> = settings.users.into_iter().map(Arc::new).collect();
        let default_user = Arc::new(User::named(users::DEFAULT_USERNAME));
        let mut auth = Auth {
            strict,
            token_ttl: settings.token_ttl,
            tokens: Vec::new(),
            users,
            clients: settings.clients,
            runtime_clients: settings.runtime_clients,
            default_user,
            issued: Issued::default(),
        };
        auth.tokens = settings
            .tokens
            .into_iter()
            .map(|t| {
                let user = match &t.login {
                    Some(login) => auth.user_named(login),
                    None => auth.default_user.clone(),
                };
                let principal = Principal {
                    user,
                    scopes: t.scopes,
                    operator: true,
                };
                (t.token, principal)
            })
            .collect();
        auth
    }

    /// True in strict mode.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The life of an issued access token.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// The start-up line that states the mode.
    pub fn describe(&self) -> String {
        if self.strict {
            format!(
                "auth: strict ({} static token(s), {} OAuth2 client(s), {} user(s); issued tokens live {} s)",
                self.tokens.len(),
                self.clients.len(),
                self.users.len(),
                self.token_ttl.as_secs()
            )
        } else {
            format!(
                "auth: permissive (any non-empty bearer passes; any client gets a token that lives {} s)",
                self.token_ttl.as_secs()
            )
        }
    }

    /// Who an `Authorization` header acts for. Strict mode accepts static tokens and live
    /// issued ones; permissive mode accepts any non-empty bearer (an issued one acts for its
    /// user, any other for the default user) except an issued one that expired or was
    /// revoked, so a client's refresh logic can be tested in either mode.
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, Error> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or(Error::InvalidToken)?;
        // Compare against every static token so the time taken does not reveal which matched.
        let static_match = self.tokens.iter().fold(None, |found, (secret, principal)| {
            let hit = secret.matches(token);
            found.or(hit.then_some(principal))
        });
        if let Some(principal) = static_match {
            return Ok(principal.clone());
        }
        match self.issued.access(token) {
            Ok(grant) => Ok(grant.principal),
            Err(Refusal::Expired) => Err(Error::TokenExpired),
            Err(Refusal::Unknown) if !self.strict => Ok(self.default_principal()),
            Err(_) => Err(Error::InvalidToken),
        }
    }

    /// [`Auth::principal`] for the routes that steer the emulator: in strict mode only an
    /// operator ([`Principal::operator`]) passes; in permissive mode nothing is checked.
    pub fn operator(&self, authorization: Option<&str>) -> Result<(), Error> {
        if !self.strict {
            return Ok(());
        }
        match self.principal(authorization)? {
            p if p.operator => Ok(()),
            _ => Err(Error::NotOperator),
        }
    }

    /// The default user with no scopes (permissive mode's answer for an unknown bearer).
    pub fn default_principal(&self) -> Principal {
        Principal {
            user: self.default_user.clone(),
            scopes: Vec::new(),
            operator: true,
        }
    }

    /// The users `authorize` offers: the seeded ones, else the default user.
    pub fn sign_in_users(&self) -> Vec<Arc<User>> {
        if self.users.is_empty() {
            vec![self.default_user.clone()]
        } else {
            self.users.clone()
        }
    }

    /// A seeded user by username, else a user with only that name.
    pub fn user_named(&self, username: &str) -> Arc<User> {
        self.users
            .iter()
            .chain(std::iter::once(&self.default_user))
            .find(|u| u.username == username)
            .cloned()
            .unwrap_or_else(|| Arc::new(User::named(username)))
    }

    /// A seeded client.
    pub fn client(&self, client_id: &str) -> Option<&OauthClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The seeded client a runtime's module acts as (its seed entry's `oauth_client`).
    pub fn runtime_client(&self, runtime_id: &str) -> Option<&OauthClient> {
        let (_, client_id) = self
            .runtime_clients
            .iter()
            .find(|(rt, _)| rt == runtime_id)?;
        self.client(client_id)
    }
}

/// Extracts the token from `Bearer <token>`; the scheme is case-insensitive (RFC 6750).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(strict: bool, tokens: &[&str]) -> Auth {
        Auth::new(AuthSettings {
            strict,
            tokens: tokens
                .iter()
                .map(|t| StaticToken {
                    token: Secret::new(*t),
                    login: None,
                    scopes: Vec::new(),
                })
                .collect(),
            ..AuthSettings::default()
        })
    }

    #[test]
    fn bearer_table() {
        let any = auth(false, &[]);
        let strict = auth(false, &["s3cret", "other"]);
        let strict_no_tokens = auth(true, &[]);
        let cases: &[(&Auth, Option<&str>, bool)] = &[
            (&any, Some("Bearer x"), true),
            (&any, Some("bearer x"), true),
            (&any, Some("Bearer "), false),
            (&any, Some("Bearer"), false),
            (&any, Some("Basic x"), false),
            (&any, None, false),
            (&strict, Some("Bearer s3cret"), true),
            (&strict, Some("Bearer other"), true),
            (&strict, Some("Bearer s3cre"), false),
            (&strict, Some("Bearer x"), false),
            (&strict_no_tokens, Some("Bearer x"), false),
        ];
        for (auth, header, want) in cases {
            assert_eq!(
                auth.principal(*header).is_ok(),
                *want,
                "{header:?} under {auth:?}"
            );
        }
        assert!(strict.is_strict() && strict_no_tokens.is_strict() && !any.is_strict());
    }

    #[test]
    fn issued_tokens_pass_until_they_expire() {
        let strict = auth(true, &[]);
        let principal = strict.default_principal();
        let family = strict.issued.new_family();
        let issue = |life| issued::Issue {
            principal: principal.clone(),
            client_id: "c".into(),
            life,
            refresh_life: None,
            family,
        };
        let (live, _) = strict
            .issued
            .issue(&issue(Duration::from_secs(60)))
            .unwrap();
        let (dead, _) = strict.issued.issue(&issue(Duration::ZERO)).unwrap();
        assert!(strict.principal(Some(&format!("Bearer {live}"))).is_ok());
        assert_eq!(
            strict
                .principal(Some(&format!("Bearer {dead}")))
                .unwrap_err(),
            Error::TokenExpired
        );
        let permissive = auth(false, &[]);
        assert_eq!(
            permissive
                .principal(Some("Bearer whatever"))
                .unwrap()
                .user
                .username,
            users::DEFAULT_USERNAME
        );
    }

    #[test]
    fn secret_debug_redacts() {
        let s = Secret::new("foundry_module_auth_abc");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(s.matches("foundry_module_auth_abc"));
        assert!(!s.matches("foundry_module_auth_abd"));
    }
}
