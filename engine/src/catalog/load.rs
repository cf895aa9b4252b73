//! [`LoadCommitExec`]: the coordinator end of a load (`CREATE TABLE AS`, `INSERT`,
//! `CACHE TABLE`). Its input is the distributed writer stage; when every fragment's
//! piece is stored on every holder it commits them to the table in one step. If any
//! task fails, or the query is dropped first, it drops the load's pieces on every
//! executor: a failed load leaves nothing behind.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures::TryStreamExt;

use super::table::{TableState, piece_summaries};
use crate::janitor::Janitor;

#[derive(Debug)]
pub struct LoadCommitExec {
    table: Arc<TableState>,
    load: u64,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl LoadCommitExec {
    pub(crate) fn new(table: Arc<TableState>, load: u64, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            table,
            load,
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for LoadCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LoadCommitExec: table={}, load={}",
            self.table.name, self.load
        )
    }
}

impl ExecutionPlan for LoadCommitExec {
    fn name(&self) -> &str {
        "LoadCommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
            return plan_err!("LoadCommitExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(Self::new(
            Arc::clone(&self.table),
            self.load,
            children.swap_remove(0),
        )))
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
        if partition != 0 {
            return internal_err!("LoadCommitExec has one partition, asked for {partition}");
        }
        let Some(janitor) = context.session_config().get_extension::<Janitor>() else {
            return exec_err!(
                "loading table {} needs a Fletch session (no coordinator)",
                self.table.name
            );
        };
        let table = Arc::clone(&self.table);
        let load = self.load;
        let guard = janitor.load_guard(table.uid.clone(), load);
        let input = self.input.execute(0, context)?;
        let committed = futures::stream::once(async move {
            let outcome = async {
                let batches: Vec<RecordBatch> = input.try_collect().await?;
                let pieces = piece_summaries(&batches, table.schema.fields().len())?;
                let mut seen = vec![false; table.spec.fragments];
                for piece in &pieces {
                    match seen.get_mut(piece.fragment) {
                        Some(s) if !*s => *s = true,
                        _ => {
                            return internal_err!(
                                "load {load} of table {} reported fragment {} twice or out of range",
                                table.name,
                                piece.fragment
                            );
                        }
                    }
                }
                if let Some(missing) = seen.iter().position(|s| !s) {
                    return internal_err!(
                        "load {load} of table {} did not report fragment {missing}",
                        table.name
                    );
                }
                table.commit(load, &pieces)?;
                Ok(pieces
                    .iter()
                    .map(|p| p.statistics.num_rows.get_value().copied().unwrap_or(0) as u64)
                    .sum::<u64>())
            }
            .await;
            match outcome {
                Ok(rows) => {
                    guard.disarm();
                    let count = Arc::new(UInt64Array::from(vec![rows]));
                    Ok(RecordBatch::try_new(count_schema(), vec![count])?)
                }
                Err(e) => {
                    // Gone from every executor before the error reaches the caller.
                    guard.drop_now().await;
                    Err(e.context(format!("loading table {}", table.name)))
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            committed,
        )))
    }
}
