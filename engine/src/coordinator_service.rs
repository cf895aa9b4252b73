//! The coordinator's Flight endpoint, a `FlightSqlService`: Flight SQL statements
//! (`CommandStatementQuery`: planned — and DDL executed — at `GetFlightInfo`, streamed
//! by the coordinator at `DoGet`; what `fletch --connect` uses), and the cluster's
//! membership actions (executors register, send heartbeats, leave; anyone may list
//! them). The rest of Flight SQL is issue 7.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use std::collections::HashMap;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use fletch_executor::protocol::{self, ExecutorStatus};
use fletch_executor::{FailureReason, FlightServer, TaskFailure};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::{Coordinator, default_session_config, fletch_session};

type ActionStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;

struct CoordinatorService {
    coordinator: Arc<Coordinator>,
    /// The session statements run in (one for every client, for now).
    session: SessionContext,
    /// Statements planned by `GetFlightInfo`, waiting for their `DoGet`.
    statements: Mutex<HashMap<String, DataFrame>>,
}

/// How many planned statements may wait for their `DoGet` at once; beyond that one of
/// them is forgotten to make room (its DoGet then gets NotFound).
const WAITING_STATEMENTS: usize = 1024;

fn to_status(e: DataFusionError) -> Status {
    let message = e.strip_backtrace();
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(message)
        }
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
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
                let registering = action.r#type == protocol::REGISTER_EXECUTOR;
                self.coordinator
                    .executor_heard_from(status, registering)
                    .map_err(|f| f.to_status())?;
                vec![]
            }
            protocol::LEAVE => {
                let status = executor_status(&action.body)?;
                tracing::info!(url = %status.url, "executor leaving: handing over its fragments");
                self.coordinator.executor_leaving(&status.url).await;
                tracing::info!(url = %status.url, "executor left");
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

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = crate::sql(&self.session, &query.query)
            .await
            .map_err(to_status)?;
        let schema = df.schema().as_arrow().clone();
        let handle = uuid::Uuid::new_v4().to_string();
        {
            let mut statements = self.statements.lock();
            if statements.len() >= WAITING_STATEMENTS
                && let Some(oldest) = statements.keys().next().cloned()
            {
                statements.remove(&oldest);
            }
            statements.insert(handle.clone(), df);
        }
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("encoding the result schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = String::from_utf8_lossy(&ticket.statement_handle).to_string();
        let df = self
            .statements
            .lock()
            .remove(&handle)
            .ok_or_else(|| Status::not_found(format!("no statement {handle:?} is waiting")))?;
        let batches = df.execute_stream().await.map_err(to_status)?;
        let schema = batches.schema();
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(to_status(e)))))
            .map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(encoded.boxed()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A coordinator serving Flight on a TCP address; dropping it stops the server.
pub type CoordinatorServer = FlightServer;

/// Serves `coordinator`'s Flight endpoint on `addr` (port 0 picks a free port).
pub async fn serve_coordinator(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
) -> std::io::Result<CoordinatorServer> {
    let listener = TcpListener::bind(addr).await?;
    let session = fletch_session(Arc::clone(&coordinator), default_session_config());
    let service = CoordinatorService {
        coordinator,
        session,
        statements: Mutex::default(),
    };
    FlightServer::serve(listener, service)
}
