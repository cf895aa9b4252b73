//! The exchange operators: a [`ShuffleWriterExec`] ends every stage but the client's,
//! an [`ExchangeReaderExec`] starts the consumer side.
//!
//! ```text
//!   stage 1, task 0 ──┐ writer: hash into N outputs      reader partition p pulls
//!   stage 1, task 1 ──┼──────────────────────────────►   output p of every task (shuffle)
//!   stage 1, task 2 ──┘                                  or output 0 of task p (forward)
//! ```

mod reader;
mod writer;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::SendableRecordBatchStream;
use futures::future::BoxFuture;

pub use reader::{ExchangeMode, ExchangeReaderExec};

use crate::{ReadCounters, StageId};
pub use writer::ShuffleWriterExec;

/// Where a running task's writer puts its output partitions. The executor provides one
/// per task; the writer never knows whether the bytes stay in memory or travel.
pub trait ExchangeSink: Debug + Send + Sync {
    /// Appends `batch` to output partition `output_partition` of this task. The future
    /// completes when the partition has room: a slow reader holds the writer back.
    fn write(&self, output_partition: usize, batch: RecordBatch) -> BoxFuture<'_, Result<()>>;
}

/// Where readers pull upstream output partitions from.
pub trait ExchangeSource: Debug + Send + Sync {
    /// Streams output partition `output_partition` of task `task` of stage `stage`,
    /// counting what it reads into `counters`.
    fn fetch(
        &self,
        stage: StageId,
        task: usize,
        output_partition: usize,
        schema: SchemaRef,
        counters: &ReadCounters,
    ) -> Result<SendableRecordBatchStream>;
}

/// `SessionConfig` extension carrying the task's [`ExchangeSink`].
#[derive(Debug, Clone)]
pub struct ExchangeSinkExt(pub Arc<dyn ExchangeSink>);

/// `SessionConfig` extension carrying the [`ExchangeSource`] readers use.
#[derive(Debug, Clone)]
pub struct ExchangeSourceExt(pub Arc<dyn ExchangeSource>);
