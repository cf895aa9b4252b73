//! One query as its caller's stream sees it: places and launches its tasks, streams the
//! final stage and, when executors are lost, runs again what they took with them — the
//! tasks their lineage names ([`crate::recovery`]), or the whole plan when it loads a
//! table or `fletch.stage_recovery` is off. Results are held back up to
//! `fletch.result_buffer` so a restart of the final stage stays invisible.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_executor::FlightExchangeSource;
use fletch_planner::{
    DistributedPlan, ExchangeSourceExt, FletchOptions, Stage, StageId, preferred_holders,
};
use fletch_transport::protocol::{
    ConfigEntry, ExecutorStatus, PartitionTicket, StageLocations, TaskDefinition,
};
use fletch_transport::{ClientPool, ExecutorClient, FailureReason, TaskFailure};
use futures::future::{AbortHandle, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast;

use crate::coordinator::{Coordinator, Slots, release_everywhere, shipped_config, with_extension};
use crate::janitor::ReleaseGuard;
use crate::progress::QueryProgress;
use crate::recovery::{Lineage, TaskKey, TaskRun};

/// Running a plan is this module's job; these are the coordinator's doors to it.
impl Coordinator {
    /// Runs a distributed plan; executors lost under it are recovered from
    /// ([`crate::query_run`]).
    pub(crate) fn run(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        QueryRun::start(self, plan, encoded, ctx)
    }

    /// Runs a query whose result a client reads straight from the executor of its final
    /// task (see [`QueryRun::start_served`]); dropping the stream stops the query.
    pub(crate) fn run_served(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<(SendableRecordBatchStream, ServedResult)> {
        QueryRun::start_served(self, plan, encoded, ctx)
    }
}

/// How many times a query runs when executors are lost under it: the first run, then
/// one recovery (of some tasks or of the whole plan) per loss.
pub const MAX_ATTEMPTS: usize = 3;

/// How long a result served from an executor waits, once computed, for its client to
/// start reading; then the query fails and frees its memory.
pub const UNREAD_RESULT: Duration = Duration::from_secs(300);

/// Where a query's result waits for a client that reads it straight from the executor
/// that ran the final stage (`fletch.result_endpoints = 'executors'`).
#[derive(Debug, Clone)]
pub struct ServedResult {
    pub url: String,
    pub partition: PartitionTicket,
}

pub(crate) struct QueryRun {
    coordinator: Arc<Coordinator>,
    attempt: Attempt,
    /// Runs so far: the first, plus one per recovery.
    attempts: usize,
    held: HeldResults,
}

impl QueryRun {
    /// Starts the query; its stream yields the result.
    pub(crate) fn start(
        coordinator: Arc<Coordinator>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Self::start_run(coordinator, plan, encoded, ctx, false).map(|(stream, _)| stream)
    }

    /// Starts the query for a client that reads its result straight from the executor
    /// of its final task, pinned there now (before any task runs, so the client may
    /// start reading at once). The stream yields no rows: it drives the query until the
    /// client has read the result, and must be polled until it ends.
    pub(crate) fn start_served(
        coordinator: Arc<Coordinator>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<(SendableRecordBatchStream, ServedResult)> {
        let (stream, served) = Self::start_run(coordinator, plan, encoded, ctx, true)?;
        let served = served.ok_or_else(|| {
            DataFusionError::Internal("a served query has no result place".to_string())
        })?;
        Ok((stream, served))
    }

    fn start_run(
        coordinator: Arc<Coordinator>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
        serve: bool,
    ) -> Result<(SendableRecordBatchStream, Option<ServedResult>)> {
        let options = FletchOptions::of(ctx.session_config().options());
        let stage_recovery = options.stage_recovery && !plan.writes_fragments();
        let hold_back = options.result_buffer.0;
        let attempt = Attempt::launch(
            &coordinator,
            &plan,
            &encoded,
            &ctx,
            stage_recovery,
            HashSet::new(),
            serve,
        )?;
        let served = attempt.served.clone();
        let schema = plan.root.schema();
        let run = Self {
            coordinator,
            attempt,
            attempts: 1,
            held: HeldResults::new(hold_back),
        };
        let stream = futures::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        });
        Ok((
            Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            served,
        ))
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.held.pop() {
                return Some(Ok(batch));
            }
            match self.attempt.next().await {
                None => {
                    self.held.end();
                    return self.held.pop().map(Ok);
                }
                Some(Ok(batch)) => self.held.push(batch),
                Some(Err(Stop::Failed(error))) => return Some(Err(as_raised(error))),
                Some(Err(Stop::Lost { error, url, task })) => {
                    if let Err(error) = self.recover(error, &url, task).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Runs again what the loss of the executor at `url` took, or fails the query with
    /// `error` and why it could not.
    async fn recover(
        &mut self,
        error: DataFusionError,
        url: &str,
        task: Option<TaskKey>,
    ) -> Result<()> {
        self.coordinator.suspect_lost(url);
        self.attempt.lost.insert(url.to_string());
        let give_up = |why: String| {
            Err(error.context(format!(
                "executor {url} was lost {why} (attempt {} of at most {MAX_ATTEMPTS})",
                self.attempts
            )))
        };
        if self.attempts >= MAX_ATTEMPTS {
            self.attempt.finish().await;
            return give_up("on every attempt".to_string());
        }
        // A client reading the result from an executor cannot be told to start over.
        let served_from = self.attempt.served.as_ref().map(|s| {
            format!(
                "while its result was served from executor {} (fletch.result_endpoints = \
                 'executors'), and the final stage must run again; results read through \
                 the coordinator survive this",
                s.url
            )
        });
        if self.attempt.stage_recovery {
            let (rerun, restart_root) = self.attempt.recovery(task);
            if restart_root && let Some(why) = served_from {
                self.attempt.finish().await;
                return give_up(why);
            }
            if restart_root && self.held.delivered() {
                self.attempt.finish().await;
                return give_up(format!(
                    "after {} rows were returned, and the final stage must run again \
                     (fletch.result_buffer holds back more)",
                    self.held.delivered_rows
                ));
            }
            self.attempts += 1;
            tracing::warn!(
                %url,
                attempt = self.attempts,
                tasks = rerun.len(),
                "executor lost during a query; running its lost tasks again"
            );
            if restart_root {
                self.held.discard();
            }
            self.coordinator.recovery_counters().lineage(rerun.len());
            return self.attempt.rerun(&rerun).map_err(|e| {
                e.context(format!("running tasks again after executor {url} was lost"))
            });
        }
        if let Some(why) = served_from {
            self.attempt.finish().await;
            return give_up(why);
        }
        if self.held.delivered() {
            self.attempt.finish().await;
            return give_up("after rows were returned, so it cannot run again".to_string());
        }
        self.attempt.finish().await;
        self.attempts += 1;
        tracing::warn!(%url, attempt = self.attempts, "executor lost during a query; running it again");
        self.held.discard();
        self.coordinator.recovery_counters().whole();
        let lost = std::mem::take(&mut self.attempt.lost);
        let (plan, encoded, ctx) = (&self.attempt.plan, &self.attempt.encoded, &self.attempt.ctx);
        self.attempt = Attempt::launch(&self.coordinator, plan, encoded, ctx, false, lost, false)
            .map_err(|e| {
            e.context(format!(
                "running the query again after executor {url} was lost"
            ))
        })?;
        Ok(())
    }
}

/// Result batches held back until the query ends or they pass the limit.
struct HeldResults {
    batches: VecDeque<RecordBatch>,
    bytes: usize,
    limit: usize,
    /// Whether batches are returned as they come (the limit was passed or the end came).
    streaming: bool,
    /// Rows that reached the caller: once there are any, a restart would repeat them.
    delivered_rows: usize,
}

impl HeldResults {
    fn new(limit: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            limit,
            streaming: false,
            delivered_rows: 0,
        }
    }

    fn push(&mut self, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        self.batches.push_back(batch);
        self.streaming |= self.bytes > self.limit;
    }

    fn end(&mut self) {
        self.streaming = true;
    }

    fn pop(&mut self) -> Option<RecordBatch> {
        if !self.streaming {
            return None;
        }
        let batch = self.batches.pop_front()?;
        self.bytes -= batch.get_array_memory_size();
        self.delivered_rows += batch.num_rows();
        Some(batch)
    }

    fn delivered(&self) -> bool {
        self.delivered_rows > 0
    }

    /// The final stage runs again: what it produced so far is produced again.
    fn discard(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }
}

/// Why an attempt stopped before its end.
enum Stop {
    /// Nothing more can run; the attempt has been released.
    Failed(DataFusionError),
    /// An executor was lost; the attempt is still running and may recover.
    Lost {
        error: DataFusionError,
        url: String,
        /// The task that reported the loss, when one did.
        task: Option<TaskKey>,
    },
}

/// A task's failure as the error the task raised (`Execution error: ...` and where),
/// the error single-node DataFusion gives; any other error as it is.
fn as_raised(error: DataFusionError) -> DataFusionError {
    let raised = match &error {
        DataFusionError::External(inner) => inner
            .downcast_ref::<TaskFailure>()
            .and_then(TaskFailure::to_user_error),
        _ => None,
    };
    raised.unwrap_or(error)
}

/// The end of the client's read of a served result; pending until the final task ends.
async fn result_read(
    read: &mut Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>,
) -> std::result::Result<(), TaskFailure> {
    match read {
        Some(read) => read.await,
        None => std::future::pending().await,
    }
}

/// The next item of the coordinator's read of the final stage; pending until it starts.
async fn next_result(
    results: &mut Option<SendableRecordBatchStream>,
) -> Option<Result<RecordBatch>> {
    match results {
        Some(results) => results.next().await,
        None => std::future::pending().await,
    }
}

/// How one run of a task ended.
struct TaskOutcome {
    key: TaskKey,
    attempt: u64,
    result: std::result::Result<(), TaskFailure>,
}

/// One run of a query's tasks, and the runs of those of them that ran again.
struct Attempt {
    coordinator: Arc<Coordinator>,
    /// Executors declared lost for silence while this attempt runs.
    silenced: broadcast::Receiver<String>,
    /// Runs before any task is launched.
    prelude: Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>,
    query_id: String,
    plan: Arc<DistributedPlan>,
    encoded: Arc<Vec<Bytes>>,
    config: Vec<ConfigEntry>,
    ctx: Arc<TaskContext>,
    clients: ClientPool,
    lineage: Lineage,
    /// The executors holding each stage's fragments, by task (stages that read or write
    /// table fragments).
    holders: HashMap<StageId, Option<Vec<Vec<String>>>>,
    /// Tasks waiting for a free slot, upstream stages first.
    pending: VecDeque<TaskKey>,
    /// The task runs in flight.
    in_flight: HashSet<(TaskKey, u64)>,
    /// Where each launched task's current run is.
    runs: HashMap<TaskKey, TaskRun>,
    /// The recovery round that launched the newest runs (0: the first launch).
    round: u64,
    /// Executors lost during this query.
    lost: HashSet<String>,
    stage_recovery: bool,
    /// Every executor that may hold something of this query: released at the end.
    executors: Vec<ExecutorClient>,
    tasks: FuturesUnordered<BoxFuture<'static, TaskOutcome>>,
    /// The task calls in flight; a superseded run's call is aborted (its outcome no
    /// longer matters, and its executor may never answer).
    calls: HashMap<TaskKey, AbortHandle>,
    /// The coordinator's read of the final stage, once its task is launched.
    results: Option<SendableRecordBatchStream>,
    /// Where the final task keeps the result for a client that reads it there.
    served: Option<ServedResult>,
    /// Once the final task has ended: the wait for the client's read of its result.
    result_read: Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>,
    done: bool,
    guard: ReleaseGuard,
    progress: Arc<QueryProgress>,
}

fn is_root_cause(failure: &TaskFailure) -> bool {
    !matches!(
        failure.reason,
        FailureReason::UpstreamFailed | FailureReason::Cancelled
    )
}

/// The executor a failure says is gone, if it says so.
fn lost_executor(failure: &TaskFailure) -> Option<String> {
    (failure.reason == FailureReason::ExecutorLost && !failure.executor.is_empty())
        .then(|| failure.executor.clone())
}

/// The executors the coordinator places work on, but those this query lost.
fn placeable(coordinator: &Coordinator, lost: &HashSet<String>) -> Vec<ExecutorClient> {
    coordinator
        .live_executors()
        .into_iter()
        .filter(|e| !lost.contains(e.url()))
        .collect()
}

fn no_executors() -> DataFusionError {
    DataFusionError::Execution("the cluster has no executors: cannot run the query".to_string())
}

impl Attempt {
    /// Starts `plan`'s tasks on executors not in `lost`. With stage recovery they start
    /// as slots free up, upstream stages first, each placed when it starts (so an
    /// executor that joins meanwhile gets work); otherwise all start at once, since
    /// stages that stream into each other with backpressure need their readers running.
    fn launch(
        coordinator: &Arc<Coordinator>,
        plan: &Arc<DistributedPlan>,
        encoded: &Arc<Vec<Bytes>>,
        ctx: &Arc<TaskContext>,
        stage_recovery: bool,
        lost: HashSet<String>,
        serve: bool,
    ) -> Result<Self> {
        let executors = placeable(coordinator, &lost);
        if executors.is_empty() {
            return Err(no_executors());
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let pending = plan
            .stages
            .iter()
            .flat_map(|s| (0..s.task_count).map(move |t| (s.id, t)))
            .collect();
        let holders = plan
            .stages
            .iter()
            .map(|s| (s.id, preferred_holders(&s.plan)))
            .collect();
        let prelude = coordinator.memory_limit_update(ctx, &executors)?;
        let progress = Arc::new(QueryProgress::of(plan));
        let mut attempt = Self {
            coordinator: Arc::clone(coordinator),
            silenced: coordinator.silenced(),
            prelude,
            query_id: query_id.clone(),
            plan: Arc::clone(plan),
            encoded: Arc::clone(encoded),
            config: shipped_config(ctx.session_config().options()),
            ctx: Arc::clone(ctx),
            clients: coordinator.clients().clone(),
            lineage: Lineage::of(plan),
            holders,
            pending,
            in_flight: HashSet::new(),
            runs: HashMap::new(),
            round: 0,
            lost,
            stage_recovery,
            executors: Vec::new(),
            tasks: FuturesUnordered::new(),
            calls: HashMap::new(),
            results: None,
            served: None,
            result_read: None,
            done: false,
            guard: coordinator.release_guard(query_id, Arc::clone(&progress)),
            progress,
        };
        if serve {
            attempt.served = Some(attempt.pin_result(&executors)?);
        }
        attempt.start_pending()?;
        Ok(attempt)
    }

    /// Chooses the executor of the final task now, as placement would, and where its
    /// result will be. That executor is released with the query even if the task never
    /// runs, so a client already waiting there hears of the end.
    fn pin_result(&mut self, executors: &[ExecutorClient]) -> Result<ServedResult> {
        let key = (self.lineage.final_stage(), 0);
        let statuses = self.coordinator.executors();
        let mut slots = Slots::of(executors, &statuses);
        let holders = self.holders.get(&key.0).cloned().flatten();
        let executor = &executors[slots.place_one(key.0, key.1, holders.as_deref(), executors)];
        self.executors.push(executor.clone());
        let retain = self.plan.stage(key.0).is_some_and(|s| self.retains(s));
        Ok(ServedResult {
            url: executor.url().to_string(),
            partition: PartitionTicket {
                query_id: self.query_id.clone(),
                stage: key.0 as u64,
                task: key.1 as u64,
                partition: 0,
                retain,
                attempt: self.round,
            },
        })
    }

    /// The live executors work may go to now.
    fn placeable(&self) -> Vec<ExecutorClient> {
        placeable(&self.coordinator, &self.lost)
    }

    /// Places `keys` on the least busy of `executors` (a fragment's holders first) as
    /// run `attempt`, and starts them; `statuses` are what the executors last reported.
    fn place_and_spawn(
        &mut self,
        keys: &[TaskKey],
        attempt: u64,
        executors: &[ExecutorClient],
        statuses: &[ExecutorStatus],
    ) -> Result<()> {
        if executors.is_empty() {
            return Err(no_executors());
        }
        let mut slots = Slots::of(executors, statuses);
        for (i, executor) in executors.iter().enumerate() {
            let ours = self
                .in_flight
                .iter()
                .filter(|(key, _)| self.runs.get(key).is_some_and(|r| r.url == executor.url()))
                .count();
            slots.at_least_busy(i, ours);
        }
        for &(stage, task) in keys {
            let placed = match &self.served {
                Some(served) if stage == self.lineage.final_stage() => {
                    if attempt != served.partition.attempt {
                        return Err(DataFusionError::Internal(
                            "the final task of a served result cannot run again".to_string(),
                        ));
                    }
                    executors
                        .iter()
                        .position(|e| e.url() == served.url)
                        .ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "executor {} was to serve the result and is gone",
                                served.url
                            ))
                        })?
                }
                _ => {
                    let holders = self.holders.get(&stage).cloned().flatten();
                    slots.place_one(stage, task, holders.as_deref(), executors)
                }
            };
            let executor = &executors[placed];
            let run = TaskRun {
                url: executor.url().to_string(),
                attempt,
                finished: false,
            };
            self.runs.insert((stage, task), run);
            if !self.executors.iter().any(|e| e.url() == executor.url()) {
                self.executors.push(executor.clone());
            }
        }
        for &key in keys {
            self.spawn(key)?;
            if key.0 == self.lineage.final_stage() && self.served.is_none() {
                self.results = Some(self.execute_root()?);
            }
        }
        Ok(())
    }

    /// Starts pending tasks while this query has free slots: as many task runs in flight
    /// as the live executors have slots together (at least one).
    fn start_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (executors, statuses) = (self.placeable(), self.coordinator.executors());
        // Without stage recovery stages stream into each other with backpressure, so
        // every reader must be running: all start at once.
        let free = if self.stage_recovery {
            let capacity = Slots::total(&executors, &statuses);
            capacity.saturating_sub(self.in_flight.len())
        } else {
            self.pending.len()
        };
        let keys: Vec<TaskKey> = (0..free).map_while(|_| self.pending.pop_front()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.place_and_spawn(&keys, self.round, &executors, &statuses)
    }

    /// Whether `stage`'s outputs stay readable until the query ends. With stage recovery
    /// every stage but the final one keeps them, so a task that runs again can re-read
    /// its inputs; the final stage is read once per run of its task.
    fn retains(&self, stage: &Stage) -> bool {
        stage.retain_outputs || (self.stage_recovery && stage.id != self.lineage.final_stage())
    }

    fn locations(&self, stage: &Stage) -> StageLocations {
        let runs = (0..stage.task_count).map(|t| self.runs.get(&(stage.id, t)));
        StageLocations {
            stage: stage.id as u64,
            task_urls: runs
                .clone()
                .map(|r| r.map(|r| r.url.clone()).unwrap_or_default())
                .collect(),
            task_attempts: runs.map(|r| r.map_or(0, |r| r.attempt)).collect(),
            retain: self.retains(stage),
        }
    }

    /// Starts the current run of `key` on its executor.
    fn spawn(&mut self, key: TaskKey) -> Result<()> {
        let (stage_id, task) = key;
        let index = self
            .plan
            .stages
            .iter()
            .position(|s| s.id == stage_id)
            .ok_or_else(|| DataFusionError::Internal(format!("no stage {stage_id}")))?;
        let stage = &self.plan.stages[index];
        let run = self
            .runs
            .get(&key)
            .ok_or_else(|| DataFusionError::Internal(format!("task {key:?} is not placed")))?;
        let client = self
            .clients
            .get(&run.url)
            .map_err(TaskFailure::into_datafusion)?;
        let inputs = stage
            .inputs
            .iter()
            .filter_map(|&i| self.plan.stage(i))
            .map(|s| self.locations(s))
            .collect();
        let def = TaskDefinition {
            query_id: self.query_id.clone(),
            stage: stage_id as u64,
            task: task as u64,
            plan: self.encoded[index].clone(),
            inputs,
            config: self.config.clone(),
            retain_outputs: self.retains(stage),
            attempt: run.attempt,
        };
        let attempt = run.attempt;
        self.in_flight.insert((key, attempt));
        let (call, handle) = futures::future::abortable(async move { client.run_task(&def).await });
        if let Some(superseded) = self.calls.insert(key, handle) {
            superseded.abort();
        }
        self.tasks.push(
            async move {
                let result = call.await.unwrap_or_else(|_| {
                    Err(TaskFailure::new(
                        FailureReason::Cancelled,
                        "superseded by a later run",
                        stage_id,
                        task,
                        "",
                    ))
                });
                TaskOutcome {
                    key,
                    attempt,
                    result,
                }
            }
            .boxed(),
        );
        Ok(())
    }

    /// The coordinator's part of the plan, reading the final stage's current run.
    fn execute_root(&self) -> Result<SendableRecordBatchStream> {
        let source = match self.plan.stage(self.lineage.final_stage()) {
            Some(stage) => {
                let locations = HashMap::from([(stage.id as u64, self.locations(stage))]);
                FlightExchangeSource::new(self.query_id.clone(), locations, self.clients.clone())
            }
            None => FlightExchangeSource::new(
                self.query_id.clone(),
                HashMap::new(),
                self.clients.clone(),
            ),
        };
        let ctx = with_extension(&self.ctx, ExchangeSourceExt(Arc::new(source)));
        self.plan.root.execute(0, ctx)
    }

    async fn next(&mut self) -> Option<std::result::Result<RecordBatch, Stop>> {
        if self.done {
            return None;
        }
        if let Some(prelude) = self.prelude.take()
            && let Err(failure) = prelude.await
        {
            return Some(Err(self.stop(failure, None).await));
        }
        loop {
            tokio::select! {
                biased;
                Some(outcome) = self.tasks.next(), if !self.tasks.is_empty() => {
                    if let Some(stop) = self.task_ended(outcome).await {
                        return Some(Err(stop));
                    }
                }
                Ok(url) = self.silenced.recv() => {
                    if self.executors.iter().any(|e| e.url() == url) && !self.lost.contains(&url) {
                        let failure = TaskFailure::outside_tasks(
                            FailureReason::ExecutorLost,
                            format!("executor {url} stopped sending heartbeats"),
                            &url,
                        );
                        return Some(Err(self.stop(failure, None).await));
                    }
                }
                read = result_read(&mut self.result_read) => {
                    self.result_read = None;
                    if let Err(failure) = read {
                        return Some(Err(self.stop(failure, None).await));
                    }
                    self.finish().await;
                    return None;
                }
                item = next_result(&mut self.results) => match item {
                    Some(Ok(batch)) => return Some(Ok(batch)),
                    Some(Err(e)) => return Some(Err(self.root_cause(e).await)),
                    None => {
                        self.finish().await;
                        return None;
                    }
                }
            }
        }
    }

    /// Records how a task's run ended; a failure that is a root cause stops the attempt.
    /// Outcomes of superseded runs, and of runs on executors already lost (whose output
    /// nobody needs, or they would have run again), are ignored.
    async fn task_ended(&mut self, outcome: TaskOutcome) -> Option<Stop> {
        self.in_flight.remove(&(outcome.key, outcome.attempt));
        let current = self
            .runs
            .get_mut(&outcome.key)
            .filter(|r| r.attempt == outcome.attempt && !self.lost.contains(&r.url));
        let stop = match (current, outcome.result) {
            (None, _) => None,
            (Some(run), Ok(())) => {
                run.finished = true;
                self.progress.task_finished(outcome.key.0);
                if let Some(served) = &self.served
                    && outcome.key.0 == self.lineage.final_stage()
                {
                    let client = self
                        .clients
                        .get(&served.url)
                        .map_err(|e| Stop::Failed(e.into_datafusion()));
                    match client {
                        Ok(client) => {
                            let partition = served.partition.clone();
                            self.result_read =
                                Some(
                                    async move {
                                        client.await_result_read(&partition, UNREAD_RESULT).await
                                    }
                                    .boxed(),
                                );
                        }
                        Err(stop) => {
                            self.finish().await;
                            return Some(stop);
                        }
                    }
                }
                None
            }
            (Some(_), Err(failure)) if is_root_cause(&failure) => {
                return Some(self.stop(failure, Some(outcome.key)).await);
            }
            (Some(_), Err(_)) => None,
        };
        if let Err(e) = self.start_pending() {
            self.finish().await;
            return Some(Stop::Failed(e));
        }
        stop
    }

    async fn stop(&mut self, failure: TaskFailure, task: Option<TaskKey>) -> Stop {
        match lost_executor(&failure) {
            Some(url) => Stop::Lost {
                error: failure.into_datafusion(),
                url,
                task,
            },
            None => {
                self.finish().await;
                Stop::Failed(failure.into_datafusion())
            }
        }
    }

    /// The stop to report for `err`, which surfaced in the result stream: a failure of
    /// an upstream task is reported as that task's own failure, not as its echo.
    async fn root_cause(&mut self, err: DataFusionError) -> Stop {
        if let Some(failure) = fletch_transport::find_failure(&err)
            && is_root_cause(failure)
        {
            let failure = failure.clone();
            let key = (failure.stage, failure.task);
            let task = self.runs.contains_key(&key).then_some(key);
            return self.stop(failure, task).await;
        }
        while let Some(outcome) = self.tasks.next().await {
            if let Some(stop) = self.task_ended(outcome).await {
                return stop;
            }
        }
        self.finish().await;
        Stop::Failed(err)
    }

    /// The tasks to run again after the executors in `self.lost` were lost and `task`
    /// (when known) failed, and whether the final stage is among them.
    fn recovery(&self, task: Option<TaskKey>) -> (BTreeSet<TaskKey>, bool) {
        let failed: Vec<TaskKey> = task.into_iter().collect();
        let rerun = self.lineage.tasks_to_rerun(&self.runs, &self.lost, &failed);
        let final_stage = self.lineage.final_stage();
        let restart_root = rerun.iter().any(|k| k.0 == final_stage);
        (rerun, restart_root)
    }

    /// Places `tasks` again on live executors (newly joined ones too) and starts them at
    /// once; restarts the coordinator's read of the final stage when it is among them.
    fn rerun(&mut self, tasks: &BTreeSet<TaskKey>) -> Result<()> {
        self.round += 1;
        let keys: Vec<TaskKey> = tasks.iter().copied().collect();
        let (executors, statuses) = (self.placeable(), self.coordinator.executors());
        self.place_and_spawn(&keys, self.round, &executors, &statuses)?;
        self.start_pending()
    }

    /// Stops waiting for tasks and frees the query on every executor still reachable.
    async fn finish(&mut self) {
        self.done = true;
        for call in self.calls.values() {
            call.abort();
        }
        self.tasks = FuturesUnordered::new();
        let lost = &self.lost;
        self.executors.retain(|e| !lost.contains(e.url()));
        release_everywhere(&self.executors, &self.query_id).await;
        self.guard.disarm();
    }
}
