//! Strict parsing of an HTTP/1.x request head, and decoding of a chunked request body (RFC 9112).
//!
//! PATCH (foundry-emulator): new module. It is not part of tiny_http 0.12: foundry-emulator wrote
//! it to replace the lenient hand-written head parser, so that malformed or ambiguous framing
//! (the stuff of request smuggling) is refused with a clear answer before it reaches a handler.
//!
//! Nothing here does I/O: these are pure functions over byte slices. [`parse_head`] is called
//! with everything read so far and tells whether the head is complete; [`ChunkedDecoder`] is fed
//! the body bytes as they arrive; [`rejection_response`] renders the answer to a refused request
//! (the connection is always closed after it).
//!
//! The request line is checked here by hand (it must be exactly `method SP target SP version`,
//! and versions other than 1.0 and 1.1 must answer 505 as soon as the line is complete, which
//! `httparse::Request` cannot tell apart from garbage; it also refuses non-UTF-8 targets). The
//! header lines are parsed by `httparse::parse_headers`; the RFC 9112 semantic checks (Host,
//! Content-Length, Transfer-Encoding, Connection, Expect) are done here.
//!
//! Long (about 1,570 lines, 675 of them tests) because every refusal RFC 9112 asks for has
//! its own check and its own test here, next to the one rejection type they share.

use std::fmt::Write as _;

/// Limits on one request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes of the whole head, leading empty lines and the final empty line included.
    pub max_head_bytes: usize,
    /// Header fields in the head.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (neither `Content-Length` nor `Transfer-Encoding`).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head: decode it with [`ChunkedDecoder`].
    Chunked,
}

/// A parsed and checked request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// As sent, e.g. `GET`.
    pub method: String,
    /// Origin-form `/path?query` (an absolute-form target is reduced to its path and query), `*`,
    /// or for CONNECT the authority as sent. Bytes >= 0x80 are percent-encoded, so it is ASCII.
    pub target: String,
    /// 0 or 1 (HTTP/1.0, HTTP/1.1).
    pub minor_version: u8,
    /// Names as sent, values as raw bytes with the surrounding whitespace trimmed.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    /// False for HTTP/1.0 unless `Connection: keep-alive`; false whenever `Connection: close`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1: ignored on HTTP/1.0).
    pub expect_continue: bool,
}

/// Why a request was refused before it reached a handler. The connection is always closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    /// One English sentence ending with a period; never contains control characters.
    pub reason: String,
}

impl Rejection {
    /// A rejection with the fixed `code` of `status` (400, 413, 417, 431, 501, 505; any other
    /// status gets `invalid_request`).
    pub fn new(status: u16, reason: impl Into<String>) -> Rejection {
        let code = match status {
            413 => "payload_too_large",
            417 => "expectation_failed",
            431 => "request_header_fields_too_large",
            501 => "not_implemented",
            505 => "http_version_not_supported",
            _ => "invalid_request",
        };
        Rejection {
            status,
            code,
            reason: reason.into(),
        }
    }
}

fn bad(reason: impl Into<String>) -> Rejection {
    Rejection::new(400, reason)
}

/// Request bytes made safe to put in a reason: printable ASCII as is, a backslash doubled, any
/// other byte as `\xNN`; long input is cut at 64 bytes and marked with `...`.
fn quote(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s = String::with_capacity(bytes.len().min(MAX) + 3);
    for &b in bytes.iter().take(MAX) {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{:02x}", b);
            }
        }
    }
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s
}

fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A control character other than HTAB.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Strips one trailing CR (the line was cut at its LF).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn eq_ci(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Parses the head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet, read more (but once `buf` is longer than
/// `limits.max_head_bytes` with no complete head, that is a 431 rejection, not `None`).
/// `Ok(Some((head, n)))`: the head took the first `n` bytes of `buf` (leading empty lines
/// included); the body, if any, starts at `buf[n..]`.
///
/// Each call parses `buf` from its start (the head is bounded, so this costs little). Errors are
/// reported as soon as the bytes received show them: a control byte in the request line, a
/// version other than 1.0/1.1 once the request line is complete, a bad header line, too many
/// headers; the semantic checks need the whole head.
pub fn parse_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, Rejection> {
    let over = buf.len() > limits.max_head_bytes;
    // Never look past the limit: a huge header line is refused once the limit is exceeded,
    // without scanning (or waiting for) the rest of it.
    let window = if over {
        &buf[..limits.max_head_bytes]
    } else {
        buf
    };
    match parse_window(window, limits)? {
        Some(parsed) => Ok(Some(parsed)),
        None if over => Err(Rejection::new(
            431,
            format!(
                "The request head is longer than {} bytes.",
                limits.max_head_bytes
            ),
        )),
        None => Ok(None),
    }
}

fn parse_window(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, Rejection> {
    // RFC 9112 §2.2: skip empty lines before the request line.
    let mut pos = 0;
    loop {
        match buf.get(pos) {
            Some(b'\n') => pos += 1,
            Some(b'\r') => match buf.get(pos + 1) {
                Some(b'\n') => pos += 2,
                Some(_) => return Err(bad("The request starts with a CR not followed by LF.")),
                None => return Ok(None),
            },
            Some(_) => break,
            None => return Ok(None),
        }
    }

    let rest = &buf[pos..];
    let lf = match rest.iter().position(|&b| b == b'\n') {
        Some(lf) => lf,
        None => {
            check_partial_request_line(rest)?;
            return Ok(None);
        }
    };
    let line = parse_request_line(strip_cr(&rest[..lf]))?;
    let headers_start = pos + lf + 1;

    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let header_bytes = &buf[headers_start..];
    let (headers_len, parsed) = match httparse::parse_headers(header_bytes, &mut slots) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(
                431,
                format!(
                    "The request has more than {} header fields.",
                    limits.max_headers
                ),
            ))
        }
        Err(e) => return Err(describe_header_error(header_bytes, e)),
    };
    let headers: Vec<(String, Vec<u8>)> = parsed
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let head = check_semantics(line, headers)?;
    Ok(Some((head, headers_start + headers_len)))
}

struct RequestLine {
    method: String,
    target: String,
    minor_version: u8,
}

fn control_in_request_line(b: u8) -> Rejection {
    if b == b'\r' {
        bad("The request line contains a CR not followed by LF.")
    } else {
        bad(format!(
            "The request line contains the control character {}.",
            quote(&[b])
        ))
    }
}

/// Refuses an incomplete request line early when its bytes so far can never make a valid one
/// (e.g. a TLS handshake sent to the plain port), instead of waiting for a line end.
fn check_partial_request_line(partial: &[u8]) -> Result<(), Rejection> {
    // A final CR may be the first half of the CRLF.
    let checked = strip_cr(partial);
    if let Some(&b) = checked.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err(control_in_request_line(b));
    }
    let method = checked.split(|&b| b == b' ').next().unwrap_or(&[]);
    if !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad(format!(
            "The method '{}' is not a token.",
            quote(method)
        )));
    }
    Ok(())
}

fn parse_request_line(line: &[u8]) -> Result<RequestLine, Rejection> {
    if let Some(&b) = line.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err(control_in_request_line(b));
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let (method, target, version) = match parts[..] {
        [m, t, v] if !m.is_empty() && !t.is_empty() && !v.is_empty() => (m, t, v),
        _ => {
            return Err(bad(format!(
                "The request line '{}' is not 'method SP target SP version'.",
                quote(line)
            )))
        }
    };
    if !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad(format!(
            "The method '{}' is not a token.",
            quote(method)
        )));
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Rejection::new(
                505,
                format!("HTTP version '{}' is not supported.", quote(version)),
            ))
        }
        _ => {
            return Err(bad(format!(
                "The HTTP version '{}' is malformed.",
                quote(version)
            )))
        }
    };
    // Only tchars: the method is ASCII.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = normalize_target(&method, target)?;
    Ok(RequestLine {
        method,
        target,
        minor_version,
    })
}

/// Bytes >= 0x80 as `%XX` (upper-case hex); the rest (printable ASCII, checked before) as is.
fn percent_encode_high(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    for &b in raw {
        if b >= 0x80 {
            let _ = write!(s, "%{:02X}", b);
        } else {
            s.push(b as char);
        }
    }
    s
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && eq_ci(&s[..prefix.len()], prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// The target has no control bytes or spaces (checked with the request line).
fn normalize_target(method: &str, raw: &[u8]) -> Result<String, Rejection> {
    if raw[0] == b'/' || raw == b"*" || method == "CONNECT" {
        return Ok(percent_encode_high(raw));
    }
    if let Some(rest) = strip_prefix_ci(raw, "http://").or_else(|| strip_prefix_ci(raw, "https://"))
    {
        let end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?' || b == b'#')
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(bad(format!(
                "The request target '{}' has no host.",
                quote(raw)
            )));
        }
        let path = &rest[end..];
        let mut target = String::with_capacity(path.len() + 1);
        if path.first() != Some(&b'/') {
            target.push('/');
        }
        target.push_str(&percent_encode_high(path));
        return Ok(target);
    }
    Err(bad(format!(
        "The request target '{}' is neither origin-form nor absolute-form.",
        quote(raw)
    )))
}

/// Why one field line (without its line end) is invalid, if it is; `kind` is "header" or
/// "trailer".
fn field_line_problem(line: &[u8], kind: &str) -> Option<String> {
    if line.contains(&b'\r') {
        return Some(format!("A {} line contains a CR not followed by LF.", kind));
    }
    if let [b' ' | b'\t', ..] = line {
        return Some(format!(
            "A {} line starts with whitespace (obsolete line folding).",
            kind
        ));
    }
    let colon = match line.iter().position(|&b| b == b':') {
        Some(colon) => colon,
        None => return Some(format!("The {} line '{}' has no colon.", kind, quote(line))),
    };
    let name = &line[..colon];
    if name.is_empty() {
        return Some(format!(
            "The {} line '{}' has an empty name.",
            kind,
            quote(line)
        ));
    }
    if let [.., b' ' | b'\t'] = name {
        return Some(format!(
            "The {} name '{}' has whitespace before the colon.",
            kind,
            quote(name)
        ));
    }
    if !name.iter().all(|&b| is_tchar(b)) {
        return Some(format!(
            "The {} name '{}' is not a token.",
            kind,
            quote(name)
        ));
    }
    if let Some(&b) = line[colon + 1..].iter().find(|&&b| is_ctl(b)) {
        return Some(format!(
            "The value of {} '{}' contains the control character {}.",
            kind,
            quote(name),
            quote(&[b])
        ));
    }
    None
}

/// httparse says what kind of error, not where: find the offending line to name it.
fn describe_header_error(bytes: &[u8], err: httparse::Error) -> Rejection {
    for line in bytes.split(|&b| b == b'\n') {
        let line = strip_cr(line);
        if line.is_empty() {
            break;
        }
        if let Some(reason) = field_line_problem(line, "header") {
            return bad(reason);
        }
    }
    bad(match err {
        httparse::Error::HeaderName => "The request has an invalid header name.",
        httparse::Error::HeaderValue => "The request has an invalid header value.",
        httparse::Error::NewLine => "The request head has an invalid line ending.",
        _ => "The request head is malformed.",
    })
}

fn parse_content_length(value: &[u8]) -> Result<u64, Rejection> {
    let mut length: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad(format!(
                "Content-Length '{}' is not a number.",
                quote(value)
            )));
        }
        let n = part
            .iter()
            .try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or_else(|| bad(format!("Content-Length '{}' is too large.", quote(value))))?;
        match length {
            Some(previous) if previous != n => {
                return Err(bad(format!(
                    "Content-Length '{}' has differing values.",
                    quote(value)
                )))
            }
            _ => length = Some(n),
        }
    }
    // split always yields at least one part, so `length` is set.
    Ok(length.unwrap_or(0))
}

fn check_semantics(
    line: RequestLine,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<RequestHead, Rejection> {
    let http11 = line.minor_version == 1;
    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut transfer_encodings: Vec<&[u8]> = Vec::new();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expectations: Vec<&[u8]> = Vec::new();

    for (name, value) in &headers {
        let name = name.as_bytes();
        if eq_ci(name, "host") {
            hosts += 1;
        } else if eq_ci(name, "content-length") {
            let n = parse_content_length(value)?;
            match content_length {
                Some(previous) if previous != n => {
                    return Err(bad(format!(
                        "The request has differing Content-Length values {} and {}.",
                        previous, n
                    )))
                }
                _ => content_length = Some(n),
            }
        } else if eq_ci(name, "transfer-encoding") {
            transfer_encodings.push(value);
        } else if eq_ci(name, "connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if eq_ci(token, "close") {
                    close = true;
                } else if eq_ci(token, "keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if eq_ci(name, "expect") {
            expectations.push(value);
        }
    }

    if http11 && hosts != 1 {
        return Err(bad(if hosts == 0 {
            "The HTTP/1.1 request has no Host header.".to_string()
        } else {
            format!("The request has {} Host headers.", hosts)
        }));
    }
    if !http11 && hosts > 1 {
        return Err(bad(format!("The request has {} Host headers.", hosts)));
    }

    let framing = if transfer_encodings.is_empty() {
        match content_length {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::None,
        }
    } else {
        if content_length.is_some() {
            return Err(bad(
                "The request has both Content-Length and Transfer-Encoding.",
            ));
        }
        if !http11 {
            return Err(bad("The HTTP/1.0 request has a Transfer-Encoding header."));
        }
        let joined = transfer_encodings.join(&b", "[..]);
        if !eq_ci(trim_ows(&joined), "chunked") {
            return Err(Rejection::new(
                501,
                format!(
                    "Transfer-Encoding '{}' is not supported (only 'chunked' is).",
                    quote(&joined)
                ),
            ));
        }
        BodyFraming::Chunked
    };

    let mut expect_continue = false;
    for value in expectations {
        if !eq_ci(trim_ows(value), "100-continue") {
            return Err(Rejection::new(
                417,
                format!("The expectation '{}' is not supported.", quote(value)),
            ));
        }
        // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
        expect_continue = http11;
    }

    Ok(RequestHead {
        method: line.method,
        target: line.target,
        minor_version: line.minor_version,
        headers,
        framing,
        keep_alive: !close && (http11 || keep_alive_token),
        expect_continue,
    })
}

/// Longest chunk-size line (size, whitespace and extensions, without the line end).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Longest trailer section (all trailer lines and the final empty line).
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Hex digits of a chunk size (16 fill a u64, so no overflow is possible).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the size and whitespace: only more whitespace, `;` or the line end may follow.
    SizeWhitespace,
    /// In the chunk extensions, up to the line end.
    Extension,
    /// After the CR ending a chunk-size line.
    SizeLf,
    /// Reading chunk data (`remaining` bytes left).
    Data,
    /// After chunk data: CRLF or LF must follow.
    DataEnd,
    /// After the CR following chunk data.
    DataLf,
    /// Reading a trailer line (or the final empty line) into `line`.
    Trailer,
    /// The body and its trailers have ended.
    Done,
}

/// Decodes a chunked body incrementally (RFC 9112 §7.1); chunk extensions and trailers are
/// accepted and discarded. Bare LF is accepted for CRLF everywhere.
///
/// Consumption contract: every byte offered is consumed (its state is kept inside, e.g. a
/// partial chunk-size line or trailer line), so the caller never offers bytes again; the one
/// exception is the end of the body, where consumption stops right after the final line end and
/// the rest of `input` belongs to the next request. After the end, `decode` consumes nothing and
/// keeps answering `(0, true)`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The chunk size read so far.
    size: u64,
    digits: u8,
    /// Bytes of the current chunk-size line so far.
    line_len: usize,
    /// Chunk data bytes still to come.
    remaining: u64,
    /// The current trailer line so far.
    line: Vec<u8>,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            remaining: 0,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// Consumes bytes from `input`, appending decoded body bytes to `out`. Returns how many bytes
    /// of `input` were consumed and whether the whole body, trailers included, has ended; see
    /// the type's doc for the consumption contract.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), Rejection> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let available = input.len() - i;
                let take = if self.remaining < available as u64 {
                    self.remaining as usize
                } else {
                    available
                };
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataEnd;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.step(b)?;
        }
        Ok((i, self.state == ChunkState::Done))
    }

    fn size_line_byte(&mut self) -> Result<(), Rejection> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(bad(format!(
                "A chunk-size line is longer than {} bytes.",
                MAX_CHUNK_LINE
            )));
        }
        Ok(())
    }

    /// The chunk-size line has ended.
    fn size_line_done(&mut self) {
        if self.size == 0 {
            self.state = ChunkState::Trailer;
        } else {
            self.remaining = self.size;
            self.state = ChunkState::Data;
        }
    }

    fn step(&mut self, b: u8) -> Result<(), Rejection> {
        match self.state {
            ChunkState::Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    self.size_line_byte()?;
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(bad(format!(
                            "A chunk size has more than {} hex digits.",
                            MAX_SIZE_DIGITS
                        )));
                    }
                    self.digits += 1;
                    // At most 16 digits: never overflows.
                    self.size = (self.size << 4) | u64::from((b as char).to_digit(16).unwrap_or(0));
                }
                b'\r' | b'\n' | b';' if self.digits == 0 => {
                    return Err(bad("A chunk-size line has no chunk size."))
                }
                _ if self.digits == 0 => {
                    return Err(bad(format!(
                        "The chunk size starts with the non-hex byte '{}'.",
                        quote(&[b])
                    )))
                }
                b' ' | b'\t' => {
                    self.size_line_byte()?;
                    self.state = ChunkState::SizeWhitespace;
                }
                b';' => {
                    self.size_line_byte()?;
                    self.state = ChunkState::Extension;
                }
                b'\r' => self.state = ChunkState::SizeLf,
                b'\n' => self.size_line_done(),
                _ => {
                    return Err(bad(format!(
                        "The chunk size contains the non-hex byte '{}'.",
                        quote(&[b])
                    )))
                }
            },
            ChunkState::SizeWhitespace => match b {
                b' ' | b'\t' => self.size_line_byte()?,
                b';' => {
                    self.size_line_byte()?;
                    self.state = ChunkState::Extension;
                }
                b'\r' => self.state = ChunkState::SizeLf,
                b'\n' => self.size_line_done(),
                _ => {
                    return Err(bad(format!(
                        "The chunk size is followed by the unexpected byte '{}'.",
                        quote(&[b])
                    )))
                }
            },
            ChunkState::Extension => match b {
                b'\r' => self.state = ChunkState::SizeLf,
                b'\n' => self.size_line_done(),
                _ => self.size_line_byte()?,
            },
            ChunkState::SizeLf => {
                if b != b'\n' {
                    return Err(bad("A chunk-size line has a CR not followed by LF."));
                }
                self.size_line_done();
            }
            ChunkState::Data => unreachable!("chunk data is copied in bulk by decode"),
            ChunkState::DataEnd => match b {
                b'\r' => self.state = ChunkState::DataLf,
                b'\n' => self.next_chunk(),
                _ => return Err(bad("Chunk data is not followed by CRLF.")),
            },
            ChunkState::DataLf => {
                if b != b'\n' {
                    return Err(bad("Chunk data is not followed by CRLF."));
                }
                self.next_chunk();
            }
            ChunkState::Trailer => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(Rejection::new(
                        431,
                        format!(
                            "The chunked body's trailer section is longer than {} bytes.",
                            MAX_TRAILER_BYTES
                        ),
                    ));
                }
                if b != b'\n' {
                    self.line.push(b);
                    return Ok(());
                }
                let line = strip_cr(&self.line);
                if line.is_empty() {
                    self.state = ChunkState::Done;
                    self.line = Vec::new();
                    return Ok(());
                }
                if let Some(reason) = field_line_problem(line, "trailer") {
                    return Err(bad(reason));
                }
                self.line.clear();
            }
            ChunkState::Done => {}
        }
        Ok(())
    }

    fn next_chunk(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.digits = 0;
        self.line_len = 0;
    }
}

/// Standard JSON string literal for `s` (quotes, backslashes and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The JSON body of a rejection: `{"error":"<code>","error_description":"<reason>"}`.
pub fn rejection_body(rejection: &Rejection) -> Vec<u8> {
    format!(
        "{{\"error\":{},\"error_description\":{}}}",
        json_string(rejection.code),
        json_string(&rejection.reason)
    )
    .into_bytes()
}

/// The whole HTTP/1.1 response for a rejection: status line with the standard reason phrase,
/// `Content-Type: application/json`, `Content-Length`, `Connection: close`, and the
/// [`rejection_body`].
pub fn rejection_response(rejection: &Rejection) -> Vec<u8> {
    let body = rejection_body(rejection);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        rejection.status,
        reason_phrase(rejection.status),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The standard reason phrase of the statuses this server sends (RFC 9110 §15).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        // PATCH (foundry-emulator): the OAuth2 authorize redirects.
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `parse_head` must make of a table input.
    #[derive(Debug)]
    enum Want {
        /// `Ok(None)`.
        More,
        /// A rejection with this status.
        Reject(u16),
        /// A head that took the whole input.
        Head {
            target: &'static str,
            framing: BodyFraming,
            keep_alive: bool,
            expect_continue: bool,
        },
    }

    fn ok(target: &'static str) -> Want {
        Want::Head {
            target,
            framing: BodyFraming::None,
            keep_alive: true,
            expect_continue: false,
        }
    }

    fn framed(framing: BodyFraming) -> Want {
        Want::Head {
            target: "/",
            framing,
            keep_alive: true,
            expect_continue: false,
        }
    }

    fn closing(target: &'static str) -> Want {
        Want::Head {
            target,
            framing: BodyFraming::None,
            keep_alive: false,
            expect_continue: false,
        }
    }

    fn code_of(status: u16) -> &'static str {
        match status {
            400 => "invalid_request",
            413 => "payload_too_large",
            417 => "expectation_failed",
            431 => "request_header_fields_too_large",
            501 => "not_implemented",
            505 => "http_version_not_supported",
            _ => panic!("no fixed code for {}", status),
        }
    }

    fn check_reason(r: &Rejection) {
        assert_eq!(r.code, code_of(r.status), "{:?}", r);
        assert!(r.reason.ends_with('.'), "{:?}", r);
        assert!(
            r.reason.starts_with(|c: char| c.is_ascii_uppercase()),
            "{:?}",
            r
        );
        assert!(!r.reason.chars().any(|c| c.is_control()), "{:?}", r);
    }

    fn check(input: &[u8], expected: Want) {
        let got = parse_head(input, &HeadLimits::default());
        let shown = quote(&input[..input.len().min(200)]);
        match (&got, &expected) {
            (Ok(None), Want::More) => {}
            (Err(r), Want::Reject(status)) if r.status == *status => check_reason(r),
            (
                Ok(Some((head, n))),
                Want::Head {
                    target,
                    framing,
                    keep_alive,
                    expect_continue,
                },
            ) => {
                assert_eq!(*n, input.len(), "head length for {}", shown);
                assert_eq!(head.target, *target, "target for {}", shown);
                assert_eq!(head.framing, *framing, "framing for {}", shown);
                assert_eq!(head.keep_alive, *keep_alive, "keep_alive for {}", shown);
                assert_eq!(
                    head.expect_continue, *expect_continue,
                    "expect_continue for {}",
                    shown
                );
                assert!(head.target.is_ascii());
            }
            _ => panic!("{}: expected {:?}, got {:?}", shown, expected, got),
        }
    }

    /// An HTTP/1.1 POST with a Host and these extra header lines (each ending in CRLF).
    fn post(extra: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nHost: h\r\n{}\r\n", extra).into_bytes()
    }

    fn http10(extra: &str) -> Vec<u8> {
        format!("GET / HTTP/1.0\r\n{}\r\n", extra).into_bytes()
    }

    #[test]
    fn request_lines_and_targets() {
        use Want::*;
        let cases: Vec<(&[u8], Want)> = vec![
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ok("/")),
            (b"GET /a?b=c HTTP/1.1\r\nHost: a\r\n\r\n", ok("/a?b=c")),
            // Leading empty lines are skipped (and counted in the head).
            (b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ok("/")),
            (b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            // Bare LF everywhere, and mixed.
            (b"GET /x HTTP/1.1\nHost: a\n\n", ok("/x")),
            (b"GET /x HTTP/1.1\nHost: a\r\n\n", ok("/x")),
            // Incomplete heads.
            (b"", More),
            (b"\r\n", More),
            (b"\r", More),
            (b"GET / HT", More),
            (b"GET / HTTP/1.1\r", More),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", More),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", More),
            (b"GET / HTTP/1.1\r\nHos", More),
            // The request line is exactly method SP target SP version.
            (b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET /\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET\r\n\r\n", Reject(400)),
            (b"GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", Reject(400)),
            // Versions: 1.0 and 1.1, other well-formed versions 505 (at once), else 400.
            (b"GET / HTTP/2.0\r\n", Reject(505)),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Reject(505)),
            (b"GET / HTTP/0.9\r\n\r\n", Reject(505)),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Reject(505)),
            (b"GET / HTTP/3.0\n", Reject(505)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Reject(505)),
            (b"PRI * HTTP/2.0\r\n", Reject(505)),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / HTTP/11\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET / FTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            // The method is a token; garbage is refused before the line ends.
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Reject(400)),
            (b"GE\x00", Reject(400)),
            (b"G{T /", Reject(400)),
            (b"M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", ok("*")),
            // Targets.
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", ok("*")),
            (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (b"GET ?q HTTP/1.1\r\nHost: a\r\n\r\n", Reject(400)),
            (
                b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n",
                ok("/a/b?c=d"),
            ),
            (
                b"GET HTTP://Example.com:8080 HTTP/1.1\r\nHost: x\r\n\r\n",
                ok("/"),
            ),
            (
                b"GET https://h?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                ok("/?q=1"),
            ),
            (b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n", Reject(400)),
            (b"GET ftp://h/x HTTP/1.1\r\nHost: x\r\n\r\n", Reject(400)),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                ok("example.com:443"),
            ),
            // Bytes >= 0x80 are accepted and percent-encoded (valid UTF-8 or not).
            (
                b"GET /caf\xc3\xa9?q=\xff HTTP/1.1\r\nHost: a\r\n\r\n",
                ok("/caf%C3%A9?q=%FF"),
            ),
            (
                b"GET http://h/\xe2\x82\xac HTTP/1.1\r\nHost: a\r\n\r\n",
                ok("/%E2%82%AC"),
            ),
        ];
        for (input, want) in cases {
            check(input, want);
        }
    }

    #[test]
    fn header_lines() {
        use Want::*;
        let cases: Vec<(Vec<u8>, Want)> = vec![
            (post("X: a b \t\r\n"), ok("/")),
            (post("X:\r\n"), ok("/")),
            (post("X-Empty:   \r\n"), ok("/")),
            (post("Host : a\r\n"), Reject(400)),
            (post("X\t: a\r\n"), Reject(400)),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(), Reject(400)),
            // obs-fold, also on the first header line.
            (post("X: a\r\n b\r\n"), Reject(400)),
            (post("X: a\r\n\tb\r\n"), Reject(400)),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n".to_vec(), Reject(400)),
            // Control bytes in values (HTAB is fine); obs-text is accepted.
            (post("X: a\x00b\r\n"), Reject(400)),
            (post("X: a\rb\r\n"), Reject(400)),
            (post("X: \x01\r\n"), Reject(400)),
            (post("X: a\x7f\r\n"), Reject(400)),
            (post("X: a\tb\r\n"), ok("/")),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\xfe caf\xc3\xa9\r\n\r\n".to_vec(),
                ok("/"),
            ),
            // Names are tokens; a line needs a colon.
            (post("NoColon\r\n"), Reject(400)),
            (post(": v\r\n"), Reject(400)),
            (post("X(y): 1\r\n"), Reject(400)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: 1\r\n\r\n".to_vec(),
                Reject(400),
            ),
            // An error shows before the head is complete.
            (b"GET / HTTP/1.1\r\nX: \x00".to_vec(), Reject(400)),
            // Host: exactly one on HTTP/1.1, at most one on HTTP/1.0.
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Reject(400)),
            (b"GET / HTTP/1.1\r\nX: a\r\n\r\n".to_vec(), Reject(400)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n".to_vec(),
                Reject(400),
            ),
            (http10(""), closing("/")),
            (http10("Host: a\r\n"), closing("/")),
            (http10("Host: a\r\nHost: b\r\n"), Reject(400)),
        ];
        for (input, want) in cases {
            check(&input, want);
        }
    }

    #[test]
    fn body_framing_connection_and_expect() {
        use BodyFraming::*;
        use Want::Reject;
        let cases: Vec<(Vec<u8>, Want)> = vec![
            (post(""), framed(None)),
            (post("Content-Length: 5\r\n"), framed(Length(5))),
            (post("Content-Length: 0\r\n"), framed(Length(0))),
            (post("content-length:  5 \t\r\n"), framed(Length(5))),
            (post("Content-Length: 007\r\n"), framed(Length(7))),
            (post("Content-Length: -1\r\n"), Reject(400)),
            (post("Content-Length: +89\r\n"), Reject(400)),
            (post("Content-Length: 12abc\r\n"), Reject(400)),
            (post("Content-Length: 0x10\r\n"), Reject(400)),
            (post("Content-Length: 5 5\r\n"), Reject(400)),
            (post("Content-Length:\r\n"), Reject(400)),
            (
                post("Content-Length: 99999999999999999999999\r\n"),
                Reject(400),
            ),
            (
                post("Content-Length: 18446744073709551616\r\n"),
                Reject(400),
            ),
            (
                post("Content-Length: 18446744073709551615\r\n"),
                framed(Length(u64::MAX)),
            ),
            // Several Content-Lengths only when all identical.
            (
                post("Content-Length: 0\r\nContent-Length: 40\r\n"),
                Reject(400),
            ),
            (
                post("Content-Length: 7\r\nContent-Length: 7\r\n"),
                framed(Length(7)),
            ),
            (post("Content-Length: 7, 7\r\n"), framed(Length(7))),
            (post("Content-Length: 7,8\r\n"), Reject(400)),
            (post("Content-Length: 7,\r\n"), Reject(400)),
            // Transfer-Encoding.
            (post("Transfer-Encoding: chunked\r\n"), framed(Chunked)),
            (post("transfer-encoding:  Chunked \r\n"), framed(Chunked)),
            (
                post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
                Reject(400),
            ),
            (
                post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
                Reject(400),
            ),
            (post("Transfer-Encoding: identity\r\n"), Reject(501)),
            (post("Transfer-Encoding: gzip\r\n"), Reject(501)),
            (post("Transfer-Encoding: gzip, chunked\r\n"), Reject(501)),
            (post("Transfer-Encoding: chunked, chunked\r\n"), Reject(501)),
            (
                post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
                Reject(501),
            ),
            (post("Transfer-Encoding: chunked,\r\n"), Reject(501)),
            (post("Transfer-Encoding:\r\n"), Reject(501)),
            (http10("Transfer-Encoding: chunked\r\n"), Reject(400)),
            // Upgrade is ignored: an ordinary request.
            (
                post("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
                framed(None),
            ),
            (
                post("Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"),
                framed(None),
            ),
            // Connection.
            (post("Connection: close\r\n"), closing("/")),
            (post("Connection: keep-alive, CLOSE\r\n"), closing("/")),
            (
                post("Connection: keep-alive\r\nConnection: close\r\n"),
                closing("/"),
            ),
            (post("Connection: keep-alive\r\n"), ok("/")),
            (http10("Connection: Keep-Alive\r\n"), ok("/")),
            (http10("Connection: foo , keep-alive\r\n"), ok("/")),
            (http10("Connection: keep-alive, close\r\n"), closing("/")),
            (http10("Connection: keepalive\r\n"), closing("/")),
            // Expect.
            (
                post("Expect: 100-continue\r\nContent-Length: 3\r\n"),
                Want::Head {
                    target: "/",
                    framing: Length(3),
                    keep_alive: true,
                    expect_continue: true,
                },
            ),
            (
                post("Expect: 100-Continue \r\n"),
                Want::Head {
                    target: "/",
                    framing: None,
                    keep_alive: true,
                    expect_continue: true,
                },
            ),
            (post("Expect: 100-continue, foo\r\n"), Reject(417)),
            (post("Expect: foo\r\n"), Reject(417)),
            (post("Expect:\r\n"), Reject(417)),
            // RFC 9110 §10.1.1: ignored on HTTP/1.0.
            (http10("Expect: 100-continue\r\n"), closing("/")),
            (http10("Expect: something\r\n"), Reject(417)),
        ];
        for (input, want) in cases {
            check(&input, want);
        }
    }

    #[test]
    fn limits() {
        use Want::*;
        let headers = |n: usize| -> Vec<u8> {
            let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for i in 1..n {
                s.push_str(&format!("X-{}: {}\r\n", i, i));
            }
            s.push_str("\r\n");
            s.into_bytes()
        };
        let big = |value_len: usize, end: &str| -> Vec<u8> {
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX: {}{}",
                "v".repeat(value_len),
                end
            )
            .into_bytes()
        };
        let mut long_line = b"GET /".to_vec();
        long_line.resize(70 * 1024, b'a');
        let cases: Vec<(Vec<u8>, Want)> = vec![
            (headers(100), ok("/")),
            (headers(101), Reject(431)),
            (headers(500), Reject(431)),
            (big(70 * 1024, "\r\n\r\n"), Reject(431)),
            (big(70 * 1024, ""), Reject(431)),
            (big(60 * 1024, ""), More),
            (big(32 * 1024 * 1024, ""), Reject(431)),
            (long_line, Reject(431)),
            (b"\r\n".repeat(40 * 1024), Reject(431)),
        ];
        for (input, want) in cases {
            check(&input, want);
        }

        // A head of exactly max_head_bytes fits; one more byte does not.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let exact = HeadLimits {
            max_head_bytes: head.len(),
            max_headers: 1,
        };
        let (_, n) = parse_head(head, &exact).unwrap().unwrap();
        assert_eq!(n, head.len());
        let mut with_body = head.to_vec();
        with_body.extend_from_slice(b"GET");
        assert!(parse_head(&with_body, &exact).unwrap().is_some());
        let short = HeadLimits {
            max_head_bytes: head.len() - 1,
            max_headers: 1,
        };
        assert_eq!(parse_head(head, &short).unwrap_err().status, 431);
        let no_headers = HeadLimits {
            max_head_bytes: 1024,
            max_headers: 0,
        };
        assert_eq!(parse_head(head, &no_headers).unwrap_err().status, 431);
    }

    #[test]
    fn head_fields_and_pipelined_body_offset() {
        let buf = b"\r\nPOST /a HTTP/1.1\r\nHost: h\r\nX-Obs: \xff \r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.0\nConnection: keep-alive\n\nrest";
        let (head, n) = parse_head(buf, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/a");
        assert_eq!(head.minor_version, 1);
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_string(), b"h".to_vec()),
                ("X-Obs".to_string(), b"\xff".to_vec()),
                ("Content-Length".to_string(), b"5".to_vec()),
            ]
        );
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(&buf[n..n + 5], b"hello");

        let next = &buf[n + 5..];
        let (head, m) = parse_head(next, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!((head.method.as_str(), head.target.as_str()), ("GET", "/b"));
        assert_eq!(head.minor_version, 0);
        assert!(head.keep_alive);
        assert_eq!(&next[m..], b"rest");
    }

    #[test]
    fn reasons_quote_request_bytes_safely() {
        let r = parse_head(&post("Content-Length: 12abc\r\n"), &HeadLimits::default()).unwrap_err();
        assert_eq!(r.reason, "Content-Length '12abc' is not a number.");
        let r = parse_head(
            &post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            &HeadLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            r.reason,
            "The request has both Content-Length and Transfer-Encoding."
        );
        let r = parse_head(&post("X: a\x00b\r\n"), &HeadLimits::default()).unwrap_err();
        assert_eq!(
            r.reason,
            "The value of header 'X' contains the control character \\x00."
        );
        let r = parse_head(b"GET /\xff\\ HTTP/9.9\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert_eq!(r.reason, "HTTP version 'HTTP/9.9' is not supported.");
        let r = parse_head(b"GET /\xff\\ HTTP/1.1 x\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert_eq!(
            r.reason,
            "The request line 'GET /\\xff\\\\ HTTP/1.1 x' is not 'method SP target SP version'."
        );
        let long = format!("Transfer-Encoding: {}\r\n", "x".repeat(1000));
        let r = parse_head(&post(&long), &HeadLimits::default()).unwrap_err();
        assert!(r.reason.len() < 200, "{}", r.reason);
        check_reason(&r);
    }

    /// Decodes `input` in one call.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), Rejection> {
        let mut out = Vec::new();
        let (n, done) = ChunkedDecoder::new().decode(input, &mut out)?;
        Ok((out, n, done))
    }

    /// The decoded body and the bytes consumed, or a rejection status.
    type ChunkedWant<'a> = Result<(&'a [u8], usize), u16>;

    /// What decoding `input` must give: `Ok((body, consumed))` with the body ended, or a
    /// rejection status. The same must come out when the input arrives one byte at a time and
    /// when it is split in two at every position.
    fn check_chunked(input: &[u8], expected: ChunkedWant<'_>) {
        let shown = quote(&input[..input.len().min(200)]);
        match (decode_all(input), expected) {
            (Ok((out, n, true)), Ok((body, consumed))) => {
                assert_eq!(out, body, "body of {}", shown);
                assert_eq!(n, consumed, "consumed of {}", shown);
            }
            (Err(r), Err(status)) if r.status == status => check_reason(&r),
            (got, expected) => panic!("{}: expected {:?}, got {:?}", shown, expected, got),
        }

        // One byte at a time.
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut result = Ok(None);
        for (i, b) in input.iter().enumerate() {
            match decoder.decode(std::slice::from_ref(b), &mut out) {
                Ok((1, true)) => {
                    result = Ok(Some(i + 1));
                    break;
                }
                Ok((1, false)) => {}
                Ok(other) => panic!("{}: byte {} gave {:?}", shown, i, other),
                Err(r) => {
                    result = Err(r.status);
                    break;
                }
            }
        }
        match (result, expected) {
            (Ok(Some(n)), Ok((body, consumed))) => {
                assert_eq!(out, body, "bytewise body of {}", shown);
                assert_eq!(n, consumed, "bytewise consumed of {}", shown);
                assert_eq!(decoder.decode(b"more", &mut out), Ok((0, true)));
            }
            (Err(got), Err(status)) => assert_eq!(got, status, "bytewise {}", shown),
            (got, _) => panic!("{}: bytewise got {:?}", shown, got),
        }

        // Split in two at every position (a sample of them for long inputs: quadratic).
        let step = if input.len() > 1024 { 997 } else { 1 };
        for split in (0..=input.len()).step_by(step) {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            let first = decoder.decode(&input[..split], &mut out);
            let got = match first {
                Ok((n, true)) => Ok(n),
                Ok((n, false)) => {
                    assert_eq!(n, split, "{}: split {} not all consumed", shown, split);
                    decoder.decode(&input[split..], &mut out).map(|(m, done)| {
                        assert!(done, "{}: split {} not done", shown, split);
                        split + m
                    })
                }
                Err(r) => Err(r),
            };
            match (got, expected) {
                (Ok(n), Ok((body, consumed))) => {
                    assert_eq!(out, body, "{}: split {}", shown, split);
                    assert_eq!(n, consumed, "{}: split {}", shown, split);
                }
                (Err(r), Err(status)) => assert_eq!(r.status, status, "{}: split {}", shown, split),
                (got, _) => panic!("{}: split {} got {:?}", shown, split, got),
            }
        }
    }

    #[test]
    fn chunked_bodies() {
        let wiki: &[u8] = b"4;ext=1\r\nWiki\r\n5 ; a=\"b c\" ;flag\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0;last\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\nX-Trailer: \xff\r\n\r\nGET / HTTP/1.1\r\n";
        let wiki_len = wiki.len() - b"GET / HTTP/1.1\r\n".len();
        let too_long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(5000));
        let max_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE - 2));
        let huge_trailers = format!("0\r\n{}\r\n", "X: y\r\n".repeat(12 * 1024));
        let cases: Vec<(&[u8], ChunkedWant<'_>)> = vec![
            (wiki, Ok((b"Wikipedia in\r\n\r\nchunks.", wiki_len))),
            (b"0\r\n\r\n", Ok((b"", 5))),
            (b"0\r\n\r\nnext", Ok((b"", 5))),
            (b"3\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 13))),
            // Bare LF, and mixed.
            (b"3\nabc\n0\n\n", Ok((b"abc", 9))),
            (b"3\r\nabc\n0\n\r\n", Ok((b"abc", 11))),
            (b"0\nT: 1\n\n", Ok((b"", 8))),
            // Hex sizes, upper and lower case, up to 16 digits.
            (b"aB\r\n", Err(0)),
            (b"0000000000000003\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 28))),
            (b"00000000000000003\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"FFFFFFFFFFFFFFFFF\r\n", Err(400)),
            (b"3 \t\r\nabc\r\n0\r\n\r\n", Ok((b"abc", 15))),
            (b"zz\r\nab\r\n0\r\n\r\n", Err(400)),
            (b"3z\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"3 z\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"-3\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"0x3\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b" 3\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"\r\n3\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b";e\r\n3\r\nabc\r\n0\r\n\r\n", Err(400)),
            (b"3\rabc\r\n0\r\n\r\n", Err(400)),
            // The CRLF after chunk data is required.
            (b"3\r\nabcX\r\n0\r\n\r\n", Err(400)),
            (b"3\r\nabc\rX0\r\n\r\n", Err(400)),
            (b"3\r\nabcd\r\n0\r\n\r\n", Err(400)),
            // Extensions: anything up to a bounded line.
            (max_ext.as_bytes(), Ok((b"a", max_ext.len()))),
            (too_long_ext.as_bytes(), Err(400)),
            (b"1;\x00\xff=\"\"\r\na\r\n0\r\n\r\n", Ok((b"a", 17))),
            (b"1;a\rb\r\na\r\n0\r\n\r\n", Err(400)),
            // Trailers: valid field lines, bounded.
            (b"0\r\nBad Trailer\r\n\r\n", Err(400)),
            (b"0\r\nX : y\r\n\r\n", Err(400)),
            (b"0\r\nX: y\r\n z\r\n\r\n", Err(400)),
            (b"0\r\nX: \x00\r\n\r\n", Err(400)),
            (b"0\r\nX: a\rb\r\n\r\n", Err(400)),
            (b"0\r\n\rX\r\n", Err(400)),
            (huge_trailers.as_bytes(), Err(431)),
        ];
        for (input, expected) in cases {
            if expected == Err(0) {
                // Incomplete: everything is consumed and more is asked for.
                let mut out = Vec::new();
                assert_eq!(
                    ChunkedDecoder::new().decode(input, &mut out),
                    Ok((input.len(), false))
                );
                continue;
            }
            check_chunked(input, expected);
        }
    }

    #[test]
    fn chunked_large_chunk_across_calls() {
        let data = vec![7u8; 100_000];
        let mut input = format!("{:x}\r\n", data.len()).into_bytes();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(4093) {
            let (n, done) = decoder.decode(piece, &mut out).unwrap();
            consumed += n;
            assert_eq!(done, consumed == input.len());
        }
        assert_eq!(consumed, input.len());
        assert_eq!(out, data);
    }

    #[test]
    fn rejection_responses() {
        let r = Rejection::new(400, "Content-Length '12abc' is not a number.");
        assert_eq!(r.code, "invalid_request");
        let body = "{\"error\":\"invalid_request\",\"error_description\":\"Content-Length '12abc' is not a number.\"}";
        assert_eq!(body.len(), 89);
        assert_eq!(
            String::from_utf8(rejection_response(&r)).unwrap(),
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 89\r\nConnection: close\r\n\r\n{}",
                body
            )
        );

        let r = Rejection::new(505, "Say \"hi\" \\ \u{1}\n.");
        assert_eq!(
            rejection_response(&r),
            b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: application/json\r\nContent-Length: 84\r\nConnection: close\r\n\r\n{\"error\":\"http_version_not_supported\",\"error_description\":\"Say \\\"hi\\\" \\\\ \\u0001\\n.\"}".to_vec()
        );

        for (status, phrase) in [
            (413, "Payload Too Large"),
            (417, "Expectation Failed"),
            (431, "Request Header Fields Too Large"),
            (501, "Not Implemented"),
        ] {
            let r = Rejection::new(status, "X.");
            assert_eq!(r.code, code_of(status));
            let text = String::from_utf8(rejection_response(&r)).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {} {}\r\n", status, phrase)),
                "{}",
                text
            );
        }
    }
}
