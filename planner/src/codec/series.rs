//! A `generate_series` scan that reads none of its columns (`count(*)`, the unread side
//! of a cross join) across datafusion-proto 55: it encodes the scan's projected schema
//! as the generator's own, so the decoded generator builds batches of one column
//! against a schema of none and fails (apache/datafusion#17830 is the same mismatch on
//! one node). Before encoding, such a scan becomes a projection over the unprojected
//! scan, which crosses the wire intact.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// `plan` with every projected generator scan rebuilt unprojected under a projection.
pub(super) fn unproject_generators(
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan)
        .transform_up(|node| {
            let Some(scan) = node.downcast_ref::<LazyMemoryExec>() else {
                return Ok(Transformed::no(node));
            };
            match unprojected(scan)? {
                Some(rebuilt) => Ok(Transformed::yes(rebuilt)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
}

/// The scan as a projection over its generators' full output, or `None` when it already
/// is its generators' output (or they produce nothing, so no batch can mismatch).
fn unprojected(scan: &LazyMemoryExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let [generator] = scan.generators().as_slice() else {
        // datafusion-proto only encodes single-generator scans; others fail there.
        return Ok(None);
    };
    // LazyMemoryExec keeps its projection private: the generator's first batch, from a
    // fresh copy, shows the schema it really produces.
    let probe = generator.read().reset_state();
    let Some(first) = probe.write().generate_next_batch()? else {
        return Ok(None);
    };
    let full_schema = first.schema();
    let projected = scan.schema();
    if full_schema.fields() == projected.fields() {
        return Ok(None);
    }
    let columns = projected
        .fields()
        .iter()
        .map(|field| {
            let index = full_schema.index_of(field.name()).map_err(|_| {
                internal_datafusion_err!(
                    "generator scan column {} is not among its generator's columns",
                    field.name()
                )
            })?;
            Ok(ProjectionExpr::new(
                Arc::new(Column::new(field.name(), index)),
                field.name().clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let fresh = generator.read().reset_state();
    let full = LazyMemoryExec::try_new(full_schema, vec![fresh])?;
    Ok(Some(Arc::new(ProjectionExec::try_new(
        columns,
        Arc::new(full),
    )?)))
}
