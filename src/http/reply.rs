//! A response as plain data: status, headers, bytes.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Error;

/// Response bytes; results are shared with the job table instead of copied.
#[derive(Debug, Clone)]
pub enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(a) => a,
        }
    }
}

/// Told once whether the whole answer reached a client that was still there.
pub type OnDelivered = Box<dyn FnOnce(bool) + Send>;

/// What a handler answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// When set, the body is this source instead of `body`: the connection thread writes it
    /// with `Transfer-Encoding: chunked` as it comes, and closes the connection without the
    /// terminating chunk if it breaks.
    pub stream: Option<Box<dyn tiny_http::BodySource>>,
    /// Set on answers that hand something over (a job envelope): the connection thread
    /// reports whether they were delivered.
    pub on_delivered: Option<OnDelivered>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("streamed", &self.stream.is_some())
            .field("on_delivered", &self.on_delivered.is_some())
            .finish()
    }
}

impl Reply {
    /// A JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Reply::json_bytes(status, body)
    }

    /// A body that is already serialized JSON.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body: Bytes::Owned(body),
            stream: None,
            on_delivered: None,
        }
    }

    /// Raw result bytes as `application/octet-stream`.
    pub fn octets(bytes: Arc<[u8]>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type", "application/octet-stream".to_string())],
            body: Bytes::Shared(bytes),
            stream: None,
            on_delivered: None,
        }
    }

    /// Result bytes as `application/octet-stream`, written chunked as `source` produces
    /// them.
    pub fn octets_streamed(source: Box<dyn tiny_http::BodySource>) -> Reply {
        let mut reply = Reply::octets(Arc::from(Vec::new()));
        reply.stream = Some(source);
        reply
    }

    /// A body of the given media type (HTML, the metrics exposition).
    pub fn typed(status: u16, content_type: &str, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Bytes::Owned(body.into_bytes()),
            stream: None,
            on_delivered: None,
        }
    }

    /// A status with no body (`204 No Content`).
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::Owned(Vec::new()),
            stream: None,
            on_delivered: None,
        }
    }
}

impl Reply {
    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Reports delivery of this answer to `report`.
    pub fn on_delivered(mut self, report: impl FnOnce(bool) + Send + 'static) -> Reply {
        self.on_delivered = Some(Box::new(report));
        self
    }

    /// The answer as the connection thread writes it. A `Connection: close` header asks the
    /// connection to close after it.
    pub fn into_response(self) -> tiny_http::Response {
        let close = self
            .headers
            .iter()
            .any(|(name, value)| name.eq_ignore_ascii_case("connection") && value == "close");
        let mut response = tiny_http::Response::new(self.status, Box::new(self.body));
        response.headers = self
            .headers
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("connection"))
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        response.close = close;
        response.stream = self.stream;
        response.on_delivered = self.on_delivered;
        response
    }
}

impl From<Error> for Reply {
    /// The one place the `{"error", "error_description"}` body is written.
    fn from(err: Error) -> Reply {
        let body = serde_json::json!({
            "error": err.code(),
            "error_description": err.to_string(),
        });
        let mut reply = Reply::json(err.status(), &body);
        reply.headers.extend(err.headers());
        reply
    }
}

impl From<Result<Reply, Error>> for Reply {
    fn from(result: Result<Reply, Error>) -> Reply {
        result.unwrap_or_else(Reply::from)
    }
}
