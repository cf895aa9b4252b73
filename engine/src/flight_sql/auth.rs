//! Who may call the coordinator's endpoint. With credentials configured, every request
//! carries either `authorization: Basic` with them (the handshake; executors announcing
//! themselves) or `authorization: Bearer` with a token the handshake gave and that is
//! still alive; anything else is `Unauthenticated`, before the service sees it. Without
//! credentials the endpoint is open and may only listen on loopback. The schemes and
//! token signatures are shared with executors ([`fletch_executor::member_check`]).

use std::sync::Arc;

use fletch_executor::{Credentials, Presented, authorization};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::handles::State;

/// The request check for an endpoint with `credentials`.
pub(crate) fn checker(
    credentials: Credentials,
    state: Arc<State>,
) -> impl Fn(&MetadataMap) -> Result<(), Status> + Clone + Send + Sync + 'static {
    move |metadata: &MetadataMap| {
        let header = authorization(metadata)?
            .ok_or_else(|| Status::unauthenticated("credentials required: hand-shake first"))?;
        match Presented::parse(header)? {
            Presented::Basic(encoded) => credentials.check_basic(encoded),
            Presented::Bearer(token) => state.sessions.get(token).map(|_| ()),
        }
    }
}
