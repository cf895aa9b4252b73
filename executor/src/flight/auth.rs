//! Who may call a Fletch process. With credentials configured, every request carries
//! `authorization`: `Basic` with them (a client's handshake; cluster members calling
//! each other), or `Bearer` with a session token a coordinator issued. Tokens are
//! signed with a key derived from the credentials, so an executor can check a client's
//! token (a client reading a result straight from it) without asking the coordinator;
//! whether a session is still alive only the coordinator knows. Schemes are matched
//! without regard to case (RFC 9110).

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ring::hmac;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The user and password clients and cluster members must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a request's `authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Basic`: base64 of `user:password`, as sent.
    Basic(&'a str),
    /// `Bearer`: a session token.
    Bearer(&'a str),
}

impl<'a> Presented<'a> {
    /// Parses a header value; `Err` for any other scheme.
    pub fn parse(header: &'a str) -> Result<Self, Status> {
        let (scheme, value) = header.trim().split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            Ok(Self::Basic(value))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Self::Bearer(value))
        } else {
            Err(Status::unauthenticated(
                "unsupported authorization scheme: use Basic or Bearer",
            ))
        }
    }
}

/// The `authorization` header of a request, if it has one.
pub fn authorization(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    metadata
        .get("authorization")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Status::unauthenticated("malformed authorization header"))
        })
        .transpose()
}

impl Credentials {
    /// The `authorization` header value that presents these credentials.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.user, self.password))
        )
    }

    /// Checks a `Basic` value (padded or not: Go's Flight clients send it unpadded).
    pub fn check_basic(&self, encoded: &str) -> Result<(), Status> {
        let presented = STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .unwrap_or_default();
        let expected = format!("{}:{}", self.user, self.password);
        // Compared through an HMAC, so the time taken says nothing of where they differ.
        let key = self.token_key();
        let tag = hmac::sign(&key, expected.as_bytes());
        hmac::verify(&key, &presented, tag.as_ref())
            .map_err(|_| Status::unauthenticated("wrong user or password"))
    }

    /// A new session token: a random id and its signature.
    pub fn issue_token(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let tag = hmac::sign(&self.token_key(), id.as_bytes());
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` was issued by a process with these credentials.
    pub fn issued(&self, token: &str) -> bool {
        let Some((id, signature)) = token.split_once('.') else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        hmac::verify(&self.token_key(), id.as_bytes(), &signature).is_ok()
    }

    fn token_key(&self) -> hmac::Key {
        let secret = format!("fletch session tokens\0{}\0{}", self.user, self.password);
        hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
    }
}

/// The request check of a cluster member with `credentials`: the credentials
/// themselves, or a token issued with them.
pub fn member_check(
    credentials: Credentials,
) -> impl Fn(&MetadataMap) -> Result<(), Status> + Clone + Send + Sync + 'static {
    move |metadata: &MetadataMap| {
        let header = authorization(metadata)?
            .ok_or_else(|| Status::unauthenticated("credentials required"))?;
        match Presented::parse(header)? {
            Presented::Basic(encoded) => credentials.check_basic(encoded),
            Presented::Bearer(token) if credentials.issued(token) => Ok(()),
            Presented::Bearer(_) => Err(Status::unauthenticated(
                "unknown session token: hand-shake with the coordinator",
            )),
        }
    }
}

/// The credentials this process's cluster links present, and its embedded executors
/// require.
static CLUSTER_CREDENTIALS: OnceLock<(Credentials, String)> = OnceLock::new();

/// Makes every link this process opens to executors present `credentials`, and the
/// executors it starts in-process require them; set once, at start-up. Returns false
/// if some were already set.
pub fn use_cluster_credentials(credentials: Credentials) -> bool {
    let header = credentials.basic_header();
    CLUSTER_CREDENTIALS.set((credentials, header)).is_ok()
}

/// The credentials set by [`use_cluster_credentials`].
pub fn cluster_credentials() -> Option<Credentials> {
    CLUSTER_CREDENTIALS.get().map(|(c, _)| c.clone())
}

/// The `authorization` header of this process's links to executors, if any.
pub(crate) fn cluster_authorization() -> Option<&'static str> {
    CLUSTER_CREDENTIALS.get().map(|(_, header)| header.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyst() -> Credentials {
        Credentials {
            user: "analyst".into(),
            password: "pa55word".into(),
        }
    }

    #[test]
    fn tokens_verify_only_with_the_credentials_that_issued_them() {
        let token = analyst().issue_token();
        assert!(analyst().issued(&token));
        let other = Credentials {
            password: "other".into(),
            ..analyst()
        };
        assert!(!other.issued(&token));
        assert!(!analyst().issued("forged.AAAA"));
        assert!(!analyst().issued("no-signature"));
        let (id, _) = token.split_once('.').expect("id.signature");
        let (_, other_signature) = analyst()
            .issue_token()
            .split_once('.')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .expect("id.signature");
        assert!(!analyst().issued(&format!("{id}.{other_signature}")));
    }

    #[test]
    fn basic_credentials_and_schemes_are_checked() {
        let header = analyst().basic_header();
        let Presented::Basic(encoded) = Presented::parse(&header).expect("basic") else {
            panic!("{header} is Basic");
        };
        assert!(analyst().check_basic(encoded).is_ok());
        assert!(analyst().check_basic(encoded.trim_end_matches('=')).is_ok());
        let wrong = Credentials {
            password: "wrong".into(),
            ..analyst()
        }
        .basic_header();
        let Presented::Basic(encoded) = Presented::parse(&wrong).expect("basic") else {
            panic!("{wrong} is Basic");
        };
        assert!(analyst().check_basic(encoded).is_err());
        assert_eq!(
            Presented::parse("bearer abc").expect("bearer"),
            Presented::Bearer("abc")
        );
        assert_eq!(
            Presented::parse("BEARER abc").expect("bearer"),
            Presented::Bearer("abc")
        );
        assert!(Presented::parse("Digest abc").is_err());
    }
}
