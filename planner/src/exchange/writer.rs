//! [`ShuffleWriterExec`]: the root of every stage an executor runs. Task `t` executes
//! input partition `t` and routes each batch to one of the stage's output partitions:
//! by DataFusion's own hash (so joins and aggregates agree with single-node plans), round
//! robin, or unchanged (`forward`, one output per task).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::BatchCoalescer;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use super::ExchangeSinkExt;

/// Writes one stage task's output into the task's [`super::ExchangeSink`].
#[derive(Debug)]
pub struct ShuffleWriterExec {
    stage_id: usize,
    input: Arc<dyn ExecutionPlan>,
    /// `None` forwards the input partition as the task's single output partition.
    output: Option<Partitioning>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleWriterExec {
    pub fn try_new(
        stage_id: usize,
        input: Arc<dyn ExecutionPlan>,
        output: Option<Partitioning>,
    ) -> Result<Self> {
        match &output {
            None | Some(Partitioning::Hash(_, _)) | Some(Partitioning::RoundRobinBatch(_)) => {}
            Some(other) => return plan_err!("cannot shuffle by {other}"),
        }
        Ok(Self {
            stage_id,
            input,
            output,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn stage_id(&self) -> usize {
        self.stage_id
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn output(&self) -> Option<&Partitioning> {
        self.output.as_ref()
    }

    /// Number of tasks: one per input partition.
    pub fn task_count(&self) -> usize {
        self.input.properties().partitioning.partition_count()
    }

    /// Number of output partitions each task produces.
    pub fn output_partition_count(&self) -> usize {
        self.output
            .as_ref()
            .map_or(1, Partitioning::partition_count)
    }
}

/// Round robin deals out whole batches; a load of fewer batches than partitions would
/// leave partitions empty (a 5000-row table in one fragment of two). Each batch is
/// first cut into one zero-copy slice per partition, so rows spread evenly.
fn round_robin_slices(batch: RecordBatch, partitions: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    if partitions < 2 || rows < partitions {
        return vec![batch];
    }
    let size = rows.div_ceil(partitions);
    (0..rows)
        .step_by(size)
        .map(|start| batch.slice(start, size.min(rows - start)))
        .collect()
}

/// What one task's writer has put into its sink: rows and bytes, and the time it
/// waited for a full output partition to have room (backpressure).
struct WrittenMetrics {
    rows: Count,
    bytes: Count,
    output_wait: Time,
}

impl WrittenMetrics {
    fn register(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            rows: MetricBuilder::new(metrics).output_rows(partition),
            bytes: MetricBuilder::new(metrics).output_bytes(partition),
            output_wait: MetricBuilder::new(metrics).subset_time("output_wait", partition),
        }
    }

    async fn write(
        &self,
        sink: &dyn super::ExchangeSink,
        output_partition: usize,
        batch: RecordBatch,
    ) -> Result<()> {
        self.rows.add(batch.num_rows());
        self.bytes.add(batch.get_array_memory_size());
        let waiting = Instant::now();
        let written = sink.write(output_partition, batch).await;
        self.output_wait.add_elapsed(waiting);
        written
    }
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "stage={}", self.stage_id)?;
            writeln!(f, "tasks={}", self.task_count())?;
            return match &self.output {
                None => writeln!(f, "output=forward"),
                Some(p) => writeln!(f, "output={p}"),
            };
        }
        write!(
            f,
            "[Stage {}] ShuffleWriterExec: tasks={}, output=",
            self.stage_id,
            self.task_count()
        )?;
        match &self.output {
            None => write!(f, "forward"),
            Some(p) => write!(f, "{p}"),
        }
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let Some(Partitioning::Hash(exprs, _)) = &self.output {
            for expr in exprs {
                if f(expr)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return plan_err!("ShuffleWriterExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(
            self.stage_id,
            children.swap_remove(0),
            self.output.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// Drives input partition `partition` into the task's sink; the returned stream
    /// yields no rows and ends when every row has been written.
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(sink) = context.session_config().get_extension::<ExchangeSinkExt>() else {
            return exec_err!(
                "stage {} can only run inside a Fletch executor (no exchange sink)",
                self.stage_id
            );
        };
        let sink = Arc::clone(&sink.0);
        let timer = MetricBuilder::new(&self.metrics).subset_time("repart_time", partition);
        let written = WrittenMetrics::register(&self.metrics, partition);
        let mut partitioner = match &self.output {
            None => None,
            Some(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                timer,
                partition,
                self.task_count(),
            )?),
        };
        let batch_size = context.session_config().batch_size();
        let round_robin = match &self.output {
            Some(Partitioning::RoundRobinBatch(n)) => *n,
            _ => 0,
        };
        let mut input = self.input.execute(partition, context)?;
        let schema = self.schema();
        // One coalescer per output: hash partitioning cuts every batch into small pieces,
        // and filtered or taken string views still point at their source's whole buffers
        // (which IPC would ship in full); coalescing rebuilds compact, full-size batches.
        let mut outputs: Vec<BatchCoalescer> = (0..self.output_partition_count())
            .map(|_| BatchCoalescer::new(Arc::clone(&schema), batch_size))
            .collect();
        let drive = async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                let parts = match partitioner.as_mut() {
                    None => vec![(0, batch)],
                    Some(partitioner) => {
                        let mut parts = Vec::new();
                        for slice in round_robin_slices(batch, round_robin) {
                            for part in partitioner.partition_iter(slice)? {
                                parts.push(part?);
                            }
                        }
                        parts
                    }
                };
                for (p, part) in parts {
                    outputs[p].push_batch(part)?;
                    while let Some(full) = outputs[p].next_completed_batch() {
                        written.write(sink.as_ref(), p, full).await?;
                    }
                }
            }
            for (p, output) in outputs.iter_mut().enumerate() {
                output.finish_buffered_batch()?;
                while let Some(rest) = output.next_completed_batch() {
                    written.write(sink.as_ref(), p, rest).await?;
                }
            }
            Ok(())
        };
        let empty = futures::stream::once(drive).filter_map(|r: Result<()>| async move {
            match r {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, empty)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
