//! Runs one stage task: decode the stage's plan (once per stage on this executor), plug
//! in the task's exchange sink and source, execute its partition, and record how it
//! ended on every output partition so readers see completion or the failure.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_planner::{
    ExchangeSink, ExchangeSinkExt, ExchangeSourceExt, FletchOptions, FragmentStoreExt,
    ShuffleWriterExec, check_requirements, decode_stage_plan,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::exchange_source::{FlightExchangeSource, LocalPartitions};
use crate::fragment_io::ExecutorFragments;
use crate::fragments::FragmentPieces;
use crate::memory::ExecutorMemoryPool;
use crate::metrics::ExecutorMetrics;
use crate::store::{OutputId, PartitionBuffer, PartitionStore, QueryState};
use crate::task_report::{TaskFigures, TaskMemory, TaskReads, TaskWrites};
use fletch_transport::ClientPool;
use fletch_transport::protocol::{StageLocations, TaskDefinition, TaskReport};
use fletch_transport::{FailureReason, OUTSIDE_TASKS, TaskFailure};

pub(crate) struct TaskRunner {
    pub(crate) url: String,
    pub(crate) store: Arc<PartitionStore>,
    pub(crate) fragments: Arc<FragmentPieces>,
    pub(crate) pool: Arc<ExecutorMemoryPool>,
    pub(crate) session: SessionContext,
    pub(crate) clients: ClientPool,
    pub(crate) limits: TaskLimits,
    pub(crate) metrics: Arc<ExecutorMetrics>,
}

/// What one task definition may ask of an executor, checked before anything is
/// allocated for it: even a member's plan is not trusted to be sane.
#[derive(Debug, Clone, Copy)]
pub struct TaskLimits {
    /// Bytes of an encoded stage plan.
    pub max_plan_bytes: usize,
    /// Partitions of any operator in a stage plan, and tasks of a stage.
    pub max_partitions: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        Self {
            max_plan_bytes: 64 << 20,
            max_partitions: 1 << 16,
        }
    }
}

struct TaskSink {
    outputs: Vec<Arc<PartitionBuffer>>,
    writes: Arc<TaskWrites>,
}

impl std::fmt::Debug for TaskSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskSink({} outputs)", self.outputs.len())
    }
}

impl ExchangeSink for TaskSink {
    fn write(
        &self,
        output_partition: usize,
        batch: arrow::array::RecordBatch,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(out) = self.outputs.get(output_partition) else {
                return Err(DataFusionError::Internal(format!(
                    "output partition {output_partition} out of {}",
                    self.outputs.len()
                )));
            };
            let waiting = Instant::now();
            let rows = batch.num_rows();
            let bytes = batch.get_array_memory_size();
            let pushed = out.push(batch).await;
            self.writes
                .wrote(output_partition, rows, bytes, waiting.elapsed());
            pushed
        })
    }
}

impl TaskRunner {
    /// Runs one task to its end, counting how it ended in the executor's metrics.
    pub(crate) async fn run(&self, def: TaskDefinition) -> Result<TaskReport, TaskFailure> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "task",
            query_id = %def.query_id,
            stage = def.stage,
            task = def.task,
            attempt = def.attempt,
            executor = %self.url,
        );
        let ended = self.run_task(def).instrument(span).await;
        let state = match &ended {
            Ok(_) => "finished",
            Err(failure) if failure.reason == FailureReason::Cancelled => "cancelled",
            Err(_) => "failed",
        };
        let report = ended.as_ref().ok();
        self.metrics.task_ended(state, started.elapsed(), report);
        ended
    }

    async fn run_task(&self, def: TaskDefinition) -> Result<TaskReport, TaskFailure> {
        let started = Instant::now();
        let started_at = SystemTime::now();
        let stage = usize::try_from(def.stage).unwrap_or(OUTSIDE_TASKS);
        let task = usize::try_from(def.task).unwrap_or(OUTSIDE_TASKS);
        let fail =
            |reason, message: String| TaskFailure::new(reason, message, stage, task, &self.url);

        if def.plan.len() > self.limits.max_plan_bytes {
            return Err(fail(
                FailureReason::BadRequest,
                format!(
                    "the stage plan has {} bytes, more than this executor's limit of {}",
                    def.plan.len(),
                    self.limits.max_plan_bytes
                ),
            ));
        }
        let query = self.store.query(&def.query_id).map_err(|mut e| {
            e.stage = stage;
            e.task = task;
            e.executor = self.url.clone();
            e
        })?;
        let mut config = SessionConfig::new().with_option_extension(FletchOptions::default());
        for entry in &def.config {
            config
                .options_mut()
                .set(&entry.key, &entry.value)
                .map_err(|e| {
                    fail(
                        FailureReason::BadRequest,
                        format!("setting {}: {e}", entry.key),
                    )
                })?;
        }
        // Sibling scan partitions steal files from one queue inside a plan instance; a
        // stage's partitions run on several executors, each with its own instance, so
        // stealing would read every file once per executor. Never let it on.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let locations: HashMap<u64, StageLocations> =
            def.inputs.iter().map(|l| (l.stage, l.clone())).collect();
        let reads = TaskReads::default();
        let source =
            FlightExchangeSource::new(def.query_id.clone(), locations, self.clients.clone())
                .with_local(LocalPartitions {
                    url: self.url.clone(),
                    store: Arc::clone(&self.store),
                })
                .with_reads(reads.clone());
        let config = config.with_extension(Arc::new(ExchangeSourceExt(Arc::new(source))));
        let fragments = ExecutorFragments {
            url: self.url.clone(),
            pieces: Arc::clone(&self.fragments),
            clients: self.clients.clone(),
            reads: reads.clone(),
        };
        let config = config.with_extension(Arc::new(FragmentStoreExt(Arc::new(fragments))));

        let plan = self
            .stage_plan(&query, &def, &config)
            .map_err(|e| fail(FailureReason::BadRequest, format!("stage plan: {e}")))?;
        let Some(writer) = plan.downcast_ref::<ShuffleWriterExec>() else {
            return Err(fail(
                FailureReason::BadRequest,
                format!(
                    "a stage plan must start with ShuffleWriterExec, got {}",
                    plan.name()
                ),
            ));
        };
        if let Some(too_many) =
            too_many_partitions(&plan, self.limits.max_partitions).or_else(|| {
                (writer.task_count() > self.limits.max_partitions)
                    .then(|| format!("{} tasks", writer.task_count()))
            })
        {
            return Err(fail(
                FailureReason::BadRequest,
                format!(
                    "the stage plan asks for {too_many}, more than this executor's limit of {}",
                    self.limits.max_partitions
                ),
            ));
        }
        if task >= writer.task_count() {
            return Err(fail(
                FailureReason::BadRequest,
                format!(
                    "stage {stage} has {} tasks, asked for task {task}",
                    writer.task_count()
                ),
            ));
        }
        let outputs: Vec<_> = (0..writer.output_partition_count() as u64)
            .map(|partition| {
                let output = OutputId {
                    stage: def.stage,
                    task: def.task,
                    attempt: def.attempt,
                    partition,
                };
                self.store.buffer(&query, output, def.retain_outputs)
            })
            .collect();
        let writes = Arc::new(TaskWrites::new(outputs.len()));
        let sink = TaskSink {
            outputs: outputs.clone(),
            writes: Arc::clone(&writes),
        };
        let config = config.with_extension(Arc::new(ExchangeSinkExt(Arc::new(sink))));
        let memory = Arc::new(TaskMemory::new(
            self.session.runtime_env().memory_pool.clone(),
        ));
        let ctx = self
            .task_context(config, &def, Some(Arc::clone(&memory)))
            .map_err(|e| fail(FailureReason::TaskFailed, format!("task context: {e}")))?;
        let ctx = Arc::new(ctx);
        let figures = TaskFigures {
            started,
            started_at,
            reads,
            writes,
            memory,
        };
        let tasks = writer.task_count();

        let (done_tx, done_rx) = oneshot::channel();
        let Some(running) = query.task_started() else {
            return Err(fail(FailureReason::Cancelled, "query released".to_string()));
        };
        let url = self.url.clone();
        let work = async move {
            let _running = running;
            let result = drive(Arc::clone(&plan), task, ctx).await;
            let end = result.map_err(|e| TaskFailure::from_task_error(&e, stage, task, &url));
            for output in &outputs {
                output.finish(end.clone());
            }
            // The coordinator may have stopped waiting; the outputs carry the end anyway.
            let _ = done_tx.send(end.map(|()| figures.report(&plan, task, tasks)));
        };
        // Owned by the query: releasing the query aborts the task.
        query.own_task(SpawnedTask::spawn(work.in_current_span()));
        match done_rx.await {
            Ok(end) => end,
            Err(_) => Err(fail(FailureReason::Cancelled, "query released".to_string())),
        }
    }

    fn stage_plan(
        &self,
        query: &QueryState,
        def: &TaskDefinition,
        config: &SessionConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let key = (def.stage, def.attempt);
        if let Some(plan) = query.plans.lock().get(&key) {
            return Ok(Arc::clone(plan));
        }
        let decode_ctx = self.task_context(config.clone(), def, None)?;
        let plan = decode_stage_plan(&def.plan, &decode_ctx)?;
        if cfg!(debug_assertions) {
            let stage = usize::try_from(def.stage).unwrap_or(OUTSIDE_TASKS);
            check_requirements(stage, &plan, config.options())?;
        }
        let plan = yielding_joins(plan)?;
        // Tasks of one stage share one plan instance, so a broadcast build side or a
        // scalar subquery is computed once per executor, not once per task.
        Ok(Arc::clone(query.plans.lock().entry(key).or_insert(plan)))
    }

    /// The context a task runs in; its operators reserve memory through `memory`, when
    /// given, so the task's own peak is known.
    fn task_context(
        &self,
        config: SessionConfig,
        def: &TaskDefinition,
        memory: Option<Arc<TaskMemory>>,
    ) -> Result<TaskContext> {
        let state = self.session.state();
        let runtime = match memory {
            None => Arc::clone(state.runtime_env()),
            Some(memory) => RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                .with_memory_pool(memory)
                .build_arc()?,
        };
        Ok(TaskContext::new(
            Some(format!(
                "{}/{}/{}/{}",
                def.query_id, def.stage, def.task, def.attempt
            )),
            def.query_id.clone(),
            config,
            state.scalar_functions().clone(),
            state.higher_order_functions().clone(),
            state.aggregate_functions().clone(),
            state.window_functions().clone(),
            runtime,
        ))
    }
}

/// The first operator of `plan` (or the exchange it writes) with more partitions than
/// `max`, described.
fn too_many_partitions(plan: &Arc<dyn ExecutionPlan>, max: usize) -> Option<String> {
    if let Some(writer) = plan.downcast_ref::<ShuffleWriterExec>()
        && writer.output_partition_count() > max
    {
        return Some(format!(
            "{} output partitions",
            writer.output_partition_count()
        ));
    }
    let count = plan.properties().output_partitioning().partition_count();
    if count > max {
        return Some(format!("{count} partitions in {}", plan.name()));
    }
    plan.children()
        .into_iter()
        .find_map(|child| too_many_partitions(child, max))
}

async fn drive(plan: Arc<dyn ExecutionPlan>, task: usize, ctx: Arc<TaskContext>) -> Result<()> {
    let mut stream = plan.execute(task, ctx)?;
    while let Some(item) = stream.next().await {
        item?;
    }
    Ok(())
}

/// `plan` with every join's output under DataFusion's `CooperativeExec`. A join can
/// emit batch after batch from one probe batch without polling its input, and the
/// aggregate above it pulls without waiting: the task would never reach an await
/// point, so aborting it when its query is released (Ctrl-C, a dropped stream) could
/// not take effect until the join ran dry. The tokio budget makes it yield.
fn yielding_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.name().ends_with("JoinExec") {
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .data()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::{ExecutionPlan, Partitioning};

    use super::too_many_partitions;

    #[test]
    fn a_plan_claiming_too_many_partitions_is_named() {
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        let huge =
            RepartitionExec::try_new(Arc::clone(&empty), Partitioning::RoundRobinBatch(1 << 32))
                .expect("a plan");
        let huge: Arc<dyn ExecutionPlan> = Arc::new(huge);
        let found = too_many_partitions(&huge, 1 << 16).expect("too many");
        assert!(
            found.contains("4294967296 partitions in RepartitionExec"),
            "{found}"
        );
        let fine: Arc<dyn ExecutionPlan> = Arc::new(
            RepartitionExec::try_new(empty, Partitioning::RoundRobinBatch(8)).expect("a plan"),
        );
        assert_eq!(too_many_partitions(&fine, 1 << 16), None);
    }
}
