//! `fletch coordinator` and `fletch executor`: the processes of a real cluster, and
//! `fletch serve`: an embedded cluster behind a Flight SQL endpoint. Each prints
//! `listening on URL` on stdout once it serves, and runs until SIGTERM or Ctrl-C; an
//! executor then leaves the cluster, lets the queries running on it finish (up to
//! `--drain-secs`), and stops.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use fletch_engine::{
    ClusterSecurity, Coordinator, EndpointOptions, LocalCluster, MembershipOptions,
    serve_coordinator_with, serve_http,
};
use fletch_executor::{ExecutorOptions, start_executor_with};
use fletch_transport::HttpServer;

fn announce(url: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {url}")?;
    out.flush()?;
    Ok(())
}

/// Prints where the metrics are served, after `listening on` (which comes first).
fn announce_metrics(addr: Option<SocketAddr>) -> Result<()> {
    if let Some(addr) = addr {
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on http://{addr}/metrics")?;
        out.flush()?;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("listening for SIGTERM")?;
        tokio::select! {
            _ = terminate.recv() => {}
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}

/// `fletch serve`: an embedded cluster behind the coordinator's Flight SQL endpoint.
pub async fn run_embedded_server(
    listen: SocketAddr,
    executors: usize,
    memory: Option<usize>,
    options: EndpointOptions,
    metrics_listen: Option<SocketAddr>,
) -> Result<()> {
    let mut cluster = LocalCluster::start_with(executors, memory)
        .await
        .context("starting the embedded cluster")?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            cluster
                .serve_http(addr, options.users.clone())
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let server = serve_coordinator_with(Arc::clone(cluster.coordinator()), listen, options)
        .await
        .with_context(|| format!("serving on {listen}"))?;
    announce(server.url())?;
    announce_metrics(metrics)?;
    stop_signal().await?;
    server.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

pub async fn run_coordinator(
    listen: SocketAddr,
    membership: MembershipOptions,
    security: ClusterSecurity,
    endpoint: EndpointOptions,
    metrics_listen: Option<SocketAddr>,
) -> Result<()> {
    let coordinator = Coordinator::with_security(&[], membership, security)
        .context("starting the coordinator")?;
    let http = match metrics_listen {
        Some(addr) => Some(
            serve_http(
                Arc::clone(&coordinator),
                addr,
                Vec::new(),
                endpoint.users.clone(),
            )
            .await
            .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let server = serve_coordinator_with(coordinator, listen, endpoint)
        .await
        .with_context(|| format!("serving on {listen}"))?;
    announce(server.url())?;
    announce_metrics(http.as_ref().map(HttpServer::local_addr))?;
    stop_signal().await?;
    server.shutdown().await;
    Ok(())
}

/// How long an executor waits for the coordinator to take its fragments over.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// How `fletch executor` takes part in its cluster.
pub struct Membership<'a> {
    pub coordinator: &'a str,
    pub slots: usize,
    pub heartbeat_interval: Duration,
    /// How long queries running here may take to finish once told to stop.
    pub drain: Duration,
    /// Where to serve this executor's Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

pub async fn run_executor(
    listen: SocketAddr,
    options: ExecutorOptions,
    membership: Membership<'_>,
) -> Result<()> {
    let Membership {
        coordinator,
        slots,
        heartbeat_interval,
        drain,
        metrics_listen,
    } = membership;
    let mut executor = start_executor_with(listen, options)
        .await
        .with_context(|| format!("serving on {listen}"))?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            executor
                .serve_metrics(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    executor
        .join(coordinator, slots, heartbeat_interval)
        .await
        .with_context(|| format!("joining the coordinator at {coordinator}"))?;
    announce(executor.url())?;
    announce_metrics(metrics)?;
    stop_signal().await?;
    // The coordinator answers once it has copied this executor's fragments elsewhere.
    match tokio::time::timeout(LEAVE_TIMEOUT, executor.leave()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("leaving the cluster: {e}"),
        Err(_) => tracing::warn!("leaving the cluster: no answer in {LEAVE_TIMEOUT:?}"),
    }
    // No new work comes now; the queries already running here finish first.
    if !executor.drain(drain).await {
        tracing::warn!(
            "queries still running after {drain:?}: stopping anyway, their coordinator \
             runs the lost tasks again elsewhere"
        );
    }
    executor.shutdown().await;
    Ok(())
}
