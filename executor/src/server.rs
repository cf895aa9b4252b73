//! Starting and stopping an executor on a TCP address.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::common::runtime::SpawnedTask;
use datafusion::prelude::SessionContext;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::flight::client::ClientPool;
use crate::flight::service::ExecutorService;
use crate::flight::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use crate::store::{ExchangeReads, PartitionStore, StoreStats};
use crate::task::TaskRunner;

/// A running executor. Dropping it stops the server.
pub struct ExecutorHandle {
    url: String,
    store: Arc<PartitionStore>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<SpawnedTask<Result<(), tonic::transport::Error>>>,
}

impl std::fmt::Debug for ExecutorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHandle")
            .field("url", &self.url)
            .finish()
    }
}

/// Binds `addr` (port 0 picks a free port) and serves Flight until the handle drops.
pub async fn start_executor(addr: SocketAddr) -> std::io::Result<ExecutorHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}");
    let store = Arc::new(PartitionStore::default());
    let runner = Arc::new(TaskRunner {
        url: url.clone(),
        store: Arc::clone(&store),
        session: SessionContext::new(),
        clients: ClientPool::default(),
    });
    let service = FlightServiceServer::new(ExecutorService { runner })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = Server::builder()
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .add_service(service)
        // The builder's tcp_nodelay applies only to listeners tonic binds itself; ours
        // needs it set here, or Nagle plus delayed ACKs add ~40 ms to small replies.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop.await;
            },
        );
    tracing::debug!(%url, "executor listening");
    Ok(ExecutorHandle {
        url,
        store,
        shutdown: Some(shutdown),
        server: Some(SpawnedTask::spawn(server)),
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

    /// How many exchange partitions were read here locally and served over Flight.
    pub fn exchange_reads(&self) -> ExchangeReads {
        self.store.exchange_reads()
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take()
            && let Err(e) = server.await
        {
            tracing::warn!(url = %self.url, "executor server task ended abnormally: {e}");
        }
    }
}

impl Drop for ExecutorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
