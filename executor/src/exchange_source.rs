//! [`FlightExchangeSource`]: how a task reads the exchanges it depends on, wherever
//! the upstream tasks ran; partitions this executor wrote are read from its own store.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_planner::{ExchangeSource, ReadCounters, ReadOrigin};
use fletch_transport::protocol::{PartitionTicket, StageLocations};
use fletch_transport::{ClientPool, TaskFailure};
use futures::TryStreamExt;

use crate::store::PartitionStore;
use crate::task_report::TaskReads;

/// Reads exchanges of one query over Flight, wherever the upstream tasks ran; inside an
/// executor, partitions written by that same executor are read straight from its store.
#[derive(Debug)]
pub struct FlightExchangeSource {
    query_id: String,
    /// Stage id -> where each of its tasks runs, and whether its outputs are retained.
    locations: HashMap<u64, StageLocations>,
    clients: ClientPool,
    local: Option<LocalPartitions>,
    /// Every reader partition's counters this source counted into: the task's reads.
    reads: TaskReads,
}

/// The partitions of the executor this source runs on, and the URL tasks know it by.
pub(crate) struct LocalPartitions {
    pub(crate) url: String,
    pub(crate) store: Arc<PartitionStore>,
}

impl std::fmt::Debug for LocalPartitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalPartitions({})", self.url)
    }
}

impl FlightExchangeSource {
    pub fn new(
        query_id: String,
        locations: HashMap<u64, StageLocations>,
        clients: ClientPool,
    ) -> Self {
        Self {
            query_id,
            locations,
            clients,
            local: None,
            reads: TaskReads::default(),
        }
    }

    /// Records the counters of every read in `reads` too (the task's own figures).
    pub(crate) fn with_reads(mut self, reads: TaskReads) -> Self {
        self.reads = reads;
        self
    }

    /// Reads partitions that `local` holds from memory: no IPC, no copy, no socket.
    pub(crate) fn with_local(mut self, local: LocalPartitions) -> Self {
        self.local = Some(local);
        self
    }
}

impl ExchangeSource for FlightExchangeSource {
    fn fetch(
        &self,
        stage: usize,
        task: usize,
        output_partition: usize,
        schema: SchemaRef,
        counters: &ReadCounters,
    ) -> Result<SendableRecordBatchStream> {
        let location = self.locations.get(&(stage as u64));
        let url = location
            .and_then(|l| l.task_urls.get(task))
            .ok_or_else(|| {
                exec_datafusion_err!("no location for stage {stage} task {task} in this task")
            })?;
        let ticket = PartitionTicket {
            query_id: self.query_id.clone(),
            stage: stage as u64,
            task: task as u64,
            partition: output_partition as u64,
            retain: location.is_some_and(|l| l.retain),
            attempt: location
                .and_then(|l| l.task_attempts.get(task).copied())
                .unwrap_or(0),
        };
        if let Some(local) = self.local.as_ref().filter(|l| &l.url == url) {
            let batches = local
                .store
                .read_partition(&ticket, true)
                .map_err(TaskFailure::into_datafusion)?
                .map_err(TaskFailure::into_datafusion);
            let batches = Box::pin(RecordBatchStreamAdapter::new(schema, batches));
            self.reads.record(counters);
            return Ok(counters.count(batches, ReadOrigin::Local));
        }
        let client = self
            .clients
            .get(url)
            .map_err(TaskFailure::into_datafusion)?;
        let batches = client.fetch_counted(ticket, schema, Some(counters.remote_bytes.clone()));
        self.reads.record(counters);
        Ok(counters.count(batches, ReadOrigin::Remote))
    }
}
