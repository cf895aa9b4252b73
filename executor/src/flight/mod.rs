//! Everything that speaks Arrow Flight: the executor's service and the clients that
//! call executors (other executors' readers, and the coordinator).

pub mod auth;
pub mod client;
pub mod encode;
pub mod member;
pub mod serve;
pub mod service;
mod validate;

/// gRPC message limit for plans and batches; Flight splits batches at ~2 MiB anyway.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// HTTP/2 frame size for every endpoint and server: 1 MiB frames triple loopback
/// throughput over tonic's 16 KiB default (measured in shared/STACK.md).
pub(crate) const MAX_FRAME_BYTES: u32 = 1 << 20;
