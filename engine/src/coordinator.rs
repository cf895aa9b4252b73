//! The [`Coordinator`]: knows the executors (membership, heartbeats, losses), decides
//! where tasks go ([`Slots`]), and runs the clean-ups (releases, drops,
//! re-replication) in the background. Running one query is the `query_run` module's job, which uses this one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use fletch_planner::{ByteSize, FletchOptions};
use fletch_transport::protocol::{ConfigEntry, ExecutorStatus};
use fletch_transport::{
    ClientPool, ClusterSecret, ClusterSecurity, ExecutorClient, FailureReason, TaskFailure,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::catalog::{ClusterSchema, as_fletch_table};
use crate::janitor::{Janitor, JanitorJob, LiveQueries, ReleaseGuard};
use crate::membership::{MemberState, Members, MembershipOptions, StatusSource};
use crate::metrics::{ClusterNow, CoordinatorMetrics};
use crate::progress::{Progress, QueryProgress};
use crate::query_log::QueryLog;
use crate::replication::rereplicate;

/// Schedules distributed plans onto executors. Shared by every session of a cluster.
pub struct Coordinator {
    clients: ClientPool,
    /// The cluster's tables, shared by every session.
    tables: Arc<ClusterSchema>,
    /// The last `fletch.executor_memory` every executor accepted.
    applied_memory_limit: Arc<Mutex<Option<usize>>>,
    members: Arc<Members>,
    /// Queries running now, each added and removed by its [`ReleaseGuard`].
    live_queries: LiveQueries,
    /// Executors declared lost because their heartbeats stopped; running queries
    /// listen, since such an executor may hang their tasks without breaking anything.
    silenced: broadcast::Sender<String>,
    /// Declares executors lost when their heartbeats stop.
    _reaper: SpawnedTask<()>,
    janitor: Janitor,
    recoveries: RecoveryCounters,
    /// The queries running and the last ones finished (`fletch.queries`).
    query_log: QueryLog,
    metrics: CoordinatorMetrics,
    /// Held by every statement that changes the catalog (create, drop, alter, cache,
    /// uncache), so `IF [NOT] EXISTS` checks and the change they guard are one step
    /// for every session of the cluster.
    catalog_changes: tokio::sync::Mutex<()>,
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
    /// register later (which must), of an open cluster (no secret: loopback only). Must
    /// be called inside a tokio runtime.
    pub fn with_membership(
        urls: &[String],
        options: MembershipOptions,
    ) -> std::result::Result<Arc<Self>, TaskFailure> {
        Self::with_security(urls, options, ClusterSecurity::open())
    }

    /// [`Self::with_membership`] for a cluster whose members prove themselves with
    /// `security`'s secret: the coordinator presents it to executors, requires it of
    /// executors that register, and signs the result tickets clients redeem at
    /// executors with it; `https://` executors are trusted with its certificate.
    pub fn with_security(
        urls: &[String],
        options: MembershipOptions,
        security: ClusterSecurity,
    ) -> std::result::Result<Arc<Self>, TaskFailure> {
        let clients = ClientPool::new(security);
        let members = Arc::new(Members::default());
        for url in urls {
            // A URL that does not parse is refused here, before it is a member.
            clients.get(url)?;
            members.add_static(url);
        }
        let (janitor_handle, mut pending) = Janitor::new();
        let tables = Arc::new(ClusterSchema::new(janitor_handle.clone()));
        let janitor_members = Arc::clone(&members);
        let janitor_clients = clients.clone();
        let janitor_tables = Arc::clone(&tables);
        let janitor = SpawnedTask::spawn(async move {
            // Jobs run side by side, so one executor that does not answer (each call
            // has a deadline) delays no other clean-up; re-replications take turns.
            let mut running = tokio::task::JoinSet::new();
            let replicating = Arc::new(tokio::sync::Mutex::new(()));
            loop {
                let job = tokio::select! {
                    job = pending.recv() => job,
                    Some(_) = running.join_next(), if !running.is_empty() => continue,
                };
                let Some(job) = job else { break };
                let executors = placeable(&janitor_members, &janitor_clients);
                match job {
                    JanitorJob::Release(query_id) => {
                        running.spawn(async move {
                            release_everywhere(&executors, &query_id).await;
                        });
                    }
                    JanitorJob::DropTable(uid) => {
                        running.spawn(async move {
                            drop_everywhere(&executors, &uid, None).await;
                        });
                    }
                    JanitorJob::DropLoad {
                        table_uid,
                        load,
                        done,
                    } => {
                        running.spawn(async move {
                            drop_everywhere(&executors, &table_uid, Some(load)).await;
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                        });
                    }
                    JanitorJob::Rereplicate(lost) => {
                        let tables = Arc::clone(&janitor_tables);
                        let turn = Arc::clone(&replicating).lock_owned();
                        running.spawn(async move {
                            let _turn = turn.await;
                            rereplicate(&tables, &executors, &lost, None).await;
                        });
                    }
                    JanitorJob::Sync(done) => {
                        while running.join_next().await.is_some() {}
                        let _ = done.send(());
                    }
                }
            }
        });
        let metrics = CoordinatorMetrics::new().map_err(|e| {
            TaskFailure::outside_tasks(
                FailureReason::TaskFailed,
                format!("setting up the coordinator's metrics: {e}"),
                "",
            )
        })?;
        let (silenced, _) = broadcast::channel(64);
        let reaper = {
            let members = Arc::clone(&members);
            let janitor = janitor_handle.clone();
            let silenced = silenced.clone();
            SpawnedTask::spawn(async move {
                let mut ticks = tokio::time::interval(options.heartbeat_interval / 2);
                loop {
                    ticks.tick().await;
                    for url in members.declare_lost(options.silence_before_lost()) {
                        tracing::warn!(%url, "executor lost: no heartbeat for {:?}", options.silence_before_lost());
                        janitor.send(JanitorJob::Rereplicate(url.clone()));
                        // No running query may be listening: nothing to tell then.
                        let _ = silenced.send(url);
                    }
                }
            })
        };
        Ok(Arc::new(Self {
            clients,
            tables,
            applied_memory_limit: Arc::default(),
            members,
            live_queries: Arc::default(),
            silenced,
            _reaper: reaper,
            janitor: janitor_handle,
            recoveries: RecoveryCounters::default(),
            query_log: QueryLog::default(),
            metrics,
            catalog_changes: tokio::sync::Mutex::new(()),
            _janitor: janitor,
        }))
    }

    /// Returns once every query dropped before this call has been released on every
    /// executor, and every table dropped before it freed (these run in the background,
    /// in order).
    pub async fn wait_for_releases(&self) {
        self.janitor.sync().await;
    }

    /// The handle of this coordinator's background clean-ups.
    pub(crate) fn janitor(&self) -> &Janitor {
        &self.janitor
    }

    /// The schema every session of this cluster sees as `datafusion.public`.
    pub fn tables(&self) -> &Arc<ClusterSchema> {
        &self.tables
    }

    /// Stops placing work on the executor at `url` and copies the table fragments it
    /// held onto other executors (in the background: [`Self::wait_for_releases`] waits
    /// for it); returns whether it was known.
    pub fn remove_executor(&self, url: &str) -> bool {
        let placed_on = self.members.mark(url, MemberState::Left);
        self.janitor.send(JanitorJob::Rereplicate(url.to_string()));
        placed_on
    }

    /// The executor at `url` leaves cleanly: it gets no more work, and every table
    /// fragment it held is copied onto the others — from itself when it was the only
    /// holder — before this returns (while it still serves). Its running queries keep
    /// their tasks there; the executor lets them finish before it stops.
    pub async fn executor_leaving(&self, url: &str) {
        self.members.mark(url, MemberState::Left);
        let executors = self.live_executors();
        let leaving = self.clients.get(url).ok();
        rereplicate(&self.tables, &executors, url, leaving.as_ref()).await;
    }

    /// An executor registered or sent a heartbeat: it is (again) a member and gets work
    /// from the next query on.
    pub fn executor_heard_from(
        &self,
        status: ExecutorStatus,
        registering: bool,
    ) -> std::result::Result<(), TaskFailure> {
        // A URL that does not parse is refused here, before it is a member.
        self.clients.get(&status.url)?;
        let url = status.url.clone();
        if self.members.heard_from(status, registering) {
            tracing::info!(%url, "executor joined");
        }
        Ok(())
    }

    /// Adds an executor in this process (which sends no heartbeats, and whose status
    /// `source` reads) to a running cluster: it gets work from the next task placed on.
    pub fn add_embedded_executor(
        &self,
        url: &str,
        source: StatusSource,
    ) -> std::result::Result<(), TaskFailure> {
        self.clients.get(url)?;
        self.members.add_static(url);
        self.members.set_source(url, source);
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

    /// The executors work may be placed on now, in the order they joined.
    pub fn executor_urls(&self) -> Vec<String> {
        self.members.placeable()
    }

    /// Takes an executor that broke a query's connections out of placement, unless it
    /// was started with the coordinator (no heartbeats tell when it is back).
    pub(crate) fn suspect_lost(&self, url: &str) {
        if self.members.suspect_lost(url) {
            tracing::warn!(%url, "executor lost: its connections broke");
            self.janitor.send(JanitorJob::Rereplicate(url.to_string()));
        }
    }

    /// The executors work may be placed on now.
    pub(crate) fn live_executors(&self) -> Vec<ExecutorClient> {
        placeable(&self.members, &self.clients)
    }

    /// Tells of executors declared lost for silence from now on.
    pub(crate) fn silenced(&self) -> broadcast::Receiver<String> {
        self.silenced.subscribe()
    }

    /// The secret the cluster's members share; `None`: an open cluster.
    pub fn cluster_secret(&self) -> Option<&ClusterSecret> {
        self.clients.security().secret()
    }

    pub(crate) fn clients(&self) -> &ClientPool {
        &self.clients
    }

    /// How queries have recovered from lost executors since the coordinator started.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.recoveries.snapshot()
    }

    pub(crate) fn recovery_counters(&self) -> &RecoveryCounters {
        &self.recoveries
    }

    /// The queries running and the last ones finished.
    pub fn query_log(&self) -> &QueryLog {
        &self.query_log
    }

    pub(crate) fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// The coordinator's metrics now, as Prometheus families (gauges read now).
    pub fn gather_metrics(&self) -> Vec<prometheus::proto::MetricFamily> {
        let fragment_bytes = self
            .tables
            .all()
            .iter()
            .filter_map(|(_, table)| as_fletch_table(table))
            .map(|t| t.fragment_sizes().iter().map(|s| s.1 as u64).sum::<u64>())
            .sum();
        self.metrics.gather(ClusterNow {
            executors: self.executors(),
            fragment_bytes,
        })
    }

    /// Releases `query_id` on every executor if dropped armed; while it lives, the
    /// query is in every executor's lease.
    pub(crate) fn release_guard(
        &self,
        query_id: String,
        progress: Arc<QueryProgress>,
    ) -> ReleaseGuard {
        ReleaseGuard::new(
            query_id,
            progress,
            self.janitor.clone(),
            Arc::clone(&self.live_queries),
        )
    }

    /// Taken by a statement that changes the catalog, for its whole run.
    pub(crate) async fn catalog_change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.catalog_changes.lock().await
    }

    /// The queries running now: what executors may keep state for (their lease).
    pub fn live_queries(&self) -> Vec<String> {
        self.live_queries.lock().keys().cloned().collect()
    }

    /// How far the queries running now are, summed.
    pub fn progress(&self) -> Progress {
        let mut progress = Progress::default();
        for query in self.live_queries.lock().values() {
            query.add_to(&mut progress);
        }
        progress
    }
}

impl Coordinator {
    /// `SET fletch.executor_memory` applies to every executor before the next query's
    /// tasks start (once per new value).
    pub(crate) fn memory_limit_update(
        &self,
        ctx: &TaskContext,
        executors: &[ExecutorClient],
    ) -> Result<Option<BoxFuture<'static, std::result::Result<(), TaskFailure>>>> {
        let setting = FletchOptions::of(ctx.session_config().options()).executor_memory;
        let Some(ByteSize(bytes)) = setting else {
            return Ok(None);
        };
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

/// How queries recovered from lost executors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Recoveries that ran again only the tasks the lineage named.
    pub lineage_recoveries: usize,
    /// Tasks those recoveries ran again.
    pub tasks_rerun: usize,
    /// Recoveries that ran a whole plan again.
    pub whole_reruns: usize,
}

#[derive(Debug, Default)]
pub(crate) struct RecoveryCounters {
    lineage_recoveries: AtomicUsize,
    tasks_rerun: AtomicUsize,
    whole_reruns: AtomicUsize,
}

impl RecoveryCounters {
    pub(crate) fn lineage(&self, tasks: usize) {
        self.lineage_recoveries.fetch_add(1, Ordering::Relaxed);
        self.tasks_rerun.fetch_add(tasks, Ordering::Relaxed);
    }

    pub(crate) fn whole(&self) {
        self.whole_reruns.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RecoveryStats {
        RecoveryStats {
            lineage_recoveries: self.lineage_recoveries.load(Ordering::Relaxed),
            tasks_rerun: self.tasks_rerun.load(Ordering::Relaxed),
            whole_reruns: self.whole_reruns.load(Ordering::Relaxed),
        }
    }
}

/// How busy each executor is for placement: its slots, the tasks it reported running,
/// and the tasks this query placed on it so far.
pub(crate) struct Slots {
    slots: Vec<usize>,
    busy: Vec<usize>,
}

impl Slots {
    pub(crate) fn of(executors: &[ExecutorClient], statuses: &[ExecutorStatus]) -> Self {
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

    /// The slots of `executors` together: how many tasks a query runs at once.
    pub(crate) fn total(executors: &[ExecutorClient], statuses: &[ExecutorStatus]) -> usize {
        Self::of(executors, statuses)
            .slots
            .iter()
            .sum::<usize>()
            .max(1)
    }

    /// Counts executor `i` as running at least `tasks` (its last heartbeat may predate
    /// tasks placed since).
    pub(crate) fn at_least_busy(&mut self, i: usize, tasks: usize) {
        if let Some(busy) = self.busy.get_mut(i) {
            *busy = (*busy).max(tasks);
        }
    }

    /// Executor `i`'s busy tasks per slot, compared without division.
    fn less_busy(&self, i: usize, j: usize) -> bool {
        self.busy[i] * self.slots[j] < self.busy[j] * self.slots[i]
    }

    /// Places task `task` of stage `stage`. Data locality first: a task that reads or
    /// writes a table fragment goes to the least busy of the fragment's holders that
    /// are in the cluster. Any other task goes to the executor with the most free slots
    /// (busy tasks per slot), ties broken round robin from the stage's id.
    pub(crate) fn place_one(
        &mut self,
        stage: usize,
        task: usize,
        holders: Option<&[Vec<String>]>,
        executors: &[ExecutorClient],
    ) -> usize {
        let n = executors.len();
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
    }
}

/// How long a release or drop may wait for one executor: a frozen executor (alive to
/// TCP, deaf to everything) must not hold up the query or the janitor.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The clients of the executors work may be placed on: the membership table's
/// placeable view (every URL in it parsed when it joined).
fn placeable(members: &Members, clients: &ClientPool) -> Vec<ExecutorClient> {
    members
        .placeable()
        .iter()
        .filter_map(|url| clients.get(url).ok())
        .collect()
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

pub(crate) async fn release_everywhere(executors: &[ExecutorClient], query_id: &str) {
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
pub(crate) fn shipped_config(options: &ConfigOptions) -> Vec<ConfigEntry> {
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
    // Extensions made by DataFusion's `extensions_options!` list their entries without
    // their prefix; Fletch's own carry it.
    let extensions = options.extensions.iter().flat_map(|(prefix, extension)| {
        extension.entries().into_iter().filter_map(move |e| {
            let key = if e.key.starts_with(&format!("{prefix}.")) {
                e.key
            } else {
                format!("{prefix}.{}", e.key)
            };
            Some(ConfigEntry {
                key,
                value: e.value?,
            })
        })
    });
    core.chain(extensions).collect()
}

pub(crate) fn with_extension<T: Send + Sync + 'static>(
    ctx: &TaskContext,
    ext: T,
) -> Arc<TaskContext> {
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

    fn place(
        slots: &mut Slots,
        tasks: usize,
        holders: Option<&[Vec<String>]>,
        executors: &[ExecutorClient],
    ) -> Vec<usize> {
        (0..tasks)
            .map(|t| slots.place_one(1, t, holders, executors))
            .collect()
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
        let placed = place(&mut slots, 8, None, &executors);
        assert_eq!(counts(&placed, 2), [2, 6]);

        // An executor already running tasks gets fewer new ones.
        let statuses = [
            status(executors[0].url(), 2, 4),
            status(executors[1].url(), 2, 0),
        ];
        let mut slots = Slots::of(&executors, &statuses);
        let placed = place(&mut slots, 4, None, &executors);
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
        let placed = place(&mut slots, 3, Some(&holders), &executors);
        assert_eq!(placed, [2, 2, 0]);
    }
}
