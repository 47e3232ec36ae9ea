//! Credentials: the Contour bearer-token check and the runtime `Module-Auth-Token` secret.
//!
//! **Invariant:** no token reaches a log line or `Debug` output; [`Secret`] redacts itself and
//! every comparison is constant-time, so response timing does not leak token prefixes.

use std::fmt;

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

/// Which bearer tokens the Contour routes accept.
#[derive(Debug, Clone, Default)]
pub enum BearerPolicy {
    /// No tokens configured: any non-empty bearer token passes (the emulator's default).
    #[default]
    AnyNonEmpty,
    /// `--token` or a seed `tokens` list was given: only these pass.
    Only(Vec<Secret>),
}

impl BearerPolicy {
    /// Builds the policy from configured tokens; an empty list means "any non-empty token".
    pub fn from_tokens(tokens: Vec<String>) -> BearerPolicy {
        if tokens.is_empty() {
            BearerPolicy::AnyNonEmpty
        } else {
            BearerPolicy::Only(tokens.into_iter().map(Secret::new).collect())
        }
    }

    /// True when tokens were configured (strict mode).
    pub fn is_strict(&self) -> bool {
        matches!(self, BearerPolicy::Only(_))
    }

    /// Checks an `Authorization` header value (`None` when the header is absent).
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        match self {
            BearerPolicy::AnyNonEmpty => true,
            // Compare against every token so the time taken does not reveal which one matched.
            BearerPolicy::Only(tokens) => tokens
                .iter()
                .fold(false, |ok, secret| secret.matches(token) | ok),
        }
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

    #[test]
    fn bearer_policy_table() {
        let any = BearerPolicy::AnyNonEmpty;
        let strict = BearerPolicy::from_tokens(vec!["s3cret".into(), "other".into()]);
        let cases: &[(&BearerPolicy, Option<&str>, bool)] = &[
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
        ];
        for (policy, header, want) in cases {
            assert_eq!(policy.allows(*header), *want, "{header:?} under {policy:?}");
        }
    }

    #[test]
    fn secret_debug_redacts() {
        let s = Secret::new("foundry_module_auth_abc");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(s.matches("foundry_module_auth_abc"));
        assert!(!s.matches("foundry_module_auth_abd"));
    }
}
