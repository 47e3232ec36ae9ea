//! Multipass, Foundry's authentication service: the OAuth2 routes
//! (`/multipass/api/oauth2/{authorize,token,revoke_token}`) and the current user
//! (`/multipass/api/me`, `/api/v2/admin/users/getCurrent`). The grant logic is
//! `auth::oauth`; this file turns requests into its inputs and its answers into replies.

use super::dashboard::{escape, page};
use super::State;
use crate::auth::oauth::{self, AuthorizeError};
use crate::error::Error;
use crate::http::form::encode;
use crate::http::{Form, Reply, Req};

/// The form body of a token or revoke request.
fn form_body(req: &Req) -> Result<Form, Error> {
    let media_type = req
        .header("content-type")
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Error::InvalidRequest(
            "The body must be application/x-www-form-urlencoded (RFC 6749 §4).".into(),
        ));
    }
    if req.body.len() > crate::http::form::MAX_FORM_BYTES {
        return Err(Error::PayloadTooLarge(format!(
            "The form body is {} bytes; at most {} are accepted.",
            req.body.len(),
            crate::http::form::MAX_FORM_BYTES
        )));
    }
    Form::parse(&req.body).map_err(Error::InvalidRequest)
}

/// Token answers must not be cached (RFC 6749 §5.1).
fn no_store(reply: Reply) -> Reply {
    reply
        .with_header("Cache-Control", "no-store")
        .with_header("Pragma", "no-cache")
}

/// `POST /multipass/api/oauth2/token`.
pub fn token(state: &State, req: Req) -> Result<Reply, Error> {
    let form = form_body(&req)?;
    let answer = oauth::token(&state.auth, &form, req.header("authorization"))?;
    Ok(no_store(Reply::json(200, &answer.json())))
}

/// `POST /multipass/api/oauth2/revoke_token`: 200 with an empty body (RFC 7009 §2.2).
pub fn revoke(state: &State, req: Req) -> Result<Reply, Error> {
    let form = form_body(&req)?;
    oauth::revoke(&state.auth, &form, req.header("authorization"))?;
    Ok(no_store(Reply::empty(200)))
}

/// `GET /multipass/api/oauth2/authorize`: redirects at once with a code when the user is
/// known (`login`, `prompt=none`, or a single user to choose from), else a page of users.
pub fn authorize(state: &State, req: Req) -> Result<Reply, Error> {
    let params = Form::from_pairs(req.query.clone()).map_err(Error::InvalidRequest)?;
    let request = match oauth::authorization(&state.auth, &params) {
        Ok(request) => request,
        Err(AuthorizeError::Direct(e)) => return Err(e),
        Err(AuthorizeError::Redirect {
            redirect_uri,
            state,
            code,
            description,
        }) => {
            let to = oauth::error_redirect(&redirect_uri, state.as_deref(), code, &description);
            return Ok(redirect(&to));
        }
    };
    let users = state.auth.sign_in_users();
    let chosen = match params.get("login") {
        Some(login) => Some(
            users
                .iter()
                .find(|u| u.username == login)
                .cloned()
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "No user '{}' to sign in as.",
                        login.escape_debug()
                    ))
                })?,
        ),
        None if request.no_prompt || users.len() == 1 => users.first().cloned(),
        None => None,
    };
    if let Some(user) = chosen {
        return Ok(redirect(&oauth::sign_in(&state.auth, &request, user)));
    }
    // A page: one link per user, each this same request plus `login`.
    let query: Vec<String> = req
        .query
        .iter()
        .filter(|(name, _)| name != "login")
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    let mut body = format!(
        "<h1>Sign in to {}</h1><p>Choose the user the application acts for.</p><ul>",
        escape(&request.client_id)
    );
    for user in &users {
        let href = format!(
            "{}/authorize?{}&login={}",
            crate::paths::OAUTH2,
            query.join("&"),
            encode(&user.username)
        );
        let shown = user.display_name.as_deref().unwrap_or(&user.username);
        body.push_str(&format!(
            "<li><a class=user href=\"{}\">{}</a> <code>{}</code></li>",
            escape(&href),
            escape(shown),
            escape(&user.username)
        ));
    }
    body.push_str("</ul>");
    Ok(no_store(page("Sign in — foundry-emulator", &body)))
}

fn redirect(to: &str) -> Reply {
    no_store(Reply::empty(302).with_header("Location", to))
}

/// `GET /multipass/api/me`: the token's user, in multipass's shape.
pub fn me(state: &State, req: Req) -> Result<Reply, Error> {
    let principal = state.auth.principal(req.header("authorization"))?;
    Ok(Reply::json(200, &principal.user.multipass_json()))
}

/// `GET /api/v2/admin/users/getCurrent`: the token's user, as the platform API's `User`.
pub fn current_user(state: &State, req: Req) -> Result<Reply, Error> {
    let principal = state.auth.principal(req.header("authorization"))?;
    Ok(Reply::json(200, &principal.user.platform_json()))
}
