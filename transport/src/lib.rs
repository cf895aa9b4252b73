//! Fletch's wire: everything the coordinator and the executors say to each other and
//! how they say it. It owns the prost messages inside Flight tickets and actions
//! ([`protocol`]), failures with a machine-readable reason as they cross the wire
//! ([`TaskFailure`], with the DataFusion error a task raised: [`Raised`]), who may call
//! (user [`Credentials`], the [`ClusterSecret`] members prove themselves with, and
//! [`ClusterSecurity`], what a process presents and trusts, passed in rather than held
//! in globals), record batches as Flight data both ways ([`encode_batches`],
//! [`decode_validated`]), DataFusion metrics as task reports carry them
//! ([`metrics_wire`]), and the plumbing: [`connect`] for every channel,
//! [`FlightServer`] for every server, and [`Client`] in its two roles for the calls
//! ([`ExecutorClient`], [`CoordinatorClient`]). It knows nothing of plans, stages or
//! stores: the planner, the executor and the engine build on it; it depends on none of
//! them.

mod auth;
mod caller;
mod client;
mod client_pool;
mod coordinator_client;
mod decode;
mod encode;
mod endpoint;
mod executor_client;
mod failure;
mod http;
mod member;
pub mod metrics_wire;
pub mod protocol;
mod raised;
mod server;
mod validate;

pub use auth::{Credentials, Presented, authorization};
pub use client::{Client, CoordinatorClient, CoordinatorRole, ExecutorClient, ExecutorRole};
pub use client_pool::ClientPool;
pub use decode::decode_validated;
pub use encode::{Dictionaries, encode_batches};
pub use endpoint::{
    CONNECT_TIMEOUT, CONTROL_CALL_TIMEOUT, ClusterSecurity, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    MAX_MESSAGE_BYTES, connect,
};
pub use failure::{
    FailureReason, OUTSIDE_TASKS, TaskFailure, bad_request, find_failure, is_data_error,
};
pub use http::{HttpServer, metrics_response};
pub use member::{
    ClusterSecret, MIN_SECRET_BYTES, Member, check_member_proof, member_check, member_proof,
    require_loopback_without_secret, require_member,
};
pub use raised::{ErrorKind, Raised};
pub use server::{FlightServer, TlsIdentity};
