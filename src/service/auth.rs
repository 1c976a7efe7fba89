//! Users and bearer tokens.
//!
//! A token is `pn_<user id>_<secret>`; the secret is 32 random bytes (base64url). The state
//! file keeps only a per-user random salt and HMAC-SHA-256(salt, secret): a copy of the
//! database does not reveal usable tokens, and the comparison is constant-time (`hmac`'s
//! `verify_slice`). The user id in the token only selects the row to compare against.
//!
//! A request's caller is a [`Principal`]: the token's account and, for the portal, the user it
//! acts for (named by the `x-acting-*` headers). The guard ([`super::guard`]) puts it on the
//! request; handlers take it as an extractor.

use super::cases::Actor;
use super::error::ApiError;
use super::roles::Role;
use super::store::{Store, StoreError, now};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Errors while creating users.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// State store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No user has that id.
    #[error("user {0} does not exist")]
    NotFound(i64),
    /// A field breaks a rule.
    #[error("user field `{field}`: {rule}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Rule.
        rule: String,
    },
}

impl From<rusqlite::Error> for AuthError {
    fn from(error: rusqlite::Error) -> Self {
        AuthError::Store(StoreError::Sqlite(error))
    }
}

/// An authenticated principal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Name (an account name, not a patient identity).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Centre (empty when the user belongs to none).
    pub centre: String,
}

/// A user as shown to admins: no salt, no hash, no token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserEntry {
    /// Row id (the `<id>` of the user's token).
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Centre (empty when the user belongs to none).
    pub centre: String,
    /// A disabled user's token fails; the user is kept (nothing is deleted).
    pub disabled: bool,
    /// Creation time.
    pub created: String,
}

/// Header naming the user the portal acts for.
pub const ACTING_USER: &str = "x-acting-user";
/// Header naming that user's role (checked against the route table).
pub const ACTING_ROLE: &str = "x-acting-role";
/// Header naming that user's centre.
pub const ACTING_CENTRE: &str = "x-acting-centre";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's account.
    pub user: User,
    /// For the portal: the user it acts for, with role and centre.
    pub acting: Option<(String, Role, String)>,
}

impl Principal {
    /// The specialist to record: the acting user for the portal, else the account.
    pub fn actor(&self) -> Actor {
        match &self.acting {
            Some((name, _, centre)) => Actor { name: name.clone(), centre: centre.clone() },
            None => Actor { name: self.user.name.clone(), centre: self.user.centre.clone() },
        }
    }
    /// Name recorded as job owner, study submitter…
    pub fn recorded_name(&self) -> String {
        match &self.acting {
            Some((name, _, _)) => format!("{} (via {})", name, self.user.name),
            None => self.user.name.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or(ApiError::Unauthorized)
    }
}

/// A fresh secret with its salt and salted hash: (salt, hash, secret).
fn new_secret() -> (Vec<u8>, Vec<u8>, String) {
    let mut salt = [0u8; 16];
    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut secret_bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let hash = hash_secret(&salt, &secret).finalize().into_bytes().to_vec();
    (salt.to_vec(), hash, secret)
}

fn hash_secret(salt: &[u8], secret: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC accepts keys of any length");
    mac.update(secret.as_bytes());
    mac
}

/// Checks a user or centre name: short, printable, no separators that could forge log lines.
pub fn check_name(field: &'static str, value: &str) -> Result<(), AuthError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | ' '));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field,
            rule: "1–100 characters: letters, digits, space, '.', '-', '_', '@'".to_string(),
        })
    }
}

/// Creates a user and returns the token (shown once, never stored).
pub fn add_user(store: &Store, name: &str, role: Role, centre: Option<&str>) -> Result<String, AuthError> {
    check_name("name", name)?;
    if let Some(centre) = centre {
        check_name("centre", centre)?;
    }
    let (salt, hash, secret) = new_secret();
    let connection = store.lock();
    connection.execute(
        "INSERT INTO users (name, role, centre, salt, token_hash, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, role.as_str(), centre.unwrap_or(""), salt, hash, now()],
    )?;
    let id = connection.last_insert_rowid();
    Ok(format!("pn_{id}_{secret}"))
}

/// Resolves a bearer token to its user; `None` for any unknown, malformed or disabled token.
pub fn authenticate(store: &Store, token: &str) -> Option<User> {
    let rest = token.strip_prefix("pn_")?;
    let (id, secret) = rest.split_once('_')?;
    let id: i64 = id.parse().ok()?;
    if secret.len() > 200 {
        return None;
    }
    let row = store
        .lock()
        .query_row(
            "SELECT name, role, centre, salt, token_hash FROM users WHERE id = ?1 AND disabled = 0",
            params![id],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            },
        )
        .optional()
        .ok()
        .flatten();
    // Compare against a dummy when the id is unknown so timing does not reveal valid ids.
    let (name, role, centre, salt, expected) =
        row.unwrap_or_else(|| (String::new(), String::new(), String::new(), vec![0; 16], vec![0xff; 32]));
    let verified = hash_secret(&salt, secret).verify_slice(&expected).is_ok();
    if !verified || name.is_empty() {
        return None;
    }
    let role = role.parse().ok()?;
    Some(User { id, name, role, centre })
}

/// The salted hash of a user's current token, which a viewer session keeps so that rotating
/// the token ends the sessions opened with the old one.
pub fn token_hash(store: &Store, id: i64) -> Option<Vec<u8>> {
    store
        .lock()
        .query_row("SELECT token_hash FROM users WHERE id = ?1", params![id], |row| row.get(0))
        .optional()
        .ok()
        .flatten()
}

/// The user of a viewer session: the enabled user with row id `id` whose token is still the one
/// hashed as `token_hash`; `None` when there is none, it is disabled or its token was rotated.
pub fn session_user(store: &Store, id: i64, token_hash: &[u8]) -> Option<User> {
    let (name, role, centre) = store
        .lock()
        .query_row(
            "SELECT name, role, centre FROM users WHERE id = ?1 AND disabled = 0 AND token_hash = ?2",
            params![id, token_hash],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)),
        )
        .optional()
        .ok()
        .flatten()?;
    Some(User { id, name, role: role.parse().ok()?, centre })
}

/// Whether an enabled user of that name, role and centre exists (the portal may act only
/// for such a user).
pub fn is_registered(store: &Store, name: &str, role: Role, centre: &str) -> Result<bool, AuthError> {
    Ok(store
        .lock()
        .prepare("SELECT 1 FROM users WHERE name = ?1 AND role = ?2 AND centre = ?3 AND disabled = 0")?
        .exists(params![name, role.as_str(), centre])?)
}

const ENTRY_COLUMNS: &str = "id, name, role, centre, disabled, created";

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserEntry> {
    let role: String = row.get(2)?;
    Ok(UserEntry {
        id: row.get(0)?,
        name: row.get(1)?,
        // Roles are checked when users are created; an unknown one cannot authenticate either.
        role: role.parse().unwrap_or(Role::Auditor),
        centre: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
        disabled: row.get::<_, i64>(4)? != 0,
        created: row.get(5)?,
    })
}

/// Every user, disabled ones included (without secrets), by id.
pub fn list_users(store: &Store) -> Result<Vec<UserEntry>, AuthError> {
    let connection = store.lock();
    let mut statement = connection.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM users ORDER BY id"))?;
    let users = statement.query_map([], row_to_entry)?.collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

/// One user (without secrets).
pub fn get_user(store: &Store, id: i64) -> Result<UserEntry, AuthError> {
    store
        .lock()
        .query_row(&format!("SELECT {ENTRY_COLUMNS} FROM users WHERE id = ?1"), params![id], row_to_entry)
        .optional()?
        .ok_or(AuthError::NotFound(id))
}

/// Disables or enables a user. Every request looks its token up, so a disabled user's token
/// fails from the next request on.
pub fn set_disabled(store: &Store, id: i64, disabled: bool) -> Result<UserEntry, AuthError> {
    let changed =
        store.lock().execute("UPDATE users SET disabled = ?2 WHERE id = ?1", params![id, disabled as i64])?;
    if changed == 0 {
        return Err(AuthError::NotFound(id));
    }
    get_user(store, id)
}

/// Gives a user a new token (returned once, never stored); the old one fails at once.
pub fn rotate_token(store: &Store, id: i64) -> Result<String, AuthError> {
    let (salt, hash, secret) = new_secret();
    let changed = store
        .lock()
        .execute("UPDATE users SET salt = ?2, token_hash = ?3 WHERE id = ?1", params![id, salt, hash])?;
    if changed == 0 {
        return Err(AuthError::NotFound(id));
    }
    Ok(format!("pn_{id}_{secret}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_only_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = add_user(&store, "dr ada", Role::Radiologist, Some("C1")).unwrap();
        let user = authenticate(&store, &token).unwrap();
        assert_eq!(
            (user.name.as_str(), user.role, user.centre.as_str()),
            ("dr ada", Role::Radiologist, "C1")
        );
        let mut altered = token.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(authenticate(&store, &altered).is_none());
        assert!(authenticate(&store, "pn_999_abc").is_none());
        assert!(authenticate(&store, "garbage").is_none());
        // The secret never reaches the database.
        // pn_<id>_<secret>; the URL-safe secret may itself contain '_'.
        let secret = token.splitn(3, '_').nth(2).unwrap();
        assert!(secret.len() >= 32, "{token}");
        for file in ["service.sqlite", "service.sqlite-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{file}");
        }
        assert!(add_user(&store, "bad\nname", Role::Admin, None).is_err());

        // Disabled: the token fails at once and the user is kept; a rotated token replaces it.
        assert!(set_disabled(&store, user.id, true).unwrap().disabled);
        assert!(authenticate(&store, &token).is_none());
        assert_eq!(list_users(&store).unwrap().len(), 1);
        assert!(!set_disabled(&store, user.id, false).unwrap().disabled);
        assert!(authenticate(&store, &token).is_some());
        let rotated = rotate_token(&store, user.id).unwrap();
        assert!(authenticate(&store, &token).is_none());
        assert_eq!(authenticate(&store, &rotated).unwrap().id, user.id);
        assert!(matches!(rotate_token(&store, 99), Err(AuthError::NotFound(99))));
    }
}
