//! [`DistributeRule`]: the last physical optimizer rule of a Fletch session. It cuts the
//! optimized plan into stages and wraps it in a [`DistributedExec`].
//!
//! A plan the executors cannot run stays on the coordinator under a [`LocalPlanExec`]
//! that names the reason ([`fletch_planner::NotDistributable`]): catalog listings
//! always, anything else (a node datafusion-proto cannot encode, a cutter failure) only
//! while `fletch.allow_local_fallback` is on, with a warning; otherwise it is refused
//! with that reason. A sink it cannot encode stays on the coordinator over a distributed
//! input. `EXPLAIN` output itself is never distributed (`EXPLAIN ANALYZE` is planned
//! around an optimized input: see [`crate::analyze::FletchQueryPlanner`]).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::plan_err;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::explain::ExplainExec;

use fletch_planner::FletchOptions;

use crate::catalog::LoadCommitExec;
use crate::distributed_exec::DistributedExec;
use crate::local_plan::LocalPlanExec;

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
        if plan.is::<DistributedExec>() || plan.is::<LocalPlanExec>() || plan.is::<ExplainExec>() {
            return Ok(plan);
        }
        // Both stay on the coordinator over a distributed input: ANALYZE reports on
        // the run, a load commit makes what the executors stored visible.
        if plan.is::<AnalyzeExec>() || plan.is::<LoadCommitExec>() {
            return self.over_distributed_input(plan, config);
        }
        let reason = match DistributedExec::try_new(Arc::clone(&plan), config) {
            Ok(distributed) => {
                if cfg!(debug_assertions) {
                    distributed.check_round_trip()?;
                }
                return Ok(Arc::new(distributed));
            }
            Err(reason) => reason,
        };
        // A sink datafusion-proto cannot encode (Arrow IPC files in 55) writes on the
        // coordinator; what it writes is still read and computed by the executors.
        if plan.is::<DataSinkExec>() {
            tracing::debug!("sink stays on the coordinator: {reason}");
            return self.over_distributed_input(plan, config);
        }
        if reason.is_fallback() {
            if !allows_local_fallback(config) {
                return plan_err!(
                    "the executors cannot run this query: {reason}. \
                     SET fletch.allow_local_fallback = true runs it whole on the coordinator"
                );
            }
            tracing::warn!("query runs whole on the coordinator: {reason}");
        }
        Ok(Arc::new(LocalPlanExec::new(plan, reason)))
    }

    fn name(&self) -> &str {
        "fletch_distribute"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn allows_local_fallback(config: &ConfigOptions) -> bool {
    FletchOptions::of(config).allow_local_fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_is_allowed_unless_the_session_says_no() {
        let mut config = ConfigOptions::new();
        assert!(
            allows_local_fallback(&config),
            "no Fletch options: the default"
        );
        config.extensions.insert(FletchOptions::default());
        assert!(allows_local_fallback(&config));
        config
            .set("fletch.allow_local_fallback", "false")
            .expect("a Fletch setting");
        assert!(!allows_local_fallback(&config));
    }
}
