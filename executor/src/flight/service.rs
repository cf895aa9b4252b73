//! The executor's Flight service: `DoAction` runs tasks, releases queries and drops
//! table fragments, `DoGet` streams a task output partition or a table piece, `DoPut`
//! stores a replica of a table piece. Every malformed request gets `InvalidArgument` with a
//! message naming what was wrong; nothing a client sends can take the server down.
//!
//! Every call is for cluster members only ([`require_member`]) but one: a client's
//! `DoGet` of a query result with a ticket the coordinator signed for that partition.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use fletch_transport::protocol::{
    self, CopyPiece, DropPieces, FletchTicket, MemoryLimit, PieceId, ReleaseQuery, ResultRead,
    ResultTicket, TaskDefinition, fletch_ticket,
};
use fletch_transport::{
    ClusterSecret, Dictionaries, FailureReason, OUTSIDE_TASKS, TaskFailure, bad_request,
    decode_validated, encode_batches, require_member,
};

use crate::task::TaskRunner;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) struct ExecutorService {
    pub(crate) runner: Arc<TaskRunner>,
    /// Checks the signatures of result tickets; `None`: an open cluster.
    pub(crate) secret: Option<ClusterSecret>,
}

/// A stream that failed here while the executor is fine (encoding, IPC): with Fletch's
/// detail, so the reader never takes it for a lost executor.
fn stream_failure(message: String, url: &str) -> Status {
    TaskFailure::outside_tasks(
        FailureReason::FetchFailed,
        format!("streaming from {url}: {message}"),
        url,
    )
    .to_status()
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("a Fletch executor does not serve {what}"))
}

impl ExecutorService {
    /// Fetches a piece from the executor at `from` and keeps it, reserving its memory.
    async fn copy_piece(&self, id: PieceId, from: &str) -> Result<(), TaskFailure> {
        let source = self.runner.clients.get(from)?;
        let batches = source.fetch_piece(&id, None).await?;
        self.store_piece(id, batches).await
    }

    /// Keeps the piece `batches` carry once they all arrived, each batch reserved in
    /// the executor's memory as it comes (a piece that does not fit fails as
    /// `OutOfMemory`). A piece of a table or load dropped meanwhile is refused.
    async fn store_piece(
        &self,
        id: PieceId,
        batches: impl Stream<Item = Result<RecordBatch, TaskFailure>>,
    ) -> Result<(), TaskFailure> {
        let url = &self.runner.url;
        let mut batches = std::pin::pin!(batches);
        let mut builder = self.runner.fragments.builder(id);
        while let Some(batch) = batches.next().await {
            builder
                .push(batch?)
                .map_err(|e| TaskFailure::from_task_error(&e, OUTSIDE_TASKS, OUTSIDE_TASKS, url))?;
        }
        self.runner
            .fragments
            .insert(builder)
            .map_err(|message| TaskFailure::outside_tasks(FailureReason::Cancelled, message, url))
    }
}

#[tonic::async_trait]
impl FlightService for ExecutorService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unsupported("Handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unsupported("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unsupported("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unsupported("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unsupported("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let (_, extensions, ticket) = request.into_parts();
        let bytes = ticket.ticket;
        // A client reading a query result served from here (Flight SQL packs tickets in
        // an `Any`), else another Fletch process.
        let kind = match ResultTicket::from_ticket_bytes(&bytes) {
            Some(Ok(result)) => {
                if let Some(secret) = &self.secret {
                    secret.check_result_ticket(&result)?;
                }
                result.partition.map(fletch_ticket::Kind::Partition)
            }
            Some(Err(e)) => return Err(bad_request(format!("malformed result ticket: {e}"))),
            None => {
                require_member(&extensions, "DoGet of a task output or table piece")?;
                FletchTicket::decode(bytes)
                    .map_err(|e| bad_request(format!("malformed ticket: {e}")))?
                    .kind
            }
        };
        let batches = match kind {
            Some(fletch_ticket::Kind::Partition(ticket)) => {
                if ticket.query_id.is_empty() {
                    return Err(bad_request("partition ticket without a query id"));
                }
                let store = &self.runner.store;
                store
                    .await_known(&ticket.query_id)
                    .await
                    .map_err(|f| f.to_status())?;
                store
                    .read_partition(&ticket, false)
                    .map_err(|e| e.to_status())?
                    .map_err(|failure| FlightError::ExternalError(Box::new(failure)))
                    .boxed()
            }
            Some(fletch_ticket::Kind::Piece(id)) => {
                if id.table_uid.is_empty() {
                    return Err(bad_request("piece ticket without a table id"));
                }
                let Some(piece) = self.runner.fragments.get(&id, false) else {
                    let failure = TaskFailure::outside_tasks(
                        FailureReason::FetchFailed,
                        format!(
                            "table {} fragment {} (load {}) is not held by executor {}",
                            id.table, id.fragment, id.load, self.runner.url
                        ),
                        &self.runner.url,
                    );
                    return Err(failure.to_status());
                };
                futures::stream::iter(piece.batches.clone().into_iter().map(Ok)).boxed()
            }
            None => return Err(bad_request("empty ticket")),
        };
        let url = self.runner.url.clone();
        // Resend keeps dictionary types intact, so readers see the declared schema.
        let encoded =
            encode_batches(None, batches, Dictionaries::Resend, None).map_err(move |e| match e {
                FlightError::ExternalError(inner) => match inner.downcast::<TaskFailure>() {
                    Ok(failure) => failure.to_status(),
                    Err(other) => stream_failure(other.to_string(), &url),
                },
                FlightError::Tonic(status) => *status,
                other => stream_failure(other.to_string(), &url),
            });
        Ok(Response::new(encoded.boxed()))
    }

    /// Stores a replica of a table piece; the descriptor's command is a `PieceId`.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        require_member(request.extensions(), "DoPut of a table piece")?;
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| bad_request("DoPut without any message"))?;
        let descriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| bad_request("DoPut without a flight descriptor"))?;
        let id = PieceId::decode(descriptor.cmd)
            .map_err(|e| bad_request(format!("malformed piece descriptor: {e}")))?;
        if id.table_uid.is_empty() {
            return Err(bad_request("piece descriptor without a table id"));
        }
        let flight_data = futures::stream::once(async move { Ok(first) })
            .chain(input)
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        let url = self.runner.url.clone();
        let batches = decode_validated(flight_data).map_err(move |e| {
            TaskFailure::outside_tasks(
                FailureReason::BadRequest,
                format!("receiving a table piece: {e}"),
                &url,
            )
        });
        self.store_piece(id, batches)
            .await
            .map_err(|f| f.to_status())?;
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let (_, extensions, action) = request.into_parts();
        require_member(&extensions, &format!("action {:?}", action.r#type))?;
        match action.r#type.as_str() {
            protocol::RUN_TASK => {
                let task = TaskDefinition::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed task definition: {e}")))?;
                if task.query_id.is_empty() {
                    return Err(bad_request("task definition without a query id"));
                }
                let report = self.runner.run(task).await.map_err(|f| f.to_status())?;
                let reply = arrow_flight::Result::new(report.encode_to_vec());
                return Ok(Response::new(
                    futures::stream::once(async { Ok(reply) }).boxed(),
                ));
            }
            protocol::RELEASE_QUERY => {
                let release = ReleaseQuery::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed release request: {e}")))?;
                self.runner.store.release(&release.query_id).await;
            }
            protocol::AWAIT_RESULT_READ => {
                let wait = ResultRead::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed result wait: {e}")))?;
                let Some(partition) = wait.partition.filter(|p| !p.query_id.is_empty()) else {
                    return Err(bad_request("result wait without a partition"));
                };
                let unread = std::time::Duration::from_millis(wait.unread_ms);
                self.runner
                    .store
                    .await_read(&partition, unread)
                    .await
                    .map_err(|f| f.to_status())?;
            }
            protocol::COPY_PIECE => {
                let copy = CopyPiece::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed copy request: {e}")))?;
                let Some(id) = copy.piece.filter(|p| !p.table_uid.is_empty()) else {
                    return Err(bad_request("copy request without a piece"));
                };
                self.copy_piece(id, &copy.from)
                    .await
                    .map_err(|f| f.to_status())?;
            }
            protocol::SET_MEMORY_LIMIT => {
                let limit = MemoryLimit::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed memory limit: {e}")))?;
                let bytes = usize::try_from(limit.bytes)
                    .map_err(|_| bad_request(format!("memory limit {} too large", limit.bytes)))?;
                self.runner.pool.set_limit(bytes);
            }
            protocol::DROP_TABLE | protocol::DROP_LOAD => {
                let drop = DropPieces::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed drop request: {e}")))?;
                if drop.table_uid.is_empty() {
                    return Err(bad_request("drop request without a table id"));
                }
                match (action.r#type.as_str(), drop.load) {
                    (protocol::DROP_TABLE, _) => {
                        self.runner.fragments.drop_table(&drop.table_uid).await
                    }
                    (_, Some(load)) => self.runner.fragments.drop_load(&drop.table_uid, load).await,
                    (_, None) => return Err(bad_request("drop_load request without a load")),
                }
            }
            other => return Err(bad_request(format!("unknown action type {other:?}"))),
        }
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        require_member(request.extensions(), "ListActions")?;
        let actions = [
            (
                protocol::RUN_TASK,
                "run one stage task; replies when it has finished",
            ),
            (
                protocol::RELEASE_QUERY,
                "free a query's buffers and abort its tasks",
            ),
            (protocol::DROP_TABLE, "free every fragment of a table"),
            (
                protocol::AWAIT_RESULT_READ,
                "wait until a client has read a served query result",
            ),
            (
                protocol::SET_MEMORY_LIMIT,
                "set the executor's memory limit",
            ),
            (protocol::DROP_LOAD, "free the pieces one load wrote"),
        ]
        .map(|(r#type, description)| {
            Ok(ActionType {
                r#type: r#type.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(futures::stream::iter(actions).boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unsupported("DoExchange"))
    }
}
