//! Messages carried in Flight tickets and action bodies (prost-derived, no protoc).

use prost::Message;

/// Action type that runs one task; the reply arrives when the task has finished.
pub const RUN_TASK: &str = "fletch.run_task";
/// Action type that frees every buffer and aborts every task of a query.
pub const RELEASE_QUERY: &str = "fletch.release_query";

/// Action type that waits until a query result served to a client has been read to
/// its end; the reply comes then, or an error when the reader left early, none came in
/// time, or the query was released.
pub const AWAIT_RESULT_READ: &str = "fletch.await_result_read";

/// Body of [`AWAIT_RESULT_READ`].
#[derive(Clone, PartialEq, Message)]
pub struct ResultRead {
    #[prost(message, optional, tag = "1")]
    pub partition: Option<PartitionTicket>,
    /// How long to wait for a reader to come.
    #[prost(uint64, tag = "2")]
    pub unread_ms: u64,
}

/// Action type that frees every fragment of a table incarnation.
pub const DROP_TABLE: &str = "fletch.drop_table";
/// Action type that frees the pieces one load wrote (a load that failed).
pub const DROP_LOAD: &str = "fletch.drop_load";

/// Action type that sets the executor's memory limit.
pub const SET_MEMORY_LIMIT: &str = "fletch.set_memory_limit";

/// Body of [`SET_MEMORY_LIMIT`].
#[derive(Clone, PartialEq, Message)]
pub struct MemoryLimit {
    #[prost(uint64, tag = "1")]
    pub bytes: u64,
}

/// Coordinator action: an executor joins the cluster (or rejoins after being lost).
pub const REGISTER_EXECUTOR: &str = "fletch.register_executor";
/// Coordinator action: an executor is alive; carries its current status. The reply is
/// a [`QueryLease`].
pub const HEARTBEAT: &str = "fletch.heartbeat";

/// The queries a coordinator still runs, in its reply to a heartbeat: an executor
/// keeps state only for those (see the executor's store).
#[derive(Clone, PartialEq, Message)]
pub struct QueryLease {
    #[prost(string, repeated, tag = "1")]
    pub live_queries: Vec<String>,
}
/// Coordinator action: an executor leaves the cluster cleanly.
pub const LEAVE: &str = "fletch.leave";
/// Coordinator action: lists the cluster's executors, one `ExecutorStatus` per result.
pub const LIST_EXECUTORS: &str = "fletch.list_executors";

/// What an executor tells the coordinator about itself (and what the coordinator lists).
#[derive(Clone, PartialEq, Message)]
pub struct ExecutorStatus {
    #[prost(string, tag = "1")]
    pub url: String,
    #[prost(uint64, tag = "2")]
    pub slots: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub memory_used: u64,
    #[prost(uint64, tag = "5")]
    pub running_tasks: u64,
    /// Set by the coordinator when listing: alive, lost or left.
    #[prost(string, tag = "6")]
    pub state: String,
    /// Set by the coordinator when listing: milliseconds since the last heartbeat.
    #[prost(uint64, tag = "7")]
    pub since_heartbeat_ms: u64,
}

/// Every `DoGet` ticket.
#[derive(Clone, PartialEq, Message)]
pub struct FletchTicket {
    #[prost(oneof = "fletch_ticket::Kind", tags = "1, 2")]
    pub kind: Option<fletch_ticket::Kind>,
}

pub mod fletch_ticket {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Partition(super::PartitionTicket),
        #[prost(message, tag = "2")]
        Piece(super::PieceId),
    }
}

/// The `type_url` of a [`ResultTicket`] packed in a protobuf `Any`, the form Flight SQL
/// tickets take: the coordinator and the executor holding the result both redeem it.
pub const RESULT_TICKET_TYPE: &str = "type.googleapis.com/fletch.ResultTicket";

/// A client's ticket for a query result served by an executor.
#[derive(Clone, PartialEq, Message)]
pub struct ResultTicket {
    /// The coordinator's handle of the query serving this result.
    #[prost(string, tag = "1")]
    pub handle: String,
    /// The final task's one output partition.
    #[prost(message, optional, tag = "2")]
    pub partition: Option<PartitionTicket>,
    /// Milliseconds since the Unix epoch after which executors refuse the ticket.
    #[prost(uint64, tag = "3")]
    pub expires_at_ms: u64,
    /// The coordinator's signature over the rest, with the cluster secret
    /// (`ClusterSecret::sign_result_ticket`): the one thing an executor accepts from a
    /// user, for this one partition.
    #[prost(bytes = "bytes", tag = "4")]
    pub signature: bytes::Bytes,
}

impl ResultTicket {
    /// The ticket as a client carries it: packed in an `Any`.
    pub fn to_ticket_bytes(&self) -> Vec<u8> {
        AnyTicket {
            type_url: RESULT_TICKET_TYPE.to_string(),
            value: self.encode_to_vec(),
        }
        .encode_to_vec()
    }

    /// The result ticket `bytes` carry, if they are one (an `Any` of
    /// [`RESULT_TICKET_TYPE`]); `Err` when they claim to be one but do not decode.
    pub fn from_ticket_bytes(bytes: &[u8]) -> Option<Result<Self, prost::DecodeError>> {
        let any = AnyTicket::decode(bytes).ok()?;
        (any.type_url == RESULT_TICKET_TYPE).then(|| Self::decode(any.value.as_slice()))
    }
}

/// `google.protobuf.Any`, as Flight SQL packs its tickets.
#[derive(Clone, PartialEq, Message)]
struct AnyTicket {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// One piece of a table fragment: the `DoGet` ticket that reads it and the `DoPut`
/// descriptor command that stores a replica.
#[derive(Clone, PartialEq, Message)]
pub struct PieceId {
    #[prost(string, tag = "1")]
    pub table: String,
    #[prost(string, tag = "2")]
    pub table_uid: String,
    #[prost(uint64, tag = "3")]
    pub load: u64,
    #[prost(uint64, tag = "4")]
    pub fragment: u64,
}

/// Action type: fetch a piece from another holder and keep a copy (re-replication).
pub const COPY_PIECE: &str = "fletch.copy_piece";

/// Body of [`COPY_PIECE`].
#[derive(Clone, PartialEq, Message)]
pub struct CopyPiece {
    #[prost(message, optional, tag = "1")]
    pub piece: Option<PieceId>,
    /// The executor to copy from.
    #[prost(string, tag = "2")]
    pub from: String,
}

/// Body of [`DROP_TABLE`] and [`DROP_LOAD`] (the latter names the load).
#[derive(Clone, PartialEq, Message)]
pub struct DropPieces {
    #[prost(string, tag = "1")]
    pub table_uid: String,
    #[prost(uint64, optional, tag = "2")]
    pub load: Option<u64>,
}

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
    /// Which run of the task wrote it: a task run again after an executor was lost
    /// writes new partitions beside (never into) the ones of its earlier run.
    #[prost(uint64, tag = "6")]
    pub attempt: u64,
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
    /// Which run of this task this is (0 first); see [`PartitionTicket::attempt`].
    #[prost(uint64, tag = "8")]
    pub attempt: u64,
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
    /// The attempt of every task, indexed by task (missing: 0).
    #[prost(uint64, repeated, tag = "4")]
    pub task_attempts: Vec<u64>,
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
    /// A [`crate::ErrorKind`] as i32: the kind of DataFusion error the task raised.
    #[prost(int32, tag = "6")]
    pub error_kind: i32,
    /// That error's text without its kind's prefix.
    #[prost(string, tag = "7")]
    pub error_text: String,
}

/// The reply to [`RUN_TASK`]: how the task went, measured on its executor.
#[derive(Clone, PartialEq, Message)]
pub struct TaskReport {
    /// When the task started, in milliseconds since the Unix epoch (executor clock).
    #[prost(uint64, tag = "1")]
    pub started_at_ms: u64,
    /// From the task's start to its last output written, in microseconds.
    #[prost(uint64, tag = "2")]
    pub duration_us: u64,
    /// Rows written to each output partition, indexed by partition.
    #[prost(uint64, repeated, tag = "3")]
    pub rows_out: Vec<u64>,
    /// Bytes (Arrow memory size) written to each output partition.
    #[prost(uint64, repeated, tag = "4")]
    pub bytes_out: Vec<u64>,
    /// What the task read from exchanges and table fragments, by origin.
    #[prost(message, optional, tag = "5")]
    pub reads: Option<ReadFigures>,
    /// Rows the task's own scans produced (files and fragments), plus exchange reads.
    #[prost(uint64, tag = "6")]
    pub rows_in: u64,
    /// Time the task's writer waited for room in a full output partition (backpressure).
    #[prost(uint64, tag = "7")]
    pub output_wait_us: u64,
    /// The most memory the task's operators and outputs held at once, in bytes.
    #[prost(uint64, tag = "8")]
    pub peak_memory: u64,
    /// The metrics of the stage plan instance this task ran in on its executor, every
    /// operator in pre-order. Tasks of a stage share one instance per executor, so
    /// these are cumulative over that executor's tasks so far; the snapshot with the
    /// highest `snapshot` number is the most complete.
    #[prost(message, repeated, tag = "9")]
    pub operators: Vec<OperatorMetrics>,
    /// Orders the snapshots one executor takes: a later snapshot has a higher number.
    #[prost(uint64, tag = "10")]
    pub snapshot: u64,
}

/// Rows and bytes read, kept apart by where they came from.
#[derive(Clone, PartialEq, Message)]
pub struct ReadFigures {
    /// Read from this executor's own memory (no copy, no socket).
    #[prost(uint64, tag = "1")]
    pub local_rows: u64,
    /// Arrow memory size of what was read locally.
    #[prost(uint64, tag = "2")]
    pub local_bytes: u64,
    /// Read from another process over Flight.
    #[prost(uint64, tag = "3")]
    pub remote_rows: u64,
    /// Encoded IPC bytes received over Flight.
    #[prost(uint64, tag = "4")]
    pub remote_bytes: u64,
    /// Time spent waiting for input to arrive, in microseconds.
    #[prost(uint64, tag = "5")]
    pub input_wait_us: u64,
}

/// One operator's metrics, summed over its partitions.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorMetrics {
    /// `ExecutionPlan::name`, to align the snapshot with the coordinator's plan.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<MetricEntry>,
}

/// One DataFusion metric value, as `fletch_transport::metrics_wire` maps it.
#[derive(Clone, PartialEq, Message)]
pub struct MetricEntry {
    /// A `metrics_wire::Kind` as i32.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// The metric's name (for the kinds that carry one).
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(uint64, tag = "3")]
    pub value: u64,
    /// Second number of two-part values: matched (pruning), total (ratio).
    #[prost(uint64, tag = "4")]
    pub second: u64,
    /// Third number: fully matched (pruning).
    #[prost(uint64, tag = "5")]
    pub third: u64,
    /// `true` for a dev-level metric (DataFusion's `MetricType::Dev`).
    #[prost(bool, tag = "6")]
    pub dev: bool,
    /// DataFusion's `MetricCategory` as its text (`rows`, `bytes`, `timing`), if any.
    #[prost(string, tag = "7")]
    pub category: String,
}
