//! The [`Coordinator`]: knows the executors, places every task of a query, launches them
//! all at once (tasks stream into each other, so downstream stages start while upstream
//! ones still run), streams the final stage to the caller and releases the query on
//! every executor when it ends, fails or is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_executor::protocol::{ConfigEntry, ExecutorStatus, StageLocations, TaskDefinition};
use fletch_executor::{
    ClientPool, ExecutorClient, FailureReason, FlightExchangeSource, TaskFailure,
};
use fletch_planner::{
    DistributedPlan, ExchangeSourceExt, FletchOptions, parse_size, preferred_holders,
};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::catalog::ClusterSchema;
use crate::membership::{MemberState, Members, MembershipOptions, StatusSource};
use crate::replication::rereplicate;

/// Schedules distributed plans onto executors. Shared by every session of a cluster.
pub struct Coordinator {
    executors: Arc<RwLock<Vec<ExecutorClient>>>,
    clients: ClientPool,
    /// The cluster's tables, shared by every session.
    tables: Arc<ClusterSchema>,
    /// The last `fletch.executor_memory` every executor accepted.
    applied_memory_limit: Arc<Mutex<Option<usize>>>,
    members: Arc<Members>,
    /// Executors declared lost because their heartbeats stopped; running queries
    /// listen, since such an executor may hang their tasks without breaking anything.
    silenced: broadcast::Sender<String>,
    /// Declares executors lost when their heartbeats stop.
    _reaper: SpawnedTask<()>,
    releases: mpsc::UnboundedSender<JanitorJob>,
    /// Releases queries whose result stream was dropped before it ended.
    _janitor: SpawnedTask<()>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("executors", &self.executor_urls())
            .finish()
    }
}

impl Coordinator {
    /// A coordinator for the executors at `urls`. Must be called inside a tokio runtime.
    pub fn new(urls: &[String]) -> std::result::Result<Arc<Self>, TaskFailure> {
        Self::with_membership(urls, MembershipOptions::default())
    }

    /// A coordinator for the executors at `urls` (which send no heartbeats) and any that
    /// register later (which must). Must be called inside a tokio runtime.
    pub fn with_membership(
        urls: &[String],
        options: MembershipOptions,
    ) -> std::result::Result<Arc<Self>, TaskFailure> {
        let clients = ClientPool::default();
        let executors = urls
            .iter()
            .map(|u| clients.get(u))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let executors = Arc::new(RwLock::new(executors));
        let (releases, mut pending) = mpsc::unbounded_channel::<JanitorJob>();
        let tables = Arc::new(ClusterSchema::new(releases.clone()));
        let janitor_executors = Arc::clone(&executors);
        let janitor_tables = Arc::clone(&tables);
        let janitor = SpawnedTask::spawn(async move {
            while let Some(job) = pending.recv().await {
                let executors = janitor_executors.read().clone();
                match job {
                    JanitorJob::Release(query_id) => {
                        release_everywhere(&executors, &query_id).await;
                    }
                    JanitorJob::DropTable(uid) => {
                        drop_everywhere(&executors, &uid, None).await;
                    }
                    JanitorJob::DropLoad(uid, load) => {
                        drop_everywhere(&executors, &uid, Some(load)).await;
                    }
                    JanitorJob::Rereplicate(lost) => {
                        rereplicate(&janitor_tables, &executors, &lost).await;
                    }
                    JanitorJob::Sync(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        let members = Arc::new(Members::default());
        for url in urls {
            members.add_static(url);
        }
        let (silenced, _) = broadcast::channel(64);
        let reaper = {
            let members = Arc::clone(&members);
            let executors = Arc::clone(&executors);
            let janitor = releases.clone();
            let silenced = silenced.clone();
            SpawnedTask::spawn(async move {
                let mut ticks = tokio::time::interval(options.heartbeat_interval / 2);
                loop {
                    ticks.tick().await;
                    for url in members.declare_lost(options.silence_before_lost()) {
                        tracing::warn!(%url, "executor lost: no heartbeat for {:?}", options.silence_before_lost());
                        forget_executor(&executors, &janitor, &url);
                        // No running query may be listening: nothing to tell then.
                        let _ = silenced.send(url);
                    }
                }
            })
        };
        Ok(Arc::new(Self {
            executors,
            clients,
            tables,
            applied_memory_limit: Arc::default(),
            members,
            silenced,
            _reaper: reaper,
            releases,
            _janitor: janitor,
        }))
    }

    /// Returns once every query dropped before this call has been released on every
    /// executor, and every table dropped before it freed (these run in the background,
    /// in order).
    pub async fn wait_for_releases(&self) {
        let (done, finished) = oneshot::channel();
        if self.releases.send(JanitorJob::Sync(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// The schema every session of this cluster sees as `datafusion.public`.
    pub fn tables(&self) -> &Arc<ClusterSchema> {
        &self.tables
    }

    /// Frees one load's pieces on every executor, now.
    pub(crate) async fn drop_load(&self, table_uid: &str, load: u64) {
        let executors = self.executors.read().clone();
        drop_everywhere(&executors, table_uid, Some(load)).await;
    }

    /// Stops placing work on the executor at `url` and copies the table fragments it
    /// held onto other executors (in the background: [`Self::wait_for_releases`] waits
    /// for it); returns whether it was known.
    pub fn remove_executor(&self, url: &str) -> bool {
        self.members.mark(url, MemberState::Left);
        forget_executor(&self.executors, &self.releases, url)
    }

    /// An executor registered or sent a heartbeat: it is (again) a member and gets work
    /// from the next query on.
    pub fn executor_heard_from(
        &self,
        status: ExecutorStatus,
    ) -> std::result::Result<(), TaskFailure> {
        let client = self.clients.get(&status.url)?;
        if self.members.heard_from(status) {
            let mut executors = self.executors.write();
            if !executors.iter().any(|e| e.url() == client.url()) {
                tracing::info!(url = %client.url(), "executor joined");
                executors.push(client);
            }
        }
        Ok(())
    }

    /// Lets the coordinator read the live status of an executor it was started with
    /// and that runs in its process (the embedded cluster).
    pub fn set_status_source(&self, url: &str, source: StatusSource) {
        self.members.set_source(url, source);
    }

    /// Every executor the coordinator knows, with its state (alive, lost, left), last
    /// reported status and milliseconds since it was last heard from.
    pub fn executors(&self) -> Vec<ExecutorStatus> {
        self.members.list()
    }

    pub fn executor_urls(&self) -> Vec<String> {
        self.executors
            .read()
            .iter()
            .map(|e| e.url().to_string())
            .collect()
    }

    /// Runs a distributed plan. If an executor is lost before any row reached the
    /// caller, the lost executor is taken out of placement and the whole plan runs again
    /// on the others (at most [`MAX_ATTEMPTS`] times): the caller sees every row once.
    pub(crate) fn run(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let attempt = self.launch(&plan, &encoded, &ctx)?;
        let schema = plan.root.schema();
        let run = QueryRun {
            coordinator: self,
            plan,
            encoded,
            ctx,
            attempt,
            attempts: 1,
            delivered: false,
        };
        let stream = futures::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    /// Takes an executor that broke a query's connections out of placement, unless it
    /// was started with the coordinator (no heartbeats tell when it is back).
    fn suspect_lost(&self, url: &str) {
        if self.members.suspect_lost(url) {
            tracing::warn!(%url, "executor lost: its connections broke");
            forget_executor(&self.executors, &self.releases, url);
        }
    }

    /// Places and launches every task of one attempt at `plan`.
    fn launch(
        &self,
        plan: &DistributedPlan,
        encoded: &[Bytes],
        ctx: &Arc<TaskContext>,
    ) -> Result<Attempt> {
        let executors = self.executors.read().clone();
        if executors.is_empty() {
            return Err(DataFusionError::Execution(
                "the cluster has no executors: cannot run the query".to_string(),
            ));
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        // placement[stage id] = the executor index of each task.
        let mut slots = Slots::of(&executors, &self.members.list());
        let placement: HashMap<usize, Vec<usize>> = plan
            .stages
            .iter()
            .map(|s| {
                let holders = preferred_holders(&s.plan);
                (
                    s.id,
                    slots.place(s.id, s.task_count, holders.as_deref(), &executors),
                )
            })
            .collect();
        let placed = |stage: usize, task: usize| {
            let index = placement
                .get(&stage)
                .and_then(|p| p.get(task))
                .copied()
                .unwrap_or((stage + task) % executors.len());
            &executors[index]
        };
        let locations: HashMap<u64, StageLocations> = plan
            .stages
            .iter()
            .map(|s| {
                let urls = (0..s.task_count).map(|t| placed(s.id, t).url().to_string());
                let location = StageLocations {
                    stage: s.id as u64,
                    task_urls: urls.collect(),
                    retain: s.retain_outputs,
                };
                (s.id as u64, location)
            })
            .collect();
        let config = shipped_config(ctx.session_config().options());
        let prelude = self.memory_limit_update(ctx, &executors)?;

        let tasks = FuturesUnordered::new();
        for (stage, bytes) in plan.stages.iter().zip(encoded) {
            let inputs: Vec<StageLocations> = stage
                .inputs
                .iter()
                .filter_map(|s| locations.get(&(*s as u64)).cloned())
                .collect();
            for task in 0..stage.task_count {
                let def = TaskDefinition {
                    query_id: query_id.clone(),
                    stage: stage.id as u64,
                    task: task as u64,
                    plan: bytes.clone(),
                    inputs: inputs.clone(),
                    config: config.clone(),
                    retain_outputs: stage.retain_outputs,
                };
                let client = placed(stage.id, task).clone();
                tasks.push(async move { client.run_task(&def).await }.boxed());
            }
        }

        let final_stage = plan.stages.len() as u64;
        let final_locations = locations
            .get(&final_stage)
            .cloned()
            .map(|location| HashMap::from([(final_stage, location)]))
            .unwrap_or_default();
        let source =
            FlightExchangeSource::new(query_id.clone(), final_locations, self.clients.clone());
        let root_ctx = with_extension(ctx, ExchangeSourceExt(Arc::new(source)));
        let results = plan.root.execute(0, root_ctx)?;
        Ok(Attempt {
            silenced: self.silenced.subscribe(),
            prelude,
            query_id: query_id.clone(),
            executors,
            tasks,
            results,
            done: false,
            guard: ReleaseGuard {
                query_id,
                releases: Some(self.releases.clone()),
            },
        })
    }
}

impl Coordinator {
    /// `SET fletch.executor_memory` applies to every executor before the next query's
    /// tasks start (once per new value).
    fn memory_limit_update(
        &self,
        ctx: &TaskContext,
        executors: &[ExecutorClient],
    ) -> Result<Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>> {
        let setting = ctx
            .session_config()
            .options()
            .extensions
            .get::<FletchOptions>()
            .and_then(|o| o.executor_memory.clone());
        let Some(setting) = setting else {
            return Ok(None);
        };
        let bytes = parse_size(&setting).map_err(|e| e.context("fletch.executor_memory"))?;
        if *self.applied_memory_limit.lock() == Some(bytes) {
            return Ok(None);
        }
        let executors = executors.to_vec();
        let applied = Arc::clone(&self.applied_memory_limit);
        Ok(Some(
            async move {
                for executor in &executors {
                    executor.set_memory_limit(bytes).await?;
                }
                *applied.lock() = Some(bytes);
                Ok(())
            }
            .boxed(),
        ))
    }
}

type TaskFuture = BoxFuture<'static, std::result::Result<(), TaskFailure>>;

/// How many times a query runs when executors are lost under it.
pub const MAX_ATTEMPTS: usize = 3;

/// One query as the caller's stream sees it, across attempts.
struct QueryRun {
    coordinator: Arc<Coordinator>,
    plan: Arc<DistributedPlan>,
    encoded: Arc<Vec<Bytes>>,
    ctx: Arc<TaskContext>,
    attempt: Attempt,
    attempts: usize,
    /// Whether any row reached the caller: from then on a retry would repeat rows.
    delivered: bool,
}

impl QueryRun {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            match self.attempt.next().await? {
                Ok(batch) => {
                    self.delivered |= batch.num_rows() > 0;
                    return Some(Ok(batch));
                }
                Err((error, lost)) => {
                    let Some(url) = lost else {
                        return Some(Err(error));
                    };
                    if self.delivered || self.attempts >= MAX_ATTEMPTS {
                        let why = if self.delivered {
                            "after rows were returned, so it cannot run again"
                        } else {
                            "on every attempt"
                        };
                        return Some(Err(error.context(format!(
                            "executor {url} was lost {why} (attempt {} of at most {MAX_ATTEMPTS})",
                            self.attempts
                        ))));
                    }
                    self.coordinator.suspect_lost(&url);
                    self.attempts += 1;
                    tracing::warn!(
                        %url,
                        attempt = self.attempts,
                        "executor lost during a query; running it again"
                    );
                    match self
                        .coordinator
                        .launch(&self.plan, &self.encoded, &self.ctx)
                    {
                        Ok(attempt) => self.attempt = attempt,
                        Err(e) => {
                            return Some(Err(e.context(format!(
                                "running the query again after executor {url} was lost"
                            ))));
                        }
                    }
                }
            }
        }
    }
}

/// The executor a failure says is gone, if it says so.
fn lost_executor(failure: &TaskFailure) -> Option<String> {
    (failure.reason == FailureReason::ExecutorLost && !failure.executor.is_empty())
        .then(|| failure.executor.clone())
}

/// An error, and the executor whose loss caused it, if that was the cause.
type AttemptError = (DataFusionError, Option<String>);

/// One run of a query's tasks.
struct Attempt {
    /// Executors declared lost for silence while this attempt runs.
    silenced: broadcast::Receiver<String>,
    /// Runs before any task is launched.
    prelude: Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>,
    query_id: String,
    executors: Vec<ExecutorClient>,
    tasks: FuturesUnordered<TaskFuture>,
    results: SendableRecordBatchStream,
    done: bool,
    guard: ReleaseGuard,
}

fn is_root_cause(failure: &TaskFailure) -> bool {
    !matches!(
        failure.reason,
        FailureReason::UpstreamFailed | FailureReason::Cancelled
    )
}

impl Attempt {
    async fn next(&mut self) -> Option<std::result::Result<RecordBatch, AttemptError>> {
        if self.done {
            return None;
        }
        if let Some(prelude) = self.prelude.take()
            && let Err(failure) = prelude.await
        {
            return Some(Err(self.fail(failure).await));
        }
        loop {
            tokio::select! {
                biased;
                Some(outcome) = self.tasks.next(), if !self.tasks.is_empty() => {
                    if let Err(failure) = outcome
                        && is_root_cause(&failure)
                    {
                        return Some(Err(self.fail(failure).await));
                    }
                }
                Ok(url) = self.silenced.recv() => {
                    if self.executors.iter().any(|e| e.url() == url) {
                        let failure = TaskFailure::new(
                            FailureReason::ExecutorLost,
                            format!("executor {url} stopped sending heartbeats"),
                            usize::MAX,
                            usize::MAX,
                            &url,
                        );
                        return Some(Err(self.fail(failure).await));
                    }
                }
                item = self.results.next() => match item {
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

    /// The error to report for `err`, which surfaced in the result stream: a failure of
    /// an upstream task is reported as that task's own failure, not as its echo.
    async fn root_cause(&mut self, err: DataFusionError) -> AttemptError {
        if let Some(failure) = fletch_executor::find_failure(&err)
            && is_root_cause(failure)
        {
            let failure = failure.clone();
            return self.fail(failure).await;
        }
        while let Some(outcome) = self.tasks.next().await {
            if let Err(failure) = outcome
                && is_root_cause(&failure)
            {
                return self.fail(failure).await;
            }
        }
        self.finish().await;
        (err, None)
    }

    async fn fail(&mut self, failure: TaskFailure) -> AttemptError {
        let lost = lost_executor(&failure);
        // A lost executor has nothing left to release, and may not answer at all.
        if let Some(url) = &lost {
            self.executors.retain(|e| e.url() != url);
        }
        self.finish().await;
        (failure.into_datafusion(), lost)
    }

    /// Stops waiting for tasks and frees the query on every executor.
    async fn finish(&mut self) {
        self.done = true;
        self.tasks = FuturesUnordered::new();
        release_everywhere(&self.executors, &self.query_id).await;
        self.guard.releases = None;
    }
}

/// How busy each executor is for placement: its slots, the tasks it reported running,
/// and the tasks this query placed on it so far.
struct Slots {
    slots: Vec<usize>,
    busy: Vec<usize>,
}

impl Slots {
    fn of(executors: &[ExecutorClient], statuses: &[ExecutorStatus]) -> Self {
        let status = |url: &str| statuses.iter().find(|s| s.url == url);
        Self {
            slots: executors
                .iter()
                .map(|e| status(e.url()).map_or(1, |s| (s.slots as usize).max(1)))
                .collect(),
            busy: executors
                .iter()
                .map(|e| status(e.url()).map_or(0, |s| s.running_tasks as usize))
                .collect(),
        }
    }

    /// Executor `i`'s busy tasks per slot, compared without division.
    fn less_busy(&self, i: usize, j: usize) -> bool {
        self.busy[i] * self.slots[j] < self.busy[j] * self.slots[i]
    }

    /// Places a stage's tasks. Data locality first: a task that reads or writes a table
    /// fragment goes to the least busy of the fragment's holders that are in the
    /// cluster. Any other task goes to the executor with the most free slots (busy
    /// tasks per slot), ties broken round robin from the stage's id.
    fn place(
        &mut self,
        stage: usize,
        tasks: usize,
        holders: Option<&[Vec<String>]>,
        executors: &[ExecutorClient],
    ) -> Vec<usize> {
        let n = executors.len();
        (0..tasks)
            .map(|task| {
                let preferred: Vec<usize> = holders
                    .and_then(|h| h.get(task))
                    .into_iter()
                    .flatten()
                    .filter_map(|url| executors.iter().position(|e| e.url() == url))
                    .collect();
                let candidates: Vec<usize> = if preferred.is_empty() {
                    (0..n).map(|k| (stage + task + k) % n).collect()
                } else {
                    preferred
                };
                let mut best = candidates[0];
                for &i in &candidates[1..] {
                    if self.less_busy(i, best) {
                        best = i;
                    }
                }
                self.busy[best] += 1;
                best
            })
            .collect()
    }
}

pub(crate) enum JanitorJob {
    Release(String),
    Sync(oneshot::Sender<()>),
    DropTable(String),
    DropLoad(String, u64),
    /// Restore the replica count of every fragment the executor at this URL held.
    Rereplicate(String),
}

/// Drops a load's pieces everywhere unless disarmed: when its query is dropped before
/// the load committed or failed, the janitor does it.
pub(crate) struct LoadGuard {
    coordinator: Arc<Coordinator>,
    table_uid: String,
    load: u64,
    armed: bool,
}

impl LoadGuard {
    pub(crate) fn new(coordinator: &Arc<Coordinator>, table_uid: String, load: u64) -> Self {
        Self {
            coordinator: Arc::clone(coordinator),
            table_uid,
            load,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Drops the load's pieces on every executor and returns when they are gone.
    pub(crate) async fn drop_now(mut self) {
        self.armed = false;
        self.coordinator.drop_load(&self.table_uid, self.load).await;
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.armed {
            let job = JanitorJob::DropLoad(std::mem::take(&mut self.table_uid), self.load);
            let _ = self.coordinator.releases.send(job);
        }
    }
}

/// Sends a query's release to the janitor if its stream is dropped before it ended.
struct ReleaseGuard {
    query_id: String,
    releases: Option<mpsc::UnboundedSender<JanitorJob>>,
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if let Some(releases) = self.releases.take() {
            // The janitor lives as long as the coordinator; if both are gone, so are the
            // executors' reasons to keep anything.
            let _ = releases.send(JanitorJob::Release(std::mem::take(&mut self.query_id)));
        }
    }
}

/// How long a release or drop may wait for one executor: a frozen executor (alive to
/// TCP, deaf to everything) must not hold up the query or the janitor.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the executor at `url` out of placement and has the janitor copy the table
/// fragments it held onto others; returns whether it was placed on.
fn forget_executor(
    executors: &RwLock<Vec<ExecutorClient>>,
    janitor: &mpsc::UnboundedSender<JanitorJob>,
    url: &str,
) -> bool {
    let known = {
        let mut executors = executors.write();
        let before = executors.len();
        executors.retain(|e| e.url() != url);
        executors.len() != before
    };
    // The janitor lives as long as the coordinator.
    let _ = janitor.send(JanitorJob::Rereplicate(url.to_string()));
    known
}

/// Calls `call` on every executor at once, each given [`CONTROL_TIMEOUT`]; failures are
/// logged as `what` failed, not returned: these are clean-ups.
async fn on_every_executor<'a, F, Fut>(executors: &'a [ExecutorClient], what: &str, call: F)
where
    F: Fn(&'a ExecutorClient) -> Fut,
    Fut: Future<Output = std::result::Result<(), TaskFailure>>,
{
    let calls = executors.iter().map(|e| {
        let call = call(e);
        async move {
            match tokio::time::timeout(CONTROL_TIMEOUT, call).await {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => tracing::warn!("{what}: {failure}"),
                Err(_) => tracing::warn!("{what}: {} did not answer", e.url()),
            }
        }
    });
    futures::future::join_all(calls).await;
}

async fn release_everywhere(executors: &[ExecutorClient], query_id: &str) {
    let what = format!("releasing query {query_id}");
    on_every_executor(executors, &what, |e| e.release(query_id)).await;
}

/// Frees a table's fragments (or one load's pieces) on every executor.
async fn drop_everywhere(executors: &[ExecutorClient], table_uid: &str, load: Option<u64>) {
    let what = format!("dropping table {table_uid} fragments");
    on_every_executor(executors, &what, |e| e.drop_pieces(table_uid, load)).await;
}

/// Settings that differ from DataFusion's defaults travel with every task, and so do
/// the extensions' (`fletch.*`) that are set.
fn shipped_config(options: &ConfigOptions) -> Vec<ConfigEntry> {
    static DEFAULTS: LazyLock<HashMap<String, Option<String>>> = LazyLock::new(|| {
        ConfigOptions::default()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    });
    let core = options
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .filter_map(|e| {
            let value = e.value?;
            let default = DEFAULTS.get(&e.key).cloned().flatten();
            (default.as_deref() != Some(value.as_str()))
                .then_some(ConfigEntry { key: e.key, value })
        });
    // Extensions list their entries without their prefix.
    let extensions = options.extensions.iter().flat_map(|(prefix, extension)| {
        extension.entries().into_iter().filter_map(move |e| {
            Some(ConfigEntry {
                key: format!("{prefix}.{}", e.key),
                value: e.value?,
            })
        })
    });
    core.chain(extensions).collect()
}

fn with_extension<T: Send + Sync + 'static>(ctx: &TaskContext, ext: T) -> Arc<TaskContext> {
    let config = ctx.session_config().clone().with_extension(Arc::new(ext));
    Arc::new(TaskContext::new(
        ctx.task_id(),
        ctx.session_id(),
        config,
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        ctx.runtime_env(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executors(n: usize) -> Vec<ExecutorClient> {
        (0..n)
            .map(|i| ExecutorClient::new(&format!("http://127.0.0.1:{}", 1000 + i)).expect("url"))
            .collect()
    }

    fn status(url: &str, slots: u64, running: u64) -> ExecutorStatus {
        ExecutorStatus {
            url: url.to_string(),
            slots,
            running_tasks: running,
            ..ExecutorStatus::default()
        }
    }

    fn counts(placed: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| placed.iter().filter(|&&p| p == i).count())
            .collect()
    }

    #[tokio::test]
    async fn tasks_go_where_slots_are_free() {
        let executors = executors(2);
        let statuses = [
            status(executors[0].url(), 1, 0),
            status(executors[1].url(), 3, 0),
        ];
        let mut slots = Slots::of(&executors, &statuses);
        let placed = slots.place(1, 8, None, &executors);
        assert_eq!(counts(&placed, 2), [2, 6]);

        // An executor already running tasks gets fewer new ones.
        let statuses = [
            status(executors[0].url(), 2, 4),
            status(executors[1].url(), 2, 0),
        ];
        let mut slots = Slots::of(&executors, &statuses);
        let placed = slots.place(1, 4, None, &executors);
        assert_eq!(counts(&placed, 2), [0, 4]);
    }

    #[tokio::test]
    async fn fragment_tasks_stay_on_their_holders() {
        let executors = executors(3);
        let statuses: Vec<_> = executors.iter().map(|e| status(e.url(), 1, 0)).collect();
        let holders = vec![
            vec![
                executors[2].url().to_string(),
                executors[1].url().to_string(),
            ],
            vec![executors[2].url().to_string()],
            vec!["http://gone:1".to_string(), executors[0].url().to_string()],
        ];
        let mut slots = Slots::of(&executors, &statuses);
        let placed = slots.place(1, 3, Some(&holders), &executors);
        assert_eq!(placed, [2, 2, 0]);
    }
}
