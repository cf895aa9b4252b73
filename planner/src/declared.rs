//! [`DeclaredPropertiesExec`]: states, on an executor, the properties its input had on
//! the coordinator. datafusion-proto rebuilds some leaves without the orderings their
//! planner gave them (`generate_series` decodes unsorted although it still produces
//! sorted rows), and the operators above were planned on those orderings. The wrapper
//! travels with the properties and passes the input's rows through untouched.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};

#[derive(Debug)]
pub struct DeclaredPropertiesExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl DeclaredPropertiesExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, properties: Arc<PlanProperties>) -> Self {
        Self { input, properties }
    }

    /// `plan` wrapped, with its own properties declared, if it is a leaf whose
    /// properties datafusion-proto does not carry; otherwise `plan` itself.
    pub fn where_decoding_loses(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        if plan.is::<LazyMemoryExec>() && !plan.properties().eq_properties.oeq_class().is_empty() {
            let properties = Arc::clone(plan.properties());
            Arc::new(Self::new(plan, properties))
        } else {
            plan
        }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for DeclaredPropertiesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeclaredPropertiesExec: orderings={}",
            self.properties.eq_properties.oeq_class()
        )
    }
}

impl ExecutionPlan for DeclaredPropertiesExec {
    fn name(&self) -> &str {
        "DeclaredPropertiesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        if children.len() != 1 {
            return plan_err!(
                "DeclaredPropertiesExec takes one child, got {}",
                children.len()
            );
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            Arc::clone(&self.properties),
        )))
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
        self.input.execute(partition, context)
    }
}
