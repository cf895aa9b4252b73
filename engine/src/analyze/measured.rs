//! The distributed plan as `EXPLAIN ANALYZE` shows it: every node of the coordinator's
//! plan under a [`MeasuredExec`] that displays as the node does and carries the metrics
//! measured for it, so DataFusion's own renderer (and its `analyze_level` and
//! `analyze_categories` filters) prints a distributed plan as it prints a local one.
//!
//! Nodes of the coordinator's part carry their own metrics (they ran here). A stage's
//! nodes carry what the executors reported: each plan instance's latest snapshot, node
//! by node in pre-order, summed over instances by the renderer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use fletch_planner::{ExchangeReaderExec, StageId};
use fletch_transport::metrics_wire::decode_metrics;
use fletch_transport::protocol::OperatorMetrics;

use crate::query_record::QueryRecord;

/// A plan node for display only: shows as `node`, over `children`, with `metrics`.
#[derive(Debug)]
pub(crate) struct MeasuredExec {
    node: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
    metrics: Option<MetricsSet>,
}

/// The node `node` shows, when it is a [`MeasuredExec`]; else `node` itself.
pub(crate) fn original(node: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    match node.downcast_ref::<MeasuredExec>() {
        Some(measured) => &measured.node,
        None => node,
    }
}

impl DisplayAs for MeasuredExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.node.fmt_as(t, f)
    }
}

impl ExecutionPlan for MeasuredExec {
    fn name(&self) -> &str {
        self.node.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.node.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        internal_err!("a measured plan is for display only")
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        internal_err!("a measured plan is for display only")
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        internal_err!("a measured plan is for display only")
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.metrics.clone()
    }
}

/// The operator snapshots of each stage of the record's last run: for each stage,
/// one list per plan instance (executor and attempt), nodes in pre-order.
type StageSnapshots = HashMap<StageId, Vec<Vec<OperatorMetrics>>>;

fn last_run_snapshots(record: &QueryRecord) -> StageSnapshots {
    let instances = record.instances();
    let last = instances.iter().map(|(key, _)| key.run).max().unwrap_or(0);
    let mut stages: StageSnapshots = HashMap::new();
    for (key, operators) in instances {
        if key.run == last {
            stages.entry(key.stage).or_default().push(operators);
        }
    }
    stages
}

/// `root` (the coordinator's part of a distributed plan, whose exchange readers hold
/// their upstream stages) with every node measured.
pub(crate) fn measured_plan(
    root: &Arc<dyn ExecutionPlan>,
    record: &QueryRecord,
) -> Arc<dyn ExecutionPlan> {
    let snapshots = last_run_snapshots(record);
    measure_local(root, &snapshots)
}

/// A node of the coordinator's part: its own metrics.
fn measure_local(
    node: &Arc<dyn ExecutionPlan>,
    snapshots: &StageSnapshots,
) -> Arc<dyn ExecutionPlan> {
    let children = match node.downcast_ref::<ExchangeReaderExec>() {
        Some(reader) => upstream_stage(reader, snapshots),
        None => node
            .children()
            .into_iter()
            .map(|child| measure_local(child, snapshots))
            .collect(),
    };
    Arc::new(MeasuredExec {
        node: Arc::clone(node),
        children,
        metrics: node.metrics(),
    })
}

/// The stage `reader` reads, measured from its snapshots.
fn upstream_stage(
    reader: &ExchangeReaderExec,
    snapshots: &StageSnapshots,
) -> Vec<Arc<dyn ExecutionPlan>> {
    let Some(upstream) = reader.children().into_iter().next() else {
        return Vec::new();
    };
    let stage = reader.stage_id();
    let instances = snapshots.get(&stage).map(Vec::as_slice).unwrap_or_default();
    let mut position = 0;
    vec![measure_stage_node(
        upstream,
        instances,
        &mut position,
        snapshots,
    )]
}

/// A node of a stage, at pre-order `position` within it: the metrics each instance
/// reported for that position, if the instance's node there has the same name (a
/// snapshot that does not line up is left out rather than shown on the wrong node).
fn measure_stage_node(
    node: &Arc<dyn ExecutionPlan>,
    instances: &[Vec<OperatorMetrics>],
    position: &mut usize,
    snapshots: &StageSnapshots,
) -> Arc<dyn ExecutionPlan> {
    let at = *position;
    *position += 1;
    let mut metrics = MetricsSet::new();
    for operators in instances {
        if let Some(reported) = operators.get(at).filter(|op| op.name == node.name()) {
            for metric in decode_metrics(&reported.metrics).iter() {
                metrics.push(Arc::clone(metric));
            }
        }
    }
    let children = match node.downcast_ref::<ExchangeReaderExec>() {
        // A stage ends at its readers: what is above them in the tree is another stage.
        Some(reader) => upstream_stage(reader, snapshots),
        None => node
            .children()
            .into_iter()
            .map(|child| measure_stage_node(child, instances, position, snapshots))
            .collect(),
    };
    Arc::new(MeasuredExec {
        node: Arc::clone(node),
        children,
        metrics: Some(metrics),
    })
}
