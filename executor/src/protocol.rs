//! Messages carried in Flight tickets and action bodies (prost-derived, no protoc).

use prost::Message;

/// Action type that runs one task; the reply arrives when the task has finished.
pub const RUN_TASK: &str = "fletch.run_task";
/// Action type that frees every buffer and aborts every task of a query.
pub const RELEASE_QUERY: &str = "fletch.release_query";

/// `DoGet` ticket: one output partition of one task.
#[derive(Clone, PartialEq, Message)]
pub struct PartitionTicket {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint64, tag = "2")]
    pub stage: u64,
    #[prost(uint64, tag = "3")]
    pub task: u64,
    #[prost(uint64, tag = "4")]
    pub partition: u64,
    /// The partition stays readable after this read (see `Stage::retain_outputs`).
    #[prost(bool, tag = "5")]
    pub retain: bool,
}

/// Body of [`RUN_TASK`].
#[derive(Clone, PartialEq, Message)]
pub struct TaskDefinition {
    #[prost(string, tag = "1")]
    pub query_id: String,
    #[prost(uint64, tag = "2")]
    pub stage: u64,
    #[prost(uint64, tag = "3")]
    pub task: u64,
    /// The stage's plan, encoded once per stage by `fletch_planner::encode_stage_plan`.
    #[prost(bytes = "bytes", tag = "4")]
    pub plan: bytes::Bytes,
    /// Where the tasks of each upstream stage run.
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<StageLocations>,
    /// Session settings that differ from DataFusion's defaults.
    #[prost(message, repeated, tag = "6")]
    pub config: Vec<ConfigEntry>,
    /// Keep this task's outputs readable until the query ends (`Stage::retain_outputs`).
    #[prost(bool, tag = "7")]
    pub retain_outputs: bool,
}

/// The executor URL of every task of one stage, indexed by task.
#[derive(Clone, PartialEq, Message)]
pub struct StageLocations {
    #[prost(uint64, tag = "1")]
    pub stage: u64,
    #[prost(string, repeated, tag = "2")]
    pub task_urls: Vec<String>,
    /// The stage's outputs stay readable after a read (`Stage::retain_outputs`).
    #[prost(bool, tag = "3")]
    pub retain: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfigEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Body of [`RELEASE_QUERY`].
#[derive(Clone, PartialEq, Message)]
pub struct ReleaseQuery {
    #[prost(string, tag = "1")]
    pub query_id: String,
}

/// Detail attached to every error status an executor returns.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorDetail {
    /// A [`crate::FailureReason`] as i32.
    #[prost(int32, tag = "1")]
    pub reason: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(uint64, tag = "3")]
    pub stage: u64,
    #[prost(uint64, tag = "4")]
    pub task: u64,
    #[prost(string, tag = "5")]
    pub executor: String,
}
