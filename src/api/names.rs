//! Which runtime and job ids the API accepts.
//!
//! An id travels inside URLs (`/runtimes/{id}/job`) and log lines, so `.`/`..` (which clients
//! and proxies rewrite to another path), `/` and control characters (which could forge a log
//! line) are refused with 400 wherever an id comes in.

use crate::error::Error;

/// Refuses a runtime id that could not be used safely in a path or a log line.
pub fn check_runtime_id(id: &str) -> Result<(), Error> {
    check("runtime id", id)
}

/// Refuses a job id that could not be used safely in a path or a log line.
pub fn check_job_id(id: &str) -> Result<(), Error> {
    check("job id", id)
}

fn check(what: &str, id: &str) -> Result<(), Error> {
    let bad =
        id.is_empty() || id == "." || id == ".." || id.chars().any(|c| c == '/' || c.is_control());
    if bad {
        return Err(Error::InvalidRequest(format!(
            "The {what} \"{}\" is not valid: an id may not be empty, \".\" or \"..\", nor contain \"/\" or control characters.",
            id.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_slashes_and_control_characters_are_refused() {
        for bad in ["", ".", "..", "a/b", "rt\nINFO forged", "rt\r", "\u{7f}"] {
            assert!(check_runtime_id(bad).is_err(), "{bad:?}");
        }
        for good in ["rt", "my.runtime", "...", "ünïcode", "a b"] {
            assert!(check_runtime_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_description_escapes_the_id() {
        let err = check_job_id("a\nb").unwrap_err();
        assert_eq!(
            err.to_string(),
            "The job id \"a\\nb\" is not valid: an id may not be empty, \".\" or \"..\", nor contain \"/\" or control characters."
        );
    }
}
