//! What a request's `authorization` header presents: `Basic` user credentials (a
//! client's handshake with the coordinator), `Bearer` with a session token the
//! coordinator gave, or a cluster member's proof ([`crate::member`]). Schemes are
//! matched without regard to case (RFC 9110).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// A user name and password, as a client presents them.
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

    /// The user and password a `Basic` value carries (padded or not: Go's Flight
    /// clients send it unpadded).
    pub fn from_basic(encoded: &str) -> Result<Self, Status> {
        let malformed = || Status::unauthenticated("malformed Basic credentials");
        let decoded = STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| malformed())?;
        let text = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, password) = text.split_once(':').ok_or_else(malformed)?;
        Ok(Self {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
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
    fn basic_credentials_and_schemes_are_read() {
        let header = analyst().basic_header();
        let Presented::Basic(encoded) = Presented::parse(&header).expect("basic") else {
            panic!("{header} is Basic");
        };
        assert_eq!(
            Credentials::from_basic(encoded).expect("decoded"),
            analyst()
        );
        assert_eq!(
            Credentials::from_basic(encoded.trim_end_matches('=')).expect("unpadded"),
            analyst()
        );
        assert!(Credentials::from_basic("not base64!").is_err());
        assert!(Credentials::from_basic(&STANDARD.encode("no colon")).is_err());
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
