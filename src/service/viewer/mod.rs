//! The web viewer of deviation jobs: a page per job (`/viewer/jobs/{id}`) showing the case
//! with its z-maps, clusters and regions in NiiVue, reached with a short-lived session cookie
//! made from a bearer token. `session.rs` keeps the sessions, `files.rs` says which files a
//! page may load for a job, `assets.rs` serves the page and its scripts; the handlers are in
//! [`crate::service::routes::viewer`] and the guard authenticates the cookie like a token.

pub mod assets;
pub mod files;
pub mod session;

/// Whether requests to the route template `path` may authenticate with the viewer's session
/// cookie (every viewer route except the one that opens a session, which needs the token).
pub fn accepts_session(path: &str) -> bool {
    path.starts_with("/viewer/") && path != "/viewer/session"
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_viewer_pages_take_the_cookie() {
        assert!(super::accepts_session("/viewer/jobs/{id}"));
        assert!(super::accepts_session("/viewer/assets/{name}"));
        assert!(!super::accepts_session("/viewer/session"));
        assert!(!super::accepts_session("/api/v1/jobs/{id}"));
    }
}
