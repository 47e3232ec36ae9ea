//! An owned, socket-free request: what handlers see.

use std::time::Instant;

use crate::error::Error;

/// The request body as read by the server, capped at `--max-body`.
#[derive(Debug, Clone)]
pub enum Body {
    /// The whole body.
    Complete(Vec<u8>),
    /// Longer than the limit (carried here); the rest was not read.
    TooLarge(u64),
    /// The client closed or broke the connection mid-body; carries the reason.
    Broken(String),
}

/// An HTTP request copied out of tiny_http.
#[derive(Debug, Clone)]
pub struct Req {
    /// Upper-case method, e.g. `POST`.
    pub method: String,
    /// The path without the query string, as sent.
    pub path: String,
    /// Percent-decoded, non-empty path segments (`/a//b/` gives `["a", "b"]`).
    pub segments: Vec<String>,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// When the server took the request off the connection; deadlines count from here.
    pub received_at: Instant,
}

impl Req {
    /// Builds a request from its parts; the URL may carry a query string, which is ignored.
    pub fn new(method: &str, url: &str, headers: Vec<(String, String)>, body: Body) -> Req {
        let path = url.split(['?', '#']).next().unwrap_or("").to_string();
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let headers = headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        Req {
            method: method.to_ascii_uppercase(),
            path,
            segments,
            headers,
            body,
            received_at: Instant::now(),
        }
    }

    /// The first header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body bytes, or the error that reading it ran into.
    pub fn body(&self) -> Result<&[u8], Error> {
        match &self.body {
            Body::Complete(bytes) => Ok(bytes),
            Body::TooLarge(limit) => Err(Error::PayloadTooLarge(*limit)),
            Body::Broken(why) => Err(Error::InvalidRequest(format!(
                "The request body could not be read: {why}."
            ))),
        }
    }

    /// Takes the body out of the request without copying it.
    pub fn take_body(&mut self) -> Result<Vec<u8>, Error> {
        self.body()?;
        match std::mem::replace(&mut self.body, Body::Complete(Vec::new())) {
            Body::Complete(bytes) => Ok(bytes),
            _ => unreachable!("checked by body() above"),
        }
    }
}

/// Decodes `%XX` escapes; a malformed escape is kept as written.
fn percent_decode(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_string();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_split_decoded_and_query_dropped() {
        let req = Req::new(
            "get",
            "/a//b%2Fc/%zz/?x=1",
            Vec::new(),
            Body::Complete(Vec::new()),
        );
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/a//b%2Fc/%zz/");
        assert_eq!(req.segments, vec!["a", "b/c", "%zz"]);
    }

    #[test]
    fn header_lookup_ignores_case() {
        let req = Req::new(
            "GET",
            "/",
            vec![("Module-Auth-Token".into(), "t".into())],
            Body::Complete(Vec::new()),
        );
        assert_eq!(req.header("module-auth-token"), Some("t"));
        assert_eq!(req.header("MODULE-AUTH-TOKEN"), Some("t"));
        assert_eq!(req.header("authorization"), None);
    }
}
