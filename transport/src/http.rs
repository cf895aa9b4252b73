//! [`HttpServer`]: the HTTP port of a Fletch process (`--metrics-listen`): an axum
//! router served on a bound listener until the server is dropped. What it serves is the
//! caller's: Prometheus metrics on every process, the web UI on the coordinator.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use datafusion::common::runtime::SpawnedTask;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

/// A running HTTP server; dropping it stops it.
pub struct HttpServer {
    addr: SocketAddr,
    _server: SpawnedTask<()>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl HttpServer {
    /// Serves `router` on `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server = SpawnedTask::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(%addr, "the HTTP port stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            _server: server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The Prometheus text exposition of `families`; families of one name (from several
/// registries: a coordinator and its embedded executors) are merged into one.
pub fn metrics_response(families: Vec<MetricFamily>) -> Response {
    let mut merged: Vec<MetricFamily> = Vec::new();
    for mut family in families {
        match merged.iter_mut().find(|f| f.name() == family.name()) {
            Some(same) => {
                for metric in family.take_metric() {
                    same.mut_metric().push(metric);
                }
            }
            None => merged.push(family),
        }
    }
    let encoder = TextEncoder::new();
    let mut text = Vec::new();
    match encoder.encode(&merged, &mut text) {
        Ok(()) => ([(CONTENT_TYPE, encoder.format_type().to_string())], text).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}"),
        )
            .into_response(),
    }
}
