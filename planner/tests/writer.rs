//! The shuffle writer's output: each row lands in the partition DataFusion's own hash
//! repartition puts it in, every row exactly once, in compact batches (string views no longer pin their source's buffers,
//! which IPC would otherwise ship once per output partition).

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringViewArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, collect_partitioned};
use datafusion::prelude::SessionConfig;
use fletch_planner::{ExchangeSink, ExchangeSinkExt, ShuffleWriterExec};
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

#[derive(Debug, Default)]
struct RecordingSink {
    written: Mutex<Vec<(usize, RecordBatch)>>,
}

impl ExchangeSink for RecordingSink {
    fn write(&self, output_partition: usize, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        self.written.lock().push((output_partition, batch));
        Box::pin(async { Ok(()) })
    }
}

fn input() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("s", DataType::Utf8View, false),
    ]));
    let keys = Int64Array::from_iter_values(0..4000);
    let strings = StringViewArray::from_iter_values((0..4000).map(|i| format!("{i:0>60}")));
    RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(strings)]).expect("batch")
}

#[tokio::test]
async fn hash_shuffle_writes_every_row_once_in_compact_batches() {
    let batch = input();
    let schema = batch.schema();
    let source =
        MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], Arc::clone(&schema), None)
            .expect("memory source");
    let partitions = 8;
    let output = Partitioning::Hash(vec![col("k", &schema).expect("column")], partitions);
    let writer = ShuffleWriterExec::try_new(1, source, Some(output)).expect("writer");

    let sink = Arc::new(RecordingSink::default());
    let config = SessionConfig::new().with_extension(Arc::new(ExchangeSinkExt(
        Arc::clone(&sink) as Arc<dyn ExchangeSink>
    )));
    let ctx = Arc::new(TaskContext::default().with_session_config(config));
    let mut stream = writer.execute(0, ctx).expect("execute");
    while let Some(item) = stream.next().await {
        item.expect("no error");
    }

    let written = sink.written.lock().clone();
    let rows: usize = written.iter().map(|(_, b)| b.num_rows()).sum();
    assert_eq!(rows, batch.num_rows());
    let outputs_used: std::collections::HashSet<_> = written.iter().map(|(p, _)| *p).collect();
    assert!(outputs_used.len() > 1 && outputs_used.iter().all(|p| *p < partitions));
    let mut keys: Vec<i64> = written.iter().flat_map(|(_, b)| keys_of(b)).collect();
    keys.sort();
    assert_eq!(keys, (0..4000).collect::<Vec<_>>());

    // Each row in the output partition DataFusion's own hash repartition gives it, so
    // a shuffled side meets the fragments and partitions DataFusion planned with.
    let expected = datafusion_partition_keys(&batch, partitions).await;
    let mut actual = vec![Vec::new(); partitions];
    for (partition, b) in written.iter() {
        actual[*partition].extend(keys_of(b));
    }
    for keys in &mut actual {
        keys.sort();
    }
    assert_eq!(actual, expected);

    // String bytes each output carries: before coalescing, every output's views pointed
    // at the input's whole data buffer, so the outputs carried it once per partition.
    let string_bytes = |b: &RecordBatch| -> usize {
        let views = b
            .column(1)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .expect("views");
        views.data_buffers().iter().map(|d| d.len()).sum()
    };
    let written_bytes: usize = written.iter().map(|(_, b)| string_bytes(b)).sum();
    assert!(
        written_bytes < 2 * string_bytes(&batch),
        "outputs carry {written_bytes} string bytes for an input of {}",
        string_bytes(&batch)
    );
    assert!(
        written
            .iter()
            .all(|(_, b)| b.column(1).len() == b.num_rows())
    );
}

fn keys_of(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("keys")
        .values()
        .to_vec()
}

/// The sorted keys of each output partition of DataFusion's `RepartitionExec` hashing
/// `batch` on `k` into `partitions`.
async fn datafusion_partition_keys(batch: &RecordBatch, partitions: usize) -> Vec<Vec<i64>> {
    let schema = batch.schema();
    let source =
        MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], Arc::clone(&schema), None)
            .expect("memory source");
    let hash = Partitioning::Hash(vec![col("k", &schema).expect("column")], partitions);
    let repartition = Arc::new(RepartitionExec::try_new(source, hash).expect("repartition"));
    let outputs = collect_partitioned(repartition, Arc::new(TaskContext::default()))
        .await
        .expect("repartitioned");
    outputs
        .iter()
        .map(|batches| {
            let mut keys: Vec<i64> = batches.iter().flat_map(keys_of).collect();
            keys.sort();
            keys
        })
        .collect()
}
