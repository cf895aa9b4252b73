//! Whether a decoded stage plan means on an executor what it meant on the coordinator:
//! node by node, the same operators stating the same partitioning, orderings,
//! equivalences and constants. The coordinator's optimiser chose every operator for
//! the properties of its input; an executor's instance that sees weaker ones (an
//! ordering lost at an exchange reader, say) fails later, far from the cause, or
//! silently computes something else.

use std::sync::Arc;

use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::StageId;
use crate::declared::DeclaredPropertiesExec;

/// Fails, naming the deepest node that differs, unless at every node `decoded` states at
/// least the properties `original` states: the same partitioning, and every ordering,
/// constant and equivalence.
pub fn check_same_properties(
    stage: StageId,
    original: &Arc<dyn ExecutionPlan>,
    decoded: &Arc<dyn ExecutionPlan>,
) -> Result<()> {
    // datafusion-proto rebuilds a node that carries its own projection (a scan, a join)
    // as that node under a ProjectionExec: the same output, one more node.
    let inner = match decoded.downcast_ref::<ProjectionExec>() {
        Some(projection) if original.name() != decoded.name() => projection.input(),
        _ => decoded,
    };
    if original.name() != inner.name() {
        return internal_err!(
            "stage {stage}: {} decoded as {}",
            original.name(),
            decoded.name()
        );
    }
    let (want_children, got_children) = (original.children(), inner.children());
    if want_children.len() != got_children.len() {
        return internal_err!(
            "stage {stage}: {} has {} inputs on the coordinator, {} after decoding",
            original.name(),
            want_children.len(),
            got_children.len()
        );
    }
    // Inputs first: the deepest node that differs is where the cause is. Below a
    // declaration, the declared properties are the ones operators see.
    let declared = original.is::<DeclaredPropertiesExec>();
    if !declared {
        for (w, g) in want_children.into_iter().zip(got_children) {
            check_same_properties(stage, w, g)?;
        }
    }
    let (want, got) = (original.properties(), decoded.properties());
    let node = original.name();
    if !same_partitioning(&want.partitioning, &got.partitioning) {
        return internal_err!(
            "stage {stage}: {node} is partitioned {} on the coordinator, {} after decoding",
            want.partitioning,
            got.partitioning
        );
    }
    // Knowing more after decoding is harmless (a projection rebuilt over a scan sees
    // its literal columns as constants); knowing less is the bug.
    let (want_eq, got_eq) = (&want.eq_properties, &got.eq_properties);
    for ordering in want_eq.oeq_class().iter() {
        // Textually the same ordering also counts: a volatile expression such as
        // `random()` equals no other instance of itself.
        let text = ordering.to_string();
        if !got_eq.ordering_satisfy(ordering.clone())?
            && !got_eq.oeq_class().iter().any(|o| o.to_string() == text)
        {
            return internal_err!("stage {stage}: {node} lost ordering [{ordering}] in decoding");
        }
    }
    // Constants also count by their text: a function expression compares its session
    // options too, and an executor's options are its own.
    let got_constants: Vec<String> = got_eq
        .constants()
        .iter()
        .map(|c| c.expr.to_string())
        .collect();
    for constant in want_eq.constants() {
        if got_eq.is_expr_constant(&constant.expr).is_none()
            && !got_constants.contains(&constant.expr.to_string())
        {
            return internal_err!(
                "stage {stage}: {node} lost constant {} in decoding",
                constant.expr
            );
        }
    }
    // Members compare by their text: an expression such as a scalar subquery's result
    // is equal only to itself, and decoding makes a new one that means the same.
    for class in want_eq.eq_group().iter() {
        let members: Vec<String> = class.iter().map(|e| e.to_string()).collect();
        let kept = got_eq.eq_group().iter().any(|decoded| {
            members
                .iter()
                .all(|m| decoded.iter().any(|e| e.to_string() == *m))
        });
        if !kept {
            return internal_err!("stage {stage}: {node} lost equivalence {class} in decoding");
        }
    }
    Ok(())
}

/// Equality of partitionings as the operators above read them: the same scheme, count
/// and key expressions. `Partitioning`'s own `==` never equates two unknown ones, and
/// its hash keys compare by expression identity, which decoding does not keep.
fn same_partitioning(a: &Partitioning, b: &Partitioning) -> bool {
    a.to_string() == b.to_string()
}

/// Fails unless every operator of `plan` gets from its inputs the ordering and
/// distribution it requires (DataFusion's `SanityCheckPlan`).
pub fn check_requirements(
    stage: StageId,
    plan: &Arc<dyn ExecutionPlan>,
    options: &ConfigOptions,
) -> Result<()> {
    SanityCheckPlan::new()
        .optimize(Arc::clone(plan), options)
        .map(drop)
        .map_err(|e| e.context(format!("stage {stage} as decoded")))
}
