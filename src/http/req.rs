//! A whole, socket-free request: what handlers see.

use std::time::Instant;

/// Whether the client of a request is still there: fires when it closes its connection
/// while the request is being handled (a long poll or a sync execute it gave up on).
#[derive(Debug, Clone, Default)]
pub struct ClientGone(tiny_http::GoneWatch);

impl ClientGone {
    pub fn new(watch: tiny_http::GoneWatch) -> ClientGone {
        ClientGone(watch)
    }

    /// For a request built without a connection: never fires.
    pub fn never() -> ClientGone {
        ClientGone(tiny_http::GoneWatch::never())
    }

    pub fn is_gone(&self) -> bool {
        self.0.is_gone()
    }

    /// Runs `waker` once when the client goes (at once if it has gone).
    pub fn on_gone(&self, waker: Box<dyn FnOnce() + Send>) {
        self.0.on_gone(waker)
    }

    /// Drops a waker that has not run.
    pub fn clear(&self) {
        self.0.clear()
    }
}

/// An HTTP request, whole: what handlers see.
#[derive(Debug, Clone)]
pub struct Req {
    /// Upper-case method, e.g. `POST` (`HEAD` is routed like `GET`).
    pub method: String,
    /// The path without the query string, as sent (ASCII: the server percent-encodes any
    /// other byte).
    pub path: String,
    /// Percent-decoded, non-empty path segments (`/a//b/` gives `["a", "b"]`).
    pub segments: Vec<String>,
    /// The query string's `name=value` pairs, decoded (`+` is a space), in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    /// The whole body (the server refuses one over `--max-body` before a handler runs).
    pub body: Vec<u8>,
    /// When the request's first byte arrived; deadlines count from here.
    pub received_at: Instant,
    /// Fires when the client leaves before its answer.
    pub gone: ClientGone,
    /// The client can read a chunked answer (HTTP/1.1; false for HTTP/1.0).
    pub accepts_chunked: bool,
}

impl Req {
    /// Builds a request from its parts; the URL may carry a query string.
    pub fn new(method: &str, url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Req {
        let url = url.split('#').next().unwrap_or("");
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let path = path.to_string();
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| percent_decode(&s.replace('+', " "));
                (decode(name), decode(value))
            })
            .collect();
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
            query,
            headers,
            body,
            received_at: Instant::now(),
            gone: ClientGone::never(),
            accepts_chunked: true,
        }
    }

    /// The same request, with when it arrived and how to see its client leave.
    pub fn arrived(mut self, received_at: Instant, gone: ClientGone) -> Req {
        self.received_at = received_at;
        self.gone = gone;
        self
    }

    /// The first header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter of that name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Takes the body out of the request without copying it.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }
}

/// Decodes `%XX` escapes (invalid UTF-8 becomes U+FFFD); a malformed escape is kept as
/// written.
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_split_decoded_and_query_dropped() {
        let req = Req::new("get", "/a//b%2Fc/%zz/?x=1", Vec::new(), Vec::new());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/a//b%2Fc/%zz/");
        assert_eq!(req.segments, vec!["a", "b/c", "%zz"]);
        assert_eq!(req.param("x"), Some("1"));
    }

    #[test]
    fn query_parameters_are_decoded() {
        let req = Req::new(
            "GET",
            "/j?status=failed&q=a+b%2Fc&flag&q=second",
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(req.param("status"), Some("failed"));
        assert_eq!(req.param("q"), Some("a b/c"), "the first of two");
        assert_eq!(req.param("flag"), Some(""));
        assert_eq!(req.param("missing"), None);
    }

    #[test]
    fn header_lookup_ignores_case() {
        let req = Req::new(
            "GET",
            "/",
            vec![("Module-Auth-Token".into(), "t".into())],
            Vec::new(),
        );
        assert_eq!(req.header("module-auth-token"), Some("t"));
        assert_eq!(req.header("MODULE-AUTH-TOKEN"), Some("t"));
        assert_eq!(req.header("authorization"), None);
    }
}
