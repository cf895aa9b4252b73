//! The coordinator's HTTP port (`--metrics-listen`): Prometheus metrics at `/metrics`
//! (the coordinator's own and those of any executors embedded in the same process, as
//! `fletch serve` runs them, each series of an executor labelled with its URL) and the
//! web UI: the overview at `/`, a page per query at `/query/{id}`. When the cluster has
//! users, every page asks for the same sign-in as Flight SQL (HTTP Basic); any signed-in
//! user may look, and nothing here changes the cluster.

mod graph;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use fletch_transport::{Credentials, HttpServer, Presented, metrics_response};
use prometheus::proto::MetricFamily;

use crate::coordinator::Coordinator;
use crate::flight_sql::Users;

/// Reads one more process part's metrics when the port is scraped.
pub type MetricsSource = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

#[derive(Clone)]
struct Port {
    coordinator: Arc<Coordinator>,
    executors: Vec<MetricsSource>,
    users: Option<Arc<Users>>,
}

/// Serves `coordinator`'s HTTP port on `addr` (port 0: any free port): its metrics
/// page adds what each of `executors` reads; with `users`, every page needs a sign-in.
pub async fn serve_http(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    executors: Vec<MetricsSource>,
    users: Option<Arc<Users>>,
) -> std::io::Result<HttpServer> {
    let port = Port {
        coordinator,
        executors,
        users,
    };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(overview))
        .route("/query/{id}", get(query))
        .route("/static/ui.js", get(script))
        .route("/static/ui.css", get(style))
        .layer(from_fn_with_state(port.clone(), signed_in))
        .with_state(port);
    HttpServer::bind(addr, router).await
}

/// Lets a request through when the cluster has no users, or it carries the Basic
/// credentials of one of them.
async fn signed_in(State(port): State<Port>, request: Request, next: Next) -> Response {
    let Some(users) = &port.users else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(Presented::parse);
    let credentials = match presented {
        Some(Ok(Presented::Basic(encoded))) => Credentials::from_basic(encoded).ok(),
        _ => None,
    };
    let allowed = match credentials {
        Some(credentials) => users.sign_in(&credentials).await.is_ok(),
        None => false,
    };
    if allowed {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            "Basic realm=\"fletch\", charset=\"UTF-8\"",
        )],
        "sign in with a Fletch user's name and password\n",
    )
        .into_response()
}

async fn metrics(State(port): State<Port>) -> Response {
    let mut families = port.coordinator.gather_metrics();
    for source in &port.executors {
        families.extend(source());
    }
    metrics_response(families)
}

fn no_store(html: String) -> Response {
    ([(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn overview(State(port): State<Port>) -> Response {
    no_store(pages::overview(&port.coordinator))
}

async fn query(State(port): State<Port>, Path(id): Path<String>) -> Response {
    let found = port
        .coordinator
        .query_log()
        .queries()
        .into_iter()
        .find(|q| q.id == id);
    match found {
        Some(query) => no_store(pages::query_page(&query)),
        None => (StatusCode::NOT_FOUND, no_store(pages::unknown_query(&id))).into_response(),
    }
}

async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/ui.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/ui.css"),
    )
        .into_response()
}
