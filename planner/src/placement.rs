//! Where a stage's tasks would rather run: on an executor that holds the fragment
//! the task reads or writes.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use crate::exchange::ShuffleWriterExec;
use crate::fragment::{FragmentScanExec, FragmentWriterExec};

/// For a stage plan (rooted at its [`ShuffleWriterExec`]): `holders[t]` are the
/// executors holding the fragment task `t` reads or writes, preferred first; `None`
/// when the stage's tasks touch no fragment one to one.
///
/// Task `t` runs partition `t` of the writer's input, and partition `t` of every node
/// below it as long as each node maps its partition `i` to partition `i` of its child
/// (no union, which renumbers, and no change of partition count).
pub fn preferred_holders(stage_plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<Vec<String>>> {
    let writer = stage_plan.downcast_ref::<ShuffleWriterExec>()?;
    let tasks = writer.task_count();
    find(writer.input(), tasks)
}

fn find(plan: &Arc<dyn ExecutionPlan>, tasks: usize) -> Option<Vec<Vec<String>>> {
    if plan.properties().partitioning.partition_count() != tasks {
        return None;
    }
    if let Some(scan) = plan.downcast_ref::<FragmentScanExec>() {
        return Some(scan.holders().to_vec());
    }
    if let Some(writer) = plan.downcast_ref::<FragmentWriterExec>() {
        return Some(writer.layout().holders.clone());
    }
    if plan.is::<UnionExec>() {
        return None;
    }
    plan.children().into_iter().find_map(|c| find(c, tasks))
}
