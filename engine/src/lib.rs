//! The Fletch coordinator and public API: sessions whose queries run on a cluster of
//! executors, the scheduler that places and launches stage tasks, the cluster's catalog
//! of in-memory distributed tables (loaded, queried and dropped with [`sql`]), and
//! [`LocalCluster`], which starts executors in-process on loopback for the embedded
//! default.
//!
//! A Fletch session is a plain DataFusion `SessionContext` with one extra physical
//! optimizer rule ([`DistributeRule`]) and the [`Coordinator`] as a config extension, so
//! anything that drives a `SessionContext` drives Fletch unchanged.

mod analyze;
mod catalog;
mod coordinator;
mod distributed_exec;
mod flight_sql;
mod http;
mod janitor;
mod local_cluster;
mod local_plan;
mod membership;
mod metrics;
mod progress;
mod query_log;
mod query_record;
mod query_run;
mod recovery;
mod replication;
mod rule;
mod session;
mod statements;
mod system_tables;

pub use catalog::{ClusterSchema, FletchTable, LoadCommitExec, TableLayout};
pub use coordinator::{Coordinator, RecoveryStats};
pub use distributed_exec::DistributedExec;
pub use flight_sql::{
    CoordinatorServer, Credentials, EndpointOptions, Locations, Role, SessionLimits, User, Users,
    hash_password, serve_coordinator, serve_coordinator_with,
};
pub use http::{MetricsSource, serve_http};
pub use local_cluster::{DEFAULT_EXECUTORS, LocalCluster, LocalClusterOptions};
pub use local_plan::LocalPlanExec;
pub use membership::{MemberState, MembershipOptions, StatusSource};
pub use progress::Progress;
pub use rule::DistributeRule;
pub use session::{default_session_config, fletch_session};
pub use statements::{loaded_table, split_statements, sql};
pub use system_tables::{SystemSchema, UNIT_KEY};

pub use fletch_executor::{ExchangeReads, FragmentStats, StoreStats};
pub use fletch_transport::{
    ClusterSecret, ClusterSecurity, FailureReason, TaskFailure, TlsIdentity,
};
