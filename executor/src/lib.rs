//! The Fletch executor: an Arrow Flight server that runs stage tasks with DataFusion,
//! keeps their output partitions in memory until the query ends, and serves them to
//! downstream tasks (and the coordinator) with `DoGet`.
//!
//! Inside:
//! - [`start_executor`] / [`ExecutorHandle`]: one executor on a TCP address.
//! - [`ExecutorClient`] / [`FlightExchangeSource`]: the client side, shared with the
//!   coordinator, every endpoint built by one function ([`connect`]).
//! - [`protocol`]: the prost messages inside tickets and actions.
//! - [`TaskFailure`]: a failure's typed reason as it crosses the wire.

mod flight;
pub mod protocol;
mod server;
mod status;
mod store;
mod task;

pub use flight::client::{ClientPool, ExecutorClient, FlightExchangeSource, connect};
pub use server::{ExecutorHandle, start_executor};
pub use status::{FailureReason, TaskFailure, find_failure};
pub use store::{ExchangeReads, StoreStats};
