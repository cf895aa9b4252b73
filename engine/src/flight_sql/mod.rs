//! The coordinator's Flight endpoint, an Arrow Flight SQL server: statement queries
//! and updates (DDL, INSERT, CACHE — every statement goes through [`crate::sql`]),
//! prepared statements with and without parameters, the catalog calls and SQL info,
//! cancellation, and a handshake that gives the client a session of its own. Results
//! are planned at `GetFlightInfo` and streamed by the coordinator at `DoGet`, so a
//! client that ignores endpoint locations (JDBC) reads them the same way. With
//! `fletch.result_endpoints = 'executors'` a query runs at `GetFlightInfo` instead, and
//! its endpoint names the executor holding the result first and this endpoint second:
//! both redeem the ticket. The cluster's membership actions share the endpoint
//! ([`cluster_actions`]), for members only.
//!
//! Users sign in with the handshake ([`users`]); each statement is checked against
//! the user's role and the allowed file locations ([`access`]) before it is planned.

mod access;
mod auth;
mod client_habits;
mod cluster_actions;
mod handles;
mod metadata;
mod query_slots;
mod users;

pub use access::Locations;
use access::TableChange;
pub use fletch_executor::Credentials;
pub use handles::SessionLimits;
pub use users::{Role, User, Users, hash_password};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::common::ParamValues;
use datafusion::common::runtime::SpawnedTask;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::scalar::ScalarValue;
use fletch_executor::protocol::{RESULT_TICKET_TYPE, ResultTicket};
use fletch_executor::{Dictionaries, encode_batches};
use fletch_executor::{FlightServer, TlsIdentity};
use fletch_planner::{ClientStringType, FletchOptions, ResultEndpoints};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use self::cluster_actions::bad_request;
use self::handles::{ClientSession, Prepared, Served, Session, Sessions, handle_text};
use crate::{Coordinator, DistributedExec, default_session_config, fletch_session};

type ActionStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;
type DoGetStream = <CoordinatorService as FlightService>::DoGetStream;

struct CoordinatorService {
    coordinator: Arc<Coordinator>,
    /// The session of clients that did not hand-shake (an endpoint without users).
    shared: ClientSession,
    sessions: Arc<Sessions>,
    /// Who may sign in; `None`: anyone, as an admin (loopback only).
    users: Option<Arc<Users>>,
    /// Where statements may read and write files.
    locations: Locations,
    /// Bytes of parameters one `DoPut` may send.
    max_parameter_bytes: usize,
    /// How long a result ticket redeemable at an executor stays valid.
    ticket_life: Duration,
    /// Statements each user may run at once.
    slots: query_slots::QuerySlots,
    /// Who created which table: writers change only their own.
    owners: access::Owners,
}

/// The gRPC status of an error: the client's mistakes (bad SQL, unknown or existing
/// names, bad values, arithmetic on bad data) with their own codes; `Internal` is
/// kept for Fletch's and DataFusion's own failures.
fn to_status(e: DataFusionError) -> Status {
    let message = e.strip_backtrace();
    if let Some(failure) = fletch_executor::find_failure(&e)
        && failure.reason == fletch_executor::FailureReason::InvalidData
    {
        return Status::invalid_argument(message);
    }
    let root = e.find_root();
    // DataFusion says "exists" and "not found" only in message text.
    let says = |words: &[&str]| words.iter().any(|w| message.contains(w));
    match root {
        DataFusionError::Plan(_) | DataFusionError::Execution(_) if says(&["already exists"]) => {
            Status::already_exists(message)
        }
        DataFusionError::Plan(_) | DataFusionError::Execution(_)
            if says(&["not found", "doesn't exist", "does not exist"]) =>
        {
            Status::not_found(message)
        }
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => Status::invalid_argument(message),
        _ if fletch_executor::is_data_error(&e) => Status::invalid_argument(message),
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

/// The Flight location meaning "the service that gave this endpoint".
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// The Flight location of an executor URL, in the schemes Flight clients expect.
fn flight_location(url: &str) -> String {
    if let Some(address) = url.strip_prefix("https://") {
        format!("grpc+tls://{address}")
    } else if let Some(address) = url.strip_prefix("http://") {
        format!("grpc+tcp://{address}")
    } else {
        url.to_string()
    }
}

/// Result batches as Flight data, errors as Flight status with DataFusion's message.
fn result_stream(
    schema: arrow::datatypes::SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, DataFusionError>> + Send + 'static,
) -> DoGetStream {
    let batches = batches.map_err(|e| FlightError::Tonic(Box::new(to_status(e))));
    encode_batches(Some(schema), batches, Dictionaries::Hydrate, None)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        })
        .boxed()
}

/// A stream of one batch, as Flight data.
fn batch_stream(batch: RecordBatch) -> DoGetStream {
    let schema = batch.schema();
    let batches = futures::stream::iter([Ok(batch)]);
    encode_batches(Some(schema), batches, Dictionaries::Hydrate, None)
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`, served by this endpoint.
fn info_with_ticket(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the result schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// A catalog call's `FlightInfo`: its ticket is the command itself.
fn command_info(
    command: impl ProstMessageExt,
    schema: &Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    info_with_ticket(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )
}

/// How many rows a statement changed: the `count` its plan reports (INSERT, CREATE
/// TABLE AS), else 0 (DDL).
fn affected_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter(|b| b.num_columns() == 1 && b.schema().field(0).name() == "count")
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().cloned())
        .map(|counts| counts.iter().flatten().sum::<u64>())
        .sum::<u64>()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// Positional parameters from the first row of a bound parameter batch.
fn parameters_from(batch: &RecordBatch) -> Result<ParamValues, Status> {
    if batch.num_rows() == 0 {
        return Err(Status::invalid_argument("the parameter batch has no row"));
    }
    let values = batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("reading parameters: {e}")))?;
    Ok(ParamValues::from(values))
}

/// The parameter schema of a planned statement: `$1`, `$2`, ... with their types
/// where DataFusion infers them.
fn parameter_schema(plan: &datafusion::logical_expr::LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(to_status)?;
    let mut names: Vec<(usize, String)> = types
        .keys()
        .map(|name| {
            let index = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (index, name.clone())
        })
        .collect();
    names.sort();
    let fields: Vec<Field> = names
        .into_iter()
        .map(|(_, name)| {
            let data_type = types
                .get(&name)
                .cloned()
                .flatten()
                .unwrap_or(DataType::Null);
            Field::new(name, data_type, true)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The string and binary types `ctx`'s results go to clients in.
fn string_types(ctx: &datafusion::prelude::SessionContext) -> ClientStringType {
    ctx.state_ref()
        .read()
        .config()
        .options()
        .extensions
        .get::<FletchOptions>()
        .map_or(ClientStringType::Utf8, |o| o.client_string_type)
}

fn encode_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

impl CoordinatorService {
    /// The session a request belongs to: its bearer token's (found by the request
    /// check), or without users the shared one.
    fn session<T>(&self, request: &Request<T>) -> Result<ClientSession, Status> {
        if let Some(session) = request.extensions().get::<ClientSession>() {
            return Ok(Arc::clone(session));
        }
        if self.users.is_none() {
            return Ok(Arc::clone(&self.shared));
        }
        Err(Status::unauthenticated(
            "credentials required: sign in with a user name and password (the Flight SQL \
             handshake; `fletch --connect URL --user NAME --password ...`)",
        ))
    }

    /// Refuses `sql` unless the session's user may run it; the tables it changes.
    fn authorize(&self, session: &Session, sql: &str) -> Result<Vec<TableChange>, Status> {
        let changes = access::authorize(&session.user, Some(&self.locations), &session.ctx, sql)?;
        let tables = self.coordinator.tables();
        self.owners
            .check(&session.user, &changes, |name| tables.get(name).is_some())?;
        Ok(changes)
    }

    /// Plans one statement of `session`'s user, once allowed (DDL runs here), in one
    /// of the user's statement slots.
    async fn plan(&self, session: &Session, sql: &str) -> Result<DataFrame, Status> {
        let changes = self.authorize(session, sql)?;
        let _slot = self.slot(session)?;
        let dataframe = crate::sql(&session.ctx, sql).await.map_err(to_status)?;
        self.owners.record(&session.user, &changes);
        Ok(dataframe)
    }

    /// One of the session's user's statement slots.
    fn slot(&self, session: &Session) -> Result<query_slots::QuerySlot, Status> {
        self.slots.acquire(&session.user.name)
    }

    /// Runs an update to its end in one of the user's slots; the rows it changed.
    async fn run_update(&self, session: &Session, dataframe: DataFrame) -> Result<i64, Status> {
        let _slot = self.slot(session)?;
        let batches = dataframe.collect().await.map_err(to_status)?;
        Ok(affected_rows(&batches))
    }

    /// Keeps `dataframe` for its `DoGet` and describes its result.
    fn waiting_info(
        &self,
        session: &Session,
        dataframe: DataFrame,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = dataframe.schema().as_arrow().clone();
        let handle = session.waiting.insert(dataframe);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        info_with_ticket(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    /// Describes a statement's result: kept for its `DoGet` here, or, with
    /// `fletch.result_endpoints = 'executors'` and a plan that runs on the cluster,
    /// started now and read from the executor of its final task.
    async fn statement_info(
        &self,
        session: &ClientSession,
        dataframe: DataFrame,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let dataframe = client_habits::with_client_types(dataframe, string_types(&session.ctx))
            .map_err(to_status)?;
        let ctx = Arc::new(dataframe.task_ctx());
        let options = ctx.session_config().options();
        let from_executors = options
            .extensions
            .get::<FletchOptions>()
            .is_some_and(|fletch| fletch.result_endpoints == ResultEndpoints::Executors);
        if !from_executors {
            return self.waiting_info(session, dataframe, descriptor);
        }
        let plan = dataframe
            .clone()
            .create_physical_plan()
            .await
            .map_err(to_status)?;
        let Some(distributed) = plan.downcast_ref::<DistributedExec>() else {
            // Catalog listings and the like run on the coordinator anyway.
            return self.waiting_info(session, dataframe, descriptor);
        };
        let schema = plan.schema();
        let slot = self.slot(session)?;
        let (mut run, result) = distributed.serve(ctx).map_err(to_status)?;
        let handle = uuid::Uuid::new_v4().to_string();
        // Weak: the session owns the query, not the other way round.
        let owner = Arc::downgrade(session);
        let forget = handle.clone();
        let (registered, entered) = tokio::sync::oneshot::channel::<()>();
        let query = SpawnedTask::spawn(async move {
            let _slot = slot;
            let mut end = Ok(());
            while let Some(item) = run.next().await {
                if let Err(e) = item {
                    end = Err(e);
                    break;
                }
            }
            drop(run);
            // Forgotten only once entered (or never to be). The client learns of a
            // failure from its read; the log says why. Dropping the entry aborts this
            // task, after this poll.
            let _ = entered.await;
            let entry = owner.upgrade().and_then(|s| s.served.remove(&forget));
            if let Err(e) = &end {
                tracing::warn!("a query serving its result from an executor failed: {e}");
            }
            drop(entry);
            end
        });
        let mut ticket = ResultTicket {
            handle: handle.clone(),
            partition: Some(result.partition.clone()),
            ..Default::default()
        };
        if let Some(secret) = self.coordinator.cluster_secret() {
            secret.sign_result_ticket(&mut ticket, self.ticket_life);
        }
        let endpoint = FlightEndpoint::new()
            .with_ticket(Ticket::new(ticket.to_ticket_bytes()))
            .with_location(flight_location(&result.url))
            .with_location(REUSE_CONNECTION);
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("encoding the result schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        session.served.insert_at(
            handle,
            Arc::new(Served {
                result,
                schema,
                _query: query,
            }),
        );
        let _ = registered.send(());
        Ok(Response::new(info))
    }

    /// The prepared statement `handle` names in `session`: another session's (or one
    /// from a session that expired) is not found.
    fn prepared(&self, session: &Session, handle: &[u8]) -> Result<(String, Prepared), Status> {
        let handle = handle_text(handle, "prepared statement")?;
        match session.prepared.get(&handle) {
            Some(prepared) => Ok((handle, prepared)),
            None => Err(Status::not_found(format!(
                "no prepared statement {handle:?} in this session"
            ))),
        }
    }

    /// The prepared statement `handle` names, with its parameters bound.
    async fn prepared_dataframe(
        &self,
        session: &Session,
        handle: &[u8],
    ) -> Result<DataFrame, Status> {
        let (_, prepared) = self.prepared(session, handle)?;
        let dataframe = self.plan(session, &prepared.sql).await?;
        match prepared.parameters {
            Some(parameters) => dataframe.with_param_values(parameters).map_err(to_status),
            None => Ok(dataframe),
        }
    }

    /// Cancels every statement `info`'s tickets name: waiting ones are forgotten,
    /// streaming ones stopped (which releases their tasks on every executor).
    fn cancel(&self, session: &Session, info: &FlightInfo) -> CancelStatus {
        let mut found = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            if let Some(Ok(result)) = ResultTicket::from_ticket_bytes(&ticket.ticket) {
                found |= session.served.remove(&result.handle).is_some();
                continue;
            }
            let Ok(any) = arrow_flight::sql::Any::decode(ticket.ticket.clone()) else {
                continue;
            };
            let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            let handle = String::from_utf8_lossy(&statement.statement_handle).to_string();
            found |= session.waiting.remove(&handle).is_some();
            if let Some(running) = session.running.remove(&handle) {
                running.abort();
                found = true;
            }
        }
        if found {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for CoordinatorService {
    type FlightService = CoordinatorService;

    /// Signs the user in (`Basic` credentials, where the endpoint has users) and gives
    /// the client a session of its own, named by the bearer token returned (in the
    /// payload and the `authorization` header).
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let user = match &self.users {
            Some(users) => {
                let header = fletch_executor::authorization(request.metadata())?
                    .ok_or_else(|| Status::unauthenticated("credentials required"))?;
                let fletch_executor::Presented::Basic(encoded) =
                    fletch_executor::Presented::parse(header)?
                else {
                    return Err(Status::unauthenticated(
                        "the handshake takes Basic credentials",
                    ));
                };
                users.sign_in(&Credentials::from_basic(encoded)?).await?
            }
            None => Arc::clone(&self.shared.user),
        };
        let ctx = fletch_session(Arc::clone(&self.coordinator), default_session_config());
        let session = Session::new(ctx, user, self.sessions.limits());
        let token = self.sessions.open(session)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(futures::stream::iter([Ok(reply)]).boxed());
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type == "CancelFlightInfo" {
            let session = self.session(&request)?;
            let cancel = CancelFlightInfoRequest::decode(request.into_inner().body)
                .map_err(|e| bad_request(format!("malformed CancelFlightInfo: {e}")))?;
            let info = cancel
                .info
                .ok_or_else(|| bad_request("CancelFlightInfo without a FlightInfo"))?;
            let result = CancelFlightInfoResult {
                status: self.cancel(&session, &info) as i32,
            };
            let reply = arrow_flight::Result {
                body: result.encode_to_vec().into(),
            };
            let stream: ActionStream = futures::stream::iter([Ok(reply)]).boxed();
            return Ok(Response::new(stream));
        }
        let (_, extensions, action) = request.into_parts();
        let Some(replies) = cluster_actions::run(&self.coordinator, &extensions, &action).await
        else {
            return Err(bad_request(format!(
                "unknown action type {:?}",
                action.r#type
            )));
        };
        let stream: ActionStream = futures::stream::iter(replies?.into_iter().map(Ok)).boxed();
        Ok(Response::new(stream))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let cancel = ActionType {
            r#type: "CancelFlightInfo".to_string(),
            description: "cancel the statements a FlightInfo names".to_string(),
        };
        Some(
            cluster_actions::list()
                .into_iter()
                .chain([cancel])
                .map(Ok)
                .collect(),
        )
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let dataframe = self.plan(&session, &query.query).await?;
        self.statement_info(&session, dataframe, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let handle = handle_text(&ticket.statement_handle, "statement")?;
        let dataframe = session.waiting.remove(&handle).ok_or_else(|| {
            Status::not_found(format!(
                "no statement {handle:?} is waiting in this session"
            ))
        })?;
        let slot = self.slot(&session)?;
        let batches = dataframe.execute_stream().await.map_err(to_status)?;
        let schema = batches.schema();
        let (batches, abort) = futures::stream::abortable(batches);
        session.running.insert_at(handle.clone(), abort);
        // Forgets the handle, and frees the slot, when the stream ends or the client
        // goes away.
        let forget = ForgetRunning {
            session: Arc::downgrade(&session),
            handle,
            _slot: slot,
        };
        let batches = batches.map(move |batch| {
            let _ = &forget;
            batch
        });
        Ok(Response::new(result_stream(schema, batches)))
    }

    /// Redeems a ticket for a result served from an executor: for clients that ignore
    /// endpoint locations, or could not reach the executor, the rows come through here.
    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        if message.type_url != RESULT_TICKET_TYPE {
            return Err(Status::unimplemented(format!(
                "do_get: unknown ticket type {:?}",
                message.type_url
            )));
        }
        let ticket = ResultTicket::decode(message.value)
            .map_err(|e| Status::invalid_argument(format!("malformed result ticket: {e}")))?;
        let served = session.served.get(&ticket.handle).ok_or_else(|| {
            Status::not_found(format!(
                "no result {:?} is being served in this session: it was read, cancelled or failed",
                ticket.handle
            ))
        })?;
        let executor = self
            .coordinator
            .clients()
            .get(&served.result.url)
            .map_err(|f| f.to_status())?;
        let batches = executor.fetch(served.result.partition.clone(), Arc::clone(&served.schema));
        Ok(Response::new(result_stream(
            Arc::clone(&served.schema),
            batches,
        )))
    }

    async fn do_put_statement_update(
        &self,
        update: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session(&request)?;
        let dataframe = self.plan(&session, &update.query).await?;
        self.run_update(&session, dataframe).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session(&request)?;
        self.authorize(&session, &query.query)?;
        let sql = client_habits::number_placeholders(&query.query).map_err(to_status)?;
        // Queries and DataFusion's own statements are planned now, for their schemas;
        // Fletch's (CREATE TABLE ... PARTITION BY, CACHE TABLE) when executed.
        let (dataset_schema, parameter_schema) =
            match session.ctx.state().create_logical_plan(&sql).await {
                Ok(plan) => (
                    client_habits::client_schema(
                        plan.schema().as_arrow(),
                        string_types(&session.ctx),
                    ),
                    parameter_schema(&plan)?,
                ),
                Err(e) if crate::statements::is_fletch_statement(&sql) => {
                    tracing::debug!("prepared as a Fletch statement: {e}");
                    (Schema::empty(), Schema::empty())
                }
                Err(e) => return Err(to_status(e)),
            };
        let prepared = Prepared {
            sql,
            parameters: None,
        };
        let handle = session.prepared.insert(prepared);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: encode_schema(&dataset_schema)?,
            parameter_schema: encode_schema(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session(&request)?;
        let (handle, _) = self.prepared(&session, &query.prepared_statement_handle)?;
        session.prepared.remove(&handle);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let (handle, mut prepared) = self.prepared(&session, &query.prepared_statement_handle)?;
        let batch = the_parameter_row(request.into_inner(), self.max_parameter_bytes).await?;
        prepared.parameters = batch.as_ref().map(parameters_from).transpose()?;
        session.prepared.insert_at(handle.clone(), prepared);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let dataframe = self
            .prepared_dataframe(&session, &query.prepared_statement_handle)
            .await?;
        self.statement_info(&session, dataframe, request.into_inner())
            .await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session(&request)?;
        let dataframe = self
            .prepared_dataframe(&session, &query.prepared_statement_handle)
            .await?;
        self.run_update(&session, dataframe).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(query, &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        Ok(Response::new(batch_stream(metadata::catalogs(
            &session.ctx,
            query,
        )?)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(query, &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        Ok(Response::new(batch_stream(metadata::schemas(
            &session.ctx,
            query,
        )?)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(query, &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::tables(&session.ctx, query).await?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(query, &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(batch_stream(metadata::table_types(query)?)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(metadata::sql_info()?).schema();
        command_info(query, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(metadata::sql_info()?)
            .build()
            .map_err(|e| Status::internal(format!("GetSqlInfo: {e}")))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(query, &metadata::PRIMARY_KEYS, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let empty = RecordBatch::new_empty(Arc::clone(&metadata::PRIMARY_KEYS));
        Ok(Response::new(batch_stream(empty)))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(query, &metadata::FOREIGN_KEYS, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(no_foreign_keys()))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(query, &metadata::FOREIGN_KEYS, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(no_foreign_keys()))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(query, &metadata::FOREIGN_KEYS, request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(no_foreign_keys()))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(metadata::xdbc_types()?).schema();
        command_info(query, &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(metadata::xdbc_types()?)
            .build()
            .map_err(|e| Status::internal(format!("GetXdbcTypeInfo: {e}")))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Takes a statement out of its session's running ones when its stream is dropped.
struct ForgetRunning {
    session: std::sync::Weak<Session>,
    handle: String,
    _slot: query_slots::QuerySlot,
}

impl Drop for ForgetRunning {
    fn drop(&mut self) {
        if let Some(session) = self.session.upgrade() {
            session.running.remove(&self.handle);
        }
    }
}

/// The one parameter row a `DoPut` sends, as a one-row batch (`None` for none). The
/// stream is read only up to `max_bytes` of Flight data, so a client cannot make the
/// coordinator read more than that, and it holds one batch at a time; more than one
/// row is refused, not ignored.
async fn the_parameter_row(
    stream: PeekableFlightDataStream,
    max_bytes: usize,
) -> Result<Option<RecordBatch>, Status> {
    let mut seen = 0usize;
    let capped = stream.map(move |data| {
        let data = data?;
        seen = seen.saturating_add(data.data_body.len() + data.data_header.len());
        if seen > max_bytes {
            return Err(Status::invalid_argument(format!(
                "the parameters exceed {max_bytes} bytes, this endpoint's limit"
            )));
        }
        Ok(data)
    });
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        capped.map_err(FlightError::from),
    );
    let (mut row, mut rows) = (None, 0usize);
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::invalid_argument(format!("reading parameters: {other}")),
        })?;
        if row.is_none() && batch.num_rows() > 0 {
            row = Some(batch.slice(0, 1));
        }
        rows = rows.saturating_add(batch.num_rows());
    }
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "a statement binds one row of parameters; {rows} rows were sent"
        )));
    }
    Ok(row)
}

fn no_foreign_keys() -> DoGetStream {
    batch_stream(RecordBatch::new_empty(Arc::clone(&metadata::FOREIGN_KEYS)))
}

/// A coordinator serving Flight on a TCP address; dropping it stops the server.
pub type CoordinatorServer = FlightServer;

/// How the coordinator's endpoint admits clients.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Who may sign in; `None`: an open endpoint, on loopback only, where every
    /// client is an admin.
    pub users: Option<Arc<Users>>,
    /// A session token unused this long expires (the client hand-shakes again).
    pub session_idle: Duration,
    /// Serve over TLS with this certificate and key.
    pub tls: Option<TlsIdentity>,
    /// Where statements may read and write files; none by default.
    pub locations: Locations,
    /// Sessions and the handles each may hold.
    pub limits: SessionLimits,
    /// The largest request message, and the most parameter data one `DoPut` may send.
    pub max_request_bytes: usize,
    /// Statements one user may run at once (planning, streaming or serving).
    pub max_queries_per_user: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            users: None,
            session_idle: Duration::from_secs(3600),
            tls: None,
            locations: Locations::default(),
            limits: SessionLimits::default(),
            max_request_bytes: 16 << 20,
            max_queries_per_user: 16,
        }
    }
}

/// The user of an endpoint without users.
fn anonymous_admin() -> Arc<User> {
    Arc::new(User {
        name: "anonymous".to_string(),
        role: Role::Admin,
    })
}

/// Serves `coordinator`'s Flight endpoint on `addr` (port 0 picks a free port), open
/// to anyone: `addr` must be a loopback address.
pub async fn serve_coordinator(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
) -> std::io::Result<CoordinatorServer> {
    serve_coordinator_with(coordinator, addr, EndpointOptions::default()).await
}

/// [`serve_coordinator`] with `options`: with users every client signs in with the
/// handshake and presents its bearer token after; without, the endpoint is open and
/// refuses to listen beyond loopback. Users need a cluster secret, so that no user can
/// act as an executor.
pub async fn serve_coordinator_with(
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    options: EndpointOptions,
) -> std::io::Result<CoordinatorServer> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    if options.users.is_none() && !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{addr} is not a loopback address: serving beyond loopback needs users \
             (--users FILE, or --user and --password)"
        )));
    }
    let secret = coordinator.cluster_secret().cloned();
    fletch_executor::require_loopback_without_secret(addr, secret.as_ref(), "a coordinator")?;
    if options.users.is_some() && secret.is_none() {
        return Err(invalid(
            "users need a cluster secret (--cluster-secret-file or FLETCH_CLUSTER_SECRET): \
             without one, nothing tells a signed-in user from an executor"
                .to_string(),
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let shared_ctx = fletch_session(Arc::clone(&coordinator), default_session_config());
    let shared = Arc::new(Session::new(shared_ctx, anonymous_admin(), &options.limits));
    let sessions = Arc::new(Sessions::new(options.session_idle, options.limits));
    let check = auth::checker(options.users.is_some(), secret, Arc::clone(&sessions));
    match &options.users {
        Some(users) => tracing::info!(?users, "Flight SQL endpoint requires users to sign in"),
        None => {
            tracing::info!(%addr, "Flight SQL endpoint open to anyone on loopback (no users set)")
        }
    }
    let service = CoordinatorService {
        coordinator,
        shared,
        sessions,
        users: options.users,
        locations: options.locations,
        max_parameter_bytes: options.max_request_bytes,
        ticket_life: options.session_idle,
        slots: query_slots::QuerySlots::new(options.max_queries_per_user),
        owners: access::Owners::default(),
    };
    FlightServer::serve_checked(
        listener,
        service,
        check,
        options.tls.as_ref(),
        options.max_request_bytes,
    )
}
