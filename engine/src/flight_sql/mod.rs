//! The coordinator's Flight endpoint, an Arrow Flight SQL server: statement queries
//! and updates (DDL, INSERT, CACHE — every statement goes through [`crate::statements::sql`]),
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
//!
//! This file holds the service and its dispatch; each concern has its own module:
//! [`statements`] (queries, updates, cancellation), [`served`] (results read from
//! executors), [`prepared`], [`metadata`] (catalog calls), [`replies`] (answers and
//! errors on the wire), [`handles`] (what a session remembers) and [`startup`].

mod access;
mod auth;
mod client_habits;
mod cluster_actions;
mod handles;
mod metadata;
mod prepared;
mod query_slots;
mod replies;
mod served;
mod startup;
mod statements;
mod users;

pub use access::Locations;
use access::TableChange;
pub use fletch_transport::Credentials;
pub use handles::SessionLimits;
pub use startup::{CoordinatorServer, EndpointOptions, serve_coordinator, serve_coordinator_with};
pub use users::{Role, User, Users, hash_password};

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, FlightDescriptor,
    FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::dataframe::DataFrame;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use self::cluster_actions::bad_request;
use self::handles::{ClientSession, Session, Sessions};
use self::replies::{batch_stream, command_info, no_foreign_keys, to_status};
use crate::coordinator::Coordinator;
use crate::session::{default_session_config, fletch_session};

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
        let dataframe = crate::statements::sql(&session.ctx, sql)
            .await
            .map_err(to_status)?;
        self.owners.record(&session.user, &changes);
        Ok(dataframe)
    }

    /// One of the session's user's statement slots.
    fn slot(&self, session: &Session) -> Result<query_slots::QuerySlot, Status> {
        self.slots.acquire(&session.user.name)
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
                let header = fletch_transport::authorization(request.metadata())?
                    .ok_or_else(|| Status::unauthenticated("credentials required"))?;
                let fletch_transport::Presented::Basic(encoded) =
                    fletch_transport::Presented::parse(header)?
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
        self.stream_waiting(&session, &ticket.statement_handle)
            .await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        self.redeem(&session, message)
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
        self.create_prepared(&session, &query.query).await
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
        self.bind_parameters(
            &session,
            &query.prepared_statement_handle,
            request.into_inner(),
        )
        .await
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
