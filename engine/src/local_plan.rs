//! [`LocalPlanExec`]: marks a plan that runs whole on the coordinator and says why, so
//! `EXPLAIN` shows what the log said and nobody mistakes it for a distributed run.

use std::fmt;
use std::sync::Arc;

use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use fletch_planner::NotDistributable;

/// Runs its input on the coordinator, unchanged; only its display differs.
#[derive(Debug)]
pub struct LocalPlanExec {
    input: Arc<dyn ExecutionPlan>,
    reason: NotDistributable,
}

impl LocalPlanExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, reason: NotDistributable) -> Self {
        Self { input, reason }
    }

    pub fn reason(&self) -> &NotDistributable {
        &self.reason
    }
}

impl DisplayAs for LocalPlanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "reason={}", self.reason),
            _ => write!(f, "LocalPlanExec: on the coordinator, as {}", self.reason),
        }
    }
}

impl ExecutionPlan for LocalPlanExec {
    fn name(&self) -> &str {
        "LocalPlanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(input, self.reason.clone()))),
            Err(children) => internal_err!("LocalPlanExec has one input, given {}", children.len()),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
