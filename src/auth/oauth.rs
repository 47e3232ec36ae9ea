//! The OAuth2 authorization server (RFC 6749, PKCE RFC 7636, revocation RFC 7009): the logic
//! behind `/multipass/api/oauth2/{authorize,token,revoke_token}`, free of HTTP.
//!
//! Long (about 730 lines) because it is the whole authorization server in one place: three
//! grants, client authentication, PKCE, the authorize step and its redirects, each with the
//! refusal RFC 6749 names for it; they share `Caller` and the answer builders, and splitting
//! them would only move those across files.
//!
//! Client authentication is HTTP Basic (`client_secret_basic`: base64 of the form-encoded id
//! and secret, RFC 6749 §2.3.1) or body fields (`client_secret_post`), never both. In
//! permissive mode any client id is accepted with any secret and may use every grant.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::issued::{Code, Issue, Refusal};
use super::users::User;
use super::{constant_time_eq, sha256, Auth, OauthClient, Principal};
use crate::error::Error;
use crate::http::Form;

/// How long a refresh token lives (rotated on every use).
pub const REFRESH_LIFE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The scope that asks for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A `scope` parameter longer than this is refused (a scope list is a few words).
const MAX_SCOPE_BYTES: usize = 4096;

/// The token endpoint's answer.
#[derive(Debug, Clone)]
pub struct TokenAnswer {
    pub access_token: String,
    pub expires_in: u64,
    pub scopes: Vec<String>,
    pub refresh_token: Option<String>,
}

impl TokenAnswer {
    /// `{"access_token","token_type":"Bearer","expires_in"[,"scope"][,"refresh_token"]}`.
    pub fn json(&self) -> Value {
        let mut out = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        });
        if !self.scopes.is_empty() {
            out["scope"] = json!(self.scopes.join(" "));
        }
        if let Some(refresh) = &self.refresh_token {
            out["refresh_token"] = json!(refresh);
        }
        out
    }
}

/// The client a request comes from: a seeded one, or (permissive mode) any id.
struct Caller<'a> {
    id: String,
    seeded: Option<&'a OauthClient>,
}

impl Caller<'_> {
    fn may_use(&self, grant: &str) -> Result<(), Error> {
        match self.seeded {
            Some(c) if !c.grant_types.is_empty() && !c.grant_types.iter().any(|g| g == grant) => {
                Err(Error::UnauthorizedClient(format!(
                    "The client '{}' may not use the grant '{grant}'.",
                    shown(&self.id)
                )))
            }
            _ => Ok(()),
        }
    }

    /// The scopes granted for `asked` (the client's allowed ones when nothing was asked).
    fn grant_scopes(&self, asked: Option<&str>) -> Result<Vec<String>, Error> {
        let allowed = self
            .seeded
            .map(|c| c.allowed_scopes.as_slice())
            .unwrap_or(&[]);
        let Some(asked) = asked else {
            return Ok(allowed
                .iter()
                .filter(|s| *s != OFFLINE_ACCESS)
                .cloned()
                .collect());
        };
        let scopes = parse_scopes(asked)?;
        if !allowed.is_empty() {
            // `offline_access` asks for a refresh token, not for access: always allowed (the
            // platform SDK adds it to every scope list it sends).
            let not_allowed = |s: &&String| *s != OFFLINE_ACCESS && !allowed.contains(s);
            if let Some(bad) = scopes.iter().find(not_allowed) {
                return Err(Error::InvalidScope(format!(
                    "The scope '{}' is not allowed to client '{}'.",
                    shown(bad),
                    shown(&self.id)
                )));
            }
        }
        Ok(scopes)
    }

    fn is_public(&self) -> bool {
        self.seeded.is_some_and(|c| c.client_secret.is_none())
    }
}

/// Splits a `scope` parameter (RFC 6749 §3.3: space-separated `%x21 / %x23-5B / %x5D-7E`).
pub fn parse_scopes(text: &str) -> Result<Vec<String>, Error> {
    if text.len() > MAX_SCOPE_BYTES {
        return Err(Error::InvalidScope(format!(
            "The scope parameter is {} bytes; at most {MAX_SCOPE_BYTES} are accepted.",
            text.len()
        )));
    }
    let mut scopes: Vec<String> = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let valid = word
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(Error::InvalidScope(format!(
                "The scope '{}' has a character RFC 6749 does not allow in a scope.",
                shown(word)
            )));
        }
        if !scopes.iter().any(|s| s == word) {
            scopes.push(word.to_string());
        }
    }
    Ok(scopes)
}

/// A client id (or another client-chosen name) longer than this is refused: every issued
/// credential stores its client id, so an unbounded one would make the bounded table large.
pub const MAX_ID_BYTES: usize = 256;

/// A client-chosen text as shown in an error description: escaped, at most 64 characters.
pub fn shown(text: &str) -> String {
    let escaped = text.escape_debug().to_string();
    match escaped.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &escaped[..at]),
        None => escaped,
    }
}

/// The client id and secret a request presents, from Basic or from the body. A Basic pair
/// is answered both decoded (RFC 6749 §2.3.1: form-encoded before base64, as oauth4webapi
/// does) and as sent (curl `-u` and most HTTP libraries do not encode).
fn presented_client(form: &Form, authorization: Option<&str>) -> Result<Presented, Error> {
    let basic = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
    });
    let Some(encoded) = basic else {
        let id = form.get("client_id").ok_or_else(|| {
            Error::InvalidClient(
                "Client authentication is required: HTTP Basic, or client_id (and client_secret) in the body."
                    .into(),
            )
        })?;
        return Ok(Presented {
            ids: vec![id.to_string()],
            secrets: form.get("client_secret").map(|s| vec![s.to_string()]),
        });
    };
    let malformed = || {
        Error::InvalidClient("The Authorization header is not valid HTTP Basic credentials.".into())
    };
    let decoded = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(encoded)
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let both = |raw: &str| -> Option<Vec<String>> {
        let spaced = raw.replace('+', " ");
        let unescaped = percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .ok()?
            .into_owned();
        Some(if unescaped == raw {
            vec![unescaped]
        } else {
            vec![unescaped, raw.to_string()]
        })
    };
    let ids = both(id).ok_or_else(malformed)?;
    let secrets = both(secret).ok_or_else(malformed)?;
    if id.is_empty() {
        return Err(malformed());
    }
    if form.get("client_secret").is_some() {
        return Err(Error::InvalidRequest(
            "The client authenticates twice (HTTP Basic and client_secret); use one method.".into(),
        ));
    }
    if form
        .get("client_id")
        .is_some_and(|body_id| !ids.iter().any(|id| id == body_id))
    {
        return Err(Error::InvalidRequest(
            "The client_id in the body differs from the HTTP Basic one.".into(),
        ));
    }
    Ok(Presented {
        ids,
        secrets: Some(secrets),
    })
}

/// A client id and secret as presented: each in its readings (decoded first, then as sent).
struct Presented {
    ids: Vec<String>,
    secrets: Option<Vec<String>>,
}

/// Authenticates the calling client (strict mode: seeded, and its secret matches).
fn authenticate<'a>(
    auth: &'a Auth,
    form: &Form,
    authorization: Option<&str>,
) -> Result<Caller<'a>, Error> {
    let presented = presented_client(form, authorization)?;
    let id = presented.ids[0].clone();
    if id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidClient(format!(
            "The client id is {} bytes; at most {MAX_ID_BYTES} are accepted.",
            id.len()
        )));
    }
    if !auth.is_strict() {
        return Ok(Caller { id, seeded: None });
    }
    let unknown = || Error::InvalidClient(format!("Unknown client '{}'.", shown(&id)));
    let client = presented
        .ids
        .iter()
        .find_map(|id| auth.client(id))
        .ok_or_else(unknown)?;
    let id = client.client_id.clone();
    if let Some(expected) = &client.client_secret {
        let secrets = presented.secrets.ok_or_else(|| {
            Error::InvalidClient(format!(
                "The client '{}' must authenticate with its secret.",
                shown(&id)
            ))
        })?;
        // Every reading is compared (constant-time each), so timing does not say which matched.
        let matched = secrets
            .iter()
            .fold(false, |ok, secret| expected.matches(secret) | ok);
        if !matched {
            return Err(Error::InvalidClient(format!(
                "The secret of client '{}' is wrong.",
                shown(&id)
            )));
        }
    }
    Ok(Caller {
        id,
        seeded: Some(client),
    })
}

/// `POST /multipass/api/oauth2/token`.
pub fn token(auth: &Auth, form: &Form, authorization: Option<&str>) -> Result<TokenAnswer, Error> {
    let grant_type = form.require("grant_type").map_err(Error::InvalidRequest)?;
    if !["client_credentials", "authorization_code", "refresh_token"].contains(&grant_type) {
        return Err(Error::UnsupportedGrantType(format!(
            "The grant type '{}' is not supported; use client_credentials, authorization_code or refresh_token.",
            shown(grant_type)
        )));
    }
    let caller = authenticate(auth, form, authorization)?;
    caller.may_use(grant_type)?;
    match grant_type {
        "client_credentials" => client_credentials(auth, &caller, form),
        "authorization_code" => authorization_code(auth, &caller, form),
        _ => refresh(auth, &caller, form),
    }
}

fn client_credentials(auth: &Auth, caller: &Caller, form: &Form) -> Result<TokenAnswer, Error> {
    if caller.is_public() {
        return Err(Error::UnauthorizedClient(format!(
            "The client '{}' is public (no secret) and may not use client_credentials.",
            shown(&caller.id)
        )));
    }
    let scopes = caller.grant_scopes(form.get("scope"))?;
    let user = Arc::new(User::service(
        &caller.id,
        caller.seeded.and_then(|c| c.name.as_deref()),
    ));
    // The client proved its secret: its token may steer the emulator too.
    let principal = Principal {
        user,
        scopes,
        operator: true,
    };
    let issue = issue_for(auth, caller, principal, auth.issued.new_family());
    let (access_token, refresh_token) = auth
        .issued
        .issue(&issue)
        .expect("a fresh family is never revoked");
    Ok(TokenAnswer::new(
        auth,
        issue.principal,
        access_token,
        refresh_token,
    ))
}

fn authorization_code(auth: &Auth, caller: &Caller, form: &Form) -> Result<TokenAnswer, Error> {
    let code = form.require("code").map_err(Error::InvalidRequest)?;
    let redirect_uri = form.get("redirect_uri");
    let refused = |r| match r {
        Refusal::Unknown => Error::InvalidGrant("The authorization code is not known.".into()),
        Refusal::Expired => Error::InvalidGrant("The authorization code has expired.".into()),
        Refusal::Revoked => Error::InvalidGrant("The authorization code was revoked.".into()),
        Refusal::Reused => Error::InvalidGrant(
            "The authorization code was already used; the tokens issued for it are revoked.".into(),
        ),
    };
    let check = |issued: &Code| {
        if issued.client_id != caller.id {
            return Err(Error::InvalidGrant(
                "The authorization code was issued to another client.".into(),
            ));
        }
        // RFC 6749 §4.1.3: required when `authorize` was sent one, and then identical.
        match redirect_uri {
            None if issued.redirect_uri_sent => {
                return Err(Error::InvalidRequest(
                    "The parameter 'redirect_uri' is required.".into(),
                ))
            }
            Some(uri) if uri != issued.redirect_uri => {
                return Err(Error::InvalidGrant(
                    "The redirect_uri differs from the one the code was issued for.".into(),
                ))
            }
            _ => {}
        }
        check_verifier(issued.challenge.as_ref(), form.get("code_verifier"))?;
        let principal = Principal {
            // A public client proves nothing but the verifier: its tokens may call Contour,
            // not steer the emulator.
            operator: !caller.is_public(),
            ..issued.principal.clone()
        };
        Ok(issue_for(auth, caller, principal, 0))
    };
    let (principal, access_token, refresh_token) =
        auth.issued.exchange_code(code, refused, check)?;
    Ok(TokenAnswer::new(
        auth,
        principal,
        access_token,
        refresh_token,
    ))
}

fn refresh(auth: &Auth, caller: &Caller, form: &Form) -> Result<TokenAnswer, Error> {
    let token = form
        .require("refresh_token")
        .map_err(Error::InvalidRequest)?;
    let asked = form.get("scope").map(parse_scopes).transpose()?;
    let refused = |r| match r {
        Refusal::Unknown | Refusal::Revoked => {
            Error::InvalidGrant("The refresh token is not known or was revoked.".into())
        }
        Refusal::Expired => Error::InvalidGrant("The refresh token has expired.".into()),
        Refusal::Reused => Error::InvalidGrant(
            "The refresh token was already used (rotated); its grant is revoked.".into(),
        ),
    };
    let accept = |grant: &super::issued::Grant| {
        if grant.client_id != caller.id {
            return Err(Error::InvalidGrant(
                "The refresh token was issued to another client.".into(),
            ));
        }
        let widened = asked
            .iter()
            .flatten()
            .find(|s| !grant.principal.scopes.contains(s));
        if let Some(bad) = widened {
            return Err(Error::InvalidScope(format!(
                "The scope '{}' was not granted originally; a refresh may only narrow the scopes.",
                shown(bad)
            )));
        }
        let mut principal = grant.principal.clone();
        if let Some(asked) = &asked {
            principal.scopes = asked.clone();
        }
        // A refresh always rotates: the answer carries the family's next refresh token.
        Ok(Issue {
            refresh_life: Some(REFRESH_LIFE),
            ..issue_for(auth, caller, principal, 0)
        })
    };
    let (principal, access_token, refresh_token) =
        auth.issued.rotate_refresh(token, refused, accept)?;
    Ok(TokenAnswer::new(
        auth,
        principal,
        access_token,
        refresh_token,
    ))
}

/// What to issue for `principal`: an access token, and a refresh token when
/// `offline_access` was granted to a client that may use the refresh grant.
fn issue_for(auth: &Auth, caller: &Caller, principal: Principal, family: u64) -> Issue {
    let wants_refresh = principal.scopes.iter().any(|s| s == OFFLINE_ACCESS);
    let refresh_life =
        (wants_refresh && caller.may_use("refresh_token").is_ok()).then_some(REFRESH_LIFE);
    Issue {
        principal,
        client_id: caller.id.clone(),
        life: auth.token_ttl(),
        refresh_life,
        family,
    }
}

impl TokenAnswer {
    fn new(
        auth: &Auth,
        principal: Principal,
        access_token: String,
        refresh_token: Option<String>,
    ) -> TokenAnswer {
        TokenAnswer {
            access_token,
            expires_in: auth.token_ttl().as_secs(),
            scopes: principal.scopes,
            refresh_token,
        }
    }
}

/// RFC 7636 §4.6: the verifier must match the challenge the code was issued with.
fn check_verifier(
    challenge: Option<&(String, String)>,
    verifier: Option<&str>,
) -> Result<(), Error> {
    let Some((challenge, method)) = challenge else {
        return match verifier {
            // OAuth 2.1 §4.1.3: a verifier without a challenge is a downgrade attempt.
            Some(_) => Err(Error::InvalidGrant(
                "A code_verifier was sent, but the code was issued without a code_challenge."
                    .into(),
            )),
            None => Ok(()),
        };
    };
    let verifier = verifier.ok_or_else(|| {
        Error::InvalidGrant(
            "The code was issued with a PKCE challenge; code_verifier is required.".into(),
        )
    })?;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return Err(Error::InvalidRequest(
            "The code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)."
                .into(),
        ));
    }
    let derived = match method.as_str() {
        "S256" => pkce_s256(verifier),
        _ => verifier.to_string(),
    };
    if !constant_time_eq(derived.as_bytes(), challenge.as_bytes()) {
        return Err(Error::InvalidGrant(
            "The code_verifier does not match the code_challenge.".into(),
        ));
    }
    Ok(())
}

/// `BASE64URL(SHA256(verifier))` without padding.
pub fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256::digest(verifier.as_bytes()))
}

/// `POST /multipass/api/oauth2/revoke_token`: the client revokes one of its tokens. Unknown
/// tokens and other clients' tokens change nothing and still answer success (RFC 7009 §2.2).
pub fn revoke(auth: &Auth, form: &Form, authorization: Option<&str>) -> Result<(), Error> {
    let token = form.require("token").map_err(Error::InvalidRequest)?;
    let caller = authenticate(auth, form, authorization)?;
    auth.issued.revoke(token, &caller.id);
    Ok(())
}

/// A valid `authorize` request, before a user is chosen.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the request named it (else it is the client's one registered URI).
    pub redirect_uri_sent: bool,
    pub state: Option<String>,
    pub scopes: Vec<String>,
    pub challenge: Option<(String, String)>,
    /// `prompt=none`: never show a page.
    pub no_prompt: bool,
}

/// Where an `authorize` request goes: back to the client with an error, or on to sign-in.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: answer here, never redirect (§4.1.2.1).
    Direct(Error),
    /// Everything else goes back to the redirect URI as `error=…` (the code and sentence).
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        code: &'static str,
        description: String,
    },
}

/// Validates `GET /multipass/api/oauth2/authorize`'s parameters.
pub fn authorization(auth: &Auth, params: &Form) -> Result<Authorization, AuthorizeError> {
    let direct = |e: Error| AuthorizeError::Direct(e);
    let client_id = params
        .require("client_id")
        .map_err(|why| direct(Error::InvalidRequest(why)))?;
    if client_id.len() > MAX_ID_BYTES {
        return Err(direct(Error::InvalidRequest(format!(
            "The client_id is {} bytes; at most {MAX_ID_BYTES} are accepted.",
            client_id.len()
        ))));
    }
    let seeded = auth.client(client_id);
    if auth.is_strict() && seeded.is_none() {
        return Err(direct(Error::InvalidRequest(format!(
            "Unknown client '{}'.",
            shown(client_id)
        ))));
    }
    let redirect_uri_sent = params.get("redirect_uri").is_some();
    let redirect_uri = match (params.get("redirect_uri"), seeded) {
        (Some(uri), _) => uri.to_string(),
        (None, Some(c)) if c.redirect_uris.len() == 1 => c.redirect_uris[0].clone(),
        (None, _) => {
            return Err(direct(Error::InvalidRequest(
                "The parameter 'redirect_uri' is required.".into(),
            )))
        }
    };
    let registered = seeded.is_none_or(|c| c.redirect_uris.contains(&redirect_uri));
    if !registered || !plausible_redirect(&redirect_uri) || redirect_uri.len() > MAX_URI_BYTES {
        return Err(direct(Error::InvalidRequest(format!(
            "The redirect_uri '{}' is not registered for client '{}'.",
            shown(&redirect_uri),
            shown(client_id)
        ))));
    }
    let state = params
        .get("state")
        .filter(|s| s.len() <= MAX_STATE_BYTES)
        .map(str::to_string);
    let back = |code: &'static str, description: String| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        code,
        description,
    };
    if params
        .get("state")
        .is_some_and(|s| s.len() > MAX_STATE_BYTES)
    {
        return Err(back(
            "invalid_request",
            format!("The state is longer than {MAX_STATE_BYTES} bytes."),
        ));
    }
    if params.get("response_type") != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "Only response_type=code is supported.".into(),
        ));
    }
    let caller = Caller {
        id: client_id.to_string(),
        seeded,
    };
    if let Err(e) = caller.may_use("authorization_code") {
        return Err(back("unauthorized_client", e.to_string()));
    }
    let scopes = caller
        .grant_scopes(params.get("scope"))
        .map_err(|e| back("invalid_scope", e.to_string()))?;
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, _) if caller.is_public() => {
            return Err(back(
                "invalid_request",
                "A public client must send a PKCE code_challenge.".into(),
            ))
        }
        (None, _) => None,
        (Some(c), _) if !pkce_shaped(c) => return Err(back(
            "invalid_request",
            "The code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.2)."
                .into(),
        )),
        (Some(c), method @ (None | Some("plain") | Some("S256"))) => {
            Some((c.to_string(), method.unwrap_or("plain").to_string()))
        }
        (Some(_), Some(other)) => {
            return Err(back(
                "invalid_request",
                format!(
                    "The code_challenge_method '{}' is not supported; use S256 or plain.",
                    shown(other)
                ),
            ))
        }
    };
    Ok(Authorization {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_sent,
        state,
        scopes,
        challenge,
        no_prompt: params.get("prompt") == Some("none"),
    })
}

/// A redirect URI longer than this is refused.
const MAX_URI_BYTES: usize = 2048;
/// A `state` longer than this is refused (it is echoed in the redirect).
const MAX_STATE_BYTES: usize = 1024;

/// RFC 7636's verifier and challenge alphabet and length.
fn pkce_shaped(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An absolute URI without a fragment (RFC 6749 §3.1.2), of a scheme an application can
/// receive a code on (http, https, or an app's own scheme): never a scheme that runs or
/// reads something (`javascript:`, `data:`, `file:`, `vbscript:`).
fn plausible_redirect(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let dangerous = ["javascript", "data", "file", "vbscript"]
        .iter()
        .any(|d| scheme.eq_ignore_ascii_case(d));
    !dangerous
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !uri.contains('#')
        && !uri.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

/// Signs `user` in: mints the code and answers the redirect URL with `code` and `state`.
pub fn sign_in(auth: &Auth, request: &Authorization, user: Arc<User>) -> String {
    let code = Code {
        principal: Principal {
            user,
            scopes: request.scopes.clone(),
            // Decided at the exchange, by whether the client proves a secret.
            operator: false,
        },
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_sent: request.redirect_uri_sent,
        challenge: request.challenge.clone(),
    };
    let code = auth.issued.issue_code(code);
    let mut params = vec![("code", code)];
    if let Some(state) = &request.state {
        params.push(("state", state.clone()));
    }
    with_query(&request.redirect_uri, &params)
}

/// The redirect for an error (§4.1.2.1).
pub fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    code: &str,
    description: &str,
) -> String {
    let mut params = vec![
        ("error", code.to_string()),
        ("error_description", description.to_string()),
    ];
    if let Some(state) = state {
        params.push(("state", state.to_string()));
    }
    with_query(redirect_uri, &params)
}

fn with_query(uri: &str, params: &[(&str, String)]) -> String {
    let mut out = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        out.push(sep);
        out.push_str(name);
        out.push('=');
        out.push_str(&crate::http::form::encode(value));
        sep = '&';
    }
    out
}
