//! Authentication: the OAuth2 token endpoint (every grant, both client authentications,
//! PKCE, scopes, rotation, revocation, expiry), the authorize page, the current user, and
//! both modes on the Contour and runtime routes. Real clients are in `sdk.rs`.

use std::time::Duration;

use base64::Engine;
use foundry_emulator::auth::oauth::pkce_s256;
use foundry_emulator::runtimes::builtin::Builtin;
use foundry_emulator::{Config, Seed};
use serde_json::{json, Value};

use crate::util::*;

const TOKEN: &str = "/multipass/api/oauth2/token";
const REVOKE: &str = "/multipass/api/oauth2/revoke_token";
const AUTHORIZE: &str = "/multipass/api/oauth2/authorize";
const ECHO_RID: &str = "ri.foundry.main.deployed-app.echo";
/// The seeded confidential client of `fixtures/seed-auth.json` (its secret needs encoding).
const CI_ID: &str = "ci-app";
const CI_SECRET: &str = "s3cr3t+/= x";
const CALLBACK: &str = "http://localhost:8080/auth/callback";
/// An RFC 7636 verifier (43 characters of the unreserved set).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// Strict mode from `fixtures/seed-auth.json` (echo built in, users, three clients).
fn strict(configure: impl FnOnce(&mut Config)) -> TestServer {
    let seed = Seed::load(&fixture("seed-auth.json")).expect("seed-auth.json loads");
    TestServer::start(|cfg| {
        cfg.seed = seed;
        configure(cfg);
    })
}

/// Permissive mode with a built-in echo.
fn permissive() -> TestServer {
    TestServer::start(|cfg| cfg.seed.add_builtin("echo", ECHO_RID, Builtin::Echo))
}

fn form_encode(value: &str) -> String {
    url_encode(value).replace("%20", "+")
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 builds it (each part form-encoded first).
fn basic(id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(id), form_encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs
        .iter()
        .map(|(n, v)| format!("{}={}", form_encode(n), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// POSTs a form to `path`, with an optional `Authorization` header.
fn post_form(server: &TestServer, path: &str, auth: Option<&str>, body: &[u8]) -> Resp {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    send(&agent(), "POST", &server.url(path), &headers, Some(body))
}

/// A successful token answer: checks the shape and the no-store headers; answers the JSON.
fn token_ok(resp: &Resp) -> Value {
    resp.expect_status(200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("pragma"), Some("no-cache"));
    let body = resp.json();
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("foundry_emulator_access_")),
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["expires_in"].is_u64(), "an integer: {body}");
    body
}

/// A client-credentials request naming only a client id in the body (no secret).
fn client_credentials_by_id(server: &TestServer, client_id: &str) -> Resp {
    post_form(
        server,
        TOKEN,
        None,
        &form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ]),
    )
}

fn client_credentials(server: &TestServer, scope: Option<&str>) -> Value {
    let mut pairs = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        pairs.push(("scope", s));
    }
    token_ok(&post_form(
        server,
        TOKEN,
        Some(&basic(CI_ID, CI_SECRET)),
        &form(&pairs),
    ))
}

/// The username `/multipass/api/me` gives for a token answer's access token.
fn username(server: &TestServer, token_answer: &Value) -> String {
    let me = get(
        server,
        "/multipass/api/me",
        Some(&bearer(&token_answer["access_token"])),
    );
    me.expect_status(200);
    me.json()["username"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An agent that returns a redirect instead of following it.
fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .build()
        .into()
}

fn bearer(token: &Value) -> String {
    format!("Bearer {}", token.as_str().expect("a token string"))
}

fn get(server: &TestServer, path: &str, auth: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    send(&agent(), "GET", &server.url(path), &headers, None)
}

/// A sync echo execute with this `Authorization` value.
fn echo_with(server: &TestServer, auth: &str) -> Resp {
    send(
        &agent(),
        "POST",
        &server.execute_url(),
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        Some(
            serde_json::to_vec(&exec_body(ECHO_RID, "echo", json!({"hello": "world"})))
                .unwrap()
                .as_slice(),
        ),
    )
}

fn assert_echoed(resp: &Resp) {
    assert_octets(resp, br#"{"hello":"world"}"#);
}

#[test]
fn permissive_mode_gives_any_client_a_token_and_passes_any_bearer() {
    let server = permissive();
    let resp = client_credentials_by_id(&server, "anyone");
    let body = token_ok(&resp);
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["access_token", "expires_in", "token_type"],
        "no scope asked, no offline_access: no scope and no refresh_token"
    );
    assert_eq!(body["expires_in"], 3600);
    let token = bearer(&body["access_token"]);
    assert_echoed(&echo_with(&server, &token));
    assert_echoed(&echo_with(&server, "Bearer made-up"));
    // The issued token acts for the client's service user; a made-up one for the default user.
    let me = get(&server, "/multipass/api/me", Some(&token));
    me.expect_status(200);
    assert_eq!(me.json()["username"], "anyone");
    assert_eq!(
        me.json()["attributes"]["multipass:principal-type"],
        json!(["SERVICE"])
    );
    let default = get(&server, "/multipass/api/me", Some("Bearer made-up"));
    assert_eq!(default.json()["username"], "foundry-emulator-user");
    // No bearer at all is refused in both modes.
    assert_error(
        &get(&server, "/multipass/api/me", None),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
}

#[test]
fn strict_mode_accepts_static_and_issued_tokens_only() {
    let server = strict(|cfg| cfg.tokens = vec!["flag-token".into()]);
    assert!(server.running().auth().is_strict());
    let issued = client_credentials(&server, None);
    assert_echoed(&echo_with(&server, &bearer(&issued["access_token"])));
    assert_echoed(&echo_with(&server, "Bearer flag-token"));
    assert_echoed(&echo_with(&server, "Bearer static-ci-token"));
    for refused in [
        "Bearer made-up",
        "Bearer foundry_emulator_access_0000",
        "Basic x",
    ] {
        assert_error(
            &echo_with(&server, refused),
            401,
            "invalid_token",
            "A valid 'Authorization: Bearer <token>' header is required.",
        );
    }
    // The seed's static token acts for its login.
    let me = get(&server, "/multipass/api/me", Some("Bearer static-ci-token"));
    assert_eq!(me.expect_status(200).json()["username"], "alice");
}

#[test]
fn strict_auth_flag_alone_refuses_made_up_tokens_and_unknown_clients() {
    let server = TestServer::start(|cfg| {
        cfg.strict_auth = true;
        cfg.seed.add_builtin("echo", ECHO_RID, Builtin::Echo);
    });
    assert_error(
        &echo_with(&server, "Bearer made-up"),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    let resp = client_credentials_by_id(&server, "anyone");
    assert_error(&resp, 401, "invalid_client", "Unknown client 'anyone'.");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Basic realm="foundry-emulator""#)
    );
}

#[test]
fn both_client_authentication_methods_work_and_mixing_them_is_refused() {
    let server = strict(|_| {});
    // client_secret_basic, with a secret that needs form-encoding (`+`, `/`, `=`, space).
    client_credentials(&server, None);
    // client_secret_post.
    let post = post_form(
        &server,
        TOKEN,
        None,
        &form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CI_ID),
            ("client_secret", CI_SECRET),
        ]),
    );
    token_ok(&post);
    // (Authorization header, form body, status, error code, description)
    type Case = (Option<String>, Vec<u8>, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            Some(basic(CI_ID, "wrong")),
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
            "The secret of client 'ci-app' is wrong.",
        ),
        (
            None,
            form(&[("grant_type", "client_credentials"), ("client_id", CI_ID)]),
            401,
            "invalid_client",
            "The client 'ci-app' must authenticate with its secret.",
        ),
        (
            None,
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
            "Client authentication is required: HTTP Basic, or client_id (and client_secret) in the body.",
        ),
        (
            Some(basic(CI_ID, CI_SECRET)),
            form(&[("grant_type", "client_credentials"), ("client_secret", CI_SECRET)]),
            400,
            "invalid_request",
            "The client authenticates twice (HTTP Basic and client_secret); use one method.",
        ),
        (
            Some(basic(CI_ID, CI_SECRET)),
            form(&[("grant_type", "client_credentials"), ("client_id", "other")]),
            400,
            "invalid_request",
            "The client_id in the body differs from the HTTP Basic one.",
        ),
        (
            Some("Basic !!!not-base64".into()),
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
            "The Authorization header is not valid HTTP Basic credentials.",
        ),
        (
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no-colon")
            )),
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
            "The Authorization header is not valid HTTP Basic credentials.",
        ),
        (
            Some(basic("browser-app", "")),
            form(&[("grant_type", "client_credentials")]),
            400,
            "unauthorized_client",
            "The client 'browser-app' may not use the grant 'client_credentials'.",
        ),
    ];
    for (auth, body, status, code, description) in cases {
        let resp = post_form(&server, TOKEN, auth.as_deref(), &body);
        assert_error(&resp, status, code, description);
        if status == 401 {
            assert_eq!(
                resp.header("www-authenticate"),
                Some(r#"Basic realm="foundry-emulator""#)
            );
        }
        // No description ever carries the secret.
        assert!(!resp.text().contains("s3cr3t"), "{}", resp.text());
    }
    server.assert_alive();
}

#[test]
fn scopes_are_checked_against_the_client_and_offline_access_brings_a_refresh_token() {
    let server = strict(|_| {});
    let granted = client_credentials(&server, Some("api:read-data api:write-data"));
    assert_eq!(granted["scope"], "api:read-data api:write-data");
    assert!(granted.get("refresh_token").is_none());
    // Nothing asked: the client's allowed scopes.
    assert_eq!(
        client_credentials(&server, None)["scope"],
        "api:read-data api:write-data api:use-ontologies-read api:use-ontologies-write"
    );
    // offline_access is always allowed (the platform SDK appends it) and adds a refresh token.
    let offline = client_credentials(&server, Some("api:read-data offline_access"));
    assert_eq!(offline["scope"], "api:read-data offline_access");
    assert!(offline["refresh_token"]
        .as_str()
        .is_some_and(|t| t.starts_with("foundry_emulator_refresh_")));
    let bad = |scope: &str| {
        post_form(
            &server,
            TOKEN,
            Some(&basic(CI_ID, CI_SECRET)),
            &form(&[("grant_type", "client_credentials"), ("scope", scope)]),
        )
    };
    assert_error(
        &bad("api:read-data api:admin"),
        400,
        "invalid_scope",
        "The scope 'api:admin' is not allowed to client 'ci-app'.",
    );
    assert_error(
        &bad("api:\"quoted\""),
        400,
        "invalid_scope",
        "The scope 'api:\\\"quoted\\\"' has a character RFC 6749 does not allow in a scope.",
    );
    assert_error(
        &bad(&"a".repeat(5000)),
        400,
        "invalid_scope",
        "The scope parameter is 5000 bytes; at most 4096 are accepted.",
    );
    // A 1 MiB scope is past the form body's bound before its scope is read.
    let huge = bad(&"a".repeat(1024 * 1024));
    assert_eq!(huge.status, 413, "{}", huge.text());
    assert_eq!(huge.json()["error"], "payload_too_large");
    server.assert_alive();
}

#[test]
fn bad_token_requests_get_json_errors_and_the_next_request_is_served() {
    let server = strict(|_| {});
    let auth = basic(CI_ID, CI_SECRET);
    let json_body = send(
        &agent(),
        "POST",
        &server.url(TOKEN),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        Some(br#"{"grant_type":"client_credentials"}"#),
    );
    let not_form = "The body must be application/x-www-form-urlencoded (RFC 6749 §4).";
    assert_error(&json_body, 400, "invalid_request", not_form);
    let no_type = send(
        &agent(),
        "POST",
        &server.url(TOKEN),
        &[("Authorization", &auth)],
        Some(b"grant_type=client_credentials"),
    );
    assert_error(&no_type, 400, "invalid_request", not_form);
    let cases: &[(&[u8], u16, &str, &str)] = &[
        (b"", 400, "invalid_request", "The parameter 'grant_type' is required."),
        (b"scope=x", 400, "invalid_request", "The parameter 'grant_type' is required."),
        (
            b"grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
            "The grant type 'password' is not supported; use client_credentials, authorization_code or refresh_token.",
        ),
        (
            b"grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
            "The parameter 'grant_type' is sent more than once.",
        ),
        (
            b"grant_type=client_credentials&scope=%ff%fe",
            400,
            "invalid_request",
            "The form body is not UTF-8 once decoded.",
        ),
        (
            b"grant_type=client_credentials&scope=\xff",
            400,
            "invalid_request",
            "The form body is not UTF-8 once decoded.",
        ),
        (
            b"grant_type=authorization_code&redirect_uri=x",
            400,
            "invalid_request",
            "The parameter 'code' is required.",
        ),
        (
            b"grant_type=refresh_token",
            400,
            "invalid_request",
            "The parameter 'refresh_token' is required.",
        ),
    ];
    for (body, status, code, description) in cases {
        let resp = post_form(&server, TOKEN, Some(&auth), body);
        assert_error(&resp, *status, code, description);
        client_credentials(&server, None);
    }
    // `scope=` (empty, as the compute-module SDK sends it) is omitted, not an error.
    token_ok(&post_form(
        &server,
        TOKEN,
        Some(&auth),
        b"grant_type=client_credentials&scope=",
    ));
    assert_method_not_allowed(&get(&server, TOKEN, None), "POST");
}

#[test]
fn issued_tokens_expire_after_the_token_ttl() {
    let server = strict(|cfg| cfg.token_ttl = Duration::from_secs(1));
    let body = client_credentials(&server, None);
    assert_eq!(body["expires_in"], 1);
    let token = bearer(&body["access_token"]);
    // Within its second the token may already be gone on a slow machine; what must hold is
    // that it stops working, and says why.
    let mut last = echo_with(&server, &token);
    wait_for("the 1-second token to expire", || {
        last = echo_with(&server, &token);
        last.status == 401
    });
    assert_json(
        &last.json(),
        &json!({"error": "invalid_token",
                "error_description": "The bearer token has expired; get a new one from /multipass/api/oauth2/token."}),
        "expired",
    );
    assert_eq!(
        last.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="The access token expired""#)
    );
    // A fresh token works again.
    let fresh = client_credentials(&server, None);
    let resp = echo_with(&server, &bearer(&fresh["access_token"]));
    assert!(
        resp.status == 200 || resp.status == 401,
        "a 1-second token may expire before its first use: {}",
        resp.status
    );
}

#[test]
fn revoked_access_tokens_stop_working_at_once() {
    let server = strict(|_| {});
    let body = client_credentials(&server, None);
    let token = bearer(&body["access_token"]);
    assert_echoed(&echo_with(&server, &token));
    let raw = body["access_token"].as_str().unwrap();
    // Another client cannot revoke it (answered 200 all the same, RFC 7009 §2.2).
    let other = post_form(
        &server,
        REVOKE,
        Some(&basic("module-client", "module-secret")),
        &form(&[("token", raw)]),
    );
    other.expect_status(200);
    assert_echoed(&echo_with(&server, &token));
    let revoked = post_form(
        &server,
        REVOKE,
        Some(&basic(CI_ID, CI_SECRET)),
        &form(&[("token", raw)]),
    );
    revoked.expect_status(200);
    assert!(revoked.body.is_empty());
    assert_error(
        &echo_with(&server, &token),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    // Revocation authenticates the client like the token endpoint does.
    assert_error(
        &post_form(
            &server,
            REVOKE,
            Some(&basic(CI_ID, "wrong")),
            &form(&[("token", raw)]),
        ),
        401,
        "invalid_client",
        "The secret of client 'ci-app' is wrong.",
    );
    assert_error(
        &post_form(&server, REVOKE, Some(&basic(CI_ID, CI_SECRET)), b""),
        400,
        "invalid_request",
        "The parameter 'token' is required.",
    );
}

/// `GET authorize` without following the redirect.
fn authorize(server: &TestServer, query: &[(&str, &str)]) -> Resp {
    let q: Vec<String> = query
        .iter()
        .map(|(n, v)| format!("{n}={}", url_encode(v)))
        .collect();
    send(
        &no_redirects(),
        "GET",
        &server.url(&format!("{AUTHORIZE}?{}", q.join("&"))),
        &[],
        None,
    )
}

/// The query parameters of a redirect's `Location`.
fn redirect_params(resp: &Resp, to: &str) -> Vec<(String, String)> {
    resp.expect_status(302);
    let location = resp.header("location").expect("a Location header");
    let (base, query) = location.split_once('?').expect("a query");
    assert_eq!(base, to, "{location}");
    query
        .split('&')
        .map(|pair| {
            let (n, v) = pair.split_once('=').unwrap();
            let v = percent_decode(v);
            (n.to_string(), v)
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Signs `login` in for the public `browser-app` with an S256 challenge; answers the code.
fn code_for(server: &TestServer, login: &str, scope: &str) -> String {
    let challenge = pkce_s256(VERIFIER);
    let resp = authorize(
        server,
        &[
            ("response_type", "code"),
            ("client_id", "browser-app"),
            ("redirect_uri", CALLBACK),
            ("state", "st&te=1"),
            ("scope", scope),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login", login),
        ],
    );
    let params = redirect_params(&resp, CALLBACK);
    assert_eq!(param(&params, "state"), Some("st&te=1"));
    param(&params, "code").expect("a code").to_string()
}

fn exchange(server: &TestServer, code: &str, verifier: &str, redirect: &str, client: &str) -> Resp {
    post_form(
        server,
        TOKEN,
        None,
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", client),
            ("code_verifier", verifier),
        ]),
    )
}

#[test]
fn authorization_code_with_pkce_signs_the_chosen_user_in() {
    let server = strict(|_| {});
    let code = code_for(&server, "bob", "offline_access api:read-data");
    let body = token_ok(&exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"));
    assert_eq!(body["scope"], "offline_access api:read-data");
    let token = bearer(&body["access_token"]);
    let me = get(&server, "/multipass/api/me", Some(&token)).json();
    assert_eq!(me["username"], "bob");
    assert_echoed(&echo_with(&server, &token));
    // The code is single use: a replay fails and revokes what the first exchange issued.
    assert_error(
        &exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"),
        400,
        "invalid_grant",
        "The authorization code was already used; the tokens issued for it are revoked.",
    );
    assert_error(
        &echo_with(&server, &token),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_error(
        &post_form(
            &server,
            TOKEN,
            None,
            &form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "browser-app"),
            ]),
        ),
        400,
        "invalid_grant",
        "The refresh token is not known or was revoked.",
    );
}

#[test]
fn pkce_failures_are_invalid_grants_and_spend_the_code() {
    let server = strict(|_| {});
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "a-wrong-verifier-that-is-long-enough-for-rfc-7636",
            CALLBACK,
            "browser-app",
            "The code_verifier does not match the code_challenge.",
        ),
        (
            VERIFIER,
            "http://localhost:8080/elsewhere",
            "browser-app",
            "The redirect_uri differs from the one the code was issued for.",
        ),
        (
            VERIFIER,
            CALLBACK,
            "module-client",
            "The authorization code was issued to another client.",
        ),
    ];
    for (verifier, redirect, client, description) in cases {
        let code = code_for(&server, "alice", "api:read-data");
        let resp = if *client == "module-client" {
            post_form(
                &server,
                TOKEN,
                Some(&basic("module-client", "module-secret")),
                &form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", verifier),
                ]),
            )
        } else {
            exchange(&server, &code, verifier, redirect, client)
        };
        if *client == "module-client" {
            // That client may only use client_credentials.
            assert_error(
                &resp,
                400,
                "unauthorized_client",
                "The client 'module-client' may not use the grant 'authorization_code'.",
            );
            continue;
        }
        assert_error(&resp, 400, "invalid_grant", description);
        // A failed exchange spends the code: the right verifier cannot use it afterwards.
        assert_error(
            &exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"),
            400,
            "invalid_grant",
            "The authorization code was already used; the tokens issued for it are revoked.",
        );
    }
    // A code for one client, exchanged by another that may use the grant.
    let permissive = permissive();
    let resp = authorize(
        &permissive,
        &[
            ("response_type", "code"),
            ("client_id", "first"),
            ("redirect_uri", CALLBACK),
        ],
    );
    let code = param(&redirect_params(&resp, CALLBACK), "code")
        .unwrap()
        .to_string();
    let stolen = post_form(
        &permissive,
        TOKEN,
        None,
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", "second"),
        ]),
    );
    assert_error(
        &stolen,
        400,
        "invalid_grant",
        "The authorization code was issued to another client.",
    );
    assert_error(
        &exchange(&server, "no-such-code", VERIFIER, CALLBACK, "browser-app"),
        400,
        "invalid_grant",
        "The authorization code is not known.",
    );
    // A verifier that breaks RFC 7636's syntax.
    let code = code_for(&server, "alice", "api:read-data");
    assert_error(
        &exchange(&server, &code, "short", CALLBACK, "browser-app"),
        400,
        "invalid_request",
        "The code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1).",
    );
}

#[test]
fn plain_pkce_and_no_pkce_for_a_confidential_client() {
    let server = strict(|_| {});
    let plain = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", "browser-app"),
            ("redirect_uri", CALLBACK),
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
            ("prompt", "none"),
        ],
    );
    let code = param(&redirect_params(&plain, CALLBACK), "code")
        .unwrap()
        .to_string();
    let body = token_ok(&exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"));
    // prompt=none signs the first seeded user in.
    assert_eq!(username(&server, &body), "alice");
    // The confidential client may skip PKCE; its redirect URI is its only registered one.
    let resp = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", CI_ID),
            ("login", "bob"),
        ],
    );
    let code = param(
        &redirect_params(&resp, "http://127.0.0.1:9/callback"),
        "code",
    )
    .unwrap()
    .to_string();
    let resp = post_form(
        &server,
        TOKEN,
        Some(&basic(CI_ID, CI_SECRET)),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
        ]),
    );
    token_ok(&resp);
}

#[test]
fn authorize_errors_redirect_unless_the_client_or_redirect_is_untrusted() {
    let server = strict(|_| {});
    let direct = [
        (
            vec![("response_type", "code"), ("redirect_uri", CALLBACK)],
            "The parameter 'client_id' is required.",
        ),
        (
            vec![("response_type", "code"), ("client_id", "nobody"), ("redirect_uri", CALLBACK)],
            "Unknown client 'nobody'.",
        ),
        (
            vec![
                ("response_type", "code"),
                ("client_id", "browser-app"),
                ("redirect_uri", "https://evil.example/cb"),
            ],
            "The redirect_uri 'https://evil.example/cb' is not registered for client 'browser-app'.",
        ),
    ];
    for (query, description) in direct {
        assert_error(
            &authorize(&server, &query),
            400,
            "invalid_request",
            description,
        );
    }
    let redirected = [
        (
            vec![
                ("response_type", "token"),
                ("client_id", "browser-app"),
                ("redirect_uri", CALLBACK),
                ("state", "s"),
            ],
            "unsupported_response_type",
            "Only response_type=code is supported.",
        ),
        (
            vec![
                ("response_type", "code"),
                ("client_id", "browser-app"),
                ("redirect_uri", CALLBACK),
                ("state", "s"),
            ],
            "invalid_request",
            "A public client must send a PKCE code_challenge.",
        ),
        (
            vec![
                ("response_type", "code"),
                ("client_id", "browser-app"),
                ("redirect_uri", CALLBACK),
                ("state", "s"),
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "S512"),
            ],
            "invalid_request",
            "The code_challenge_method 'S512' is not supported; use S256 or plain.",
        ),
        (
            vec![
                ("response_type", "code"),
                ("client_id", CI_ID),
                ("state", "s"),
                ("scope", "api:admin"),
            ],
            "invalid_scope",
            "The scope 'api:admin' is not allowed to client 'ci-app'.",
        ),
    ];
    for (query, code, description) in redirected {
        let resp = authorize(&server, &query);
        let to = if query.iter().any(|(_, v)| *v == CALLBACK) {
            CALLBACK
        } else {
            "http://127.0.0.1:9/callback"
        };
        let params = redirect_params(&resp, to);
        assert_eq!(param(&params, "error"), Some(code), "{params:?}");
        assert_eq!(param(&params, "error_description"), Some(description));
        assert_eq!(param(&params, "state"), Some("s"));
        assert_eq!(param(&params, "code"), None);
    }
}

#[test]
fn the_authorize_page_lists_users_and_each_link_signs_one_in() {
    let server = strict(|_| {});
    let challenge = pkce_s256(VERIFIER);
    let query = [
        ("response_type", "code"),
        ("client_id", "browser-app"),
        ("redirect_uri", CALLBACK),
        ("state", "xyz"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let page = authorize(&server, &query);
    page.expect_status(200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("Sign in to browser-app"), "{html}");
    let links: Vec<&str> = html
        .split("<a class=user href=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "alice and bob: {html}");
    assert!(html.contains("Alice Example") && html.contains("<code>bob</code>"));
    // Follow bob's link as a browser would (the page escapes `&` as `&amp;`).
    let href = links[1].replace("&amp;", "&");
    let resp = send(&no_redirects(), "GET", &server.url(&href), &[], None);
    let params = redirect_params(&resp, CALLBACK);
    assert_eq!(param(&params, "state"), Some("xyz"));
    let code = param(&params, "code").unwrap().to_string();
    let body = token_ok(&exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"));
    assert_eq!(username(&server, &body), "bob");
    // An unknown login is refused, not silently swapped for another user.
    let mut unknown = query.to_vec();
    unknown.push(("login", "mallory"));
    assert_error(
        &authorize(&server, &unknown),
        400,
        "invalid_request",
        "No user 'mallory' to sign in as.",
    );
}

#[test]
fn refresh_tokens_rotate_and_a_replayed_one_revokes_its_grant() {
    let server = strict(|_| {});
    let first = client_credentials(&server, Some("api:read-data api:write-data offline_access"));
    let refresh = |token: &str, scope: Option<&str>| {
        let mut pairs = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
        if let Some(s) = scope {
            pairs.push(("scope", s));
        }
        post_form(
            &server,
            TOKEN,
            Some(&basic(CI_ID, CI_SECRET)),
            &form(&pairs),
        )
    };
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    // Narrowing is allowed, widening is not (and a refused refresh spends nothing).
    assert_error(
        &refresh(&r1, Some("api:read-data api:use-ontologies-read")),
        400,
        "invalid_scope",
        "The scope 'api:use-ontologies-read' was not granted originally; a refresh may only narrow the scopes.",
    );
    let second = token_ok(&refresh(&r1, Some("api:read-data offline_access")));
    assert_eq!(second["scope"], "api:read-data offline_access");
    let r2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "rotated");
    assert_echoed(&echo_with(&server, &bearer(&second["access_token"])));
    // Another client cannot use it.
    let other = post_form(
        &server,
        TOKEN,
        Some(&basic("module-client", "module-secret")),
        &form(&[("grant_type", "refresh_token"), ("refresh_token", &r2)]),
    );
    assert_error(
        &other,
        400,
        "unauthorized_client",
        "The client 'module-client' may not use the grant 'refresh_token'.",
    );
    // Replaying the rotated r1 revokes the whole grant: r2 and its access token too.
    assert_error(
        &refresh(&r1, None),
        400,
        "invalid_grant",
        "The refresh token was already used (rotated); its grant is revoked.",
    );
    assert_error(
        &echo_with(&server, &bearer(&second["access_token"])),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    assert_error(
        &refresh(&r2, None),
        400,
        "invalid_grant",
        "The refresh token is not known or was revoked.",
    );
    // Revoking a refresh token ends its grant's access tokens with it.
    let third = client_credentials(&server, Some("api:read-data offline_access"));
    let resp = post_form(
        &server,
        REVOKE,
        None,
        &form(&[
            ("token", third["refresh_token"].as_str().unwrap()),
            ("client_id", CI_ID),
            ("client_secret", CI_SECRET),
        ]),
    );
    resp.expect_status(200);
    assert_eq!(
        echo_with(&server, &bearer(&third["access_token"])).status,
        401
    );
}

#[test]
fn the_current_user_has_the_shapes_the_clients_validate() {
    let server = strict(|_| {});
    let me = get(
        &server,
        "/api/v2/admin/users/getCurrent",
        Some("Bearer static-ci-token"),
    );
    me.expect_status(200);
    let user = me.json();
    let id = user["id"].as_str().unwrap().to_string();
    assert!(is_uuid(&id), "{id}");
    assert_json(
        &user,
        &json!({
            "id": id,
            "username": "alice",
            "givenName": "Alice",
            "familyName": "Example",
            "email": "alice@example.com",
            "realm": "palantir-internal-realm",
            "organization": null,
            "status": "ACTIVE",
            "attributes": {
                "multipass:email:primary": ["alice@example.com"],
                "multipass:given-name": ["Alice"],
                "multipass:family-name": ["Example"],
                "multipass:display-name": ["Alice Example"],
                "multipass:principal-type": ["USER"],
            },
        }),
        "getCurrent",
    );
    let multipass = get(&server, "/multipass/api/me", Some("Bearer static-ci-token")).json();
    assert_json(
        &multipass,
        &json!({"id": id, "username": "alice", "realm": "palantir-internal-realm",
                "attributes": user["attributes"].clone()}),
        "me",
    );
    // A client-credentials token's user is the client's service user, with a stable id.
    let token = bearer(&client_credentials(&server, None)["access_token"]);
    let service = get(&server, "/api/v2/admin/users/getCurrent", Some(&token)).json();
    assert_eq!(service["username"], "ci-app");
    assert_eq!(
        service["attributes"]["multipass:display-name"],
        json!(["CI application"])
    );
    let again = bearer(&client_credentials(&server, None)["access_token"]);
    assert_eq!(
        get(&server, "/api/v2/admin/users/getCurrent", Some(&again)).json()["id"],
        service["id"]
    );
    assert_error(
        &get(
            &server,
            "/api/v2/admin/users/getCurrent",
            Some("Bearer nope"),
        ),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn strict_mode_guards_session_creation_and_inspection() {
    let server = strict(|_| {});
    let body = json!({"runtimeId": "evil", "deployedAppRid": ECHO_RID});
    assert_error(
        &server.create_runtime_raw(&body),
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
    // The victim's app still reaches echo.
    assert_echoed(&echo_with(&server, "Bearer static-ci-token"));
    let with_bearer = send(
        &agent(),
        "POST",
        &server.runtimes_url(),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer static-ci-token"),
        ],
        Some(br#"{"runtimeId": "py-module"}"#),
    );
    with_bearer.expect_status(200);
    // The seed binds py-module to module-client: the launcher gets its credentials.
    assert_json(
        &with_bearer.json()["oauthClient"],
        &json!({"clientId": "module-client", "clientSecret": "module-secret"}),
        "oauthClient",
    );
    let inspect = get(
        &server,
        &format!("{RUNTIMES}/py-module/jobs/no-such-job"),
        None,
    );
    assert_error(
        &inspect,
        401,
        "invalid_token",
        "A valid 'Authorization: Bearer <token>' header is required.",
    );
}

#[test]
fn a_builtin_runtime_is_never_reset_over_http() {
    for server in [permissive(), strict(|_| {})] {
        let resp = send(
            &agent(),
            "POST",
            &server.runtimes_url(),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer static-ci-token"),
            ],
            Some(br#"{"runtimeId": "echo"}"#),
        );
        assert_error(
            &resp,
            409,
            "conflict",
            "The runtime 'echo' is built into the emulator: its session cannot be created or reset over HTTP.",
        );
        // Its thread still serves.
        assert_echoed(&echo_with(&server, "Bearer static-ci-token"));
    }
}

/// A public client's sign-in proves nothing (anyone may sign in as anyone): its token calls
/// Contour, but may not steer the emulator (the review's bypass of strict mode).
#[test]
fn a_public_clients_token_cannot_steer_the_emulator() {
    let server = strict(|_| {});
    let code = code_for(&server, "alice", "api:read-data");
    let body = token_ok(&exchange(&server, &code, VERIFIER, CALLBACK, "browser-app"));
    let token = bearer(&body["access_token"]);
    assert_echoed(&echo_with(&server, &token));
    let steer = |method: &str, path: &str, payload: Option<&[u8]>| {
        send(
            &agent(),
            method,
            &server.url(path),
            &[
                ("Authorization", token.as_str()),
                ("Content-Type", "application/json"),
            ],
            payload,
        )
    };
    let refused = "This route steers the emulator: it needs a static token (--token, seed tokens) or a token issued to a client that authenticates with its secret.";
    for resp in [
        steer(
            "POST",
            RUNTIMES,
            Some(br#"{"runtimeId":"evil","deployedAppRid":"ri.foundry.main.deployed-app.echo"}"#),
        ),
        steer("POST", RUNTIMES, Some(br#"{"runtimeId":"py-module"}"#)),
        steer("GET", &format!("{RUNTIMES}/echo/jobs/nope"), None),
        steer("GET", "/_emulate/jobs", None),
        steer("POST", "/_emulate/reset", None),
    ] {
        assert_error(&resp, 403, "insufficient_scope", refused);
        assert_eq!(
            resp.header("www-authenticate"),
            Some(r#"Bearer error="insufficient_scope""#)
        );
    }
    // The victim's app still reaches echo; a confidential client's token may steer.
    assert_echoed(&echo_with(&server, "Bearer static-ci-token"));
    let operator = bearer(&client_credentials(&server, None)["access_token"]);
    let listing = send(
        &agent(),
        "GET",
        &server.url("/_emulate/jobs"),
        &[("Authorization", &operator)],
        None,
    );
    listing.expect_status(200);
}

#[test]
fn forms_are_bounded_in_size_and_parameters() {
    let server = strict(|_| {});
    let auth = basic(CI_ID, CI_SECRET);
    let many: Vec<String> = (0..101).map(|i| format!("p{i}=1")).collect();
    let resp = post_form(&server, TOKEN, Some(&auth), many.join("&").as_bytes());
    assert_error(
        &resp,
        400,
        "invalid_request",
        "The form has 101 parameters; at most 100 are accepted.",
    );
    let big = format!("grant_type=client_credentials&x={}", "a".repeat(64 * 1024));
    let resp = post_form(&server, TOKEN, Some(&auth), big.as_bytes());
    assert_error(
        &resp,
        413,
        "payload_too_large",
        &format!(
            "The form body is {} bytes; at most 65536 are accepted.",
            big.len()
        ),
    );
    let long_id = "c".repeat(300);
    let resp = client_credentials_by_id(&server, &long_id);
    assert_error(
        &resp,
        401,
        "invalid_client",
        "The client id is 300 bytes; at most 256 are accepted.",
    );
    client_credentials(&server, None);
}

/// curl `-u` and most HTTP libraries put the secret in Basic as it is, without RFC 6749's
/// form-encoding; both readings are accepted, and unpadded base64 too.
#[test]
fn basic_credentials_work_encoded_or_as_sent() {
    let server = strict(|_| {});
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CI_ID}:{CI_SECRET}"))
    );
    let unpadded = raw.trim_end_matches('=').to_string();
    for auth in [basic(CI_ID, CI_SECRET), raw, unpadded] {
        token_ok(&post_form(
            &server,
            TOKEN,
            Some(&auth),
            b"grant_type=client_credentials",
        ));
    }
    // `&` in a Basic id is part of the id, not a form separator.
    let sneaky = basic("ci-app&client_secret=zz", "x");
    assert_error(
        &post_form(
            &server,
            TOKEN,
            Some(&sneaky),
            b"grant_type=client_credentials",
        ),
        401,
        "invalid_client",
        "Unknown client 'ci-app&client_secret=zz'.",
    );
}

#[test]
fn issued_tokens_expire_and_revoke_in_permissive_mode_too() {
    let server = TestServer::start(|cfg| {
        cfg.token_ttl = Duration::from_secs(1);
        cfg.seed.add_builtin("echo", ECHO_RID, Builtin::Echo);
    });
    let issue = || token_ok(&client_credentials_by_id(&server, "my-app"));
    let token = bearer(&issue()["access_token"]);
    wait_for("the 1-second token to expire", || {
        echo_with(&server, &token).status == 401
    });
    assert_eq!(
        echo_with(&server, &token).json()["error_description"],
        "The bearer token has expired; get a new one from /multipass/api/oauth2/token."
    );
    // A token the emulator never issued still passes in permissive mode.
    assert_echoed(&echo_with(&server, "Bearer made-up"));
}

#[test]
fn refresh_tokens_go_only_to_clients_that_may_refresh() {
    let server = strict(|_| {});
    let resp = post_form(
        &server,
        TOKEN,
        Some(&basic("module-client", "module-secret")),
        &form(&[
            ("grant_type", "client_credentials"),
            ("scope", "offline_access"),
        ]),
    );
    let body = token_ok(&resp);
    assert_eq!(body["scope"], "offline_access");
    assert!(body.get("refresh_token").is_none(), "{body}");
}

#[test]
fn authorize_refuses_dangerous_redirects_and_malformed_challenges() {
    let server = permissive();
    for uri in [
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
    ] {
        let resp = authorize(
            &server,
            &[
                ("response_type", "code"),
                ("client_id", "c"),
                ("redirect_uri", uri),
            ],
        );
        assert_error(
            &resp,
            400,
            "invalid_request",
            &format!("The redirect_uri '{uri}' is not registered for client 'c'."),
        );
    }
    let resp = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", "c"),
            ("redirect_uri", CALLBACK),
            ("code_challenge", "x"),
        ],
    );
    let params = redirect_params(&resp, CALLBACK);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    assert_eq!(
        param(&params, "error_description"),
        Some("The code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.2).")
    );
    // 302 says its reason.
    assert!(resp.status == 302);
}
