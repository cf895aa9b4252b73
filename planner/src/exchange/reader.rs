//! [`ExchangeReaderExec`]: the consumer half of an exchange. It pulls upstream task
//! outputs through the task's [`super::ExchangeSource`] and presents them as ordinary
//! DataFusion partitions with the properties the replaced subtree had, so the operators
//! above it (final aggregates, partitioned joins, merges) run unchanged.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err, plan_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

use super::{ExchangeSourceExt, ShuffleWriterExec};
use crate::ReadCounters;
use crate::read_counters::observed;

/// How reader partitions map onto upstream task outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeMode {
    /// Reader partition `p` is output partition `p` of every upstream task.
    Shuffle { upstream_tasks: usize },
    /// Reader partition `p` is the single output of upstream task `p`.
    Forward,
}

/// Reads one exchange. On the coordinator it keeps the upstream stage as its child (for
/// `EXPLAIN` and for finding stages); the copy shipped to executors is a leaf.
#[derive(Debug)]
pub struct ExchangeReaderExec {
    stage_id: usize,
    mode: ExchangeMode,
    properties: Arc<PlanProperties>,
    upstream: Option<Arc<dyn ExecutionPlan>>,
    /// For a sort-preserving shuffle: every upstream task's output partition is sorted
    /// on this ordering, and the reader merges them so that its partition is too.
    merge_by: Option<LexOrdering>,
    metrics: ExecutionPlanMetricsSet,
}

impl ExchangeReaderExec {
    pub fn new(
        stage_id: usize,
        mode: ExchangeMode,
        properties: Arc<PlanProperties>,
        upstream: Option<Arc<dyn ExecutionPlan>>,
    ) -> Self {
        Self {
            stage_id,
            mode,
            properties,
            upstream,
            merge_by: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same reader, merging its sorted upstream streams on `ordering` (shuffles
    /// only: a forward reader reads one stream).
    pub fn with_merge_by(mut self, ordering: Option<LexOrdering>) -> Self {
        self.merge_by = ordering;
        self
    }

    pub fn merge_by(&self) -> Option<&LexOrdering> {
        self.merge_by.as_ref()
    }

    pub fn stage_id(&self) -> usize {
        self.stage_id
    }

    pub fn mode(&self) -> ExchangeMode {
        self.mode
    }

    /// The upstream stage's writer, present on the coordinator only.
    pub fn upstream(&self) -> Option<&ShuffleWriterExec> {
        self.upstream.as_ref().and_then(|u| u.downcast_ref())
    }

    /// The same reader without its upstream subtree: what travels inside a task.
    pub fn detached(&self) -> Self {
        self.with_upstream(None)
    }

    /// The same reader over `upstream`.
    fn with_upstream(&self, upstream: Option<Arc<dyn ExecutionPlan>>) -> Self {
        Self::new(
            self.stage_id,
            self.mode,
            Arc::clone(&self.properties),
            upstream,
        )
        .with_merge_by(self.merge_by.clone())
    }

    /// One sorted stream out of the upstream tasks' sorted streams, as DataFusion's
    /// `SortPreservingMergeExec` merges its input partitions.
    fn merge_sorted(
        &self,
        streams: Vec<SendableRecordBatchStream>,
        ordering: &LexOrdering,
        baseline: BaselineMetrics,
        partition: usize,
        context: &Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let reservation = MemoryConsumer::new(format!(
            "ExchangeReaderExec[stage {}, partition {partition}]",
            self.stage_id
        ))
        .register(&context.runtime_env().memory_pool);
        StreamingMergeBuilder::new()
            .with_streams(streams)
            .with_schema(self.schema())
            .with_expressions(ordering)
            .with_metrics(baseline)
            .with_batch_size(context.session_config().batch_size())
            .with_reservation(reservation)
            .build()
    }
}

impl DisplayAs for ExchangeReaderExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let partitions = self.properties.partitioning.partition_count();
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "stage={}", self.stage_id)?;
            match self.mode {
                ExchangeMode::Shuffle { upstream_tasks } => {
                    writeln!(f, "mode=shuffle")?;
                    writeln!(f, "upstream_tasks={upstream_tasks}")?;
                }
                ExchangeMode::Forward => writeln!(f, "mode=forward")?,
            }
            writeln!(f, "partitioning={}", self.properties.partitioning)?;
            if let Some(ordering) = &self.merge_by {
                writeln!(f, "merging_on=[{ordering}]")?;
            }
            return Ok(());
        }
        match self.mode {
            ExchangeMode::Shuffle { upstream_tasks } => {
                write!(
                    f,
                    "ExchangeReaderExec: shuffle from stage {}, {upstream_tasks} tasks -> {partitions} partitions, {}",
                    self.stage_id, self.properties.partitioning
                )?;
                match &self.merge_by {
                    Some(ordering) => write!(f, ", merging on [{ordering}]"),
                    None => Ok(()),
                }
            }
            ExchangeMode::Forward => write!(
                f,
                "ExchangeReaderExec: forward from stage {}, {partitions} partitions",
                self.stage_id
            ),
        }
    }
}

impl ExecutionPlan for ExchangeReaderExec {
    fn name(&self) -> &str {
        "ExchangeReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.upstream.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let upstream = match children.len() {
            0 => None,
            1 => Some(children.swap_remove(0)),
            n => return plan_err!("ExchangeReaderExec takes at most one child, got {n}"),
        };
        Ok(Arc::new(self.with_upstream(upstream)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        if partition >= partitions {
            return internal_err!(
                "stage {} reader has {partitions} partitions, asked for {partition}",
                self.stage_id
            );
        }
        let Some(source) = context
            .session_config()
            .get_extension::<ExchangeSourceExt>()
        else {
            return exec_err!(
                "exchange from stage {} needs a Fletch exchange source",
                self.stage_id
            );
        };
        let schema = self.schema();
        let counters = ReadCounters::register(&self.metrics, partition);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Batches already buffered here arrive without a pause; a consumer that
        // never waits (a join emitting, an aggregate pulling) would never reach an
        // await point, and aborting the task on release would never take effect.
        // The tokio budget makes the stream yield now and then.
        let stream = match self.mode {
            ExchangeMode::Forward => observed(
                source
                    .0
                    .fetch(self.stage_id, partition, 0, schema, &counters)?,
                baseline,
            ),
            ExchangeMode::Shuffle { upstream_tasks } => {
                let streams = (0..upstream_tasks)
                    .map(|task| {
                        source.0.fetch(
                            self.stage_id,
                            task,
                            partition,
                            Arc::clone(&schema),
                            &counters,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                match &self.merge_by {
                    // The merge records its own output rows and compute time.
                    Some(ordering) if streams.len() > 1 => {
                        self.merge_sorted(streams, ordering, baseline, partition, &context)?
                    }
                    _ => {
                        // Interleave upstream tasks as their batches arrive: no task
                        // waits for a slower sibling.
                        let merged = futures::stream::select_all(streams);
                        let merged =
                            Box::pin(RecordBatchStreamAdapter::new(schema, merged.boxed()));
                        observed(merged, baseline)
                    }
                }
            }
        };
        Ok(make_cooperative(stream))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
