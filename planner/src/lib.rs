//! Turns DataFusion's optimized physical plan into a distributed plan: a DAG of stages cut
//! at data exchanges, with Fletch's own exchange operators and the codec that ships a
//! stage's plan to executors as bytes (file references, never table data).
//!
//! Inside:
//! - [`distribute`]: the stage cutter (hash shuffles, gathers, broadcast build sides).
//! - [`ShuffleWriterExec`] / [`ExchangeReaderExec`]: the two halves of every exchange.
//! - [`FletchCodec`]: the `PhysicalExtensionCodec` for those nodes; [`check_same_properties`]
//!   and [`check_requirements`] hold a decoded stage to what the coordinator planned.
//! - [`ExchangeSink`] / [`ExchangeSource`]: what an executor plugs into a task so the
//!   exchange nodes can move data, carried as `SessionConfig` extensions.
//! - [`FragmentScanExec`] / [`FragmentWriterExec`] and [`FragmentStore`]: in-memory
//!   tables, cut into fragments held by executors; [`preferred_holders`] tells the
//!   scheduler where a stage's tasks find their fragments.
//! - [`ReadCounters`]: what those nodes read, by origin, for `EXPLAIN ANALYZE` and for
//!   each task's report.
//! - [`NotDistributable`]: why a plan cannot leave the coordinator.

mod codec;
mod config;
mod declared;
mod exchange;
mod fidelity;
mod fragment;
mod not_distributable;
mod placement;
mod read_counters;
mod stage;

pub use codec::{FletchCodec, decode_stage_plan, encode_stage_plan};
pub use config::{
    ByteSize, ClientStringType, FletchOptions, MAX_QUERY_HISTORY, ResultEndpoints, SETTINGS,
    Setting, parse_size,
};
pub use declared::DeclaredPropertiesExec;
pub use exchange::{
    ExchangeMode, ExchangeReaderExec, ExchangeSink, ExchangeSinkExt, ExchangeSource,
    ExchangeSourceExt, ShuffleWriterExec,
};
pub use fidelity::{check_requirements, check_same_properties};
pub use fragment::{
    FragmentLayout, FragmentScanExec, FragmentStore, FragmentStoreExt, FragmentWriterExec,
    PieceRef, TableSnapshot, load_summary_schema, merge_fragment_statistics,
};
pub use not_distributable::NotDistributable;
pub use placement::preferred_holders;
pub use read_counters::{ReadCounters, ReadOrigin};
pub use stage::{DistributedPlan, Stage, StageId, distribute};
