//! The people who may sign in to the Flight SQL endpoint, and what each may do.
//!
//! Accounts come from a TOML file (`--users FILE`):
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$..."   # fletch hash-password
//! role = "admin"                          # admin | writer | reader
//! ```
//!
//! or from `--user`/`--password` as one admin. Passwords are checked against their
//! Argon2 hashes; a password once verified is remembered as an HMAC under a key that
//! lives only in this process, so a client signing in again costs no new hash, while a
//! wrong password always costs one (and no more than [`CONCURRENT_HASHES`] run at once,
//! so a flood of bad sign-ins cannot take every core).

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;
use ring::hmac;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tonic::Status;

use fletch_transport::Credentials;

/// Password hashes checked at once, at most.
const CONCURRENT_HASHES: usize = 2;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, EXPLAIN, catalog calls and session settings.
    Reader,
    /// A reader's rights, and DDL, INSERT, CACHE and files under the allowed locations.
    Writer,
    /// Everything, including settings that change the whole cluster.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
        })
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// How one account's password is checked.
enum Secret {
    /// An Argon2 hash in PHC form.
    Hash(String),
    /// A password given on the command line (`--password`), as an HMAC.
    Password(hmac::Tag),
}

struct Account {
    user: Arc<User>,
    secret: Secret,
}

/// The accounts of an endpoint.
pub struct Users {
    accounts: HashMap<String, Account>,
    /// Keys the HMACs of passwords; made at start-up, never stored.
    key: hmac::Key,
    /// The HMAC of each password that has passed its hash, by user.
    verified: Mutex<HashMap<String, hmac::Tag>>,
    hashing: Semaphore,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.accounts.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    role: Role,
}

/// Hashes `password` with Argon2id and a random salt, in the form `--users` files hold.
pub fn hash_password(password: &str) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("encoding the salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

impl Users {
    fn new(accounts: HashMap<String, Account>) -> Result<Self, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "the system's random number generator failed".to_string())?;
        Ok(Self {
            accounts,
            key,
            verified: Mutex::default(),
            hashing: Semaphore::new(CONCURRENT_HASHES),
        })
    }

    /// One admin with this user name and password (`--user`/`--password`).
    pub fn single_admin(credentials: &Credentials) -> Result<Self, String> {
        let mut users = Self::new(HashMap::new())?;
        let tag = hmac::sign(&users.key, credentials.password.as_bytes());
        let user = Arc::new(User {
            name: credentials.user.clone(),
            role: Role::Admin,
        });
        users.accounts.insert(
            credentials.user.clone(),
            Account {
                user,
                secret: Secret::Password(tag),
            },
        );
        Ok(users)
    }

    /// The accounts of a users file's text; `Err` names what is wrong, and where.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut accounts = HashMap::new();
        for entry in file.user {
            if entry.name.is_empty() || entry.name.contains(':') {
                return Err(format!(
                    "user name {:?}: must be non-empty and without ':'",
                    entry.name
                ));
            }
            PasswordHash::new(&entry.password_hash).map_err(|e| {
                format!(
                    "user {:?}: password_hash is not an Argon2 hash in PHC form ({e}); \
                     make one with `fletch hash-password`",
                    entry.name
                )
            })?;
            let account = Account {
                user: Arc::new(User {
                    name: entry.name.clone(),
                    role: entry.role,
                }),
                secret: Secret::Hash(entry.password_hash),
            };
            if accounts.insert(entry.name.clone(), account).is_some() {
                return Err(format!("user {:?} is listed twice", entry.name));
            }
        }
        if accounts.is_empty() {
            return Err("no [[user]] entries: nobody could sign in".to_string());
        }
        Self::new(accounts)
    }

    /// The user `credentials` sign in as; `Unauthenticated` for an unknown user or a
    /// wrong password alike.
    pub async fn sign_in(&self, credentials: &Credentials) -> Result<Arc<User>, Status> {
        let refused = || Status::unauthenticated("wrong user or password");
        let Some(account) = self.accounts.get(&credentials.user) else {
            // As slow as a wrong password, so timing does not tell which names exist.
            let _ = self.check_hash(DUMMY_HASH, &credentials.password).await;
            return Err(refused());
        };
        let presented = hmac::sign(&self.key, credentials.password.as_bytes());
        let matches = |tag: &hmac::Tag| {
            hmac::verify(&self.key, credentials.password.as_bytes(), tag.as_ref())
        };
        let ok = match &account.secret {
            Secret::Password(tag) => matches(tag).is_ok(),
            Secret::Hash(hash) => {
                let remembered = self.verified.lock().get(&credentials.user).cloned();
                if remembered.as_ref().is_some_and(|tag| matches(tag).is_ok()) {
                    true
                } else if self.check_hash(hash, &credentials.password).await? {
                    self.verified
                        .lock()
                        .insert(credentials.user.clone(), presented);
                    true
                } else {
                    false
                }
            }
        };
        if ok {
            Ok(Arc::clone(&account.user))
        } else {
            Err(refused())
        }
    }

    /// Whether `password` matches `hash`, checked off the async threads and at most
    /// [`CONCURRENT_HASHES`] at once.
    async fn check_hash(&self, hash: &str, password: &str) -> Result<bool, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the endpoint is shutting down"))?;
        let (hash, password) = (hash.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|e| Status::internal(format!("checking a password: {e}")))
    }
}

/// The Argon2 hash of a password nobody knows: checked for unknown user names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1Ct8mvAjJ2bZRBcXUOYj3bsdFzUz4/J8SbP0LN+M6Ts";

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn users_sign_in_with_their_passwords_only() {
        let text = format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\nrole = \"reader\"\n\n\
             [[user]]\nname = \"bob\"\npassword_hash = \"{}\"\nrole = \"writer\"\n",
            hash_password("alice's secret").expect("hash"),
            hash_password("bob's secret").expect("hash"),
        );
        let users = Users::from_toml(&text).expect("users");
        let alice = users
            .sign_in(&credentials("alice", "alice's secret"))
            .await
            .expect("alice");
        assert_eq!(alice.role, Role::Reader);
        // Again, from the remembered HMAC.
        assert!(
            users
                .sign_in(&credentials("alice", "alice's secret"))
                .await
                .is_ok()
        );
        assert!(
            users
                .sign_in(&credentials("alice", "bob's secret"))
                .await
                .is_err()
        );
        assert!(
            users
                .sign_in(&credentials("carol", "alice's secret"))
                .await
                .is_err()
        );
        let bob = users
            .sign_in(&credentials("bob", "bob's secret"))
            .await
            .expect("bob");
        assert_eq!(bob.role, Role::Writer);
    }

    #[tokio::test]
    async fn a_single_admin_signs_in_with_the_given_password() {
        let users = Users::single_admin(&credentials("ops", "hunter2")).expect("users");
        let ops = users
            .sign_in(&credentials("ops", "hunter2"))
            .await
            .expect("ops");
        assert_eq!(ops.role, Role::Admin);
        assert!(users.sign_in(&credentials("ops", "hunter3")).await.is_err());
    }

    #[test]
    fn bad_users_files_are_refused_naming_the_problem() {
        let cases = [
            ("", "no [[user]]"),
            (
                "[[user]]\nname = \"a\"\npassword_hash = \"plain\"\nrole = \"admin\"",
                "not an Argon2 hash",
            ),
            (
                "[[user]]\nname = \"a\"\npassword_hash = \"x\"\nrole = \"root\"",
                "root",
            ),
            ("[[user]]\nname = \"a\"\nrole = \"admin\"", "password_hash"),
            (
                "[[user]]\nname = \"a\"\npassword = \"x\"\nrole = \"admin\"",
                "password",
            ),
        ];
        for (text, expected) in cases {
            let err = Users::from_toml(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
