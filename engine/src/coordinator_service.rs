//! The coordinator's Flight endpoint. Today it serves the cluster's membership
//! actions (executors register, send heartbeats, leave; anyone may list them); it is a
//! `FlightSqlService` so the Flight SQL front door grows in the same place.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::SqlInfo;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::{Action, ActionType};
use datafusion::common::runtime::SpawnedTask;
use fletch_executor::protocol::{self, ExecutorStatus};
use fletch_executor::{FailureReason, TaskFailure};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::Coordinator;

type ActionStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;

struct CoordinatorService {
    coordinator: Arc<Coordinator>,
}

fn bad_request(message: impl Into<String>) -> Status {
    TaskFailure::new(FailureReason::BadRequest, message, 0, 0, "").to_status()
}

fn executor_status(body: &[u8]) -> Result<ExecutorStatus, Status> {
    let status = ExecutorStatus::decode(body)
        .map_err(|e| bad_request(format!("malformed executor status: {e}")))?;
    if status.url.is_empty() {
        return Err(bad_request("executor status without a URL"));
    }
    Ok(status)
}

#[tonic::async_trait]
impl FlightSqlService for CoordinatorService {
    type FlightService = CoordinatorService;

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        let replies: Vec<Result<arrow_flight::Result, Status>> = match action.r#type.as_str() {
            protocol::REGISTER_EXECUTOR | protocol::HEARTBEAT => {
                let status = executor_status(&action.body)?;
                self.coordinator
                    .executor_heard_from(status)
                    .map_err(|f| f.to_status())?;
                vec![]
            }
            protocol::LEAVE => {
                let status = executor_status(&action.body)?;
                tracing::info!(url = %status.url, "executor left");
                self.coordinator.remove_executor(&status.url);
                vec![]
            }
            protocol::LIST_EXECUTORS => self
                .coordinator
                .executors()
                .into_iter()
                .map(|s| {
                    Ok(arrow_flight::Result {
                        body: s.encode_to_vec().into(),
                    })
                })
                .collect(),
            other => return Err(bad_request(format!("unknown action type {other:?}"))),
        };
        let stream: ActionStream = futures::stream::iter(replies).boxed();
        Ok(Response::new(stream))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let actions = [
            (protocol::REGISTER_EXECUTOR, "an executor joins the cluster"),
            (protocol::HEARTBEAT, "an executor is alive; its status"),
            (protocol::LEAVE, "an executor leaves the cluster"),
            (
                protocol::LIST_EXECUTORS,
                "the cluster's executors and their state",
            ),
        ];
        Some(
            actions
                .into_iter()
                .map(|(r#type, description)| {
                    Ok(ActionType {
                        r#type: r#type.to_string(),
                        description: description.to_string(),
                    })
                })
                .collect(),
        )
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A coordinator serving Flight on a TCP address; dropping it stops the server.
pub struct CoordinatorServer {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<SpawnedTask<Result<(), tonic::transport::Error>>>,
}

impl CoordinatorServer {
    /// `http://host:port` executors and clients reach the coordinator at.
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
            tracing::warn!(url = %self.url, "coordinator server ended abnormally: {e}");
        }
    }
}

impl Drop for CoordinatorServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `coordinator`'s Flight endpoint on `addr` (port 0 picks a free port).
pub async fn serve_coordinator(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
) -> std::io::Result<CoordinatorServer> {
    let listener = TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let service = FlightServiceServer::new(CoordinatorService { coordinator });
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop.await;
            },
        );
    Ok(CoordinatorServer {
        url,
        shutdown: Some(shutdown),
        server: Some(SpawnedTask::spawn(server)),
    })
}
