//! The one error type of the HTTP API: every variant is one row of SPEC.md's error table.
//!
//! Handlers return `Result<Reply, Error>` and use `?`; `Reply::from(Error)` (in `http::reply`)
//! is the only place that writes the `{"error", "error_description"}` JSON body.

use std::fmt;

use crate::jobs::JobId;

/// Everything a request can fail with. `Display` is the `error_description` sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The body is not JSON, not an object, or misses or mistypes a required field.
    InvalidRequest(String),
    /// A Contour route without a valid `Authorization: Bearer` token.
    InvalidToken,
    /// An issued bearer token past its `expires_in` (strict mode).
    TokenExpired,
    /// OAuth2: client authentication failed (RFC 6749 §5.2); carries the sentence.
    InvalidClient(String),
    /// OAuth2: a code, refresh token or PKCE verifier that is not good (RFC 6749 §5.2).
    InvalidGrant(String),
    /// OAuth2: a scope that is malformed or not allowed to the client.
    InvalidScope(String),
    /// OAuth2: a `grant_type` the emulator does not implement.
    UnsupportedGrantType(String),
    /// OAuth2: a grant the client is not allowed to use.
    UnauthorizedClient(String),
    /// A runtime route with a missing or wrong `Module-Auth-Token`.
    InvalidModuleAuthToken,
    /// Unknown route, runtime, job, or no active binding for a deployed app.
    NotFound(String),
    /// A known path asked with a method it does not serve; carries the allowed methods.
    MethodNotAllowed(&'static [&'static str]),
    /// `result/v2` asked before the job succeeded.
    JobNotReady(JobId),
    /// A second result posted for a job that is already terminal, or a cancel of a finished
    /// job; carries the sentence.
    Conflict(String),
    /// A body too large to keep (a result past `--max-retained-bytes`); carries the sentence.
    /// (Bodies past `--max-body` are refused by the HTTP layer before any handler.)
    PayloadTooLarge(String),
    /// A sync execute whose job failed; carries the failure message.
    JobFailed(String),
    /// The server sheds load: a queue or a waiting lane is full. Carries what is full.
    Overloaded(String),
    /// A sync execute whose job did not finish before the execute timeout.
    JobTimeout(JobId),
    /// A handler panicked. SPEC.md has no code for this; we answer 500 `internal_error`.
    Internal(String),
}

impl Error {
    /// The HTTP status code SPEC.md assigns to this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidGrant(_)
            | Error::InvalidScope(_)
            | Error::UnsupportedGrantType(_)
            | Error::UnauthorizedClient(_) => 400,
            Error::InvalidToken
            | Error::TokenExpired
            | Error::InvalidClient(_)
            | Error::InvalidModuleAuthToken => 401,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::JobNotReady(_) | Error::Conflict(_) => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::JobFailed(_) | Error::Internal(_) => 500,
            Error::Overloaded(_) => 503,
            Error::JobTimeout(_) => 504,
        }
    }

    /// The machine-readable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidToken | Error::TokenExpired => "invalid_token",
            Error::InvalidClient(_) => "invalid_client",
            Error::InvalidGrant(_) => "invalid_grant",
            Error::InvalidScope(_) => "invalid_scope",
            Error::UnsupportedGrantType(_) => "unsupported_grant_type",
            Error::UnauthorizedClient(_) => "unauthorized_client",
            Error::InvalidModuleAuthToken => "invalid_module_auth_token",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::JobNotReady(_) => "job_not_ready",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::JobFailed(_) => "job_failed",
            Error::Overloaded(_) => "overloaded",
            Error::JobTimeout(_) => "job_timeout",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Extra response headers this error requires (`WWW-Authenticate`, `Allow`, `Retry-After`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Error::InvalidToken => vec![("WWW-Authenticate", "Bearer".to_string())],
            Error::TokenExpired => vec![(
                "WWW-Authenticate",
                r#"Bearer error="invalid_token", error_description="The access token expired""#
                    .to_string(),
            )],
            Error::InvalidClient(_) => vec![(
                "WWW-Authenticate",
                r#"Basic realm="foundry-emulator""#.to_string(),
            )],
            Error::MethodNotAllowed(allowed) => vec![("Allow", allowed.join(", "))],
            Error::Overloaded(_) => vec![("Retry-After", "1".to_string())],
            _ => Vec::new(),
        }
    }

    /// Shorthand for the 404 of an unknown job.
    pub fn job_not_found(id: &str) -> Error {
        Error::NotFound(format!("Compute-module job '{id}' was not found."))
    }

    /// The 409 of a result posted for a job that is already terminal.
    pub fn result_conflict(id: &JobId) -> Error {
        Error::Conflict(format!(
            "Compute-module job '{id}' already finished; the first result is kept."
        ))
    }

    /// The 409 of a result posted for a job an application canceled.
    pub fn result_after_cancel(id: &JobId) -> Error {
        Error::Conflict(format!(
            "Compute-module job '{id}' was canceled; its result is not kept."
        ))
    }

    /// The 409 of a cancel of a job that already finished: nothing changed.
    pub fn cancel_conflict(id: &JobId, state: &str) -> Error {
        Error::Conflict(format!(
            "Compute-module job '{id}' already finished as {state}; canceling it changes nothing."
        ))
    }

    /// The 404 of a deployed app no active binding serves.
    pub fn app_not_bound(rid: &str) -> Error {
        Error::NotFound(format!(
            "No active compute-module runtime is bound to '{rid}'."
        ))
    }

    /// Shorthand for the 404 of an unknown runtime.
    pub fn runtime_not_found(id: &str) -> Error {
        Error::NotFound(format!("Compute-module runtime '{id}' was not found."))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidRequest(why) => f.write_str(why),
            Error::InvalidToken => {
                f.write_str("A valid 'Authorization: Bearer <token>' header is required.")
            }
            Error::TokenExpired => f.write_str(
                "The bearer token has expired; get a new one from /multipass/api/oauth2/token.",
            ),
            Error::InvalidClient(why)
            | Error::InvalidGrant(why)
            | Error::InvalidScope(why)
            | Error::UnsupportedGrantType(why)
            | Error::UnauthorizedClient(why) => f.write_str(why),
            Error::InvalidModuleAuthToken => {
                f.write_str("The Module-Auth-Token header is invalid.")
            }
            Error::NotFound(why) => f.write_str(why),
            Error::MethodNotAllowed(allowed) => {
                write!(f, "This route only allows {}.", allowed.join(", "))
            }
            Error::JobNotReady(id) => {
                write!(
                    f,
                    "Compute-module job '{id}' has not completed successfully."
                )
            }
            Error::Conflict(why) => f.write_str(why),
            Error::PayloadTooLarge(why) => f.write_str(why),
            Error::JobFailed(message) => f.write_str(message),
            Error::Overloaded(what) => {
                write!(f, "The emulator is overloaded: {what}. Retry later.")
            }
            Error::JobTimeout(id) => {
                write!(f, "Timed out waiting for compute-module job '{id}'.")
            }
            Error::Internal(why) => write!(f, "Internal emulator error: {why}."),
        }
    }
}

impl std::error::Error for Error {}
