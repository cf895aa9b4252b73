//! [`FlightServer`]: a Flight service served on a bound listener with Fletch's transport
//! settings, stopped when asked or dropped. Executors and the coordinator both run one.

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use datafusion::common::runtime::SpawnedTask;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::endpoint::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

/// A server's TLS certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// A running Flight server. Dropping it stops accepting requests.
pub struct FlightServer {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<SpawnedTask<Result<(), tonic::transport::Error>>>,
}

impl FlightServer {
    /// Serves `service` on `listener` until [`Self::shutdown`] or drop.
    pub fn serve<S: FlightService>(listener: TcpListener, service: S) -> std::io::Result<Self> {
        Self::serve_checked(listener, service, |_| Ok(()), None, MAX_MESSAGE_BYTES)
    }

    /// [`Self::serve`], with every request passed to `check` first (an error status is
    /// the answer then, and the service never sees the request; it may mark the
    /// request's extensions with who the caller is), TLS with `tls` when given (the URL
    /// is then `https://`), and no request message over `max_request_bytes` decoded.
    pub fn serve_checked<S, F>(
        listener: TcpListener,
        service: S,
        check: F,
        tls: Option<&TlsIdentity>,
        max_request_bytes: usize,
    ) -> std::io::Result<Self>
    where
        S: FlightService,
        F: Fn(&mut Request<()>) -> Result<(), Status> + Clone + Send + Sync + 'static,
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr()?);
        let service = FlightServiceServer::new(service)
            .max_decoding_message_size(max_request_bytes.min(MAX_MESSAGE_BYTES))
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let service = InterceptedService::new(service, move |mut request: Request<()>| {
            check(&mut request)?;
            Ok(request)
        });
        let (shutdown, stop) = oneshot::channel::<()>();
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let server = builder
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(service)
            // The builder's tcp_nodelay applies only to listeners tonic binds itself;
            // ours needs it set here, or Nagle plus delayed ACKs add ~40 ms to small
            // replies.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stop.await;
                },
            );
        Ok(Self {
            url,
            shutdown: Some(shutdown),
            server: Some(SpawnedTask::spawn(server)),
        })
    }

    /// `http://host:port` the service is reached at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take()
            && let Err(e) = server.await
        {
            tracing::warn!(url = %self.url, "Flight server ended abnormally: {e}");
        }
    }
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
