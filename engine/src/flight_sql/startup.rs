//! Starting the coordinator's endpoint: [`EndpointOptions`] (who may sign in, TLS,
//! file locations, limits) and [`serve_coordinator_with`], which refuses settings that
//! would open the cluster to strangers before it listens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fletch_transport::{FlightServer, TlsIdentity};
use tokio::net::TcpListener;

use super::access::{self, Locations};
use super::handles::{Session, SessionLimits, Sessions};
use super::users::{Role, User, Users};
use super::{CoordinatorService, auth, query_slots};
use crate::coordinator::Coordinator;
use crate::session::{default_session_config, fletch_session};

/// A coordinator serving Flight on a TCP address; dropping it stops the server.
pub type CoordinatorServer = FlightServer;

/// How the coordinator's endpoint admits clients.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Who may sign in; `None`: an open endpoint, on loopback only, where every
    /// client is an admin.
    pub users: Option<Arc<Users>>,
    /// A session token unused this long expires (the client hand-shakes again).
    pub session_idle: Duration,
    /// Serve over TLS with this certificate and key.
    pub tls: Option<TlsIdentity>,
    /// Where statements may read and write files; none by default.
    pub locations: Locations,
    /// Sessions and the handles each may hold.
    pub limits: SessionLimits,
    /// The largest request message, and the most parameter data one `DoPut` may send.
    pub max_request_bytes: usize,
    /// Statements one user may run at once (planning, streaming or serving).
    pub max_queries_per_user: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            users: None,
            session_idle: Duration::from_secs(3600),
            tls: None,
            locations: Locations::default(),
            limits: SessionLimits::default(),
            max_request_bytes: 16 << 20,
            max_queries_per_user: 16,
        }
    }
}

/// The user of an endpoint without users.
fn anonymous_admin() -> Arc<User> {
    Arc::new(User {
        name: "anonymous".to_string(),
        role: Role::Admin,
    })
}

/// Serves `coordinator`'s Flight endpoint on `addr` (port 0 picks a free port), open
/// to anyone: `addr` must be a loopback address.
pub async fn serve_coordinator(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
) -> std::io::Result<CoordinatorServer> {
    serve_coordinator_with(coordinator, addr, EndpointOptions::default()).await
}

/// [`serve_coordinator`] with `options`: with users every client signs in with the
/// handshake and presents its bearer token after; without, the endpoint is open and
/// refuses to listen beyond loopback. Users need a cluster secret, so that no user can
/// act as an executor.
pub async fn serve_coordinator_with(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    options: EndpointOptions,
) -> std::io::Result<CoordinatorServer> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    if options.users.is_none() && !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{addr} is not a loopback address: serving beyond loopback needs users \
             (--users FILE, or --user and --password)"
        )));
    }
    let secret = coordinator.cluster_secret().cloned();
    fletch_transport::require_loopback_without_secret(addr, secret.as_ref(), "a coordinator")?;
    if options.users.is_some() && secret.is_none() {
        return Err(invalid(
            "users need a cluster secret (--cluster-secret-file or FLETCH_CLUSTER_SECRET): \
             without one, nothing tells a signed-in user from an executor"
                .to_string(),
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let shared_ctx = fletch_session(Arc::clone(&coordinator), default_session_config());
    let shared = Arc::new(Session::new(shared_ctx, anonymous_admin(), &options.limits));
    let sessions = Arc::new(Sessions::new(options.session_idle, options.limits));
    let check = auth::checker(options.users.is_some(), secret, Arc::clone(&sessions));
    match &options.users {
        Some(users) => tracing::info!(?users, "Flight SQL endpoint requires users to sign in"),
        None => {
            tracing::info!(%addr, "Flight SQL endpoint open to anyone on loopback (no users set)")
        }
    }
    let service = CoordinatorService {
        coordinator,
        shared,
        sessions,
        users: options.users,
        locations: options.locations,
        max_parameter_bytes: options.max_request_bytes,
        ticket_life: options.session_idle,
        slots: query_slots::QuerySlots::new(options.max_queries_per_user),
        owners: access::Owners::default(),
    };
    FlightServer::serve_checked(
        listener,
        service,
        check,
        options.tls.as_ref(),
        options.max_request_bytes,
    )
}
