//! In-memory distributed tables as plan nodes: a table is cut into `n` horizontal
//! fragments, fragment `f` is held by every executor in its holder list, and each load
//! (`CREATE TABLE AS`, `INSERT`, `CACHE TABLE`) adds one piece to every fragment.
//!
//! - [`FragmentScanExec`]: partition `f` reads fragment `f`'s pieces of a snapshot taken
//!   at planning time, so a query sees one version of the table.
//! - [`FragmentWriterExec`]: task `f` stores its input partition as fragment `f`'s piece
//!   of one load on every holder, and reports the piece's rows, bytes and min/max.
//!
//! Both reach the executor's memory through a [`FragmentStore`] carried as a session
//! config extension, as exchanges reach it through `ExchangeSink`/`ExchangeSource`.

mod scan;
mod writer;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::Partitioning;
use futures::future::BoxFuture;

use crate::ReadCounters;

pub use scan::{FragmentScanExec, merge_fragment_statistics};
pub use writer::{FragmentWriterExec, load_summary_schema};

/// One piece of one fragment: what a load wrote into fragment `fragment` of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRef {
    /// The table's name, for messages.
    pub table: String,
    /// Unique per table incarnation: a dropped and re-created table never reads old pieces.
    pub table_uid: String,
    pub load: u64,
    pub fragment: u64,
    /// Executor URLs holding this fragment, preferred first.
    pub holders: Vec<String>,
}

/// How a table's rows are assigned to fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentLayout {
    /// Columns (indices in the table schema) rows are hashed on, with DataFusion's
    /// repartition hash, so a fragment is exactly a hash partition; `None`: round robin.
    pub hash_keys: Option<Vec<usize>>,
    /// `holders[f]`: executors holding fragment `f`, preferred first.
    pub holders: Vec<Vec<String>>,
}

impl FragmentLayout {
    pub fn fragment_count(&self) -> usize {
        self.holders.len()
    }

    /// The partitioning of the table's rows over its fragments, over `schema`'s columns
    /// (the table's own schema or a projection that keeps every key: `positions[i]` is
    /// where table column `i` sits, if kept).
    pub fn partitioning(
        &self,
        schema: &SchemaRef,
        positions: &dyn Fn(usize) -> Option<usize>,
    ) -> Partitioning {
        let n = self.fragment_count();
        let Some(keys) = &self.hash_keys else {
            return Partitioning::UnknownPartitioning(n);
        };
        let exprs: Option<Vec<_>> = keys
            .iter()
            .map(|&k| {
                let at = positions(k)?;
                let name = schema.field(at).name();
                Some(Arc::new(Column::new(name, at)) as _)
            })
            .collect();
        match exprs {
            Some(exprs) => Partitioning::Hash(exprs, n),
            None => Partitioning::UnknownPartitioning(n),
        }
    }
}

/// What a query reads of one table: the loads visible when it was planned.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSnapshot {
    pub table: String,
    pub table_uid: String,
    pub schema: SchemaRef,
    pub layout: FragmentLayout,
    /// `loads[f]`: the pieces of fragment `f` to read, oldest first (empty pieces left out).
    pub loads: Vec<Vec<u64>>,
}

impl TableSnapshot {
    /// Every piece of fragment `f`.
    pub fn pieces(&self, f: usize) -> impl Iterator<Item = PieceRef> + '_ {
        let holders = self.layout.holders.get(f).cloned().unwrap_or_default();
        self.loads
            .get(f)
            .into_iter()
            .flatten()
            .map(move |&load| PieceRef {
                table: self.table.clone(),
                table_uid: self.table_uid.clone(),
                load,
                fragment: f as u64,
                holders: holders.clone(),
            })
    }
}

/// The executor's memory for table fragments, as a task sees it.
pub trait FragmentStore: Debug + Send + Sync {
    /// Streams one piece, from this executor's memory if it holds it, else from a
    /// holder, counting what it reads into `counters`.
    fn read(
        &self,
        piece: &PieceRef,
        schema: SchemaRef,
        counters: &ReadCounters,
    ) -> Result<SendableRecordBatchStream>;

    /// Stores `input` as `piece` on every holder; resolves to the bytes one copy takes
    /// once all holders have it. A piece is only ever read through a snapshot that names
    /// it, so a load that fails midway leaves nothing any query can see.
    fn write(
        &self,
        piece: PieceRef,
        input: SendableRecordBatchStream,
    ) -> BoxFuture<'static, Result<u64>>;
}

/// `SessionConfig` extension carrying the task's [`FragmentStore`].
#[derive(Debug, Clone)]
pub struct FragmentStoreExt(pub Arc<dyn FragmentStore>);
