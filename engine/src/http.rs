//! The coordinator's HTTP port (`--metrics-listen`): Prometheus metrics at `/metrics`,
//! the coordinator's own and those of any executors embedded in the same process
//! (`fletch serve`), each series of an executor labelled with its URL.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use fletch_transport::{HttpServer, metrics_response};
use prometheus::proto::MetricFamily;

use crate::coordinator::Coordinator;

/// Reads one more process part's metrics when the port is scraped.
pub type MetricsSource = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// Serves `coordinator`'s HTTP port on `addr` (port 0: any free port), its metrics
/// page adding what each of `executors` reads.
pub async fn serve_http(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    executors: Vec<MetricsSource>,
) -> std::io::Result<HttpServer> {
    let metrics = move || {
        let mut families = coordinator.gather_metrics();
        for source in &executors {
            families.extend(source());
        }
        async move { metrics_response(families) }
    };
    let router = Router::new().route("/metrics", get(metrics));
    HttpServer::bind(addr, router).await
}
