//! Who is calling the coordinator's endpoint, decided before the service sees the call.
//!
//! - A cluster member (an executor registering, beating or leaving) presents a
//!   `Fletch-Member` proof of the cluster secret and is marked [`Member`].
//! - A user hand-shakes with `Basic` credentials (checked by the handshake itself) and
//!   then presents `Bearer` with the session token it got: the request carries that
//!   session, and so the user, from here on.
//! - Without users configured the endpoint is open on loopback: a call without a
//!   token uses the shared session; and without a cluster secret too, any caller is
//!   also a member, as on an open executor.

use std::sync::Arc;

use fletch_transport::{ClusterSecret, Member, Presented, authorization, member_proof};
use tonic::{Request, Status};

use super::handles::Sessions;

/// The request check of an endpoint: `users_required` when users are configured,
/// `secret` when the cluster has one.
pub(crate) fn checker(
    users_required: bool,
    secret: Option<ClusterSecret>,
    sessions: Arc<Sessions>,
) -> impl Fn(&mut Request<()>) -> Result<(), Status> + Clone + Send + Sync + 'static {
    move |request: &mut Request<()>| {
        if let Some(proof) = member_proof(request.metadata())? {
            if let Some(secret) = &secret {
                fletch_transport::check_member_proof(secret, proof)?;
            }
            request.extensions_mut().insert(Member);
            return Ok(());
        }
        if secret.is_none() && !users_required {
            request.extensions_mut().insert(Member);
        }
        let header = authorization(request.metadata())?;
        match header.map(Presented::parse).transpose()? {
            Some(Presented::Bearer(token)) => {
                let session = sessions.get(token)?;
                request.extensions_mut().insert(session);
            }
            // Only the handshake takes credentials; it checks them itself.
            Some(Presented::Basic(_)) => {}
            None if users_required => {
                return Err(Status::unauthenticated(
                    "credentials required: sign in with a user name and password (the Flight \
                     SQL handshake; `fletch --connect URL --user NAME --password ...`); cluster \
                     members present the cluster secret",
                ));
            }
            None => {}
        }
        Ok(())
    }
}
