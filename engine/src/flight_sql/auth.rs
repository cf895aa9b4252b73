//! Who may call the coordinator's endpoint. With credentials configured, every request
//! carries either `authorization: Basic` with them (the handshake; executors announcing
//! themselves) or `authorization: Bearer` with a token the handshake gave and that is
//! still alive; anything else is `Unauthenticated`, before the service sees it. Without
//! credentials the endpoint is open and may only listen on loopback.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::handles::State;

/// The user and password clients must present.
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

impl Credentials {
    /// The `authorization` header value that presents these credentials.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.user, self.password))
        )
    }
}

/// The `authorization` header of a request, if it has one.
pub(crate) fn authorization(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    metadata
        .get("authorization")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Status::unauthenticated("malformed authorization header"))
        })
        .transpose()
}

/// The request check for an endpoint with `credentials`.
pub(crate) fn checker(
    credentials: Credentials,
    state: Arc<State>,
) -> impl Fn(&MetadataMap) -> Result<(), Status> + Clone + Send + Sync + 'static {
    let expected = format!("{}:{}", credentials.user, credentials.password).into_bytes();
    move |metadata: &MetadataMap| {
        let header = authorization(metadata)?
            .ok_or_else(|| Status::unauthenticated("credentials required: hand-shake first"))?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            return state.sessions.get(token.trim()).map(|_| ());
        }
        if let Some(encoded) = header.strip_prefix("Basic ") {
            // Padded or not: Go's Flight clients (ADBC) send it unpadded.
            let presented = STANDARD_NO_PAD
                .decode(encoded.trim().trim_end_matches('='))
                .unwrap_or_default();
            // Compared in full either way, so the time taken says nothing of the match.
            let matches = presented
                .iter()
                .zip(expected.iter())
                .fold(presented.len() == expected.len(), |same, (a, b)| {
                    same & (a == b)
                });
            return if matches {
                Ok(())
            } else {
                Err(Status::unauthenticated("wrong user or password"))
            };
        }
        Err(Status::unauthenticated(
            "unsupported authorization scheme: use Basic or Bearer",
        ))
    }
}
