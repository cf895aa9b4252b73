//! Starting and stopping an executor on a TCP address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::net::TcpListener;

use fletch_transport::protocol::ExecutorStatus;
use fletch_transport::{
    ClientPool, ClusterSecurity, CoordinatorClient, FlightServer, MAX_MESSAGE_BYTES, TaskFailure,
    TlsIdentity, member_check, require_loopback_without_secret,
};
use fletch_transport::{HttpServer, metrics_response};
use prometheus::proto::MetricFamily;

use crate::flight::service::ExecutorService;
use crate::fragments::{FragmentPieces, FragmentStats};
use crate::memory::ExecutorMemoryPool;
use crate::metrics::ExecutorMetrics;
use crate::store::{ExchangeReads, PartitionStore, StoreStats};
use crate::task::{TaskLimits, TaskRunner};

/// A running executor. Dropping it stops the server.
pub struct ExecutorHandle {
    url: String,
    /// Sends heartbeats to the coordinator this executor joined, if any.
    membership: Option<Membership>,
    security: ClusterSecurity,
    store: Arc<PartitionStore>,
    fragments: Arc<FragmentPieces>,
    pool: Arc<ExecutorMemoryPool>,
    metrics: Arc<ExecutorMetrics>,
    /// The metrics port, once [`Self::serve_metrics`] opened it.
    http: Option<HttpServer>,
    server: FlightServer,
}

impl std::fmt::Debug for ExecutorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHandle")
            .field("url", &self.url)
            .finish()
    }
}

/// An executor's place in a cluster: the heartbeat task is aborted when this drops.
struct Membership {
    coordinator: CoordinatorClient,
    slots: usize,
    _beats: SpawnedTask<()>,
}

/// How an executor is set up.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Bytes this executor may hold: table fragments, exchange buffers and operators.
    pub memory_limit: usize,
    /// Serve over TLS with this certificate and key (the URL is then `https://`).
    pub tls: Option<TlsIdentity>,
    /// The secret the cluster's members share (every call but a client's read of a
    /// result ticket the coordinator signed must prove it; none: an open cluster,
    /// where anyone who reaches the port is a member, so it listens on loopback only),
    /// and the certificate trusted for `https://` links to other members.
    pub security: ClusterSecurity,
    /// What one task may ask for: plan bytes, partitions, tasks.
    pub task_limits: TaskLimits,
}

impl Default for ExecutorOptions {
    /// Three quarters of the machine's memory (unlimited where it cannot be read).
    fn default() -> Self {
        Self {
            memory_limit: system_memory().map_or(usize::MAX, |m| m / 4 * 3),
            tls: None,
            security: ClusterSecurity::open(),
            task_limits: TaskLimits::default(),
        }
    }
}

/// Reads an executor's metrics, its gauges as they are when read.
#[derive(Clone)]
struct ExecutorMetricsSource {
    metrics: Arc<ExecutorMetrics>,
    store: Arc<PartitionStore>,
    fragments: Arc<FragmentPieces>,
    pool: Arc<ExecutorMemoryPool>,
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl ExecutorMetricsSource {
    fn gather(&self) -> Vec<MetricFamily> {
        let metrics = &self.metrics;
        let store = self.store.stats();
        metrics.memory_used.set(gauge(self.pool.reserved()));
        metrics.memory_limit.set(gauge(self.pool.limit()));
        metrics.running_tasks.set(gauge(store.running_tasks));
        metrics.buffered_bytes.set(gauge(store.buffered_bytes));
        metrics
            .fragment_bytes
            .set(gauge(self.fragments.stats().bytes));
        metrics.registry().gather()
    }
}

/// Total physical memory, where the platform says.
pub fn system_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Binds `addr` (port 0 picks a free port) and serves Flight until the handle drops.
pub async fn start_executor(addr: SocketAddr) -> std::io::Result<ExecutorHandle> {
    start_executor_with(addr, ExecutorOptions::default()).await
}

/// [`start_executor`] with explicit options.
pub async fn start_executor_with(
    addr: SocketAddr,
    options: ExecutorOptions,
) -> std::io::Result<ExecutorHandle> {
    require_loopback_without_secret(addr, options.security.secret(), "an executor")?;
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{local}");
    let pool = Arc::new(ExecutorMemoryPool::new(url.clone(), options.memory_limit));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::clone(&pool) as Arc<dyn MemoryPool>)
        .build_arc()
        .map_err(std::io::Error::other)?;
    let store = Arc::new(PartitionStore::new(Arc::clone(&pool) as _));
    let metrics = Arc::new(ExecutorMetrics::new(&url).map_err(std::io::Error::other)?);
    let fragments = Arc::new(FragmentPieces::new(Arc::clone(&pool) as _));
    let runner = Arc::new(TaskRunner {
        url: url.clone(),
        store: Arc::clone(&store),
        fragments: Arc::clone(&fragments),
        pool: Arc::clone(&pool),
        session: SessionContext::new_with_config_rt(SessionConfig::new(), runtime),
        clients: ClientPool::new(options.security.clone()),
        limits: options.task_limits,
        metrics: Arc::clone(&metrics),
    });
    let service = ExecutorService {
        runner,
        secret: options.security.secret().cloned(),
    };
    let server = FlightServer::serve_checked(
        listener,
        service,
        member_check(options.security.secret().cloned()),
        options.tls.as_ref(),
        MAX_MESSAGE_BYTES,
    )?;
    tracing::debug!(%url, "executor listening");
    Ok(ExecutorHandle {
        membership: None,
        security: options.security,
        url,
        store,
        fragments,
        pool,
        metrics,
        http: None,
        server,
    })
}

impl ExecutorHandle {
    /// `http://host:port` of this executor's Flight service.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the executor holds right now.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The table fragments this executor holds.
    pub fn fragment_stats(&self) -> FragmentStats {
        self.fragments.stats()
    }

    /// Bytes in use in this executor's memory pool, and its limit.
    pub fn memory(&self) -> (usize, usize) {
        (self.pool.reserved(), self.pool.limit())
    }

    /// How many exchange partitions were read here locally and served over Flight.
    pub fn exchange_reads(&self) -> ExchangeReads {
        self.store.exchange_reads()
    }

    /// This executor's metrics now, as Prometheus families (gauges read now).
    pub fn gather_metrics(&self) -> Vec<MetricFamily> {
        self.metrics_source().gather()
    }

    /// A function that reads this executor's metrics, for a server in the same process
    /// that shows them with its own (`fletch serve`).
    pub fn metrics_reader(&self) -> impl Fn() -> Vec<MetricFamily> + Send + Sync + use<> {
        let source = self.metrics_source();
        move || source.gather()
    }

    fn metrics_source(&self) -> ExecutorMetricsSource {
        ExecutorMetricsSource {
            metrics: Arc::clone(&self.metrics),
            store: Arc::clone(&self.store),
            fragments: Arc::clone(&self.fragments),
            pool: Arc::clone(&self.pool),
        }
    }

    /// Serves this executor's Prometheus metrics at `/metrics` on `addr` (port 0: any
    /// free port) until the handle drops; returns the address bound.
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let source = self.metrics_source();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let families = source.gather();
                async move { metrics_response(families) }
            }),
        );
        let server = HttpServer::bind(addr, router).await?;
        let bound = server.local_addr();
        self.http = Some(server);
        Ok(bound)
    }

    /// What this executor tells a coordinator about itself.
    pub fn status(&self, slots: usize) -> ExecutorStatus {
        (self.status_source(slots))()
    }

    /// A function that reads this executor's current status, for a coordinator in the
    /// same process (no heartbeats needed).
    pub fn status_source(&self, slots: usize) -> impl Fn() -> ExecutorStatus + Send + Sync + use<> {
        let store = Arc::clone(&self.store);
        let pool = Arc::clone(&self.pool);
        let url = self.url.clone();
        move || ExecutorStatus {
            url: url.clone(),
            slots: slots as u64,
            memory_limit: pool.limit() as u64,
            memory_used: pool.reserved() as u64,
            running_tasks: store.stats().running_tasks as u64,
            state: String::new(),
            since_heartbeat_ms: 0,
        }
    }

    /// Registers with the coordinator at `coordinator_url` (proving membership with
    /// the executor's cluster security) and keeps sending it a heartbeat every `interval`
    /// until [`Self::leave`] or the handle drops. Fails if the coordinator does not
    /// accept the registration.
    pub async fn join(
        &mut self,
        coordinator_url: &str,
        slots: usize,
        interval: Duration,
    ) -> Result<(), TaskFailure> {
        let coordinator = CoordinatorClient::member(coordinator_url, &self.security)?;
        coordinator.register(&self.status(slots)).await?;
        let status = self.status_source(slots);
        let url = self.url.clone();
        let client = coordinator.clone();
        let store = Arc::clone(&self.store);
        // A query not in a lease may still be starting: give it a few heartbeats.
        store.set_unknown_query_wait(interval * 4 + Duration::from_secs(1));
        let beats = SpawnedTask::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match client.heartbeat(&status()).await {
                    Ok(Some(lease)) => store.renew(
                        lease.live_queries.into_iter().collect(),
                        std::time::Instant::now(),
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%url, "heartbeat to the coordinator failed: {e}"),
                }
                for query in store.expired(std::time::Instant::now()) {
                    tracing::warn!(%url, %query, "lease expired: freeing the query's state");
                    store.release(&query).await;
                }
            }
        });
        self.membership = Some(Membership {
            coordinator,
            slots,
            _beats: beats,
        });
        Ok(())
    }

    /// Tells the coordinator this executor is leaving and stops the heartbeats.
    pub async fn leave(&mut self) -> Result<(), TaskFailure> {
        let Some(Membership {
            coordinator,
            slots,
            _beats,
        }) = self.membership.take()
        else {
            return Ok(());
        };
        // No heartbeat may follow the goodbye.
        drop(_beats);
        let status = self.status(slots);
        coordinator.leave(&status).await
    }

    /// Waits until no query holds tasks or outputs here (each was released by its
    /// coordinator), at most `timeout`; returns whether it got there. A leaving executor
    /// calls this after [`Self::leave`], so running queries finish their tasks and read
    /// their outputs instead of losing them.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.store.stats().queries == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
