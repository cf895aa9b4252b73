//! How the endpoint's answers and errors go on the wire: result batches as Flight
//! data, `FlightInfo`s with one ticket, schemas as IPC bytes, and DataFusion errors as
//! gRPC statuses whose code says whose mistake it was.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::error::FlightError;
use arrow_flight::sql::ProstMessageExt;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use datafusion::error::DataFusionError;
use fletch_transport::{Dictionaries, encode_batches};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{DoGetStream, metadata};

/// The gRPC status of an error: the client's mistakes (bad SQL, unknown or existing
/// names, bad values, arithmetic on bad data) with their own codes; `Internal` is
/// kept for Fletch's and DataFusion's own failures.
pub(super) fn to_status(e: DataFusionError) -> Status {
    let message = e.strip_backtrace();
    if let Some(failure) = fletch_transport::find_failure(&e)
        && failure.reason == fletch_transport::FailureReason::InvalidData
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
        _ if fletch_transport::is_data_error(&e) => Status::invalid_argument(message),
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

/// Result batches as Flight data, errors as Flight status with DataFusion's message.
pub(super) fn result_stream(
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
pub(super) fn batch_stream(batch: RecordBatch) -> DoGetStream {
    let schema = batch.schema();
    let batches = futures::stream::iter([Ok(batch)]);
    encode_batches(Some(schema), batches, Dictionaries::Hydrate, None)
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

pub(super) fn no_foreign_keys() -> DoGetStream {
    batch_stream(RecordBatch::new_empty(Arc::clone(&metadata::FOREIGN_KEYS)))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`, served by this endpoint.
pub(super) fn info_with_ticket(
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
pub(super) fn command_info(
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

pub(super) fn encode_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}
