//! Fletch, a distributed SQL engine on Apache DataFusion and Arrow Flight: this facade
//! re-exports the public API of its crates.

pub use fletch_engine::{
    Coordinator, DEFAULT_EXECUTORS, DistributeRule, DistributedExec, ExchangeReads, FailureReason,
    LocalCluster, StoreStats, TaskFailure, default_session_config, fletch_session, tpch,
};
pub use fletch_executor::{ExecutorHandle, start_executor};
pub use fletch_planner::{DistributedPlan, Stage, distribute};
