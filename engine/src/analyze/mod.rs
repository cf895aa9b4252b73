//! `EXPLAIN ANALYZE` of a distributed plan: [`DistributedAnalyzeExec`] takes the place of
//! DataFusion's `AnalyzeExec` over a [`DistributedExec`]. It runs the query recording
//! every task attempt, then prints the whole plan with each node's metrics (summed over
//! the tasks that ran it, as the executors reported them), one row of figures per stage
//! (tasks, executors, wall time, skew, reads local and over Flight, what each input
//! produced), every attempt with `VERBOSE`, and the recoveries the query made.

mod measured;
mod summary;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::format::{ExplainFormat, MetricCategory, MetricType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err, not_impl_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use futures::StreamExt;

use crate::distributed_exec::DistributedExec;
use crate::query_record::QueryRecord;

/// DataFusion's query planner, but `EXPLAIN ANALYZE` of a distributed plan becomes a
/// [`DistributedAnalyzeExec`]. (DataFusion wraps an already optimized input in its
/// `AnalyzeExec` without running the physical optimizer again, so no optimizer rule
/// sees it.)
#[derive(Debug, Default)]
pub struct FletchQueryPlanner;

#[async_trait]
impl QueryPlanner for FletchQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical_plan, session_state)
            .await?;
        if let Some(analyze) = plan.downcast_ref::<AnalyzeExec>()
            && let Some(distributed) = DistributedAnalyzeExec::over(
                analyze,
                analyze.input(),
                session_state.config_options(),
            )
        {
            return Ok(Arc::new(distributed));
        }
        Ok(plan)
    }
}

/// `EXPLAIN ANALYZE` over a distributed plan.
#[derive(Debug, Clone)]
pub struct DistributedAnalyzeExec {
    verbose: bool,
    show_statistics: bool,
    metric_types: Vec<MetricType>,
    metric_categories: Option<Vec<MetricCategory>>,
    format: ExplainFormat,
    /// A [`DistributedExec`].
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl DistributedAnalyzeExec {
    /// `analyze`'s settings over `input`, when `input` is distributed; the metric level
    /// comes from the session (`datafusion.explain.analyze_level`).
    pub(crate) fn over(
        analyze: &AnalyzeExec,
        input: &Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Option<Self> {
        if !input.is::<DistributedExec>() {
            return None;
        }
        Some(Self {
            verbose: analyze.verbose(),
            show_statistics: analyze.show_statistics(),
            metric_types: config.explain.analyze_level.included_types(),
            metric_categories: analyze.metric_categories().map(<[_]>::to_vec),
            format: analyze.format().clone(),
            input: Arc::clone(input),
            properties: Arc::clone(analyze.properties()),
        })
    }

    /// The output of a finished query: its measured plan, and figures per stage.
    fn report(
        &self,
        distributed: &DistributedExec,
        record: &QueryRecord,
        rows: usize,
        started: Instant,
    ) -> Result<RecordBatch> {
        let measured = measured::measured_plan(&self.input, record);
        let mut kinds = StringBuilder::new();
        let mut texts = StringBuilder::new();
        let mut row = |kind: &str, text: &str| {
            kinds.append_value(kind);
            texts.append_value(text);
        };
        let displayable = DisplayableExecutionPlan::with_metrics(measured.as_ref())
            .set_metric_types(self.metric_types.clone())
            .set_metric_categories(self.metric_categories.clone())
            .set_show_statistics(self.show_statistics);
        match self.format {
            ExplainFormat::Indent => {
                row(
                    "Plan with Metrics",
                    &displayable.indent(self.verbose).to_string(),
                );
            }
            ExplainFormat::PostgresJSON => {
                row(
                    "Plan with Metrics",
                    &displayable.pgjson(self.verbose).to_string(),
                );
            }
            ExplainFormat::Tree | ExplainFormat::Graphviz => {
                return not_impl_err!("EXPLAIN ANALYZE does not support {} output", self.format);
            }
        }
        let plan = distributed.distributed_plan();
        let recoveries = record.recoveries();
        row(
            "Query",
            &format!(
                "rows={rows} duration={:.3}ms stages={} tasks={} recoveries={}",
                started.elapsed().as_secs_f64() * 1e3,
                plan.stages.len(),
                plan.stages.iter().map(|s| s.task_count).sum::<usize>(),
                recoveries.len()
            ),
        );
        for (stage, leaves) in summary::stages_of(&measured) {
            let planned = plan.stage(stage).map_or(0, |s| s.task_count);
            row(
                &format!("Stage {stage}"),
                &summary::stage_summary(stage, planned, &leaves, record),
            );
            if self.verbose {
                row(
                    &format!("Stage {stage} tasks"),
                    &summary::stage_tasks(stage, record),
                );
            }
        }
        if !recoveries.is_empty() {
            row("Recoveries", &recoveries.join("\n"));
        }
        Ok(RecordBatch::try_new(
            self.schema(),
            vec![Arc::new(kinds.finish()), Arc::new(texts.finish())],
        )?)
    }
}

impl DisplayAs for DistributedAnalyzeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "verbose={}", self.verbose),
            _ => write!(f, "DistributedAnalyzeExec verbose={}", self.verbose),
        }
    }
}

impl ExecutionPlan for DistributedAnalyzeExec {
    fn name(&self) -> &str {
        "DistributedAnalyzeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [child] if Arc::ptr_eq(child, &self.input) => Ok(self),
            _ => internal_err!("the input of a distributed EXPLAIN ANALYZE cannot be replaced"),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(datafusion::physical_plan::ChildrenPropertiesMode::Keep),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("EXPLAIN ANALYZE has one partition, asked for {partition}");
        }
        let Some(distributed) = self.input.downcast_ref::<DistributedExec>() else {
            return internal_err!("a distributed EXPLAIN ANALYZE needs a distributed plan");
        };
        let record = Arc::new(QueryRecord::default());
        let started = Instant::now();
        let mut results = distributed.execute_recorded(context, Arc::clone(&record))?;
        let this = self.clone();
        let output = async move {
            let mut rows = 0;
            while let Some(batch) = results.next().await.transpose()? {
                rows += batch.num_rows();
            }
            // The record is complete once the query's stream has ended.
            drop(results);
            let Some(distributed) = this.input.downcast_ref::<DistributedExec>() else {
                return internal_err!("a distributed EXPLAIN ANALYZE needs a distributed plan");
            };
            this.report(distributed, &record, rows, started)
        };
        let schema: SchemaRef = self.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(output),
        )))
    }
}
