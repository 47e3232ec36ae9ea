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

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
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
        }
    }

    /// Raw result bytes as `application/octet-stream`.
    pub fn octets(bytes: Arc<[u8]>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type", "application/octet-stream".to_string())],
            body: Bytes::Shared(bytes),
        }
    }

    /// A status with no body (`204 No Content`).
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::Owned(Vec::new()),
        }
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
