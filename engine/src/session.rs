//! Building a Fletch session.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use fletch_planner::FletchOptions;

use crate::analyze::FletchQueryPlanner;
use crate::coordinator::Coordinator;
use crate::rule::DistributeRule;
use crate::system_tables::SystemSchema;

/// DataFusion's defaults, adjusted for distribution:
/// - round-robin repartitions only add a network hop between executors, so they are off
///   (file scans still split across tasks);
/// - a partitioned hash join's dynamic filter waits until every partition of the join
///   has built its side, inside one plan instance; the join's partitions run as tasks on
///   different executors, so that wait would never end. Join dynamic filters are off;
/// - a join whose smaller side is estimated under 16 MiB or 1M rows broadcasts it
///   (`CollectLeft`) instead of shuffling both sides. DataFusion's single-node limits
///   (1 MiB, 128K rows) price a shuffle as an in-memory repartition; across executors it
///   moves every row of the big side through Flight. Spark's broadcast limit is 10 MB.
///   On TPC-H SF1 this keeps lineitem in place in q3 and q5 (q5 0.28 s to 0.21 s).
///
/// Scan work stealing, which would read files once per executor, is an execution-time
/// setting; executors force it off for every task, whatever the session says.
pub fn default_session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_option_extension(FletchOptions::default());
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_round_robin_repartition = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.hash_join_single_partition_threshold = 16 << 20;
    optimizer.hash_join_single_partition_threshold_rows = 1 << 20;
    config
}

/// A `SessionContext` whose queries run on `coordinator`'s executors. Its default
/// schema is the cluster's (tables are shared by every session of the cluster) and
/// the `fletch` schema holds the system tables.
pub fn fletch_session(coordinator: Arc<Coordinator>, config: SessionConfig) -> SessionContext {
    // Loads commit on the coordinator and leave their clean-up to its janitor.
    let mut config = config
        .with_extension(Arc::new(coordinator.janitor().clone()))
        .with_extension(Arc::clone(&coordinator));
    if config.options().extensions.get::<FletchOptions>().is_none() {
        config = config.with_option_extension(FletchOptions::default());
    }
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_physical_optimizer_rule(Arc::new(DistributeRule))
        .with_query_planner(Arc::new(FletchQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog_name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let schema_name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_schema
        .clone();
    if let Some(catalog) = ctx.catalog(&catalog_name) {
        let tables = Arc::clone(coordinator.tables());
        // Registering a schema only fails for catalogs that cannot hold schemas; the
        // default catalog of a `SessionStateBuilder` is a memory catalog.
        let registered = catalog
            .register_schema(&schema_name, Arc::clone(&tables) as _)
            .and_then(|_| {
                let system = SystemSchema::new(Arc::clone(&coordinator));
                catalog.register_schema("fletch", Arc::new(system))
            });
        if let Err(e) = registered {
            tracing::warn!("registering the cluster's schemas: {e}");
        }
    }
    ctx
}
