//! [`ExecutorFragments`]: the [`FragmentStore`] a task sees. Reads come from this
//! executor's memory when it holds the piece, otherwise from the first holder that
//! answers; writes keep the piece here if this executor holds the fragment and copy it
//! to every other holder over Flight `DoPut`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_planner::{FragmentStore, PieceRef, ReadCounters, ReadOrigin};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::fragments::FragmentPieces;
use crate::task_report::TaskReads;
use fletch_transport::ClientPool;
use fletch_transport::protocol::PieceId;
use fletch_transport::{FailureReason, TaskFailure};

pub(crate) struct ExecutorFragments {
    pub(crate) url: String,
    pub(crate) pieces: Arc<FragmentPieces>,
    pub(crate) clients: ClientPool,
    /// The counters of every read of this task's scans.
    pub(crate) reads: TaskReads,
}

impl std::fmt::Debug for ExecutorFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecutorFragments({})", self.url)
    }
}

pub(crate) fn piece_id(piece: &PieceRef) -> PieceId {
    PieceId {
        table: piece.table.clone(),
        table_uid: piece.table_uid.clone(),
        load: piece.load,
        fragment: piece.fragment,
    }
}

fn describe(piece: &PieceRef) -> String {
    format!(
        "table {} fragment {} (load {})",
        piece.table, piece.fragment, piece.load
    )
}

impl FragmentStore for ExecutorFragments {
    fn read(
        &self,
        piece: &PieceRef,
        schema: SchemaRef,
        counters: &ReadCounters,
    ) -> Result<SendableRecordBatchStream> {
        let id = piece_id(piece);
        self.reads.record(counters);
        if let Some(local) = self.pieces.get(&id, true) {
            let batches = local.batches.clone();
            let stream = futures::stream::iter(batches.into_iter().map(Ok));
            let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
            return Ok(counters.count(stream, ReadOrigin::Local));
        }
        let wire_bytes = counters.remote_bytes.clone();
        let remote: Vec<String> = piece
            .holders
            .iter()
            .filter(|h| **h != self.url)
            .cloned()
            .collect();
        let clients = self.clients.clone();
        let what = describe(piece);
        let url = self.url.clone();
        let stream = futures::stream::once(async move {
            let mut failures = Vec::new();
            for holder in &remote {
                let attempt = match clients.get(holder) {
                    Ok(client) => client.fetch_piece(&id, Some(wire_bytes.clone())).await,
                    Err(e) => Err(e),
                };
                match attempt {
                    Ok(batches) => return Ok(batches.map_err(TaskFailure::into_datafusion)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            let tried = if failures.is_empty() {
                "no other executor holds it".to_string()
            } else {
                failures.join("; ")
            };
            Err(TaskFailure::outside_tasks(
                FailureReason::FetchFailed,
                format!("{what} cannot be read from any holder: {tried}"),
                url,
            )
            .into_datafusion())
        })
        .try_flatten();
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
        Ok(counters.count(stream, ReadOrigin::Remote))
    }

    fn write(
        &self,
        piece: PieceRef,
        mut input: SendableRecordBatchStream,
    ) -> BoxFuture<'static, Result<u64>> {
        let pieces = Arc::clone(&self.pieces);
        let clients = self.clients.clone();
        let url = self.url.clone();
        async move {
            let id = piece_id(&piece);
            let schema = input.schema();
            let mut builder = pieces.builder(id.clone());
            while let Some(batch) = input.next().await {
                builder.push(batch?)?;
            }
            let bytes = builder.bytes() as u64;
            let copies = piece.holders.iter().filter(|h| **h != url).map(|holder| {
                let clients = clients.clone();
                let id = id.clone();
                let schema = schema.clone();
                let batches = builder.batches().to_vec();
                async move {
                    let client = clients.get(holder)?;
                    client.put_piece(&id, schema, batches).await
                }
            });
            for copy in futures::future::join_all(copies).await {
                // A holder's refusal is this load's own failure, not an echo of another
                // task's: it is reported with its message and reason as this task's.
                copy.map_err(|f| match f.reason {
                    FailureReason::OutOfMemory => DataFusionError::ResourcesExhausted(f.message),
                    _ => DataFusionError::Execution(f.to_string()),
                })?;
            }
            if piece.holders.contains(&url) {
                pieces.insert(builder).map_err(DataFusionError::Execution)?;
            }
            Ok(bytes)
        }
        .boxed()
    }
}
