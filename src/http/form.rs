//! `application/x-www-form-urlencoded` bodies (the OAuth2 token and revoke requests).
//!
//! Strict where RFC 6749 is: a parameter sent twice is refused (§3.1, §3.2: "MUST NOT be
//! included more than once"), so is a body that is not UTF-8 once decoded; an empty value
//! counts as absent (§3.1: "treated as if they were omitted").

use std::collections::HashSet;

use percent_encoding::percent_decode;

/// A form body larger than this is refused: OAuth2 requests are a few hundred bytes.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// A form with more parameters than this is refused.
pub const MAX_PARAMETERS: usize = 100;

/// A decoded form: each name at most once, in the order sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Decodes a body; the error is the sentence for an `invalid_request`. (The caller
    /// refuses bodies over [`MAX_FORM_BYTES`] before this.)
    pub fn parse(body: &[u8]) -> Result<Form, String> {
        let mut pairs = Vec::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            pairs.push((decode(name)?, decode(value)?));
        }
        Form::from_pairs(pairs)
    }

    /// A form from pairs already decoded (a query string), with the same rules.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Form, String> {
        if pairs.len() > MAX_PARAMETERS {
            return Err(format!(
                "The form has {} parameters; at most {MAX_PARAMETERS} are accepted.",
                pairs.len()
            ));
        }
        let mut kept: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        let mut seen = HashSet::with_capacity(pairs.len());
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            if !seen.insert(name.clone()) {
                return Err(format!(
                    "The parameter '{}' is sent more than once.",
                    name.escape_debug()
                ));
            }
            kept.push((name, value));
        }
        Ok(Form(kept))
    }

    /// The value of `name`, if sent with a non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or the `invalid_request` sentence saying it is missing.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("The parameter '{name}' is required."))
    }
}

/// `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode(raw: &[u8]) -> Result<String, String> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| "The form body is not UTF-8 once decoded.".to_string())
}

/// Percent-encodes a value for a URL query (`redirect_uri?code=…&state=…`).
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs() {
        let form = Form::parse(b"grant_type=client_credentials&scope=a+b%3Ac&empty=&flag").unwrap();
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), Some("a b:c"));
        assert_eq!(form.get("empty"), None, "an empty value is omitted");
        assert_eq!(form.get("flag"), None);
        assert_eq!(
            form.require("code").unwrap_err(),
            "The parameter 'code' is required."
        );
    }

    #[test]
    fn refuses_duplicates_and_bad_utf8() {
        assert_eq!(
            Form::parse(b"a=1&a=2").unwrap_err(),
            "The parameter 'a' is sent more than once."
        );
        assert!(Form::parse(b"a=%ff").is_err());
        assert!(Form::parse(b"a=\xff").is_err());
        // Malformed escapes are kept as written, like browsers do.
        assert_eq!(Form::parse(b"a=%zz").unwrap().get("a"), Some("%zz"));
    }

    #[test]
    fn encode_round_trips() {
        let raw = "a b&c=d/é";
        let form = Form::parse(format!("x={}", encode(raw)).as_bytes()).unwrap();
        assert_eq!(form.get("x"), Some(raw));
    }
}
