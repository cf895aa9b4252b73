//! [`Run`]: one run of a query's plan under one query id, as an explicit state
//! machine. Its [`Phase`] says what it waits for; [`Run::next`] is the one loop that
//! drives it and reports an [`Event`]; [`Run::finish`] is the one place its executors
//! are released. What has run where lives in the pure [`TaskTable`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use fletch_executor::FlightExchangeSource;
use fletch_planner::{DistributedPlan, ExchangeSourceExt, Stage, StageId, preferred_holders};
use fletch_transport::protocol::{
    ConfigEntry, ExecutorStatus, PartitionTicket, StageLocations, TaskDefinition, TaskReport,
};
use fletch_transport::{ClientPool, ExecutorClient, FailureReason, TaskFailure};
use futures::future::{AbortHandle, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast;

use super::task_table::{Ended, RoundPlan, TaskTable};
use super::{ServedResult, UNREAD_RESULT};
use crate::coordinator::{Coordinator, Slots, release_everywhere, shipped_config, with_extension};
use crate::janitor::ReleaseGuard;
use crate::progress::QueryProgress;
use crate::query_record::QueryRecord;
use crate::recovery::TaskKey;

type Call = BoxFuture<'static, std::result::Result<(), TaskFailure>>;

/// How long a finished run waits for the task calls still out after releasing their
/// executors (which stops those tasks at once): their reports complete the record. A
/// bound, because an executor that stopped answering must not hold the query's end.
const LATE_REPORTS: Duration = Duration::from_secs(2);

/// What a run waits for.
enum Phase {
    /// The executors' memory limit (`fletch.executor_memory`) is being set; no task is
    /// launched before it is.
    Prelude(Call),
    /// Tasks run; `results` is the coordinator's read of the final stage, from the
    /// moment its task is launched (never, for a served result).
    Running {
        results: Option<SendableRecordBatchStream>,
    },
    /// A served result's final task has ended: waiting for its client to read it.
    AwaitingRead(Call),
    /// Nothing more comes; [`Run::finish`] releases the executors.
    Ended,
}

/// What [`Run::next`] reports.
pub(super) enum Event {
    /// A batch of the result.
    Batch(RecordBatch),
    /// The result is complete (or a served result was read to its end).
    End,
    /// The run cannot go on and no recovery can help.
    Failed(DataFusionError),
    /// An executor was lost; the run still holds its tasks and may recover.
    Lost {
        error: DataFusionError,
        url: String,
        /// The task that reported the loss, when one did.
        task: Option<TaskKey>,
    },
}

/// How one attempt of a task ended.
struct AttemptOutcome {
    key: TaskKey,
    attempt: u64,
    result: std::result::Result<TaskReport, TaskFailure>,
}

pub(super) struct Run {
    coordinator: Arc<Coordinator>,
    /// Executors declared lost for silence while this run goes on.
    silenced: broadcast::Receiver<String>,
    query_id: String,
    plan: Arc<DistributedPlan>,
    encoded: Arc<Vec<Bytes>>,
    config: Vec<ConfigEntry>,
    ctx: Arc<TaskContext>,
    clients: ClientPool,
    tasks: TaskTable,
    /// The executors holding each stage's fragments, by task (stages that read or write
    /// table fragments).
    holders: HashMap<StageId, Option<Vec<Vec<String>>>>,
    stage_recovery: bool,
    phase: Phase,
    /// Every executor that may hold something of this run: released at the end.
    touched: Vec<ExecutorClient>,
    /// The task calls in flight.
    calls: FuturesUnordered<BoxFuture<'static, AttemptOutcome>>,
    /// Aborts each task's newest call: a superseded attempt's outcome no longer matters,
    /// and its executor may never answer.
    aborts: HashMap<TaskKey, AbortHandle>,
    /// Where the final task keeps the result for a client that reads it there.
    served: Option<ServedResult>,
    released: bool,
    guard: ReleaseGuard,
    progress: Arc<QueryProgress>,
    /// Where every attempt's launch, end and report go.
    record: Arc<QueryRecord>,
    /// Which run of its query this is (see [`crate::query_record::AttemptRecord::run`]).
    index: usize,
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

fn no_executors() -> DataFusionError {
    DataFusionError::Execution("the cluster has no executors: cannot run the query".to_string())
}

impl Run {
    /// A run of `plan` on executors not in `lost`, in its prelude: nothing is launched
    /// until [`Self::next`] drives it. With stage recovery tasks start as slots free
    /// up, upstream stages first, each placed when it starts (so an executor that joins
    /// meanwhile gets work); otherwise all start at once, since stages that stream into
    /// each other with backpressure need their readers running. `serve`: the final
    /// task's executor is chosen now and keeps the result for a client.
    pub(super) fn new(
        coordinator: &Arc<Coordinator>,
        plan: &Arc<DistributedPlan>,
        encoded: &Arc<Vec<Bytes>>,
        ctx: &Arc<TaskContext>,
        stage_recovery: bool,
        lost: HashSet<String>,
        serve: bool,
    ) -> Result<Self> {
        let tasks = TaskTable::of(plan, lost);
        let executors = placeable(coordinator, &tasks);
        if executors.is_empty() {
            return Err(no_executors());
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let holders = plan
            .stages
            .iter()
            .map(|s| (s.id, preferred_holders(&s.plan)))
            .collect();
        let prelude = coordinator
            .memory_limit_update(ctx, &executors)?
            .unwrap_or_else(|| async { Ok(()) }.boxed());
        let progress = Arc::new(QueryProgress::of(plan));
        let mut run = Self {
            coordinator: Arc::clone(coordinator),
            silenced: coordinator.silenced(),
            query_id: query_id.clone(),
            plan: Arc::clone(plan),
            encoded: Arc::clone(encoded),
            config: shipped_config(ctx.session_config().options()),
            ctx: Arc::clone(ctx),
            clients: coordinator.clients().clone(),
            tasks,
            holders,
            stage_recovery,
            phase: Phase::Prelude(prelude),
            touched: Vec::new(),
            calls: FuturesUnordered::new(),
            aborts: HashMap::new(),
            served: None,
            released: false,
            guard: coordinator.release_guard(query_id, Arc::clone(&progress)),
            progress,
            record: Arc::default(),
            index: 0,
        };
        if serve {
            run.served = Some(run.pin_result(&executors)?);
        }
        Ok(run)
    }

    /// The same run, recording into `record` as run `index` of its query.
    pub(super) fn recorded_in(mut self, record: Arc<QueryRecord>, index: usize) -> Self {
        self.record = record;
        self.index = index;
        self
    }

    pub(super) fn record(&self) -> &Arc<QueryRecord> {
        &self.record
    }

    pub(super) fn index(&self) -> usize {
        self.index
    }

    pub(super) fn query_id(&self) -> &str {
        &self.query_id
    }

    pub(super) fn served(&self) -> Option<&ServedResult> {
        self.served.as_ref()
    }

    pub(super) fn stage_recovery(&self) -> bool {
        self.stage_recovery
    }

    pub(super) fn plan(&self) -> &Arc<DistributedPlan> {
        &self.plan
    }

    pub(super) fn encoded(&self) -> &Arc<Vec<Bytes>> {
        &self.encoded
    }

    pub(super) fn ctx(&self) -> &Arc<TaskContext> {
        &self.ctx
    }

    /// The executors this run lost (a new run of the query avoids them).
    pub(super) fn lost(&self) -> HashSet<String> {
        self.tasks.lost().clone()
    }

    /// Takes `url` for lost, so nothing more is placed there.
    pub(super) fn lose(&mut self, url: &str) {
        self.tasks.lose(url);
    }

    /// What a recovery round would launch again, `failed` being the task that reported
    /// the loss, when one did.
    pub(super) fn plan_round(&self, failed: Option<TaskKey>) -> RoundPlan {
        self.tasks.plan_round(failed)
    }

    /// Chooses the executor of the final task now, as placement would, and where its
    /// result will be. That executor is released with the query even if the task never
    /// runs, so a client already waiting there hears of the end.
    fn pin_result(&mut self, executors: &[ExecutorClient]) -> Result<ServedResult> {
        let key = (self.tasks.final_stage(), 0);
        let statuses = self.coordinator.executors();
        let mut slots = Slots::of(executors, &statuses);
        let holders = self.holders.get(&key.0).cloned().flatten();
        let executor = &executors[slots.place_one(key.0, key.1, holders.as_deref(), executors)];
        self.touched.push(executor.clone());
        let retain = self.plan.stage(key.0).is_some_and(|s| self.retains(s));
        Ok(ServedResult {
            url: executor.url().to_string(),
            partition: PartitionTicket {
                query_id: self.query_id.clone(),
                stage: key.0 as u64,
                task: key.1 as u64,
                partition: 0,
                retain,
                attempt: self.tasks.round(),
            },
        })
    }

    /// Places `keys` on the least busy of `executors` (a fragment's holders first) as
    /// attempts of the current round, and launches them; `statuses` are what the
    /// executors last reported.
    fn place_and_launch(
        &mut self,
        keys: &[TaskKey],
        executors: &[ExecutorClient],
        statuses: &[ExecutorStatus],
    ) -> Result<()> {
        if executors.is_empty() {
            return Err(no_executors());
        }
        let mut slots = Slots::of(executors, statuses);
        for (i, executor) in executors.iter().enumerate() {
            slots.at_least_busy(i, self.tasks.in_flight_on(executor.url()));
        }
        let final_stage = self.tasks.final_stage();
        for &(stage, task) in keys {
            let (placed, attempt) = match &self.served {
                Some(served) if stage == final_stage => {
                    if self.tasks.current((stage, task)).is_some() {
                        return Err(DataFusionError::Internal(
                            "the final task of a served result cannot run again".to_string(),
                        ));
                    }
                    let at = executors
                        .iter()
                        .position(|e| e.url() == served.url)
                        .ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "executor {} was to serve the result and is gone",
                                served.url
                            ))
                        })?;
                    // The attempt the client's ticket names, whatever round it is now.
                    (at, served.partition.attempt)
                }
                _ => {
                    let holders = self.holders.get(&stage).cloned().flatten();
                    let at = slots.place_one(stage, task, holders.as_deref(), executors);
                    (at, self.tasks.round())
                }
            };
            let executor = &executors[placed];
            self.tasks.place((stage, task), executor.url(), attempt);
            if !self.touched.iter().any(|e| e.url() == executor.url()) {
                self.touched.push(executor.clone());
            }
        }
        for &key in keys {
            self.launch(key)?;
            if key.0 == final_stage && self.served.is_none() {
                let results = self.execute_root()?;
                if let Phase::Running { results: read } = &mut self.phase {
                    *read = Some(results);
                }
            }
        }
        Ok(())
    }

    /// Launches pending tasks while this run has free slots: as many attempts in flight
    /// as the live executors have slots together.
    fn launch_pending(&mut self) -> Result<()> {
        if !self.tasks.has_pending() {
            return Ok(());
        }
        let (executors, statuses) = (
            placeable(&self.coordinator, &self.tasks),
            self.coordinator.executors(),
        );
        let capacity = self
            .stage_recovery
            .then(|| Slots::total(&executors, &statuses));
        let keys = self.tasks.take_startable(capacity);
        if keys.is_empty() {
            return Ok(());
        }
        self.place_and_launch(&keys, &executors, &statuses)
    }

    /// Whether `stage`'s outputs stay readable until the query ends. With stage recovery
    /// every stage but the final one keeps them, so a task that runs again can re-read
    /// its inputs; the final stage is read once per attempt of its task.
    fn retains(&self, stage: &Stage) -> bool {
        stage.retain_outputs || (self.stage_recovery && stage.id != self.tasks.final_stage())
    }

    fn locations(&self, stage: &Stage) -> StageLocations {
        let (task_urls, task_attempts) = self.tasks.locations(stage.id, stage.task_count);
        StageLocations {
            stage: stage.id as u64,
            task_urls,
            task_attempts,
            retain: self.retains(stage),
        }
    }

    /// Sends `key`'s current attempt to its executor.
    fn launch(&mut self, key: TaskKey) -> Result<()> {
        let (stage_id, task) = key;
        let index = self
            .plan
            .stages
            .iter()
            .position(|s| s.id == stage_id)
            .ok_or_else(|| DataFusionError::Internal(format!("no stage {stage_id}")))?;
        let stage = &self.plan.stages[index];
        let run = self
            .tasks
            .current(key)
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
        let attempt = run.attempt;
        let def = TaskDefinition {
            query_id: self.query_id.clone(),
            stage: stage_id as u64,
            task: task as u64,
            plan: self.encoded[index].clone(),
            inputs,
            config: self.config.clone(),
            retain_outputs: self.retains(stage),
            attempt,
        };
        self.record.launched(self.index, key, attempt, &run.url);
        self.tasks.launched(key);
        let (call, handle) = futures::future::abortable(async move { client.run_task(&def).await });
        if let Some(superseded) = self.aborts.insert(key, handle) {
            superseded.abort();
        }
        self.calls.push(
            async move {
                let result = call.await.unwrap_or_else(|_| {
                    Err(TaskFailure::new(
                        FailureReason::Cancelled,
                        "superseded by a later attempt",
                        stage_id,
                        task,
                        "",
                    ))
                });
                AttemptOutcome {
                    key,
                    attempt,
                    result,
                }
            }
            .boxed(),
        );
        Ok(())
    }

    /// The coordinator's part of the plan, reading the final stage's current attempt.
    fn execute_root(&self) -> Result<SendableRecordBatchStream> {
        let locations = match self.plan.stage(self.tasks.final_stage()) {
            Some(stage) => HashMap::from([(stage.id as u64, self.locations(stage))]),
            None => HashMap::new(),
        };
        let source =
            FlightExchangeSource::new(self.query_id.clone(), locations, self.clients.clone());
        let ctx = with_extension(&self.ctx, ExchangeSourceExt(Arc::new(source)));
        self.plan.root.execute(0, ctx)
    }

    /// Drives the run until something happens its query must hear of.
    pub(super) async fn next(&mut self) -> Event {
        loop {
            match &mut self.phase {
                Phase::Ended => return Event::End,
                Phase::Prelude(prelude) => {
                    let prelude = prelude.await;
                    // Never polled again, whatever it said: a recovery after a loss in
                    // the prelude launches into the running phase.
                    self.phase = Phase::Running { results: None };
                    if let Err(failure) = prelude {
                        return self.stopped(failure, None);
                    }
                    if let Err(e) = self.launch_pending() {
                        return Event::Failed(e);
                    }
                }
                Phase::Running { .. } | Phase::AwaitingRead(_) => {}
            }
            tokio::select! {
                biased;
                Some(outcome) = self.calls.next(), if !self.calls.is_empty() => {
                    if let Some(event) = self.attempt_ended(outcome) {
                        return event;
                    }
                }
                Ok(url) = self.silenced.recv() => {
                    if let Some(event) = self.silence(url) {
                        return event;
                    }
                }
                step = phase_step(&mut self.phase) => match step {
                    Step::Result(Some(Ok(batch))) => return Event::Batch(batch),
                    Step::Result(Some(Err(e))) => return self.root_cause(e).await,
                    Step::Read(Err(failure)) => return self.stopped(failure, None),
                    Step::Result(None) | Step::Read(Ok(())) => {
                        self.phase = Phase::Ended;
                        return Event::End;
                    }
                }
            }
        }
    }

    /// An executor the coordinator declared lost for silence: a loss of this run if it
    /// was given anything of it.
    fn silence(&mut self, url: String) -> Option<Event> {
        let ours = self.touched.iter().any(|e| e.url() == url) && !self.tasks.is_lost(&url);
        ours.then(|| {
            let failure = TaskFailure::outside_tasks(
                FailureReason::ExecutorLost,
                format!("executor {url} stopped sending heartbeats"),
                &url,
            );
            self.stopped(failure, None)
        })
    }

    /// Records how a task's attempt ended; a failure that is a root cause stops the
    /// run. Outcomes of superseded attempts, and of attempts on executors already lost
    /// (whose output nobody needs, or they would have run again), are ignored.
    fn attempt_ended(&mut self, outcome: AttemptOutcome) -> Option<Event> {
        let key = outcome.key;
        let ended = self
            .tasks
            .ended(key, outcome.attempt, outcome.result.is_ok());
        let result = record_outcome(&self.record, &self.coordinator, self.index, outcome);
        match (ended, result) {
            (Ended::Finished, _) => {
                self.progress.task_finished(key.0);
                if key.0 == self.tasks.final_stage()
                    && let Some(served) = &self.served
                {
                    let client = match self.clients.get(&served.url) {
                        Ok(client) => client,
                        Err(e) => return Some(Event::Failed(e.into_datafusion())),
                    };
                    let partition = served.partition.clone();
                    self.phase = Phase::AwaitingRead(
                        async move { client.await_result_read(&partition, UNREAD_RESULT).await }
                            .boxed(),
                    );
                }
            }
            (Ended::Failed, Err(failure)) if is_root_cause(&failure) => {
                return Some(self.stopped(failure, Some(key)));
            }
            _ => {}
        }
        self.launch_pending().err().map(Event::Failed)
    }

    fn stopped(&mut self, failure: TaskFailure, task: Option<TaskKey>) -> Event {
        match lost_executor(&failure) {
            Some(url) => Event::Lost {
                error: failure.into_datafusion(),
                url,
                task,
            },
            None => Event::Failed(failure.into_datafusion()),
        }
    }

    /// The event to report for `err`, which surfaced in the result stream: a failure of
    /// an upstream task is reported as that task's own failure, not as its echo.
    async fn root_cause(&mut self, err: DataFusionError) -> Event {
        if let Some(failure) = fletch_transport::find_failure(&err)
            && is_root_cause(failure)
        {
            let failure = failure.clone();
            let key = (failure.stage, failure.task);
            let task = self.tasks.current(key).is_some().then_some(key);
            return self.stopped(failure, task);
        }
        while let Some(outcome) = self.calls.next().await {
            if let Some(event) = self.attempt_ended(outcome) {
                return event;
            }
        }
        Event::Failed(err)
    }

    /// Starts a recovery round: places `tasks` again on live executors (newly joined
    /// ones too) and launches them at once; restarts the coordinator's read of the final
    /// stage when it is among them.
    pub(super) fn recovery_round(&mut self, tasks: &BTreeSet<TaskKey>) -> Result<()> {
        self.tasks.next_round();
        let keys: Vec<TaskKey> = tasks.iter().copied().collect();
        let (executors, statuses) = (
            placeable(&self.coordinator, &self.tasks),
            self.coordinator.executors(),
        );
        self.place_and_launch(&keys, &executors, &statuses)?;
        self.launch_pending()
    }

    /// Stops waiting for tasks and frees the run on every executor still reachable.
    /// The one release of a run; later calls do nothing. Calls still out to reachable
    /// executors end as soon as the release stops their tasks; their outcomes are
    /// recorded, within [`LATE_REPORTS`].
    pub(super) async fn finish(&mut self) {
        self.phase = Phase::Ended;
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        for (key, call) in &self.aborts {
            let on_lost = self
                .tasks
                .current(*key)
                .is_none_or(|run| self.tasks.is_lost(&run.url));
            if on_lost {
                call.abort();
            }
        }
        let tasks = &self.tasks;
        self.touched.retain(|e| !tasks.is_lost(e.url()));
        release_everywhere(&self.touched, &self.query_id).await;
        self.guard.disarm();
        let mut calls = std::mem::take(&mut self.calls);
        let (record, coordinator, index) = (
            Arc::clone(&self.record),
            Arc::clone(&self.coordinator),
            self.index,
        );
        let late = async move {
            while let Some(outcome) = calls.next().await {
                let _ = record_outcome(&record, &coordinator, index, outcome);
            }
        };
        let _ = tokio::time::timeout(LATE_REPORTS, late).await;
        for call in self.aborts.values() {
            call.abort();
        }
        for cancelled in self.record.cancel_running() {
            self.coordinator.metrics().attempt_ended(&cancelled);
        }
    }
}

/// Records how an attempt of run `index` ended, in the query's record and the
/// coordinator's metrics; gives back its failure, if it failed.
fn record_outcome(
    record: &QueryRecord,
    coordinator: &Coordinator,
    index: usize,
    outcome: AttemptOutcome,
) -> std::result::Result<(), TaskFailure> {
    let AttemptOutcome {
        key,
        attempt,
        result,
    } = outcome;
    let (recorded, result) = match result {
        Ok(report) => (record.ended(index, key, attempt, Ok(report)), Ok(())),
        Err(failure) => (
            record.ended(index, key, attempt, Err(&failure)),
            Err(failure),
        ),
    };
    if let Some(recorded) = recorded {
        coordinator.metrics().attempt_ended(&recorded);
    }
    result
}

/// The executors the coordinator places work on, but those this run lost.
fn placeable(coordinator: &Coordinator, tasks: &TaskTable) -> Vec<ExecutorClient> {
    coordinator
        .live_executors()
        .into_iter()
        .filter(|e| !tasks.is_lost(e.url()))
        .collect()
}

/// What the running phases wait for besides task calls and silenced executors.
enum Step {
    /// The coordinator's read of the final stage moved.
    Result(Option<Result<RecordBatch>>),
    /// A served result's client finished (or failed) reading it.
    Read(std::result::Result<(), TaskFailure>),
}

async fn phase_step(phase: &mut Phase) -> Step {
    match phase {
        Phase::Running { results } => Step::Result(next_result(results).await),
        Phase::AwaitingRead(read) => Step::Read(read.await),
        Phase::Prelude(_) | Phase::Ended => std::future::pending().await,
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
