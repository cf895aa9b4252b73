//! The Fletch executor: an Arrow Flight server that runs stage tasks with DataFusion,
//! keeps their output partitions in memory until the query ends, serves them to
//! downstream tasks (and to clients holding a result ticket) with `DoGet`, and holds
//! fragments of in-memory tables. What it says on the wire, and the clients it calls
//! other processes with, come from `fletch-transport`.
//!
//! Inside:
//! - [`start_executor`] / [`ExecutorHandle`]: one executor on a TCP address, joined to
//!   a coordinator with heartbeats whose replies renew the lease on query state.
//! - table fragments: pieces of in-memory tables held in memory, replicated over
//!   `DoPut`, read locally or from another holder; every byte reserved in the
//!   executor's one memory pool (exchange buffers and operators use it too).
//! - [`FlightExchangeSource`]: how a task reads its inputs, from this executor's own
//!   store without a socket, or from another executor over Flight.

mod exchange_source;
mod flight;
mod fragment_io;
mod fragments;
mod memory;
mod metrics;
mod recent;
mod server;
mod store;
mod task;
mod task_report;

pub use exchange_source::FlightExchangeSource;
pub use fragments::FragmentStats;
pub use metrics::duration_buckets;
pub use server::{
    ExecutorHandle, ExecutorOptions, start_executor, start_executor_with, system_memory,
};
pub use store::{ExchangeReads, StoreStats};
pub use task::TaskLimits;
