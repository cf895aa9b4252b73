//! An aggregate over `GROUPING SETS (())` (one empty grouping set) across
//! datafusion-proto 55: it flattens the sets into one list of flags per expression, so
//! with no expressions the number of sets is lost and the aggregate decodes with no
//! set at all, answering no rows. Decoding restores the one empty set; a plan with
//! several empty sets, whose count cannot be restored, is refused before it is sent.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, not_impl_err};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};

/// Fails on an aggregate whose empty grouping sets the codec would not keep.
pub(super) fn check_encodable(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    plan.apply(|node| {
        if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
            let group_by = aggregate.group_expr();
            if group_by.expr().is_empty() && group_by.groups().len() > 1 {
                return not_impl_err!(
                    "an aggregate over {} empty grouping sets cannot be distributed: \
                     datafusion-proto keeps only whether there is one",
                    group_by.groups().len()
                );
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map(|_| ())
}

/// Gives back the one empty grouping set datafusion-proto dropped.
pub(super) fn restore_empty_set(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        let group_by = aggregate.group_expr();
        if !(group_by.has_grouping_set()
            && group_by.expr().is_empty()
            && group_by.groups().is_empty())
        {
            return Ok(Transformed::no(node));
        }
        let one_empty_set = PhysicalGroupBy::new(vec![], vec![], vec![vec![]], true);
        let restored = AggregateExec::try_new(
            *aggregate.mode(),
            one_empty_set,
            aggregate.aggr_expr().to_vec(),
            aggregate.filter_expr().to_vec(),
            Arc::clone(aggregate.input()),
            aggregate.input_schema(),
        )?
        .with_limit_options(aggregate.limit_options());
        Ok(Transformed::yes(
            Arc::new(restored) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}
