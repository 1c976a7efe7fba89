//! Viewer sessions: a short-lived, random cookie standing for a bearer token, so a browser can
//! load the viewer page, its script and its images without the token ever entering a URL or
//! script-readable storage.
//!
//! A session keeps the account's id, the salted hash of its token (as the state stores it) and,
//! for the portal, the user it acts for — never the token. The guard looks the account up again
//! on every request, so a disabled user's session, or one opened with a token since rotated,
//! fails at once like the token. Sessions live in memory: a restart ends them all, which is
//! the safe direction.

use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::service::roles::Role;

/// Name of the session cookie.
pub const COOKIE: &str = "pedinorm_viewer";

/// How long a session lasts: long enough to read a case, short enough that a forgotten tab
/// does not stay open for the day.
pub const LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The sessions one server holds at most; the oldest are dropped first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// Who a session was created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The account's user id (its token's `<id>`).
    pub user_id: i64,
    /// The salted hash of the token the session was opened with.
    pub token_hash: Vec<u8>,
    /// For the portal: the user it acts for (name, role, centre).
    pub acting: Option<(String, Role, String)>,
}

#[derive(Debug)]
struct Entry {
    owner: SessionOwner,
    expires: Instant,
}

/// The open sessions, by their secret cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// Opens a session for `owner`; returns the cookie value (32 random bytes, base64url).
    pub fn create(&self, owner: SessionOwner) -> String {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, entry| entry.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), Entry { owner, expires: now + LIFETIME });
        id
    }

    /// Ends a session (signing out); false when it was not open.
    pub fn end(&self, id: &str) -> bool {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(id).is_some()
    }

    /// The owner of an open, unexpired session.
    pub fn resolve(&self, id: &str) -> Option<SessionOwner> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get(id) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.owner.clone()),
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn from_cookie_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= 100)
}

/// The `Set-Cookie` value that makes the browser drop the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/viewer; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value opening a session: HttpOnly (no script reads it), SameSite=Strict
/// (no other site's page sends it), limited to the viewer's paths, `Secure` behind TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/viewer; Max-Age={}; HttpOnly; SameSite=Strict{secure}", LIFETIME.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn sessions_resolve_until_ended() {
        let sessions = Sessions::default();
        let owner = SessionOwner { user_id: 3, token_hash: vec![1, 2], acting: None };
        let id = sessions.create(owner.clone());
        assert_eq!(id.len(), 43);
        assert_eq!(sessions.resolve(&id), Some(owner));
        assert_eq!(sessions.resolve("forged"), None);
        assert!(sessions.end(&id));
        assert_eq!(sessions.resolve(&id), None);
        assert!(!sessions.end(&id), "an ended session is not open");
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn cookie_header_parsing_and_attributes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; pedinorm_viewer=abc ; b=2"));
        assert_eq!(from_cookie_header(&headers), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("pedinorm_viewer="));
        assert_eq!(from_cookie_header(&headers), None);
        let cookie = set_cookie("abc", true);
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/viewer", "Secure", "Max-Age=900"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
