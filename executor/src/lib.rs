//! The Fletch executor: an Arrow Flight server that runs stage tasks with DataFusion,
//! keeps their output partitions in memory until the query ends, serves them to
//! downstream tasks (and the coordinator) with `DoGet`, and holds fragments of
//! in-memory tables.
//!
//! Inside:
//! - [`start_executor`] / [`ExecutorHandle`]: one executor on a TCP address.
//! - table fragments: pieces of in-memory tables held in memory, replicated over
//!   `DoPut`, read locally or from another holder; every byte reserved in the
//!   executor's one memory pool (exchange buffers and operators use it too).
//! - [`encode_batches`]: record batches as Flight data, for every stream Fletch sends.
//! - [`ExecutorClient`] / [`FlightExchangeSource`]: the client side, shared with the
//!   coordinator, every endpoint built by one function ([`connect`]).
//! - [`protocol`]: the prost messages inside tickets and actions.
//! - [`TaskFailure`]: a failure's typed reason as it crosses the wire, with the
//!   DataFusion error the task raised ([`Raised`]) so the user sees that error.
//! - [`ClusterSecret`]: who is a cluster member (every call but a read of a result
//!   ticket the coordinator signed must prove it), and the lease on query state that
//!   the coordinator renews with every heartbeat's reply.

mod flight;
mod fragment_io;
mod fragments;
mod memory;
pub mod protocol;
mod raised;
mod recent;
mod server;
mod status;
mod store;
mod task;

pub use flight::auth::{Credentials, Presented, authorization};
pub use flight::client::{
    ClientPool, ExecutorClient, FlightExchangeSource, connect, trust_cluster_certificate,
};
pub use flight::encode::{Dictionaries, encode_batches};
pub use flight::member::{
    ClusterSecret, MIN_SECRET_BYTES, Member, check_member_proof, member_check, member_proof,
    require_loopback_without_secret, require_member,
};
pub use flight::serve::{FlightServer, MAX_MESSAGE_BYTES, TlsIdentity};
pub use fragments::FragmentStats;
pub use raised::{ErrorKind, Raised};
pub use server::{
    ExecutorHandle, ExecutorOptions, start_executor, start_executor_with, system_memory,
};
pub use status::{FailureReason, OUTSIDE_TASKS, TaskFailure, find_failure, is_data_error};
pub use store::{ExchangeReads, StoreStats};
pub use task::TaskLimits;
