//! [`FragmentWriterExec`]: stores a load's rows as pieces of a table's fragments.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

use super::{FragmentLayout, FragmentStoreExt, PieceRef};

/// The schema of a writer's output: one row per fragment with the piece's `fragment`,
/// `rows` and `bytes`, then `min_i`, `max_i` and `nulls_i` of every table column `i`.
pub fn load_summary_schema(table: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("fragment", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ];
    for (i, f) in table.fields().iter().enumerate() {
        fields.push(Field::new(format!("min_{i}"), f.data_type().clone(), true));
        fields.push(Field::new(format!("max_{i}"), f.data_type().clone(), true));
        fields.push(Field::new(format!("nulls_{i}"), DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

/// Task `f` stores input partition `f` as fragment `f`'s piece of load `load`. The
/// cutter first makes the input partitioned the way the layout says (see
/// [`FragmentWriterExec::required_partitioning`]).
#[derive(Debug)]
pub struct FragmentWriterExec {
    table: String,
    table_uid: String,
    load: u64,
    layout: FragmentLayout,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl FragmentWriterExec {
    pub fn try_new(
        table: String,
        table_uid: String,
        load: u64,
        layout: FragmentLayout,
        input: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        if layout.fragment_count() == 0 {
            return plan_err!("table {table} needs at least one fragment");
        }
        let partitions = input.properties().partitioning.partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(load_summary_schema(&input.schema())),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            table,
            table_uid,
            load,
            layout,
            input,
            properties: Arc::new(properties),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn table_uid(&self) -> &str {
        &self.table_uid
    }

    pub fn load(&self) -> u64 {
        self.load
    }

    pub fn layout(&self) -> &FragmentLayout {
        &self.layout
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// How the input must be partitioned: by the layout's hash keys, or round robin,
    /// into one partition per fragment.
    pub fn required_partitioning(&self) -> Partitioning {
        let schema = self.input.schema();
        let n = self.layout.fragment_count();
        match self.layout.partitioning(&schema, &Some) {
            Partitioning::Hash(exprs, n) => Partitioning::Hash(exprs, n),
            _ => Partitioning::RoundRobinBatch(n),
        }
    }

    /// Whether the input already is partitioned as [`Self::required_partitioning`] says.
    /// Any split into one partition per fragment does for round robin.
    pub fn input_is_partitioned(&self) -> bool {
        let have = &self.input.properties().partitioning;
        match self.required_partitioning() {
            Partitioning::RoundRobinBatch(n) => have.partition_count() == n,
            wanted => *have == wanted,
        }
    }
}

impl DisplayAs for FragmentWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FragmentWriterExec: table={}, load={}, fragments={}, by={}",
            self.table,
            self.load,
            self.layout.fragment_count(),
            self.required_partitioning()
        )
    }
}

impl ExecutionPlan for FragmentWriterExec {
    fn name(&self) -> &str {
        "FragmentWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return plan_err!("FragmentWriterExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(
            self.table.clone(),
            self.table_uid.clone(),
            self.load,
            self.layout.clone(),
            children.swap_remove(0),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(holders) = self.layout.holders.get(partition) else {
            return internal_err!(
                "table {} has {} fragments, asked to write {partition}",
                self.table,
                self.layout.fragment_count()
            );
        };
        let Some(store) = context.session_config().get_extension::<FragmentStoreExt>() else {
            return exec_err!(
                "table {} can only be loaded inside a Fletch executor (no fragment store)",
                self.table
            );
        };
        let piece = PieceRef {
            table: self.table.clone(),
            table_uid: self.table_uid.clone(),
            load: self.load,
            fragment: partition as u64,
            holders: holders.clone(),
        };
        let input = self.input.execute(partition, context)?;
        let input_schema = input.schema();
        let summary = Arc::new(Mutex::new(PieceSummary::new(&input_schema)));
        let observed = Arc::clone(&summary);
        let counted = input.and_then(move |batch| {
            let result = observed.lock().update(&batch).map(|()| batch);
            async move { result }
        });
        let counted = Box::pin(RecordBatchStreamAdapter::new(input_schema, counted));
        let write = store.0.write(piece, counted);
        let schema = self.schema();
        let out_schema = Arc::clone(&schema);
        let output = futures::stream::once(async move {
            let bytes = write.await?;
            let summary = std::mem::replace(&mut *summary.lock(), PieceSummary::empty());
            summary.into_batch(out_schema, partition as u64, bytes)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            output.boxed(),
        )))
    }
}

/// Rows, min/max and null counts of one piece, gathered as its batches pass by.
#[derive(Debug)]
struct PieceSummary {
    rows: u64,
    columns: Vec<ColumnSummary>,
}

/// Min and max accumulators (absent for types they do not support), the column's type
/// and its null count.
type ColumnSummary = (Option<(MinAccumulator, MaxAccumulator)>, DataType, u64);

impl PieceSummary {
    fn new(schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let dt = f.data_type();
                // Nested values (lists, structs, maps) have no order DataFusion can
                // always compute ("Uncomparable values" for lists holding nulls), and
                // no plan prunes on them.
                let acc = (!dt.is_nested())
                    .then(|| {
                        MinAccumulator::try_new(dt)
                            .and_then(|min| Ok((min, MaxAccumulator::try_new(dt)?)))
                            .ok()
                    })
                    .flatten();
                (acc, dt.clone(), 0)
            })
            .collect();
        Self { rows: 0, columns }
    }

    fn empty() -> Self {
        Self {
            rows: 0,
            columns: vec![],
        }
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        for ((acc, _, nulls), column) in self.columns.iter_mut().zip(batch.columns()) {
            *nulls += column.null_count() as u64;
            if let Some((min, max)) = acc {
                let updated = min
                    .update_batch(std::slice::from_ref(column))
                    .and_then(|_| max.update_batch(std::slice::from_ref(column)));
                if updated.is_err() {
                    // Statistics are a planning hint: a column whose values cannot be
                    // ordered gets none, and the load goes on.
                    *acc = None;
                }
            }
        }
        Ok(())
    }

    fn into_batch(self, schema: SchemaRef, fragment: u64, bytes: u64) -> Result<RecordBatch> {
        let single = |v: u64| Arc::new(UInt64Array::from(vec![v])) as ArrayRef;
        let mut arrays = vec![single(fragment), single(self.rows), single(bytes)];
        for (acc, dt, nulls) in self.columns {
            match acc {
                Some((mut min, mut max)) => {
                    arrays.push(min.evaluate()?.to_array()?);
                    arrays.push(max.evaluate()?.to_array()?);
                }
                None => {
                    arrays.push(new_null_array(&dt, 1));
                    arrays.push(new_null_array(&dt, 1));
                }
            }
            arrays.push(single(nulls));
        }
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}
