//! [`DistributeRule`]: the last physical optimizer rule of a Fletch session. It cuts the
//! optimized plan into stages and wraps it in a [`DistributedExec`].
//!
//! Plans that cannot leave the coordinator stay local: catalog listings
//! (`information_schema`, `SHOW`), `EXPLAIN` output, and any plan with a node
//! datafusion-proto cannot encode. `EXPLAIN` shows which it was. A sink it cannot
//! encode stays on the coordinator over a distributed input.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::explain::ExplainExec;

use crate::catalog::LoadCommitExec;
use crate::distributed_exec::DistributedExec;

#[derive(Debug, Default)]
pub struct DistributeRule;

impl DistributeRule {
    /// `plan`, a node that runs on the coordinator, over its one input distributed.
    fn over_distributed_input(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [child] = plan.children()[..] else {
            return Ok(plan);
        };
        let distributed = self.optimize(Arc::clone(child), config)?;
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            plan,
            vec![distributed],
        )
    }
}

impl PhysicalOptimizerRule for DistributeRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.is::<DistributedExec>() || plan.is::<ExplainExec>() {
            return Ok(plan);
        }
        // Both stay on the coordinator over a distributed input: ANALYZE reports on
        // the run, a load commit makes what the executors stored visible.
        if plan.is::<AnalyzeExec>() || plan.is::<LoadCommitExec>() {
            return self.over_distributed_input(plan, config);
        }
        match DistributedExec::try_new(Arc::clone(&plan)) {
            Ok(distributed) => {
                if cfg!(debug_assertions) {
                    distributed.check_round_trip()?;
                }
                Ok(Arc::new(distributed))
            }
            // A sink datafusion-proto cannot encode (Arrow IPC files in 55) writes on the
            // coordinator; what it writes is still read and computed by the executors.
            Err(e) if plan.is::<DataSinkExec>() => {
                tracing::debug!("sink stays on the coordinator: {e}");
                self.over_distributed_input(plan, config)
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
