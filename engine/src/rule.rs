//! [`DistributeRule`]: the last physical optimizer rule of a Fletch session. It cuts the
//! optimized plan into stages and wraps it in a [`DistributedExec`].
//!
//! Plans that cannot leave the coordinator stay local: catalog listings
//! (`information_schema`, `SHOW`), `EXPLAIN` output, and any plan with a node
//! datafusion-proto cannot encode. `EXPLAIN` shows which it was.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::explain::ExplainExec;

use crate::catalog::LoadCommitExec;
use crate::distributed_exec::DistributedExec;

#[derive(Debug, Default)]
pub struct DistributeRule;

impl PhysicalOptimizerRule for DistributeRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.is::<DistributedExec>() || plan.is::<ExplainExec>() {
            return Ok(plan);
        }
        // Both stay on the coordinator over a distributed input: ANALYZE reports on
        // the run, a load commit makes what the executors stored visible.
        if plan.is::<AnalyzeExec>() || plan.is::<LoadCommitExec>() {
            let child = Arc::clone(plan.children()[0]);
            let distributed = self.optimize(child, _config)?;
            return datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                plan,
                vec![distributed],
            );
        }
        match DistributedExec::try_new(Arc::clone(&plan)) {
            Ok(distributed) => {
                if cfg!(debug_assertions) {
                    distributed.check_round_trip()?;
                }
                Ok(Arc::new(distributed))
            }
            Err(e) => {
                tracing::debug!("plan stays on the coordinator: {e}");
                Ok(plan)
            }
        }
    }

    fn name(&self) -> &str {
        "fletch_distribute"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
