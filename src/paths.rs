//! The route prefixes, each written once: the router matches their segments, and the client,
//! the session answer's URIs and the authorize page's links use their text.

/// Defines a prefix's text (`/a/b`) and its segments (`["a", "b"]`) from one list.
macro_rules! prefix {
    ($(#[$doc:meta])* $text:ident, $segments:ident = [$($segment:literal),+ $(,)?]) => {
        $(#[$doc])*
        pub const $text: &str = concat!($("/", $segment),+);
        /// The same prefix as path segments, for the router.
        pub const $segments: &[&str] = &[$($segment),+];
    };
}

prefix!(
    /// The Contour API (applications, bearer token).
    CONTOUR, CONTOUR_SEGMENTS = ["contour-backend-multiplexer", "api", "module-group-multiplexer"]
);
prefix!(
    /// The runtime API (compute modules, `Module-Auth-Token`).
    RUNTIMES, RUNTIMES_SEGMENTS = ["_emulate", "foundry", "compute-modules", "runtimes"]
);
prefix!(
    /// Multipass's OAuth2 routes.
    OAUTH2, OAUTH2_SEGMENTS = ["multipass", "api", "oauth2"]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_segments_agree() {
        for (text, segments) in [
            (CONTOUR, CONTOUR_SEGMENTS),
            (RUNTIMES, RUNTIMES_SEGMENTS),
            (OAUTH2, OAUTH2_SEGMENTS),
        ] {
            assert_eq!(text, format!("/{}", segments.join("/")));
        }
        assert_eq!(RUNTIMES, "/_emulate/foundry/compute-modules/runtimes");
    }
}
