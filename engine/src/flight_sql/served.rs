//! Results read straight from an executor (`fletch.result_endpoints = 'executors'`).
//!
//! Life cycle of one: `GetFlightInfo` starts the query and keeps a [`Served`] entry in
//! the session; its ticket, signed when the cluster has a secret, names the executor
//! of the final task first and this endpoint second. The query runs in a task the
//! entry owns, until the client has read the result (the run ends), it fails, or the
//! entry goes (cancelled, or the session expired): dropping the entry aborts the task,
//! which frees the query on every executor. At its end the task removes its own entry,
//! and only once the entry is in place, so a query that ends at once is not left
//! behind. A client that cannot reach the executor redeems the ticket here instead
//! ([`CoordinatorService::redeem`]).

use std::sync::{Arc, Weak};

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::Result as DataFusionResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use fletch_transport::protocol::{RESULT_TICKET_TYPE, ResultTicket};
use futures::StreamExt;
use prost::Message;
use tokio::sync::oneshot;
use tonic::{Response, Status};

use super::handles::{ClientSession, Served, Session};
use super::query_slots::QuerySlot;
use super::replies::{result_stream, to_status};
use super::{CoordinatorService, DoGetStream};
use crate::distributed_exec::DistributedExec;

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

impl CoordinatorService {
    /// Starts `distributed` now, in one of the session's user's slots, and describes
    /// its result as read from the executor of its final task.
    pub(super) fn serve_from_executors(
        &self,
        session: &ClientSession,
        distributed: &DistributedExec,
        ctx: Arc<TaskContext>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = distributed.schema();
        let slot = self.slot(session)?;
        let (run, result) = distributed.serve(ctx).map_err(to_status)?;
        let handle = uuid::Uuid::new_v4().to_string();
        let (registered, entered) = oneshot::channel::<()>();
        let query = SpawnedTask::spawn(run_until_read(
            run,
            slot,
            entered,
            // Weak: the session owns the query, not the other way round.
            Arc::downgrade(session),
            handle.clone(),
        ));
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

    /// Redeems a ticket for a result served from an executor: for clients that ignore
    /// endpoint locations, or could not reach the executor, the rows come through here.
    pub(super) fn redeem(
        &self,
        session: &Session,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
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
}

/// The served query's task: drives the run to its end (the client has read the
/// result) or its first error, then removes the query's entry from `owner`, once the
/// entry is in place. The client learns of a failure from its read; the log says why.
async fn run_until_read(
    mut run: SendableRecordBatchStream,
    slot: QuerySlot,
    entered: oneshot::Receiver<()>,
    owner: Weak<Session>,
    handle: String,
) -> DataFusionResult<()> {
    let _slot = slot;
    let mut end = Ok(());
    while let Some(item) = run.next().await {
        if let Err(e) = item {
            end = Err(e);
            break;
        }
    }
    drop(run);
    let _ = entered.await;
    if let Err(e) = &end {
        tracing::warn!("a query serving its result from an executor failed: {e}");
    }
    // The entry owns this task: dropping it aborts the task, which is past its last
    // await here, so it returns all the same.
    drop(owner.upgrade().and_then(|s| s.served.remove(&handle)));
    end
}
