//! [`FragmentScanExec`]: a scan of an in-memory table, one partition per fragment.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics, exec_err, internal_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

use super::{FragmentStoreExt, TableSnapshot};
use crate::ReadCounters;
use crate::read_counters::observed;

/// The statistics of a whole table from its fragments'. Empty fragments are left out:
/// they know no min or max, and would make the table's unknown too.
pub fn merge_fragment_statistics(fragments: &[Statistics], schema: &Schema) -> Result<Statistics> {
    let non_empty: Vec<&Statistics> = fragments
        .iter()
        .filter(|s| s.num_rows != Precision::Exact(0))
        .collect();
    match non_empty.as_slice() {
        [] => Ok(fragments
            .first()
            .cloned()
            .unwrap_or_else(|| Statistics::new_unknown(schema))),
        _ => Statistics::try_merge_iter(non_empty, schema),
    }
}

/// Reads a [`TableSnapshot`]; partition `f` is fragment `f`. When the projection keeps
/// every hash key, the output declares the table's hash partitioning, so DataFusion
/// plans joins and aggregates on those keys without a shuffle.
#[derive(Debug)]
pub struct FragmentScanExec {
    snapshot: Arc<TableSnapshot>,
    projection: Option<Vec<usize>>,
    /// Per fragment, over the table's full schema; known on the coordinator only.
    statistics: Option<Arc<Vec<Statistics>>>,
    projected: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl FragmentScanExec {
    pub fn try_new(
        snapshot: Arc<TableSnapshot>,
        projection: Option<Vec<usize>>,
        statistics: Option<Arc<Vec<Statistics>>>,
    ) -> Result<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(snapshot.schema.project(p)?),
            None => Arc::clone(&snapshot.schema),
        };
        let fragments = snapshot.layout.fragment_count();
        if snapshot.loads.len() != fragments {
            return plan_err!(
                "table {} snapshot lists pieces for {} fragments, its layout has {fragments}",
                snapshot.table,
                snapshot.loads.len()
            );
        }
        if let Some(stats) = &statistics
            && stats.len() != fragments
        {
            return plan_err!(
                "table {} has statistics for {} fragments, not {fragments}",
                snapshot.table,
                stats.len()
            );
        }
        let positions = |column: usize| match &projection {
            Some(p) => p.iter().position(|&c| c == column),
            None => Some(column),
        };
        let partitioning = snapshot.layout.partitioning(&projected, &positions);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&projected)),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            snapshot,
            projection,
            statistics,
            projected,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn snapshot(&self) -> &Arc<TableSnapshot> {
        &self.snapshot
    }

    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// Executors holding each partition's fragment, preferred first.
    pub fn holders(&self) -> &[Vec<String>] {
        &self.snapshot.layout.holders
    }
}

impl DisplayAs for FragmentScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .projected
            .fields()
            .iter()
            .map(|c| c.name().as_str())
            .collect();
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "table={}", self.snapshot.table)?;
            writeln!(f, "fragments={}", self.snapshot.layout.fragment_count())?;
            return writeln!(f, "projection=[{}]", columns.join(", "));
        }
        write!(
            f,
            "FragmentScanExec: table={}, fragments={}, projection=[{}], partitioning={}",
            self.snapshot.table,
            self.snapshot.layout.fragment_count(),
            columns.join(", "),
            self.properties.partitioning
        )
    }
}

impl ExecutionPlan for FragmentScanExec {
    fn name(&self) -> &str {
        "FragmentScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return plan_err!("FragmentScanExec has no children");
        }
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return plan_err!("FragmentScanExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.snapshot.layout.fragment_count() {
            return internal_err!(
                "table {} has {} fragments, asked for {partition}",
                self.snapshot.table,
                self.snapshot.layout.fragment_count()
            );
        }
        let Some(store) = context.session_config().get_extension::<FragmentStoreExt>() else {
            return exec_err!(
                "table {} can only be scanned inside a Fletch executor (no fragment store)",
                self.snapshot.table
            );
        };
        let schema = Arc::clone(&self.snapshot.schema);
        let counters = ReadCounters::register(&self.metrics, partition);
        let pieces = self
            .snapshot
            .pieces(partition)
            .map(|piece| store.0.read(&piece, Arc::clone(&schema), &counters))
            .collect::<Result<Vec<_>>>()?;
        let projection = self.projection.clone();
        let batches = futures::stream::iter(pieces)
            .flatten()
            .and_then(move |batch| {
                let projected = match &projection {
                    Some(p) => batch.project(p).map_err(Into::into),
                    None => Ok(batch),
                };
                async move { projected }
            });
        // Fragments are in memory: without the tokio budget a scan never waits, and
        // a released task could not be aborted (see the exchange reader).
        let batches = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.projected),
            batches,
        ));
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        Ok(make_cooperative(observed(batches, baseline)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let Some(stats) = &self.statistics else {
            return Ok(Arc::new(Statistics::new_unknown(&self.projected)));
        };
        let merged = match partition {
            Some(f) => match stats.get(f) {
                Some(s) => s.clone(),
                None => return internal_err!("no fragment {f} in table {}", self.snapshot.table),
            },
            None => merge_fragment_statistics(stats, &self.snapshot.schema)?,
        };
        Ok(Arc::new(merged.project(self.projection.as_ref())))
    }
}
