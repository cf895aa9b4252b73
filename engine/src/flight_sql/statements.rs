//! Statement queries and updates: an update runs to its end at once; a query's
//! result waits, planned, for its `DoGet` (or is served from an executor, see
//! [`super::served`]), then streams in one of its user's slots until it ends, the
//! client goes away or `CancelFlightInfo` stops it.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{CancelStatus, FlightDescriptor, FlightInfo};
use datafusion::dataframe::DataFrame;
use fletch_planner::{ClientStringType, FletchOptions, ResultEndpoints};
use fletch_transport::protocol::ResultTicket;
use futures::StreamExt;
use prost::Message;
use tonic::{Response, Status};

use super::handles::{ClientSession, Session, handle_text};
use super::replies::{info_with_ticket, result_stream, to_status};
use super::{CoordinatorService, DoGetStream, client_habits, query_slots};
use crate::distributed_exec::DistributedExec;

impl CoordinatorService {
    /// Runs an update to its end in one of the user's slots; the rows it changed.
    pub(super) async fn run_update(
        &self,
        session: &Session,
        dataframe: DataFrame,
    ) -> Result<i64, Status> {
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
    pub(super) async fn statement_info(
        &self,
        session: &ClientSession,
        dataframe: DataFrame,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let dataframe = client_habits::with_client_types(dataframe, string_types(&session.ctx))
            .map_err(to_status)?;
        let ctx = Arc::new(dataframe.task_ctx());
        let options = ctx.session_config().options();
        let from_executors =
            FletchOptions::of(options).result_endpoints == ResultEndpoints::Executors;
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
        self.serve_from_executors(session, distributed, ctx, descriptor)
    }

    /// Starts streaming the statement `statement_handle` names, planned by its
    /// `GetFlightInfo` and waiting since; `CancelFlightInfo` can stop it.
    pub(super) async fn stream_waiting(
        &self,
        session: &ClientSession,
        statement_handle: &[u8],
    ) -> Result<Response<DoGetStream>, Status> {
        let handle = handle_text(statement_handle, "statement")?;
        let dataframe = session.waiting.remove(&handle).ok_or_else(|| {
            Status::not_found(format!(
                "no statement {handle:?} is waiting in this session"
            ))
        })?;
        let slot = self.slot(session)?;
        let batches = dataframe.execute_stream().await.map_err(to_status)?;
        let schema = batches.schema();
        let (batches, abort) = futures::stream::abortable(batches);
        session.running.insert_at(handle.clone(), abort);
        // Forgets the handle, and frees the slot, when the stream ends or the client
        // goes away.
        let forget = ForgetRunning {
            session: Arc::downgrade(session),
            handle,
            _slot: slot,
        };
        let batches = batches.map(move |batch| {
            let _ = &forget;
            batch
        });
        Ok(Response::new(result_stream(schema, batches)))
    }

    /// Cancels every statement `info`'s tickets name: waiting ones are forgotten,
    /// streaming ones stopped (which releases their tasks on every executor).
    pub(super) fn cancel(&self, session: &Session, info: &FlightInfo) -> CancelStatus {
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

/// The string and binary types `ctx`'s results go to clients in.
pub(super) fn string_types(ctx: &datafusion::prelude::SessionContext) -> ClientStringType {
    FletchOptions::of(ctx.state_ref().read().config().options()).client_string_type
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
