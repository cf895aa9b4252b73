//! Fletch, a distributed SQL engine on Apache DataFusion and Arrow Flight. This facade
//! owns the public API: what an application (and Fletch's own tests in `tests/`) needs
//! to run SQL on a cluster, re-exported from the crates that implement it. Reach into
//! those crates only for what the facade does not offer.

pub use fletch_engine::{
    ClusterSchema, Coordinator, Credentials, DEFAULT_EXECUTORS, DistributeRule, DistributedExec,
    ExchangeReads, FailureReason, FletchTable, FragmentStats, LocalCluster, LocalClusterOptions,
    RecoveryStats, StoreStats, TableLayout, TaskFailure, Users, default_session_config,
    fletch_session, split_statements, sql,
};
pub use fletch_executor::{ExecutorHandle, ExecutorOptions, start_executor, start_executor_with};
pub use fletch_planner::{DistributedPlan, FletchOptions, Stage, distribute, parse_size};
