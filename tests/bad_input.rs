//! Malformed requests, in one table: (method, path, headers, body) → (status, code, sentence).
//! Every row goes over a raw socket through `check`, and is followed by good requests that
//! prove the server still serves.

use serde_json::json;

use crate::util::*;

const RID: &str = "ri.foundry.main.deployed-app.bad-input";
const MAX_BODY: usize = 4096;

/// How a row's body is sent.
enum Body {
    Bytes(&'static [u8]),
    Owned(Vec<u8>),
    /// `Content-Length: declared`, but only `sent` is written before the write side shuts.
    Truncated {
        sent: &'static [u8],
        declared: usize,
    },
    /// A `Content-Length` over the limit, with no body written.
    Declared(usize),
    /// `Transfer-Encoding: chunked` with these bytes written verbatim after the headers.
    RawChunked(&'static [u8]),
}

/// What a row must produce.
enum Want {
    /// Every bad request gets an answer (the connection layer answers framing errors too).
    Error(u16, &'static str, String),
}

struct Row {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    want: Want,
}

fn err(status: u16, code: &'static str, description: impl Into<String>) -> Want {
    Want::Error(status, code, description.into())
}

fn not_json(detail: &str) -> Want {
    err(
        400,
        "invalid_request",
        format!("The request body is not valid JSON: {detail}."),
    )
}

fn invalid(description: &str) -> Want {
    err(400, "invalid_request", description)
}

fn not_allowed(allow: &'static str) -> Want {
    err(
        405,
        "method_not_allowed",
        format!("This route only allows {allow}."),
    )
}

/// Sends one row and asserts its outcome exactly.
fn check(server: &TestServer, row: &Row) {
    eprintln!("row: {}", row.name);
    let headers: Vec<(&str, &str)> = row.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let outcome = match &row.body {
        Body::Bytes(bytes) => raw_exchange(
            server.addr,
            &raw_request(row.method, &row.path, &headers, bytes, None),
            false,
        ),
        Body::Owned(bytes) => raw_exchange(
            server.addr,
            &raw_request(row.method, &row.path, &headers, bytes, None),
            false,
        ),
        Body::Truncated { sent, declared } => raw_exchange(
            server.addr,
            &raw_request(row.method, &row.path, &headers, sent, Some(*declared)),
            true,
        ),
        Body::Declared(declared) => raw_exchange(
            server.addr,
            &raw_request(row.method, &row.path, &headers, b"", Some(*declared)),
            false,
        ),
        Body::RawChunked(bytes) => {
            let mut request = format!(
                "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n",
                row.method, row.path
            );
            for (name, value) in &headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            let mut request = request.into_bytes();
            request.extend_from_slice(bytes);
            raw_exchange(server.addr, &request, true)
        }
    };
    match (&row.want, outcome) {
        (Want::Error(status, code, description), RawOutcome::Response(resp)) => {
            assert_error(&resp, *status, code, description);
            if *status == 405 {
                let allow = description
                    .strip_prefix("This route only allows ")
                    .and_then(|s| s.strip_suffix('.'))
                    .unwrap();
                assert_method_not_allowed(&resp, allow);
            }
        }
        (Want::Error(status, code, _), RawOutcome::Closed) => panic!(
            "row {}: want {status} {code}, but the server closed without answering",
            row.name
        ),
    }
}

#[test]
fn bad_input_table() {
    let server = TestServer::start(|cfg| {
        cfg.max_body = MAX_BODY as u64;
        cfg.execute_timeout = std::time::Duration::from_millis(500);
    });
    let rt = server.runtime_bound("rt", RID);
    let app = server.app();
    // A job the good requests look at, and a running one for result posts.
    let probe = app.submit_id(RID, "probe", json!({}));
    assert_eq!(rt.next_job_id(), probe);

    let bearer = || ("Authorization", format!("Bearer {APP_TOKEN}"));
    let json_type = || ("Content-Type", "application/json".to_string());
    let module = || ("Module-Auth-Token", rt.token.clone());
    let c = |p: &str| format!("{CONTOUR}{p}");
    let r = |p: &str| format!("{RUNTIMES}{p}");
    let execute = c("/compute-modules/jobs/execute");
    let submit = c("/deployed-apps/jobs");
    let result = c("/jobs/result/v2");
    let status = c(&format!("/jobs/{probe}/status"));
    let status_v2 = c("/jobs/status/v2");
    let result_get = c(&format!("/jobs/{probe}/result"));
    let cancel_by_body = c("/jobs");
    let unknown_job = "foundry_job_00000000000000000000000000000000";
    let cancel_unknown = c(&format!("/jobs/{unknown_job}"));
    let soft_cancel_unknown = c(&format!("/jobs/{unknown_job}/soft-cancel"));
    let app_schemas = |query: &str| c(&format!("/schemas{query}"));
    let unknown = format!("Compute-module job '{unknown_job}' was not found.");
    let post_result = r(&format!("/rt/results/{probe}"));
    let bad_module_token = "The Module-Auth-Token header is invalid.";
    let bad_bearer = "A valid 'Authorization: Bearer <token>' header is required.";
    let not_object = "The request body must be a JSON object.";
    let required = |f: &str| format!("Field '{f}' is required and must be a non-blank string.");
    let not_string = |f: &str| format!("Field '{f}' must be a string.");
    let too_large =
        format!("The request body is larger than the {MAX_BODY}-byte limit (--max-body).");
    let truncated =
        "The request body could not be read: the connection closed before the whole body arrived.";

    let row = |name, method, path: &str, headers: Vec<(&'static str, String)>, body, want| Row {
        name,
        method,
        path: path.to_string(),
        headers,
        body,
        want,
    };
    let contour = || vec![bearer(), json_type()];
    let rows = vec![
        // Bodies that are not usable JSON objects.
        row(
            "execute: not JSON",
            "POST",
            &execute,
            contour(),
            Body::Bytes(b"not json"),
            not_json("expected ident at line 1 column 2"),
        ),
        row(
            "execute: empty body",
            "POST",
            &execute,
            contour(),
            Body::Bytes(b""),
            not_json("EOF while parsing a value at line 1 column 0"),
        ),
        row(
            "execute: cut-off JSON",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"{"deployedAppRid":"#),
            not_json("EOF while parsing a value at line 1 column 18"),
        ),
        row(
            "execute: trailing garbage",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"{"a":1} x"#),
            not_json("trailing characters at line 1 column 9"),
        ),
        row(
            "execute: JSON array",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"[{"deployedAppRid":"x","queryType":"y"}]"#),
            invalid(not_object),
        ),
        row(
            "execute: JSON string",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#""text""#),
            invalid(not_object),
        ),
        row(
            "execute: JSON null",
            "POST",
            &execute,
            contour(),
            Body::Bytes(b"null"),
            invalid(not_object),
        ),
        row(
            "execute: rid is a number",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"{"deployedAppRid":5,"queryType":"f"}"#),
            invalid(&not_string("deployedAppRid")),
        ),
        row(
            "execute: rid is null",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"{"deployedAppRid":null,"queryType":"f"}"#),
            invalid(&required("deployedAppRid")),
        ),
        row(
            "execute: rid missing",
            "POST",
            &execute,
            contour(),
            Body::Bytes(br#"{"queryType":"f"}"#),
            invalid(&required("deployedAppRid")),
        ),
        row(
            "execute: queryType missing",
            "POST",
            &execute,
            contour(),
            Body::Owned(format!(r#"{{"deployedAppRid":"{RID}"}}"#).into_bytes()),
            invalid(&required("queryType")),
        ),
        row(
            "execute: queryType blank",
            "POST",
            &execute,
            contour(),
            Body::Owned(format!(r#"{{"deployedAppRid":"{RID}","queryType":"  \t"}}"#).into_bytes()),
            invalid(&required("queryType")),
        ),
        row(
            "execute: queryType is an object",
            "POST",
            &execute,
            contour(),
            Body::Owned(format!(r#"{{"deployedAppRid":"{RID}","queryType":{{}}}}"#).into_bytes()),
            invalid(&not_string("queryType")),
        ),
        row(
            "submit: not JSON",
            "POST",
            &submit,
            contour(),
            Body::Bytes(b"<xml/>"),
            not_json("expected value at line 1 column 1"),
        ),
        row(
            "submit: JSON array",
            "POST",
            &submit,
            contour(),
            Body::Bytes(b"[]"),
            invalid(not_object),
        ),
        row(
            "submit: rid blank",
            "POST",
            &submit,
            contour(),
            Body::Bytes(br#"{"deployedAppRid":"   ","queryType":"f"}"#),
            invalid(&required("deployedAppRid")),
        ),
        row(
            "submit: branch is a number",
            "POST",
            &submit,
            contour(),
            Body::Owned(
                format!(r#"{{"deployedAppRid":"{RID}","queryType":"f","deployedAppBranch":5}}"#)
                    .into_bytes(),
            ),
            invalid(&not_string("deployedAppBranch")),
        ),
        row(
            "submit: rid is an array",
            "POST",
            &submit,
            contour(),
            Body::Bytes(br#"{"deployedAppRid":["x"],"queryType":"f"}"#),
            invalid(&not_string("deployedAppRid")),
        ),
        row(
            "result: not JSON",
            "PUT",
            &result,
            contour(),
            Body::Bytes(b"id=1"),
            not_json("expected value at line 1 column 1"),
        ),
        row(
            "result: JSON array",
            "PUT",
            &result,
            contour(),
            Body::Bytes(b"[\"foundry_job_x\"]"),
            invalid(not_object),
        ),
        row(
            "result: neither id nor handle",
            "PUT",
            &result,
            contour(),
            Body::Bytes(b"{}"),
            invalid("The body needs an 'id' or a 'jobHandle' field."),
        ),
        row(
            "result: id is a number",
            "PUT",
            &result,
            contour(),
            Body::Bytes(br#"{"id":1}"#),
            invalid(&not_string("id")),
        ),
        row(
            "result: handle is not JSON",
            "PUT",
            &result,
            contour(),
            Body::Bytes(br#"{"jobHandle":"v1:abc"}"#),
            invalid("Field 'jobHandle' is not a valid job handle."),
        ),
        row(
            "result: handle without jobId",
            "PUT",
            &result,
            contour(),
            Body::Bytes(br#"{"jobHandle":"{\"type\":\"v1\"}"}"#),
            invalid("Field 'jobHandle' is not a valid job handle."),
        ),
        row(
            "result: handle is a number",
            "PUT",
            &result,
            contour(),
            Body::Bytes(br#"{"jobHandle":12}"#),
            invalid("Field 'jobHandle' is not a valid job handle."),
        ),
        row(
            "create runtime: not JSON",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(b"runtimeId=x"),
            not_json("expected value at line 1 column 1"),
        ),
        row(
            "create runtime: JSON array",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"[{"runtimeId":"x"}]"#),
            invalid(not_object),
        ),
        row(
            "create runtime: runtimeId missing",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"deployedAppRid":"ri.x"}"#),
            invalid(&required("runtimeId")),
        ),
        row(
            "create runtime: runtimeId blank",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"runtimeId":" "}"#),
            invalid(&required("runtimeId")),
        ),
        row(
            "create runtime: runtimeId is a number",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"runtimeId":7}"#),
            invalid(&not_string("runtimeId")),
        ),
        row(
            "create runtime: runtimeId with a slash",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"runtimeId":"a/b"}"#),
            invalid("The runtime id \"a/b\" is not valid: an id may not be empty, \".\" or \"..\", nor contain \"/\" or control characters."),
        ),
        row(
            "create runtime: rid is a number",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"runtimeId":"x","deployedAppRid":1}"#),
            invalid(&not_string("deployedAppRid")),
        ),
        row(
            "create runtime: branch is a bool",
            "POST",
            RUNTIMES,
            vec![json_type()],
            Body::Bytes(br#"{"runtimeId":"x","branch":true}"#),
            invalid(&not_string("branch")),
        ),
        row(
            "schemas: not JSON",
            "POST",
            &r("/rt/schemas"),
            vec![module(), json_type()],
            Body::Bytes(b"{oops"),
            not_json("key must be a string at line 1 column 2"),
        ),
        row(
            "schemas: a number",
            "POST",
            &r("/rt/schemas"),
            vec![module(), json_type()],
            Body::Bytes(b"42"),
            invalid("Schemas must be a JSON array or object."),
        ),
        row(
            "schemas: entry not an object",
            "POST",
            &r("/rt/schemas"),
            vec![module(), json_type()],
            Body::Bytes(b"[\"f\"]"),
            invalid("Each schema entry must be a JSON object."),
        ),
        // Unknown routes and wrong methods.
        row(
            "unknown route",
            "GET",
            "/x",
            vec![],
            Body::Bytes(b""),
            err(404, "not_found", "No route for GET /x."),
        ),
        row(
            "root",
            "GET",
            "/",
            vec![],
            Body::Bytes(b""),
            err(404, "not_found", "No route for GET /."),
        ),
        row(
            "unknown route, query string dropped",
            "POST",
            "/x/y?z=1",
            vec![],
            Body::Bytes(b"{}"),
            err(404, "not_found", "No route for POST /x/y."),
        ),
        row(
            "unknown Contour route",
            "GET",
            &c(&format!("/jobs/{probe}/nothing")),
            vec![bearer()],
            Body::Bytes(b""),
            err(
                404,
                "not_found",
                format!("No route for GET {CONTOUR}/jobs/{probe}/nothing."),
            ),
        ),
        row(
            "unknown runtime route",
            "GET",
            &r("/rt/nothing"),
            vec![module()],
            Body::Bytes(b""),
            err(
                404,
                "not_found",
                format!("No route for GET {RUNTIMES}/rt/nothing."),
            ),
        ),
        row(
            "GET execute",
            "GET",
            &execute,
            contour(),
            Body::Bytes(b""),
            not_allowed("POST"),
        ),
        row(
            "PUT submit",
            "PUT",
            &submit,
            contour(),
            Body::Bytes(b"{}"),
            not_allowed("POST"),
        ),
        row(
            "POST status",
            "POST",
            &status,
            contour(),
            Body::Bytes(b"{}"),
            not_allowed("GET, HEAD"),
        ),
        row(
            "GET result",
            "GET",
            &result,
            contour(),
            Body::Bytes(b""),
            not_allowed("PUT"),
        ),
        row(
            "POST result",
            "POST",
            &result,
            contour(),
            Body::Bytes(b"{}"),
            not_allowed("PUT"),
        ),
        // The job-service routes of issue 11: bodies, unknown jobs, missing parameters.
        row(
            "status v2: not JSON",
            "PUT",
            &status_v2,
            contour(),
            Body::Bytes(b"nope"),
            not_json("expected ident at line 1 column 2"),
        ),
        row(
            "status v2: array",
            "PUT",
            &status_v2,
            contour(),
            Body::Bytes(b"[]"),
            invalid(not_object),
        ),
        row(
            "status v2: neither id nor handle",
            "PUT",
            &status_v2,
            contour(),
            Body::Bytes(br#"{"status":{"type":"queued"}}"#),
            invalid("The body needs an 'id' or a 'jobHandle' field."),
        ),
        row(
            "status v2: unknown job",
            "PUT",
            &status_v2,
            contour(),
            Body::Owned(format!(r#"{{"id":"{unknown_job}"}}"#).into_bytes()),
            err(404, "not_found", unknown.clone()),
        ),
        row(
            "cancel by body: empty",
            "DELETE",
            &cancel_by_body,
            contour(),
            Body::Bytes(b""),
            not_json("EOF while parsing a value at line 1 column 0"),
        ),
        row(
            "cancel by body: id not a string",
            "DELETE",
            &cancel_by_body,
            contour(),
            Body::Bytes(br#"{"id":7}"#),
            invalid(&not_string("id")),
        ),
        row(
            "cancel by body: bad handle",
            "DELETE",
            &cancel_by_body,
            contour(),
            Body::Bytes(br#"{"jobHandle":"{}"}"#),
            invalid("Field 'jobHandle' is not a valid job handle."),
        ),
        row(
            "cancel by body: unknown job",
            "DELETE",
            &cancel_by_body,
            contour(),
            Body::Owned(format!(r#"{{"jobHandle":{{"jobId":"{unknown_job}"}}}}"#).into_bytes()),
            err(404, "not_found", unknown.clone()),
        ),
        row(
            "cancel: unknown job",
            "DELETE",
            &cancel_unknown,
            vec![bearer()],
            Body::Bytes(b""),
            err(404, "not_found", unknown.clone()),
        ),
        row(
            "soft-cancel: unknown job",
            "PUT",
            &soft_cancel_unknown,
            vec![bearer()],
            Body::Bytes(b""),
            err(404, "not_found", unknown.clone()),
        ),
        row(
            "cancel: id with a control character",
            "DELETE",
            &c("/jobs/a%01b"),
            vec![bearer()],
            Body::Bytes(b""),
            invalid(
                "The job id \"a\\u{1}b\" is not valid: an id may not be empty, \".\" or \"..\", nor contain \"/\" or control characters.",
            ),
        ),
        row(
            "GET result: unknown job",
            "GET",
            &c(&format!("/jobs/{unknown_job}/result")),
            vec![bearer()],
            Body::Bytes(b""),
            err(404, "not_found", unknown.clone()),
        ),
        row(
            "GET result: running job",
            "GET",
            &result_get,
            vec![bearer()],
            Body::Bytes(b""),
            err(
                409,
                "job_not_ready",
                format!("Compute-module job '{probe}' has not completed successfully."),
            ),
        ),
        row(
            "schemas: no rid",
            "GET",
            &app_schemas("?branch=master"),
            vec![bearer()],
            Body::Bytes(b""),
            invalid("Query parameter 'rid' is required and must not be blank."),
        ),
        row(
            "schemas: blank rid",
            "GET",
            &app_schemas("?rid=+%20&branch=master"),
            vec![bearer()],
            Body::Bytes(b""),
            invalid("Query parameter 'rid' is required and must not be blank."),
        ),
        row(
            "schemas: unbound app",
            "GET",
            &app_schemas("?rid=ri.nowhere"),
            vec![bearer()],
            Body::Bytes(b""),
            err(
                404,
                "not_found",
                "No active compute-module runtime is bound to 'ri.nowhere'.",
            ),
        ),
        row(
            "schemas: bound app, unknown branch",
            "GET",
            &app_schemas(&format!("?rid={RID}&branch=feature")),
            vec![bearer()],
            Body::Bytes(b""),
            err(
                404,
                "not_found",
                format!("No active compute-module runtime is bound to '{RID}'."),
            ),
        ),
        row(
            "GET jobs",
            "GET",
            &cancel_by_body,
            vec![bearer()],
            Body::Bytes(b""),
            not_allowed("DELETE"),
        ),
        row(
            "GET a job",
            "GET",
            &c(&format!("/jobs/{probe}")),
            vec![bearer()],
            Body::Bytes(b""),
            not_allowed("DELETE"),
        ),
        row(
            "DELETE soft-cancel",
            "DELETE",
            &c(&format!("/jobs/{probe}/soft-cancel")),
            vec![bearer()],
            Body::Bytes(b""),
            not_allowed("PUT"),
        ),
        row(
            "GET status v2",
            "GET",
            &status_v2,
            vec![bearer()],
            Body::Bytes(b""),
            not_allowed("PUT"),
        ),
        row(
            "PUT GET result",
            "PUT",
            &result_get,
            contour(),
            Body::Bytes(b"{}"),
            not_allowed("GET, HEAD"),
        ),
        row(
            "POST schemas",
            "POST",
            &app_schemas(""),
            contour(),
            Body::Bytes(b"{}"),
            not_allowed("GET, HEAD"),
        ),
        row(
            "GET deployed-apps execute",
            "GET",
            &c("/deployed-apps/jobs/execute"),
            vec![bearer()],
            Body::Bytes(b""),
            not_allowed("POST"),
        ),
        row(
            "GET runtimes",
            "GET",
            RUNTIMES,
            vec![],
            Body::Bytes(b""),
            not_allowed("POST"),
        ),
        row(
            "POST job poll",
            "POST",
            &r("/rt/job"),
            vec![module()],
            Body::Bytes(b""),
            not_allowed("GET, HEAD"),
        ),
        row(
            "GET schemas",
            "GET",
            &r("/rt/schemas"),
            vec![module()],
            Body::Bytes(b""),
            not_allowed("POST"),
        ),
        row(
            "PUT result post",
            "PUT",
            &post_result,
            vec![module()],
            Body::Bytes(b"x"),
            not_allowed("POST"),
        ),
        row(
            "GET restart",
            "GET",
            &r("/rt/restart"),
            vec![module()],
            Body::Bytes(b""),
            not_allowed("POST"),
        ),
        row(
            "DELETE inspection",
            "DELETE",
            &r(&format!("/rt/jobs/{probe}")),
            vec![],
            Body::Bytes(b""),
            not_allowed("GET, HEAD"),
        ),
        row(
            "POST health",
            "POST",
            "/_emulate/health",
            vec![],
            Body::Bytes(b""),
            not_allowed("GET, HEAD"),
        ),
        // Bodies that never arrive whole.
        row(
            "execute: truncated body",
            "POST",
            &execute,
            contour(),
            Body::Truncated {
                sent: br#"{"deployedAppRid":"ri.x","queryType":"f"}"#,
                declared: 3000,
            },
            invalid(truncated),
        ),
        row(
            "result post: truncated body",
            "POST",
            &post_result,
            vec![module()],
            Body::Truncated {
                sent: b"\x00\xffpartial",
                declared: 2000,
            },
            invalid(truncated),
        ),
        row(
            "submit: small truncated body",
            "POST",
            &submit,
            contour(),
            Body::Truncated {
                sent: br#"{"deployedAppRid""#,
                declared: 100,
            },
            invalid(truncated),
        ),
        row(
            "result post: bad chunk size",
            "POST",
            &post_result,
            vec![module()],
            Body::RawChunked(b"zz\r\nabc\r\n0\r\n\r\n"),
            invalid("The chunk size starts with the non-hex byte 'z'."),
        ),
        row(
            "execute: declared over the limit",
            "POST",
            &execute,
            contour(),
            Body::Declared(MAX_BODY + 1),
            err(413, "payload_too_large", too_large.clone()),
        ),
        row(
            "result post: body over the limit",
            "POST",
            &post_result,
            vec![module()],
            Body::Owned(vec![0xff; MAX_BODY + 1]),
            err(413, "payload_too_large", too_large.clone()),
        ),
        // Missing or wrong credentials (checked before the body on Contour routes).
        row(
            "execute: no token",
            "POST",
            &execute,
            vec![json_type()],
            Body::Bytes(b"not even json"),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "submit: no token",
            "POST",
            &submit,
            vec![json_type()],
            Body::Owned(serde_json::to_vec(&exec_body(RID, "f", json!({}))).unwrap()),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "status: no token",
            "GET",
            &status,
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "result: no token",
            "PUT",
            &result,
            vec![json_type()],
            Body::Owned(format!(r#"{{"id":"{probe}"}}"#).into_bytes()),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "status v2: no token",
            "PUT",
            &status_v2,
            vec![json_type()],
            Body::Owned(format!(r#"{{"id":"{probe}"}}"#).into_bytes()),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "GET result: no token",
            "GET",
            &result_get,
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "cancel: no token",
            "DELETE",
            &c(&format!("/jobs/{probe}")),
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "cancel by body: no token",
            "DELETE",
            &cancel_by_body,
            vec![json_type()],
            Body::Owned(format!(r#"{{"id":"{probe}"}}"#).into_bytes()),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "soft-cancel: no token",
            "PUT",
            &c(&format!("/jobs/{probe}/soft-cancel")),
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "schemas: no token",
            "GET",
            &app_schemas(&format!("?rid={RID}")),
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "deployed-apps execute: no token",
            "POST",
            &c("/deployed-apps/jobs/execute"),
            vec![json_type()],
            Body::Owned(serde_json::to_vec(&exec_body(RID, "f", json!({}))).unwrap()),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "status: Basic auth",
            "GET",
            &status,
            vec![("Authorization", "Basic dTpw".to_string())],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "status: empty bearer",
            "GET",
            &status,
            vec![("Authorization", "Bearer    ".to_string())],
            Body::Bytes(b""),
            err(401, "invalid_token", bad_bearer),
        ),
        row(
            "poll: no token",
            "GET",
            &r("/rt/job"),
            vec![],
            Body::Bytes(b""),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "poll: wrong token",
            "GET",
            &r("/rt/job"),
            vec![("Module-Auth-Token", "foundry_module_auth_guess".to_string())],
            Body::Bytes(b""),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "poll: bearer instead of module token",
            "GET",
            &r("/rt/job"),
            vec![bearer()],
            Body::Bytes(b""),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "result post: no token",
            "POST",
            &post_result,
            vec![],
            Body::Bytes(b"stolen"),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "schemas: no token",
            "POST",
            &r("/rt/schemas"),
            vec![json_type()],
            Body::Bytes(b"{}"),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "restart: wrong token",
            "POST",
            &r("/rt/restart"),
            vec![("Module-Auth-Token", "x".to_string())],
            Body::Bytes(b""),
            err(401, "invalid_module_auth_token", bad_module_token),
        ),
        row(
            "poll: unknown runtime",
            "GET",
            &r("/ghost/job"),
            vec![module()],
            Body::Bytes(b""),
            err(
                404,
                "not_found",
                "Compute-module runtime 'ghost' was not found.",
            ),
        ),
    ];

    for row in &rows {
        check(&server, row);
        // The worker survived: the server still answers good requests correctly.
        server.assert_alive();
        assert_eq!(
            app.status_json(&probe)["type"],
            json!("running"),
            "after row {}",
            row.name
        );
    }
    // None of the rows created a job or touched the probe.
    assert_eq!(server.queued("rt"), 0);
    rt.complete(&probe, b"still fine");
    assert_octets(&app.result_by_id(&probe), b"still fine");
}
