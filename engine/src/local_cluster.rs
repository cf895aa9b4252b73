//! [`LocalCluster`]: a coordinator and N executors in this process, each executor its own
//! Flight server on 127.0.0.1 with an OS-picked port, so every exchange really crosses
//! Flight. The shell's embedded default and the test fixture. Its members share a random
//! secret that never leaves the process, so no outside caller can run tasks on its
//! executors or read their data.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_executor::{
    ExchangeReads, ExecutorHandle, ExecutorOptions, FragmentStats, StoreStats, start_executor_with,
};
use fletch_transport::{ClusterSecret, ClusterSecurity, HttpServer};

use crate::coordinator::Coordinator;
use crate::flight_sql::Users;
use crate::http::{MetricsSource, serve_http};
use crate::membership::MembershipOptions;
use crate::session::{default_session_config, fletch_session};

/// Executors the embedded cluster starts when nobody says otherwise.
pub const DEFAULT_EXECUTORS: usize = 2;

/// What [`LocalCluster::start_with_options`] starts.
#[derive(Debug, Clone, Copy)]
pub struct LocalClusterOptions {
    pub executors: usize,
    /// Each executor's memory limit; `None`: three quarters of the machine's memory,
    /// shared.
    pub memory_per_executor: Option<usize>,
    /// Tasks each executor runs at once; `None`: the machine's cores, shared.
    pub slots_per_executor: Option<usize>,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        Self {
            executors: DEFAULT_EXECUTORS,
            memory_per_executor: None,
            slots_per_executor: None,
        }
    }
}

pub struct LocalCluster {
    coordinator: Arc<Coordinator>,
    executors: Vec<ExecutorHandle>,
    memory_limit: usize,
    slots: usize,
    /// The coordinator's HTTP port, once [`Self::serve_http`] opened it.
    http: Option<HttpServer>,
}

async fn start_local_executor(
    memory_limit: usize,
    secret: &ClusterSecret,
) -> Result<ExecutorHandle> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let options = ExecutorOptions {
        memory_limit,
        tls: None,
        security: ClusterSecurity::open().with_secret(Some(secret.clone())),
        ..Default::default()
    };
    Ok(start_executor_with(addr, options).await?)
}

fn external(failure: fletch_transport::TaskFailure) -> DataFusionError {
    DataFusionError::External(Box::new(failure))
}

impl LocalCluster {
    /// Starts `executors` executors on loopback and a coordinator over them, sharing
    /// three quarters of the machine's memory.
    pub async fn start(executors: usize) -> Result<Self> {
        Self::start_with(executors, None).await
    }

    /// [`Self::start`] with each executor limited to `memory` bytes.
    pub async fn start_with(executors: usize, memory: Option<usize>) -> Result<Self> {
        Self::start_with_options(LocalClusterOptions {
            executors,
            memory_per_executor: memory,
            slots_per_executor: None,
        })
        .await
    }

    /// Starts the cluster `options` describe.
    pub async fn start_with_options(options: LocalClusterOptions) -> Result<Self> {
        let LocalClusterOptions {
            executors,
            memory_per_executor: memory,
            slots_per_executor,
        } = options;
        if executors == 0 {
            return Err(DataFusionError::Configuration(
                "a cluster needs at least one executor".to_string(),
            ));
        }
        let memory_limit =
            memory.unwrap_or_else(|| ExecutorOptions::default().memory_limit / executors);
        // Only this process knows it: nothing else can be a member of this cluster.
        let secret = ClusterSecret::random().map_err(DataFusionError::Execution)?;
        let mut handles = Vec::with_capacity(executors);
        for _ in 0..executors {
            handles.push(start_local_executor(memory_limit, &secret).await?);
        }
        let urls: Vec<String> = handles.iter().map(|h| h.url().to_string()).collect();
        let coordinator = Coordinator::with_security(
            &urls,
            MembershipOptions::default(),
            ClusterSecurity::open().with_secret(Some(secret)),
        )
        .map_err(external)?;
        // The embedded executors share this machine's cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = slots_per_executor.unwrap_or(cores / executors).max(1);
        for handle in &handles {
            coordinator.set_status_source(handle.url(), Box::new(handle.status_source(slots)));
        }
        Ok(Self {
            coordinator,
            executors: handles,
            memory_limit,
            slots,
            http: None,
        })
    }

    /// Opens the coordinator's HTTP port on `addr` (port 0: any free port), behind
    /// `users` when given: the web UI, and a metrics page with the coordinator's
    /// metrics and every embedded executor's (those running now). Returns the address
    /// bound.
    pub async fn serve_http(
        &mut self,
        addr: SocketAddr,
        users: Option<Arc<Users>>,
    ) -> Result<SocketAddr> {
        let executors = self
            .executors
            .iter()
            .map(|e| Arc::new(e.metrics_reader()) as MetricsSource)
            .collect();
        let server = serve_http(Arc::clone(&self.coordinator), addr, executors, users).await?;
        let bound = server.local_addr();
        self.http = Some(server);
        Ok(bound)
    }

    /// Opens executor `index`'s own metrics port on loopback; returns its address.
    pub async fn serve_executor_metrics(&mut self, index: usize) -> Result<SocketAddr> {
        let count = self.executors.len();
        let executor = self.executors.get_mut(index).ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "the cluster has {count} executors, no executor {index}"
            ))
        })?;
        Ok(executor
            .serve_metrics(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?)
    }

    /// Starts one more executor (same memory limit and slots as the others) and adds it
    /// to the running cluster, as an executor joining would; returns its URL.
    pub async fn add_executor(&mut self) -> Result<String> {
        let secret = self.coordinator.cluster_secret().cloned().ok_or_else(|| {
            DataFusionError::Internal("an embedded cluster always has a secret".to_string())
        })?;
        let handle = start_local_executor(self.memory_limit, &secret).await?;
        let url = handle.url().to_string();
        self.coordinator
            .add_embedded_executor(&url, Box::new(handle.status_source(self.slots)))
            .map_err(external)?;
        self.executors.push(handle);
        Ok(url)
    }

    /// A new session with Fletch's default settings.
    pub fn session(&self) -> SessionContext {
        self.session_with_config(default_session_config())
    }

    /// A new session with `config`.
    pub fn session_with_config(&self, config: SessionConfig) -> SessionContext {
        fletch_session(Arc::clone(&self.coordinator), config)
    }

    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    pub fn executor_urls(&self) -> Vec<String> {
        self.executors.iter().map(|e| e.url().to_string()).collect()
    }

    /// What each executor holds right now.
    pub fn executor_stats(&self) -> Vec<StoreStats> {
        self.executors.iter().map(ExecutorHandle::stats).collect()
    }

    /// The table fragments each executor holds right now.
    pub fn fragment_stats(&self) -> Vec<FragmentStats> {
        self.executors
            .iter()
            .map(ExecutorHandle::fragment_stats)
            .collect()
    }

    /// Each executor's memory in use and its limit, in bytes.
    pub fn memory(&self) -> Vec<(usize, usize)> {
        self.executors.iter().map(ExecutorHandle::memory).collect()
    }

    /// How each executor's exchange partitions have been read so far.
    pub fn exchange_reads(&self) -> Vec<ExchangeReads> {
        self.executors
            .iter()
            .map(ExecutorHandle::exchange_reads)
            .collect()
    }

    /// Stops executor `index` (in [`Self::executor_urls`] order) after taking it out of
    /// the coordinator's placement, as if it had left the cluster.
    pub async fn stop_executor(&mut self, index: usize) -> Result<()> {
        let executor = self.take_executor(index)?;
        self.coordinator.remove_executor(executor.url());
        executor.shutdown().await;
        Ok(())
    }

    /// Stops executor `index` without telling the coordinator, as if its process had
    /// died: the coordinator learns of it when a query finds its connections refused.
    pub async fn crash_executor(&mut self, index: usize) -> Result<()> {
        self.take_executor(index)?.shutdown().await;
        Ok(())
    }

    fn take_executor(&mut self, index: usize) -> Result<ExecutorHandle> {
        if index >= self.executors.len() {
            return Err(DataFusionError::Configuration(format!(
                "the cluster has {} executors, no executor {index}",
                self.executors.len()
            )));
        }
        Ok(self.executors.remove(index))
    }

    /// Stops every executor and waits for their servers to end.
    pub async fn shutdown(self) {
        for executor in self.executors {
            executor.shutdown().await;
        }
    }
}
