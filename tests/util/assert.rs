//! Exact assertions: status, JSON equality, bytes; on a mismatch both sides are printed.

use serde_json::{json, Value};

use super::Resp;

/// Asserts an error response exactly: status, the JSON body `{"error", "error_description"}`,
/// `Content-Type: application/json`, and the headers SPEC.md requires for the code.
/// Prints both sides in full on a mismatch.
pub fn assert_error(resp: &Resp, status: u16, code: &str, description: &str) {
    let want = json!({"error": code, "error_description": description});
    let got: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let ok = resp.status == status && got.as_ref() == Some(&want);
    assert!(
        ok,
        "error response mismatch\n  want: {status} {}\n  got:  {} {}\n  got headers: {:?}",
        serde_json::to_string_pretty(&want).unwrap(),
        resp.status,
        resp.text(),
        resp.headers
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "error bodies are JSON; headers {:?}",
        resp.headers
    );
    match code {
        "invalid_token" => assert_eq!(
            resp.header("www-authenticate"),
            Some("Bearer"),
            "401 invalid_token needs WWW-Authenticate: Bearer; headers {:?}",
            resp.headers
        ),
        "overloaded" => assert_eq!(
            resp.header("retry-after"),
            Some("1"),
            "503 overloaded needs Retry-After: 1; headers {:?}",
            resp.headers
        ),
        "method_not_allowed" => assert!(
            resp.header("allow").is_some_and(|v| !v.is_empty()),
            "405 needs an Allow header; headers {:?}",
            resp.headers
        ),
        _ => {}
    }
}

/// Asserts a 405 with exactly this `Allow` header.
pub fn assert_method_not_allowed(resp: &Resp, allow: &str) {
    assert_error(
        resp,
        405,
        "method_not_allowed",
        &format!("This route only allows {allow}."),
    );
    assert_eq!(resp.header("allow"), Some(allow), "{:?}", resp.headers);
}

/// Asserts JSON equality, printing both sides pretty on mismatch.
pub fn assert_json(got: &Value, want: &Value, what: &str) {
    assert!(
        got == want,
        "{what}: JSON mismatch\n  want: {}\n  got:  {}",
        serde_json::to_string_pretty(want).unwrap(),
        serde_json::to_string_pretty(got).unwrap()
    );
}

/// Asserts a 200 `application/octet-stream` whose body is exactly `want`.
pub fn assert_octets(resp: &Resp, want: &[u8]) {
    assert_eq!(
        resp.status,
        200,
        "want 200 octets; got {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream"),
        "{:?}",
        resp.headers
    );
    if resp.body != want {
        let show = |b: &[u8]| {
            if b.len() > 512 {
                format!("{} bytes, starting {:?}", b.len(), &b[..64])
            } else {
                format!("{b:?}")
            }
        };
        panic!(
            "result bytes differ\n  want: {}\n  got:  {}",
            show(want),
            show(&resp.body)
        );
    }
}

/// Asserts a 204 with an empty body (a cancel's answer).
pub fn assert_no_content(resp: &Resp) {
    resp.expect_status(204);
    assert!(resp.body.is_empty(), "204 has no body: {}", resp.text());
}
