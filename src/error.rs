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
    /// An issued bearer token past its `expires_in`.
    TokenExpired,
    /// A valid bearer that may not steer the emulator in strict mode (a public client's).
    NotOperator,
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
            Error::NotOperator => 403,
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
            Error::NotOperator => "insufficient_scope",
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
            Error::NotOperator => vec![(
                "WWW-Authenticate",
                r#"Bearer error="insufficient_scope""#.to_string(),
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
            Error::NotOperator => f.write_str(
                "This route steers the emulator: it needs a static token (--token, seed tokens) \
                 or a token issued to a client that authenticates with its secret.",
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::http::Reply;

    /// One row: the error, then its status, code, extra headers and `error_description`.
    type Row = (
        Error,
        u16,
        &'static str,
        Vec<(&'static str, &'static str)>,
        String,
    );

    /// Every variant, written the one way it reaches a client (`Reply::from`): status, every
    /// header, and the exact JSON body. A new variant fails the last assertion until it has a
    /// row.
    #[test]
    fn every_error_answers_its_status_code_headers_and_body() {
        let id = JobId::from_client("foundry_job_00000000000000000000000000000001");
        let id_text = id.to_string();
        let rows: Vec<Row> = vec![
            (
                Error::InvalidRequest("Field 'x' is required.".into()),
                400,
                "invalid_request",
                vec![],
                "Field 'x' is required.".into(),
            ),
            (
                Error::InvalidToken,
                401,
                "invalid_token",
                vec![("WWW-Authenticate", "Bearer")],
                "A valid 'Authorization: Bearer <token>' header is required.".into(),
            ),
            (
                Error::InvalidModuleAuthToken,
                401,
                "invalid_module_auth_token",
                vec![],
                "The Module-Auth-Token header is invalid.".into(),
            ),
            (
                Error::runtime_not_found("rt"),
                404,
                "not_found",
                vec![],
                "Compute-module runtime 'rt' was not found.".into(),
            ),
            (
                Error::MethodNotAllowed(&["GET", "HEAD"]),
                405,
                "method_not_allowed",
                vec![("Allow", "GET, HEAD")],
                "This route only allows GET, HEAD.".into(),
            ),
            (
                Error::JobNotReady(id.clone()),
                409,
                "job_not_ready",
                vec![],
                format!("Compute-module job '{id_text}' has not completed successfully."),
            ),
            (
                Error::result_conflict(&id),
                409,
                "conflict",
                vec![],
                format!(
                    "Compute-module job '{id_text}' already finished; the first result is kept."
                ),
            ),
            (
                Error::PayloadTooLarge("The result is too large to keep.".into()),
                413,
                "payload_too_large",
                vec![],
                "The result is too large to keep.".into(),
            ),
            (
                Error::JobFailed("exit status 3".into()),
                500,
                "job_failed",
                vec![],
                "exit status 3".into(),
            ),
            (
                Error::Overloaded("the queue is full".into()),
                503,
                "overloaded",
                vec![("Retry-After", "1")],
                "The emulator is overloaded: the queue is full. Retry later.".into(),
            ),
            (
                Error::JobTimeout(id.clone()),
                504,
                "job_timeout",
                vec![],
                format!("Timed out waiting for compute-module job '{id_text}'."),
            ),
            (
                Error::TokenExpired,
                401,
                "invalid_token",
                vec![(
                    "WWW-Authenticate",
                    r#"Bearer error="invalid_token", error_description="The access token expired""#,
                )],
                "The bearer token has expired; get a new one from /multipass/api/oauth2/token."
                    .into(),
            ),
            (
                Error::NotOperator,
                403,
                "insufficient_scope",
                vec![(
                    "WWW-Authenticate",
                    r#"Bearer error="insufficient_scope""#,
                )],
                "This route steers the emulator: it needs a static token (--token, seed tokens) or a token issued to a client that authenticates with its secret.".into(),
            ),
            (
                Error::InvalidClient("Unknown client 'x'.".into()),
                401,
                "invalid_client",
                vec![("WWW-Authenticate", r#"Basic realm="foundry-emulator""#)],
                "Unknown client 'x'.".into(),
            ),
            (
                Error::InvalidGrant("The authorization code is not known.".into()),
                400,
                "invalid_grant",
                vec![],
                "The authorization code is not known.".into(),
            ),
            (
                Error::InvalidScope("The scope 'a' is not allowed to client 'x'.".into()),
                400,
                "invalid_scope",
                vec![],
                "The scope 'a' is not allowed to client 'x'.".into(),
            ),
            (
                Error::UnsupportedGrantType("The grant type 'password' is not supported.".into()),
                400,
                "unsupported_grant_type",
                vec![],
                "The grant type 'password' is not supported.".into(),
            ),
            (
                Error::UnauthorizedClient("The client 'x' may not use the grant 'y'.".into()),
                400,
                "unauthorized_client",
                vec![],
                "The client 'x' may not use the grant 'y'.".into(),
            ),
            (
                Error::Internal("a handler panicked".into()),
                500,
                "internal_error",
                vec![],
                "Internal emulator error: a handler panicked.".into(),
            ),
        ];
        let mut seen = Vec::new();
        for (err, status, code, extra, description) in rows {
            let what = format!("{err:?}");
            seen.push(variant_name(&err));
            assert_eq!(err.status(), status, "{what}: status()");
            assert_eq!(err.code(), code, "{what}: code()");
            assert_eq!(err.to_string(), description, "{what}: Display");
            let reply = Reply::from(err);
            assert_eq!(reply.status, status, "{what}: reply status");
            let mut want_headers = vec![("Content-Type", "application/json")];
            want_headers.extend(extra);
            let got_headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            assert_eq!(got_headers, want_headers, "{what}: headers");
            let body: Value = serde_json::from_slice(reply.body.as_ref()).unwrap();
            assert_eq!(
                body,
                json!({"error": code, "error_description": description}),
                "{what}: body"
            );
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), VARIANTS, "every variant has a row: {seen:?}");
    }

    /// How many variants `Error` has; `variant_name` keeps this honest.
    const VARIANTS: usize = 19;

    /// The variant's name; an exhaustive match, so a new variant does not compile here
    /// until it is named (and then the table above must grow to reach [`VARIANTS`]).
    fn variant_name(err: &Error) -> &'static str {
        match err {
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::InvalidToken => "InvalidToken",
            Error::TokenExpired => "TokenExpired",
            Error::NotOperator => "NotOperator",
            Error::InvalidClient(_) => "InvalidClient",
            Error::InvalidGrant(_) => "InvalidGrant",
            Error::InvalidScope(_) => "InvalidScope",
            Error::UnsupportedGrantType(_) => "UnsupportedGrantType",
            Error::UnauthorizedClient(_) => "UnauthorizedClient",
            Error::InvalidModuleAuthToken => "InvalidModuleAuthToken",
            Error::NotFound(_) => "NotFound",
            Error::MethodNotAllowed(_) => "MethodNotAllowed",
            Error::JobNotReady(_) => "JobNotReady",
            Error::Conflict(_) => "Conflict",
            Error::PayloadTooLarge(_) => "PayloadTooLarge",
            Error::JobFailed(_) => "JobFailed",
            Error::Overloaded(_) => "Overloaded",
            Error::JobTimeout(_) => "JobTimeout",
            Error::Internal(_) => "Internal",
        }
    }

    #[test]
    fn the_shorthands_say_which_thing() {
        let id = JobId::from_client("j");
        let cases = [
            (Error::job_not_found("j"), "Compute-module job 'j' was not found."),
            (
                Error::result_after_cancel(&id),
                "Compute-module job 'j' was canceled; its result is not kept.",
            ),
            (
                Error::cancel_conflict(&id, "succeeded"),
                "Compute-module job 'j' already finished as succeeded; canceling it changes nothing.",
            ),
            (
                Error::app_not_bound("ri.a"),
                "No active compute-module runtime is bound to 'ri.a'.",
            ),
        ];
        for (err, sentence) in cases {
            assert_eq!(err.to_string(), sentence, "{err:?}");
        }
        assert_eq!(Error::job_not_found("j").status(), 404);
        assert_eq!(Error::app_not_bound("ri.a").status(), 404);
        assert_eq!(Error::cancel_conflict(&id, "failed").status(), 409);
        assert_eq!(Error::result_after_cancel(&id).status(), 409);
    }
}
