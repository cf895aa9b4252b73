//! [`FletchTable`]: an in-memory distributed table as DataFusion sees it. Its layout
//! (fragments, hash keys, holders) is fixed at creation; its contents are a list of
//! committed loads per fragment, replaced as a whole on every commit, so a query
//! planned before a commit reads none of it and one planned after reads all of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{
    ColumnStatistics, Constraints, Result, ScalarValue, Statistics, exec_err, internal_err,
    not_impl_err,
};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use fletch_planner::{
    FragmentLayout, FragmentScanExec, FragmentWriterExec, TableSnapshot, merge_fragment_statistics,
};
use parking_lot::RwLock;

use super::load::LoadCommitExec;

/// How a table is laid out over the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    /// Names of the hash key columns; empty for round robin.
    pub hash_keys: Vec<String>,
    pub fragments: usize,
    pub replicas: usize,
}

/// What `CREATE TABLE` says beyond the columns.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableDefinition {
    pub(crate) constraints: Constraints,
    pub(crate) column_defaults: HashMap<String, Expr>,
}

/// An in-memory table. Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct FletchTable {
    pub(crate) state: Arc<TableState>,
}

#[derive(Debug)]
pub(crate) struct TableState {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) schema: SchemaRef,
    /// Columns rows are hashed on into fragments; `None`: round robin.
    pub(crate) hash_keys: Option<Vec<usize>>,
    pub(crate) spec: TableLayout,
    /// The table `CACHE TABLE` loaded this one from, given back by `UNCACHE TABLE`.
    pub(crate) source: Option<Arc<dyn TableProvider>>,
    pub(crate) constraints: Constraints,
    pub(crate) column_defaults: HashMap<String, Expr>,
    next_load: AtomicU64,
    version: RwLock<Arc<TableVersion>>,
}

/// What a table holds at one moment, and where.
#[derive(Debug, Clone)]
pub(crate) struct TableVersion {
    pub(crate) fragments: Vec<FragmentVersion>,
    /// `holders[f]`: executors holding fragment `f`, preferred first. Changes when a
    /// fragment is re-replicated onto another executor.
    pub(crate) holders: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct FragmentVersion {
    /// Committed loads with rows in this fragment, oldest first.
    pub(crate) loads: Vec<u64>,
    pub(crate) statistics: Statistics,
}

impl FragmentVersion {
    pub(crate) fn rows(&self) -> usize {
        self.statistics.num_rows.get_value().copied().unwrap_or(0)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.statistics
            .total_byte_size
            .get_value()
            .copied()
            .unwrap_or(0)
    }
}

/// One fragment's piece of a load, as its writer reported it.
#[derive(Debug, Clone)]
pub(crate) struct PieceSummary {
    pub(crate) fragment: usize,
    pub(crate) statistics: Statistics,
}

impl FletchTable {
    pub(crate) fn new(
        name: String,
        schema: SchemaRef,
        spec: TableLayout,
        executors: &[String],
        source: Option<Arc<dyn TableProvider>>,
        definition: TableDefinition,
    ) -> Result<Self> {
        if executors.is_empty() {
            return exec_err!("the cluster has no executors: table {name} cannot be held");
        }
        if spec.fragments == 0 {
            return exec_err!("table {name} needs at least one fragment");
        }
        if spec.replicas == 0 || spec.replicas > executors.len() {
            return exec_err!(
                "table {name}: REPLICAS {} needs between 1 and the {} executors of the cluster",
                spec.replicas,
                executors.len()
            );
        }
        let hash_keys = spec
            .hash_keys
            .iter()
            .map(|k| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        datafusion::common::plan_datafusion_err!(
                            "table {name} has no column {k} to partition by"
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        // Fragment f lives on executors f, f+1, ... (mod the cluster): every table with
        // the same fragment count keeps fragment f on the same executors, so joins of
        // co-partitioned tables read both sides locally.
        let holders = (0..spec.fragments)
            .map(|f| {
                (0..spec.replicas)
                    .map(|r| executors[(f + r) % executors.len()].clone())
                    .collect()
            })
            .collect();
        let empty = FragmentVersion {
            loads: vec![],
            statistics: empty_statistics(&schema),
        };
        Ok(Self {
            state: Arc::new(TableState {
                name,
                uid: uuid::Uuid::new_v4().to_string(),
                hash_keys: (!hash_keys.is_empty()).then_some(hash_keys),
                spec: spec.clone(),
                source,
                constraints: definition.constraints,
                column_defaults: definition.column_defaults,
                next_load: AtomicU64::new(1),
                version: RwLock::new(Arc::new(TableVersion {
                    fragments: vec![empty; spec.fragments],
                    holders,
                })),
                schema,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn uid(&self) -> &str {
        &self.state.uid
    }

    pub fn layout(&self) -> &TableLayout {
        &self.state.spec
    }

    /// Executors holding each fragment, preferred first.
    pub fn holders(&self) -> Vec<Vec<String>> {
        self.state.version().holders.clone()
    }

    /// Committed loads with rows in each fragment.
    pub(crate) fn fragment_loads(&self) -> Vec<Vec<u64>> {
        self.state
            .version()
            .fragments
            .iter()
            .map(|f| f.loads.clone())
            .collect()
    }

    /// Records that `to` now holds fragment `fragment` in place of `lost`.
    pub(crate) fn replace_holder(&self, fragment: usize, lost: &str, to: &str) {
        let mut version = self.state.version.write();
        let mut next = TableVersion::clone(&version);
        if let Some(holders) = next.holders.get_mut(fragment) {
            for holder in holders.iter_mut().filter(|h| *h == lost) {
                *holder = to.to_string();
            }
        }
        *version = Arc::new(next);
    }

    /// The table's layout with the holders `version` records.
    fn layout_in(&self, version: &TableVersion) -> FragmentLayout {
        FragmentLayout {
            hash_keys: self.state.hash_keys.clone(),
            holders: version.holders.clone(),
        }
    }

    pub(crate) fn source(&self) -> Option<&Arc<dyn TableProvider>> {
        self.state.source.as_ref()
    }

    /// Rows per fragment and bytes per fragment (one copy), as committed now.
    pub fn fragment_sizes(&self) -> Vec<(usize, usize)> {
        self.state
            .version()
            .fragments
            .iter()
            .map(|f| (f.rows(), f.bytes()))
            .collect()
    }

    /// What a load writes and commits: its writer over `input`, under the commit node.
    pub(crate) fn load_plan(&self, input: Arc<dyn ExecutionPlan>) -> Result<LoadCommitExec> {
        let load = self.state.next_load.fetch_add(1, Ordering::AcqRel);
        let writer = FragmentWriterExec::try_new(
            self.state.name.clone(),
            self.state.uid.clone(),
            load,
            self.layout_in(&self.state.version()),
            input,
        )?;
        Ok(LoadCommitExec::new(
            Arc::clone(&self.state),
            load,
            Arc::new(writer),
        ))
    }
}

impl TableState {
    pub(crate) fn version(&self) -> Arc<TableVersion> {
        Arc::clone(&self.version.read())
    }

    /// Makes one load's pieces visible, all at once.
    pub(crate) fn commit(&self, load: u64, pieces: &[PieceSummary]) -> Result<()> {
        let mut version = self.version.write();
        let mut next = TableVersion::clone(&version);
        for piece in pieces {
            let Some(fragment) = next.fragments.get_mut(piece.fragment) else {
                return internal_err!(
                    "table {} has {} fragments, a load reported fragment {}",
                    self.name,
                    next.fragments.len(),
                    piece.fragment
                );
            };
            if piece.statistics.num_rows.get_value().copied().unwrap_or(0) == 0 {
                continue;
            }
            fragment.loads.push(load);
            fragment.statistics = if fragment.loads.len() == 1 {
                piece.statistics.clone()
            } else {
                Statistics::try_merge_iter([&fragment.statistics, &piece.statistics], &self.schema)?
            };
        }
        *version = Arc::new(next);
        Ok(())
    }
}

fn empty_statistics(schema: &SchemaRef) -> Statistics {
    Statistics {
        num_rows: Precision::Exact(0),
        total_byte_size: Precision::Exact(0),
        column_statistics: schema
            .fields()
            .iter()
            .map(|_| ColumnStatistics {
                null_count: Precision::Exact(0),
                ..ColumnStatistics::new_unknown()
            })
            .collect(),
    }
}

/// Reads the writers' summary rows (see `fletch_planner::load_summary_schema`).
pub(crate) fn piece_summaries(
    batches: &[RecordBatch],
    columns: usize,
) -> Result<Vec<PieceSummary>> {
    let mut pieces = Vec::new();
    for batch in batches {
        let number = |i: usize| -> Result<&UInt64Array> {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| {
                    datafusion::common::internal_datafusion_err!(
                        "load summary column {i} is not UInt64"
                    )
                })
        };
        if batch.num_columns() != 3 + 3 * columns {
            return internal_err!(
                "load summary has {} columns, expected {}",
                batch.num_columns(),
                3 + 3 * columns
            );
        }
        let (fragment, rows, bytes) = (number(0)?, number(1)?, number(2)?);
        for row in 0..batch.num_rows() {
            let column_statistics = (0..columns)
                .map(|c| {
                    let min = ScalarValue::try_from_array(batch.column(3 + 3 * c), row)?;
                    let max = ScalarValue::try_from_array(batch.column(4 + 3 * c), row)?;
                    let nulls = number(5 + 3 * c)?.value(row) as usize;
                    let bound = |v: ScalarValue| {
                        if v.is_null() {
                            Precision::Absent
                        } else {
                            Precision::Exact(v)
                        }
                    };
                    Ok(ColumnStatistics {
                        null_count: Precision::Exact(nulls),
                        min_value: bound(min),
                        max_value: bound(max),
                        ..ColumnStatistics::new_unknown()
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            pieces.push(PieceSummary {
                fragment: fragment.value(row) as usize,
                statistics: Statistics {
                    num_rows: Precision::Exact(rows.value(row) as usize),
                    total_byte_size: Precision::Exact(bytes.value(row) as usize),
                    column_statistics,
                },
            });
        }
    }
    Ok(pieces)
}

#[async_trait]
impl TableProvider for FletchTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.state.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.state.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.state.column_defaults.get(column)
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let version = self.state.version();
        let snapshot = TableSnapshot {
            table: self.state.name.clone(),
            table_uid: self.state.uid.clone(),
            schema: Arc::clone(&self.state.schema),
            layout: self.layout_in(&version),
            loads: version.fragments.iter().map(|f| f.loads.clone()).collect(),
        };
        let statistics = version
            .fragments
            .iter()
            .map(|f| f.statistics.clone())
            .collect();
        Ok(Arc::new(FragmentScanExec::try_new(
            Arc::new(snapshot),
            projection.cloned(),
            Some(Arc::new(statistics)),
        )?))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    fn statistics(&self) -> Option<Statistics> {
        let version = self.state.version();
        let fragments: Vec<Statistics> = version
            .fragments
            .iter()
            .map(|f| f.statistics.clone())
            .collect();
        merge_fragment_statistics(&fragments, &self.state.schema).ok()
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!(
                "{insert_op} into in-memory table {}: only INSERT INTO (append) is supported",
                self.state.name
            );
        }
        let fields = input.schema().fields().len();
        if fields != self.state.schema.fields().len() {
            return exec_err!(
                "inserting {fields} columns into table {}, which has {}",
                self.state.name,
                self.state.schema.fields().len()
            );
        }
        Ok(Arc::new(self.load_plan(input)?))
    }
}

/// The in-memory table behind `provider`, if it is one.
pub(crate) fn as_fletch_table(provider: &Arc<dyn TableProvider>) -> Option<&FletchTable> {
    let provider: &dyn TableProvider = provider.as_ref();
    provider.downcast_ref::<FletchTable>()
}
