//! [`ExecutorClient`]: the calls a coordinator or another executor makes on an
//! executor: run a task, wait for a served result's reader, release a query, move,
//! copy and drop table pieces, set the memory limit, and fetch partitions and pieces.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightDescriptor, Ticket};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;

use crate::caller::Deadline;
use crate::client::ExecutorClient;
use crate::encode::{Dictionaries, encode_batches};
use crate::failure::TaskFailure;
use crate::protocol::{
    self, CopyPiece, DropPieces, FletchTicket, MemoryLimit, PartitionTicket, PieceId, ReleaseQuery,
    TaskDefinition, TaskReport, fletch_ticket,
};
use datafusion::physical_plan::metrics::Count;

impl ExecutorClient {
    /// Runs a task; returns when it has finished writing all its output, with what its
    /// executor measured of it.
    pub async fn run_task(&self, task: &TaskDefinition) -> Result<TaskReport, TaskFailure> {
        self.caller
            .action_reply(protocol::RUN_TASK, task.encode_to_vec(), "task report")
            .await
    }

    /// Returns once a client has read the query result `partition` names to its end;
    /// fails if no reader came within `unread`, or it left before the end.
    pub async fn await_result_read(
        &self,
        partition: &PartitionTicket,
        unread: std::time::Duration,
    ) -> Result<(), TaskFailure> {
        let body = protocol::ResultRead {
            partition: Some(partition.clone()),
            unread_ms: u64::try_from(unread.as_millis()).unwrap_or(u64::MAX),
        };
        self.caller
            .action(
                protocol::AWAIT_RESULT_READ,
                body.encode_to_vec(),
                Deadline::OpenEnded,
            )
            .await
    }

    /// Frees a query's buffers and aborts its tasks on this executor.
    pub async fn release(&self, query_id: &str) -> Result<(), TaskFailure> {
        let body = ReleaseQuery {
            query_id: query_id.to_string(),
        };
        self.caller
            .action(
                protocol::RELEASE_QUERY,
                body.encode_to_vec(),
                Deadline::Control,
            )
            .await
    }

    /// Has this executor copy a table piece from the executor at `from`; lasts as long
    /// as the copy.
    pub async fn copy_piece(&self, piece: &PieceId, from: &str) -> Result<(), TaskFailure> {
        let body = CopyPiece {
            piece: Some(piece.clone()),
            from: from.to_string(),
        };
        self.caller
            .action(
                protocol::COPY_PIECE,
                body.encode_to_vec(),
                Deadline::OpenEnded,
            )
            .await
    }

    /// Sets this executor's memory limit.
    pub async fn set_memory_limit(&self, bytes: usize) -> Result<(), TaskFailure> {
        let body = MemoryLimit {
            bytes: bytes as u64,
        };
        self.caller
            .action(
                protocol::SET_MEMORY_LIMIT,
                body.encode_to_vec(),
                Deadline::Control,
            )
            .await
    }

    /// Frees every fragment of a table incarnation on this executor, or only the pieces
    /// one load wrote.
    pub async fn drop_pieces(&self, table_uid: &str, load: Option<u64>) -> Result<(), TaskFailure> {
        let action = match load {
            Some(_) => protocol::DROP_LOAD,
            None => protocol::DROP_TABLE,
        };
        let body = DropPieces {
            table_uid: table_uid.to_string(),
            load,
        };
        self.caller
            .action(action, body.encode_to_vec(), Deadline::Control)
            .await
    }

    /// Stores a replica of a table piece on this executor.
    pub async fn put_piece(
        &self,
        id: &PieceId,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(), TaskFailure> {
        let descriptor = FlightDescriptor::new_cmd(id.encode_to_vec());
        let data = encode_batches(
            Some(schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
            Dictionaries::Resend,
            Some(descriptor),
        );
        let mut results = self
            .caller
            .flight()
            .do_put(data)
            .await
            .map_err(|e| self.caller.failure(e))?;
        while let Some(result) = results.next().await {
            result.map_err(|e| self.caller.failure(e))?;
        }
        Ok(())
    }

    /// Streams a table piece this executor holds, adding the encoded bytes received to
    /// `wire_bytes`, when given.
    pub async fn fetch_piece(
        &self,
        id: &PieceId,
        wire_bytes: Option<Count>,
    ) -> Result<impl Stream<Item = Result<RecordBatch, TaskFailure>> + use<>, TaskFailure> {
        let ticket = FletchTicket {
            kind: Some(fletch_ticket::Kind::Piece(id.clone())),
        };
        let batches = self
            .caller
            .do_get(Ticket::new(ticket.encode_to_vec()), wire_bytes)
            .await
            .map_err(|e| self.caller.failure(e))?;
        let caller = self.caller.clone();
        Ok(batches.map_err(move |e| caller.failure(e)))
    }

    /// Streams one task output partition.
    pub fn fetch(&self, ticket: PartitionTicket, schema: SchemaRef) -> SendableRecordBatchStream {
        self.fetch_counted(ticket, schema, None)
    }

    /// Streams one task output partition, adding the encoded bytes received to
    /// `wire_bytes`, when given.
    pub fn fetch_counted(
        &self,
        ticket: PartitionTicket,
        schema: SchemaRef,
        wire_bytes: Option<Count>,
    ) -> SendableRecordBatchStream {
        let caller = self.caller.clone();
        let stream = futures::stream::once(async move {
            let ticket = FletchTicket {
                kind: Some(fletch_ticket::Kind::Partition(ticket)),
            };
            let ticket = Ticket::new(ticket.encode_to_vec());
            let batches = caller
                .do_get(ticket, wire_bytes)
                .await
                .map_err(|e| caller.failure(e).into_datafusion())?;
            let failing = caller.clone();
            Ok::<_, datafusion::error::DataFusionError>(
                batches.map_err(move |e| failing.failure(e).into_datafusion()),
            )
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.boxed()))
    }
}
