//! [`DistributedExec`]: the root of every distributed plan. It holds the stages, each
//! encoded once at planning time, and on `execute` hands them to the [`Coordinator`],
//! which launches the tasks and streams the final stage back.

use std::fmt;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, displayable,
};
use datafusion::prelude::SessionContext;
use fletch_planner::{
    DistributedPlan, NotDistributable, check_same_properties, decode_stage_plan, distribute,
    encode_stage_plan,
};

use crate::coordinator::Coordinator;
use crate::query_record::QueryRecord;
use crate::query_run::ServedResult;

/// A query cut into stages, ready to run on the cluster.
#[derive(Debug)]
pub struct DistributedExec {
    plan: Arc<DistributedPlan>,
    /// `encoded[i]` is stage `i + 1`'s plan.
    encoded: Arc<Vec<Bytes>>,
}

impl DistributedExec {
    /// Cuts `plan` into stages under the session's `config` and encodes each, or says
    /// why the executors cannot run it.
    pub fn try_new(
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> std::result::Result<Self, NotDistributable> {
        let plan = distribute(plan, config).map_err(NotDistributable::uncut)?;
        let encoded = plan
            .stages
            .iter()
            .map(|s| encode_stage_plan(&s.plan).map_err(|e| NotDistributable::unencodable(s, e)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            plan: Arc::new(plan),
            encoded: Arc::new(encoded),
        })
    }

    pub fn distributed_plan(&self) -> &DistributedPlan {
        &self.plan
    }

    /// Decodes every stage as an executor would and fails, naming the node, unless each
    /// states the properties the coordinator planned it with (see
    /// [`check_same_properties`]). Debug builds run it on every query.
    pub fn check_round_trip(&self) -> Result<()> {
        static DECODE: LazyLock<Arc<TaskContext>> =
            LazyLock::new(|| SessionContext::new().task_ctx());
        for (stage, bytes) in self.plan.stages.iter().zip(self.encoded.iter()) {
            let decoded = decode_stage_plan(bytes, &DECODE)?;
            check_same_properties(stage.id, &stage.plan, &decoded).map_err(|e| {
                e.context(format!(
                    "stage {} on the coordinator:\n{}as decoded:\n{}",
                    stage.id,
                    displayable(stage.plan.as_ref()).indent(true),
                    displayable(decoded.as_ref()).indent(true)
                ))
            })?;
        }
        Ok(())
    }

    /// Encoded size of each stage's plan, in bytes.
    pub fn stage_plan_sizes(&self) -> Vec<usize> {
        self.encoded.iter().map(|b| b.len()).collect()
    }
}

impl DistributedExec {
    /// Starts the query so that a client reads its result straight from the executor
    /// of its final task; see [`Coordinator::run_served`].
    pub(crate) fn serve(
        &self,
        context: Arc<TaskContext>,
    ) -> Result<(SendableRecordBatchStream, ServedResult)> {
        let Some(coordinator) = context.session_config().get_extension::<Coordinator>() else {
            return exec_err!("a distributed plan needs a Fletch session (no coordinator)");
        };
        coordinator.run_served(Arc::clone(&self.plan), Arc::clone(&self.encoded), context)
    }
}

impl DistributedExec {
    /// Runs the query as `execute` does, recording every task attempt in `record`.
    pub(crate) fn execute_recorded(
        &self,
        context: Arc<TaskContext>,
        record: Arc<QueryRecord>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(coordinator) = context.session_config().get_extension::<Coordinator>() else {
            return exec_err!("a distributed plan needs a Fletch session (no coordinator)");
        };
        coordinator.run_recorded(
            Arc::clone(&self.plan),
            Arc::clone(&self.encoded),
            context,
            record,
        )
    }
}

impl DisplayAs for DistributedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let tasks: usize = self.plan.stages.iter().map(|s| s.task_count).sum();
        if t == DisplayFormatType::TreeRender {
            writeln!(f, "stages={}", self.plan.stages.len())?;
            return writeln!(f, "tasks={tasks}");
        }
        write!(
            f,
            "DistributedExec: stages={}, tasks={tasks}",
            self.plan.stages.len()
        )
    }
}

impl ExecutionPlan for DistributedExec {
    fn name(&self) -> &str {
        "DistributedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.plan.root.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.plan.root]
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
        match children.as_slice() {
            [child] if Arc::ptr_eq(child, &self.plan.root) => Ok(self),
            _ => internal_err!("a distributed plan's stages cannot be replaced after planning"),
        }
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

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("DistributedExec has one partition, asked for {partition}");
        }
        let Some(coordinator) = context.session_config().get_extension::<Coordinator>() else {
            return exec_err!("a distributed plan needs a Fletch session (no coordinator)");
        };
        coordinator.run(Arc::clone(&self.plan), Arc::clone(&self.encoded), context)
    }
}
