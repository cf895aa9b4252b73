//! [`ReadCounters`]: what one operator partition reads through an exchange or from table
//! fragments, kept apart by where it came from (this executor's memory or another
//! process over Flight), and how long it waited for it. The operator registers them in
//! its metrics set, so `EXPLAIN ANALYZE` shows them; the executor keeps a handle on the
//! same counters, so each task reports its own reads.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::format::MetricCategory;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, RecordOutput, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};

/// Where a read's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOrigin {
    /// This executor's own memory: no copy, no socket.
    Local,
    /// Another process, over Flight.
    Remote,
}

/// Rows and bytes read, by origin, and the time spent waiting for input.
#[derive(Debug, Clone, Default)]
pub struct ReadCounters {
    pub local_rows: Count,
    /// Arrow memory size of the batches read locally.
    pub local_bytes: Count,
    pub remote_rows: Count,
    /// Encoded IPC bytes received (counted by the Flight client as they arrive).
    pub remote_bytes: Count,
    /// From asking for the next batch to getting it, when it was not there yet.
    pub input_wait: Time,
}

impl ReadCounters {
    /// Counters of `partition`, registered in `metrics`.
    pub fn register(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let rows = || MetricBuilder::new(metrics).with_category(MetricCategory::Rows);
        let bytes = || MetricBuilder::new(metrics).with_category(MetricCategory::Bytes);
        Self {
            local_rows: rows().counter("rows_local", partition),
            local_bytes: bytes().counter("bytes_local", partition),
            remote_rows: rows().counter("rows_remote", partition),
            remote_bytes: bytes().counter("bytes_remote", partition),
            input_wait: MetricBuilder::new(metrics).subset_time("input_wait", partition),
        }
    }

    /// `stream`, counting each batch as read from `origin` (remote bytes excepted: the
    /// Flight client counts those on the wire) and the time spent waiting for it.
    pub fn count(
        &self,
        stream: SendableRecordBatchStream,
        origin: ReadOrigin,
    ) -> SendableRecordBatchStream {
        Box::pin(CountedRead {
            schema: stream.schema(),
            inner: stream,
            counters: self.clone(),
            origin,
            waiting_since: None,
        })
    }

    /// Adds `other`'s figures to these.
    pub fn add(&self, other: &ReadCounters) {
        self.local_rows.add(other.local_rows.value());
        self.local_bytes.add(other.local_bytes.value());
        self.remote_rows.add(other.remote_rows.value());
        self.remote_bytes.add(other.remote_bytes.value());
        self.input_wait.add(&other.input_wait);
    }

    /// Rows read from either origin.
    pub fn rows(&self) -> usize {
        self.local_rows.value() + self.remote_rows.value()
    }
}

/// `stream`, its rows counted as `baseline`'s output.
pub(crate) fn observed(
    stream: SendableRecordBatchStream,
    baseline: BaselineMetrics,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let counted = stream.inspect(move |batch| {
        if let Ok(batch) = batch {
            batch.record_output(&baseline);
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, counted))
}

struct CountedRead {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    counters: ReadCounters,
    origin: ReadOrigin,
    waiting_since: Option<Instant>,
}

impl Stream for CountedRead {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Pending => {
                if self.waiting_since.is_none() {
                    self.waiting_since = Some(Instant::now());
                }
            }
            Poll::Ready(item) => {
                if let Some(since) = self.waiting_since.take() {
                    self.counters.input_wait.add_elapsed(since);
                }
                if let Some(Ok(batch)) = item {
                    match self.origin {
                        ReadOrigin::Local => {
                            self.counters.local_rows.add(batch.num_rows());
                            self.counters.local_bytes.add(batch.get_array_memory_size());
                        }
                        ReadOrigin::Remote => self.counters.remote_rows.add(batch.num_rows()),
                    }
                }
            }
        }
        polled
    }
}

impl RecordBatchStream for CountedRead {
    fn schema(&self) -> SchemaRef {
        std::sync::Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    use super::*;

    fn batches(rows: &[usize]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batches: Vec<Result<RecordBatch>> = rows
            .iter()
            .map(|&n| {
                let column = Int32Array::from_iter_values(0..n as i32);
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(column)],
                )?)
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        ))
    }

    #[tokio::test]
    async fn reads_are_counted_by_origin_into_the_registered_metrics() {
        let metrics = ExecutionPlanMetricsSet::new();
        let counters = ReadCounters::register(&metrics, 3);
        let local: Vec<RecordBatch> = counters
            .count(batches(&[10, 5]), ReadOrigin::Local)
            .try_collect()
            .await
            .expect("local read");
        let remote: Vec<RecordBatch> = counters
            .count(batches(&[7]), ReadOrigin::Remote)
            .try_collect()
            .await
            .expect("remote read");
        assert_eq!(local.len() + remote.len(), 3);
        let set = metrics.clone_inner();
        let named = |name: &str| set.sum_by_name(name).map(|v| v.as_usize());
        assert_eq!(named("rows_local"), Some(15));
        assert_eq!(named("rows_remote"), Some(7));
        let local_bytes: usize = local.iter().map(RecordBatch::get_array_memory_size).sum();
        assert_eq!(named("bytes_local"), Some(local_bytes));
        assert_eq!(
            named("bytes_remote"),
            Some(0),
            "the Flight client counts those"
        );
        assert!(set.iter().all(|m| m.partition() == Some(3)));

        let task = ReadCounters::default();
        task.add(&counters);
        assert_eq!(task.rows(), 22);
    }
}
