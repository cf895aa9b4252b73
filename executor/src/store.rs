//! The executor's in-memory partition store: every task output partition of every
//! running query, readable any number of times while it is still being written, and
//! freed as a whole when the coordinator releases the query.
//!
//! Leases: an executor that joined a coordinator learns with every heartbeat which
//! queries the coordinator still runs ([`PartitionStore::renew`]). A query it does not
//! name for [`LEASE`] is freed here whatever happened to its release (a coordinator
//! that stopped, a release call that never arrived), and a read of a query that no
//! task here started and no lease names is `NotFound` once a few heartbeats have
//! passed without it. An executor without a coordinator (embedded) has no leases.

use std::collections::HashSet;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryPool, MemoryReservation, UnboundedMemoryPool,
};
use datafusion::physical_plan::ExecutionPlan;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::recent::RecentSet;
use fletch_transport::protocol::PartitionTicket;
use fletch_transport::{FailureReason, OUTSIDE_TASKS, TaskFailure};

/// How many released query ids an executor remembers, so a late fetch of a released
/// query fails instead of re-creating its buffers.
const RELEASED_MEMORY: usize = 4096;

/// One output partition of one run of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OutputId {
    pub(crate) stage: u64,
    pub(crate) task: u64,
    pub(crate) attempt: u64,
    pub(crate) partition: u64,
}

impl OutputId {
    /// Partition `partition` of the first run of a task.
    #[cfg(test)]
    pub(crate) fn first(stage: u64, task: u64, partition: u64) -> Self {
        Self {
            stage,
            task,
            attempt: 0,
            partition,
        }
    }
}

/// A point-in-time view of what the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Bytes of Arrow data held in exchange buffers.
    pub buffered_bytes: usize,
    /// Queries with buffers or tasks on this executor.
    pub queries: usize,
    /// Tasks still running.
    pub running_tasks: usize,
    /// Writers waiting for a slow reader to make room.
    pub waiting_writers: usize,
}

/// How this executor's exchange partitions have been read since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeReads {
    /// Read by tasks on this executor straight from memory.
    pub local: usize,
    /// Served over Flight `DoGet` to other executors and the coordinator.
    pub served: usize,
}

pub(crate) struct PartitionStore {
    /// Exchange buffers reserve what they hold here, next to fragments and operators.
    pool: Arc<dyn MemoryPool>,
    bytes: Arc<AtomicUsize>,
    waiting_writers: Arc<AtomicUsize>,
    /// Tasks running, of live and released queries alike.
    running_tasks: Arc<AtomicUsize>,
    state: Mutex<StoreState>,
    local_reads: AtomicUsize,
    served_reads: AtomicUsize,
    /// Signalled when a lease arrives, or a task creates a query's state.
    leases: watch::Sender<()>,
    /// How long a read of a query this executor does not know waits for it.
    unknown_query_wait: Mutex<Duration>,
}

struct StoreState {
    queries: HashMap<String, Arc<QueryState>>,
    released: RecentSet<String>,
    /// The queries the coordinator named last; `None` until a first lease.
    leased: Option<HashSet<String>>,
}

impl Default for StoreState {
    fn default() -> Self {
        Self {
            queries: HashMap::new(),
            released: RecentSet::new(RELEASED_MEMORY),
            leased: None,
        }
    }
}

/// How long a query the coordinator no longer names keeps its state here.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// One query's buffers, decoded stage plans and running tasks on this executor.
#[derive(Default)]
pub(crate) struct QueryState {
    buffers: Mutex<HashMap<OutputId, Arc<PartitionBuffer>>>,
    /// By (stage, attempt): tasks run again get a fresh plan instance, since shared
    /// state (a collected build side) may hold the failure that made them run again.
    pub(crate) plans: Mutex<HashMap<(u64, u64), Arc<dyn ExecutionPlan>>>,
    tasks: Mutex<Vec<SpawnedTask<()>>>,
    /// Set by `release`: a task handed over afterwards is aborted at once, or it would
    /// run on, owned by nobody.
    released: std::sync::atomic::AtomicBool,
    running: AtomicUsize,
    /// The store's count of running tasks, released queries' included: a task of a
    /// released query runs until its abort takes effect, and is still work.
    store_running: Arc<AtomicUsize>,
    /// Signalled when the last running task ends.
    idle: Notify,
    /// When the coordinator last named this query in a lease (or a task started it).
    renewed: Mutex<Option<Instant>>,
}

impl Default for PartitionStore {
    fn default() -> Self {
        Self::new(Arc::new(UnboundedMemoryPool::default()))
    }
}

impl PartitionStore {
    pub(crate) fn new(pool: Arc<dyn MemoryPool>) -> Self {
        Self {
            pool,
            bytes: Arc::default(),
            waiting_writers: Arc::default(),
            running_tasks: Arc::default(),
            state: Mutex::default(),
            local_reads: AtomicUsize::default(),
            served_reads: AtomicUsize::default(),
            leases: watch::Sender::new(()),
            unknown_query_wait: Mutex::new(Duration::from_secs(5)),
        }
    }

    pub(crate) fn set_unknown_query_wait(&self, wait: Duration) {
        *self.unknown_query_wait.lock() = wait;
    }

    /// Takes the coordinator's list of the queries it runs: those here are renewed.
    pub(crate) fn renew(&self, live: HashSet<String>, now: Instant) {
        let mut state = self.state.lock();
        for (id, query) in &state.queries {
            if live.contains(id) {
                *query.renewed.lock() = Some(now);
            }
        }
        state.leased = Some(live);
        drop(state);
        self.leases.send_replace(());
    }

    /// The queries whose lease ran out by `now` (not named for [`LEASE`]): the caller
    /// releases them.
    pub(crate) fn expired(&self, now: Instant) -> Vec<String> {
        let state = self.state.lock();
        if state.leased.is_none() {
            return Vec::new();
        }
        state
            .queries
            .iter()
            .filter(|(_, q)| {
                q.renewed
                    .lock()
                    .is_some_and(|at| now.saturating_duration_since(at) >= LEASE)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Waits, at most the unknown-query wait, until a read of `query_id` may create its
    /// state: a task here started it, or the coordinator's lease names it (always,
    /// without leases). `NotFound` if neither happens: no member asked for this query.
    pub(crate) async fn await_known(&self, query_id: &str) -> Result<(), TaskFailure> {
        let mut changed = self.leases.subscribe();
        let deadline = tokio::time::Instant::now() + *self.unknown_query_wait.lock();
        loop {
            {
                let state = self.state.lock();
                let known = state.queries.contains_key(query_id)
                    || state.released.contains(query_id)
                    || state
                        .leased
                        .as_ref()
                        .is_none_or(|live| live.contains(query_id));
                if known {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(TaskFailure::outside_tasks(
                    FailureReason::NotFound,
                    format!("no query {query_id} runs on this cluster"),
                    "",
                ));
            }
        }
    }

    /// The query's state, created on first use; `Err` once the query was released.
    pub(crate) fn query(&self, query_id: &str) -> Result<Arc<QueryState>, TaskFailure> {
        let mut state = self.state.lock();
        if state.released.contains(query_id) {
            return Err(TaskFailure::new(
                FailureReason::Cancelled,
                format!("query {query_id} was released"),
                0,
                0,
                "",
            ));
        }
        if let Some(query) = state.queries.get(query_id) {
            return Ok(Arc::clone(query));
        }
        let query = Arc::new(QueryState {
            store_running: Arc::clone(&self.running_tasks),
            ..Default::default()
        });
        *query.renewed.lock() = Some(Instant::now());
        state
            .queries
            .insert(query_id.to_string(), Arc::clone(&query));
        drop(state);
        // Readers waiting for this query to be known (see `await_known`).
        self.leases.send_replace(());
        Ok(query)
    }

    /// The buffer of one task output partition, created by whichever of its writer or
    /// reader comes first; both derive `retain` from the same plan decision.
    pub(crate) fn buffer(
        &self,
        query: &QueryState,
        output: OutputId,
        retain: bool,
    ) -> Arc<PartitionBuffer> {
        let mut buffers = query.buffers.lock();
        Arc::clone(buffers.entry(output).or_insert_with(|| {
            let OutputId {
                stage,
                task,
                attempt,
                partition,
            } = output;
            let consumer = MemoryConsumer::new(format!(
                "exchange buffer of stage {stage} task {task} (run {attempt}) partition {partition}"
            ));
            Arc::new(PartitionBuffer {
                retain,
                reservation: consumer.register(&self.pool),
                inner: Mutex::new(BufferState::default()),
                changed: watch::Sender::new(()),
                store_bytes: Arc::clone(&self.bytes),
                waiting_writers: Arc::clone(&self.waiting_writers),
            })
        }))
    }

    /// Streams the partition a ticket names, to a task on this executor (`local`) or to
    /// a `DoGet` caller.
    pub(crate) fn read_partition(
        &self,
        ticket: &PartitionTicket,
        local: bool,
    ) -> Result<impl Stream<Item = Result<RecordBatch, TaskFailure>> + use<>, TaskFailure> {
        let counter = if local {
            &self.local_reads
        } else {
            &self.served_reads
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(self.ticket_buffer(ticket)?.read())
    }

    /// The buffer of the partition a ticket names.
    fn ticket_buffer(&self, ticket: &PartitionTicket) -> Result<Arc<PartitionBuffer>, TaskFailure> {
        let query = self.query(&ticket.query_id)?;
        let output = OutputId {
            stage: ticket.stage,
            task: ticket.task,
            attempt: ticket.attempt,
            partition: ticket.partition,
        };
        Ok(self.buffer(&query, output, ticket.retain))
    }

    /// Returns once a client has read the partition `ticket` names (a query result) to
    /// its end; fails as [`PartitionBuffer::served`] says.
    pub(crate) async fn await_read(
        &self,
        ticket: &PartitionTicket,
        unread: Duration,
    ) -> Result<(), TaskFailure> {
        let stage = usize::try_from(ticket.stage).unwrap_or(OUTSIDE_TASKS);
        let task = usize::try_from(ticket.task).unwrap_or(OUTSIDE_TASKS);
        self.ticket_buffer(ticket)?
            .served(unread)
            .await
            .map_err(|why| {
                TaskFailure::new(
                    FailureReason::TaskFailed,
                    format!("serving the query result: {why}"),
                    stage,
                    task,
                    "",
                )
            })
    }

    /// Aborts the query's tasks and frees its buffers; returns once the tasks have
    /// ended, so everything they held (operators' memory, pieces being loaded) is back.
    /// Readers still attached see a cancellation error.
    pub(crate) async fn release(&self, query_id: &str) {
        let query = {
            let mut state = self.state.lock();
            state.released.insert(query_id.to_string());
            state.queries.remove(query_id)
        };
        if let Some(query) = query {
            // Dropping a SpawnedTask aborts it.
            query.released.store(true, Ordering::SeqCst);
            query.tasks.lock().clear();
            query.plans.lock().clear();
            for (_, buffer) in query.buffers.lock().drain() {
                buffer.release();
            }
            loop {
                let ended = query.idle.notified();
                if query.running.load(Ordering::Acquire) == 0 {
                    break;
                }
                ended.await;
            }
        }
    }

    pub(crate) fn exchange_reads(&self) -> ExchangeReads {
        ExchangeReads {
            local: self.local_reads.load(Ordering::Relaxed),
            served: self.served_reads.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let state = self.state.lock();
        StoreStats {
            buffered_bytes: self.bytes.load(Ordering::Acquire),
            waiting_writers: self.waiting_writers.load(Ordering::Acquire),
            queries: state.queries.len(),
            running_tasks: self.running_tasks.load(Ordering::Acquire),
        }
    }
}

impl QueryState {
    /// Keeps `task` owned by the query so releasing the query aborts it.
    pub(crate) fn own_task(&self, task: SpawnedTask<()>) {
        let mut tasks = self.tasks.lock();
        if self.released.load(Ordering::SeqCst) {
            // Dropping it aborts it; its caller hears the query was released.
            drop(task);
            return;
        }
        tasks.push(task);
    }

    /// Counts a task as running, unless the query was released: `release` sets the
    /// flag before it waits for the count, and this counts before it reads the flag,
    /// so either `release` waits for the task or the task never starts.
    pub(crate) fn task_started(self: &Arc<Self>) -> Option<RunningGuard> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.store_running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(Arc::clone(self));
        if self.released.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }
}

pub(crate) struct RunningGuard(Arc<QueryState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store_running.fetch_sub(1, Ordering::AcqRel);
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Unread bytes a consumed-on-read partition may hold before its writer waits. One batch
/// is always accepted, so a batch larger than this still moves.
const UNREAD_LIMIT_BYTES: usize = 4 << 20;

/// One output partition with its completion state. A retained partition keeps every
/// batch until the query is released, for any number of readers; a consumed partition
/// hands each batch to its single reader and holds its writer back while
/// [`UNREAD_LIMIT_BYTES`] are unread.
pub(crate) struct PartitionBuffer {
    retain: bool,
    reservation: MemoryReservation,
    inner: Mutex<BufferState>,
    changed: watch::Sender<()>,
    store_bytes: Arc<AtomicUsize>,
    waiting_writers: Arc<AtomicUsize>,
}

#[derive(Default)]
struct BufferState {
    batches: VecDeque<RecordBatch>,
    bytes: usize,
    end: Option<Result<(), TaskFailure>>,
    reader_attached: bool,
    /// The (first) reader saw the end of a complete partition.
    drained: bool,
    /// The (first) reader's stream was dropped.
    reader_gone: bool,
}

impl PartitionBuffer {
    /// Appends a batch, first waiting for room if the partition is consumed on read.
    /// Fails when the executor's memory limit leaves no room for it.
    pub(crate) async fn push(&self, batch: RecordBatch) -> datafusion::common::Result<()> {
        let size = batch.get_array_memory_size();
        let mut changed = self.changed.subscribe();
        loop {
            changed.mark_unchanged();
            {
                let mut inner = self.inner.lock();
                if inner.end.is_some() {
                    return Ok(());
                }
                let has_room = self.retain
                    || inner.batches.is_empty()
                    || inner.bytes + size <= UNREAD_LIMIT_BYTES;
                if has_room {
                    self.reservation.try_grow(size)?;
                    inner.bytes += size;
                    inner.batches.push_back(batch);
                    self.store_bytes.fetch_add(size, Ordering::AcqRel);
                    break;
                }
            }
            self.waiting_writers.fetch_add(1, Ordering::AcqRel);
            let woken = changed.changed().await;
            self.waiting_writers.fetch_sub(1, Ordering::AcqRel);
            if woken.is_err() {
                return Ok(());
            }
        }
        self.changed.send_replace(());
        Ok(())
    }

    /// Marks the partition complete (or failed); the first end wins.
    pub(crate) fn finish(&self, end: Result<(), TaskFailure>) {
        {
            let mut inner = self.inner.lock();
            if inner.end.is_none() {
                inner.end = Some(end);
            }
        }
        self.changed.send_replace(());
    }

    fn release(&self) {
        let freed = {
            let mut inner = self.inner.lock();
            inner.batches = VecDeque::new();
            if inner.end.is_none() {
                inner.end = Some(Err(TaskFailure::new(
                    FailureReason::Cancelled,
                    "query released",
                    0,
                    0,
                    "",
                )));
            }
            std::mem::take(&mut inner.bytes)
        };
        self.reservation.shrink(freed);
        self.store_bytes.fetch_sub(freed, Ordering::AcqRel);
        self.changed.send_replace(());
    }

    /// Waits until the partition's reader has read it to its end: how a task whose
    /// output is a query result served to a client learns the client has it all. Fails
    /// when the partition failed or was released, when the reader went away before the
    /// end, or when no reader came within `unread`.
    pub(crate) async fn served(&self, unread: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + unread;
        let mut changed = self.changed.subscribe();
        loop {
            changed.mark_unchanged();
            let attached = {
                let inner = self.inner.lock();
                if inner.drained {
                    return Ok(());
                }
                if let Some(Err(failure)) = &inner.end {
                    return Err(failure.message.clone());
                }
                if inner.reader_gone {
                    return Err("the client stopped reading the result before its end".into());
                }
                inner.reader_attached
            };
            let woken = if attached {
                changed.changed().await
            } else {
                match tokio::time::timeout_at(deadline, changed.changed()).await {
                    Ok(woken) => woken,
                    Err(_) => {
                        return Err(format!(
                            "no client fetched the result within {} s",
                            unread.as_secs_f64()
                        ));
                    }
                }
            };
            if woken.is_err() {
                return Err("query released".into());
            }
        }
    }

    /// Streams the partition from its first batch, following the writer until it ends.
    /// A consumed partition accepts one reader; a second one gets an error, never a
    /// silently partial answer.
    pub(crate) fn read(self: Arc<Self>) -> impl Stream<Item = Result<RecordBatch, TaskFailure>> {
        let second_reader = {
            let mut inner = self.inner.lock();
            let second = !self.retain && inner.reader_attached;
            inner.reader_attached = true;
            second
        };
        // Only the first reader's departure counts (see `served`).
        let gone = (!second_reader).then(|| ReaderGone(Arc::clone(&self)));
        futures::stream::unfold(
            (self, 0usize, second_reader, gone),
            |(buffer, next, done, gone)| async move {
                if done {
                    if next == 0 && !buffer.retain {
                        let failure = TaskFailure::new(
                            FailureReason::BadRequest,
                            "this output partition is consumed on read and already has a reader",
                            0,
                            0,
                            "",
                        );
                        return Some((Err(failure), (buffer, 1, true, gone)));
                    }
                    return None;
                }
                let mut changed = buffer.changed.subscribe();
                loop {
                    changed.mark_unchanged();
                    match buffer.next_batch(next) {
                        Next::Batch(batch) => {
                            return Some((Ok(batch), (buffer, next + 1, false, gone)));
                        }
                        Next::Failed(e) => return Some((Err(e), (buffer, next + 1, true, gone))),
                        Next::Done => return None,
                        Next::Pending => {}
                    }
                    if changed.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }

    /// The batch at `index` (retained) or the oldest unread one (consumed); else how the
    /// partition ended, or `Pending` — decided under one lock, so a batch written just
    /// before the end is never skipped.
    fn next_batch(&self, index: usize) -> Next {
        let mut inner = self.inner.lock();
        let batch = if self.retain {
            inner.batches.get(index).cloned()
        } else {
            inner.batches.pop_front()
        };
        if let Some(batch) = batch {
            if !self.retain {
                let size = batch.get_array_memory_size();
                inner.bytes -= size;
                drop(inner);
                self.reservation.shrink(size);
                self.store_bytes.fetch_sub(size, Ordering::AcqRel);
                // Wake a writer waiting for room.
                self.changed.send_replace(());
            }
            return Next::Batch(batch);
        }
        match &inner.end {
            Some(Ok(())) => {}
            Some(Err(e)) => return Next::Failed(e.clone()),
            None => return Next::Pending,
        }
        inner.drained = true;
        Next::Done
    }
}

/// Marks the reader gone when its stream is dropped, at its end or before.
struct ReaderGone(Arc<PartitionBuffer>);

impl Drop for ReaderGone {
    fn drop(&mut self) {
        self.0.inner.lock().reader_gone = true;
        self.0.changed.send_replace(());
    }
}

enum Next {
    Batch(RecordBatch),
    Failed(TaskFailure),
    Done,
    Pending,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;

    use super::*;

    fn batch(values: &[i32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))])
            .expect("batch")
    }

    fn values(batches: &[RecordBatch]) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .expect("int32")
                    .values()
                    .to_vec()
            })
            .collect()
    }

    async fn read_all(buffer: &Arc<PartitionBuffer>) -> Result<Vec<RecordBatch>, TaskFailure> {
        Arc::clone(buffer)
            .read()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn a_retained_partition_serves_every_reader_everything() {
        let store = PartitionStore::default();
        let query = store.query("q").expect("query");
        let buffer = store.buffer(&query, OutputId::first(1, 0, 0), true);
        buffer.push(batch(&[1, 2])).await.expect("room");
        buffer.push(batch(&[3])).await.expect("room");
        buffer.finish(Ok(()));
        assert_eq!(values(&read_all(&buffer).await.expect("first")), [1, 2, 3]);
        assert_eq!(values(&read_all(&buffer).await.expect("second")), [1, 2, 3]);
        assert!(store.stats().buffered_bytes > 0);
        store.release("q").await;
        assert_eq!(store.stats(), StoreStats::default());
    }

    #[tokio::test]
    async fn a_consumed_partition_frees_what_it_hands_over_and_refuses_a_second_reader() {
        let store = PartitionStore::default();
        let query = store.query("q").expect("query");
        let buffer = store.buffer(&query, OutputId::first(1, 0, 0), false);
        buffer.push(batch(&[1])).await.expect("room");
        buffer.push(batch(&[2])).await.expect("room");
        buffer.finish(Ok(()));
        assert_eq!(values(&read_all(&buffer).await.expect("reader")), [1, 2]);
        assert_eq!(store.stats().buffered_bytes, 0);
        let second = read_all(&buffer).await;
        assert!(
            second.is_err(),
            "a second reader must not see a silently empty partition"
        );
    }

    #[tokio::test]
    async fn a_reader_follows_the_writer_and_sees_its_failure() {
        let store = PartitionStore::default();
        let query = store.query("q").expect("query");
        let buffer = store.buffer(&query, OutputId::first(2, 1, 0), false);
        let mut stream = Box::pin(Arc::clone(&buffer).read());
        buffer.push(batch(&[7])).await.expect("room");
        let first = stream.next().await.expect("item").expect("batch");
        assert_eq!(values(&[first]), [7]);
        buffer.finish(Err(TaskFailure::new(
            FailureReason::TaskFailed,
            "boom",
            2,
            1,
            "e",
        )));
        let failure = stream.next().await.expect("item").expect_err("failure");
        assert_eq!(failure.message, "boom");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_served_result_is_done_when_its_reader_reaches_the_end() {
        let store = PartitionStore::default();
        let query = store.query("q").expect("query");
        let buffer = store.buffer(&query, OutputId::first(3, 0, 0), false);
        buffer.push(batch(&[1, 2])).await.expect("room");
        buffer.finish(Ok(()));
        let reader = SpawnedTask::spawn({
            let buffer = Arc::clone(&buffer);
            async move { read_all(&buffer).await }
        });
        buffer
            .served(Duration::from_secs(3600))
            .await
            .expect("served");
        let read = reader.join().await.expect("reader").expect("batches");
        assert_eq!(values(&read), [1, 2]);
    }

    #[tokio::test]
    async fn a_served_result_fails_when_its_reader_leaves_early_or_never_comes() {
        let store = PartitionStore::default();
        let query = store.query("q").expect("query");
        let left = store.buffer(&query, OutputId::first(3, 0, 0), false);
        left.push(batch(&[1])).await.expect("room");
        left.push(batch(&[2])).await.expect("room");
        left.finish(Ok(()));
        let mut stream = Box::pin(Arc::clone(&left).read());
        stream.next().await.expect("item").expect("first batch");
        drop(stream);
        let why = left
            .served(Duration::from_secs(3600))
            .await
            .expect_err("left");
        assert!(why.contains("stopped reading"), "{why}");

        let unread = store.buffer(&query, OutputId::first(3, 1, 0), false);
        unread.finish(Ok(()));
        let why = unread.served(Duration::ZERO).await.expect_err("unread");
        assert!(why.contains("no client fetched"), "{why}");
    }

    #[tokio::test]
    async fn a_released_query_cannot_be_revived_by_a_late_reader() {
        let store = PartitionStore::default();
        store.query("q").expect("query");
        store.release("q").await;
        let late = store.query("q");
        assert!(late.is_err_and(|f| f.reason == FailureReason::Cancelled));
        assert_eq!(store.stats(), StoreStats::default());
    }

    #[test]
    fn a_query_the_coordinator_stops_naming_expires_after_the_lease() {
        let store = PartitionStore::default();
        store.query("kept").expect("query");
        store.query("orphan").expect("query");
        let start = Instant::now();
        // Without leases (an embedded executor) nothing expires.
        assert!(store.expired(start + LEASE * 10).is_empty());
        let live = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect();
        store.renew(live(&["kept"]), start + LEASE / 2);
        assert!(store.expired(start + LEASE / 2).is_empty());
        assert_eq!(store.expired(start + LEASE), ["orphan"]);
        store.renew(live(&["kept"]), start + LEASE);
        let mut expired = store.expired(start + LEASE * 2);
        expired.sort();
        assert_eq!(expired, ["kept", "orphan"]);
    }

    #[tokio::test]
    async fn a_read_of_a_query_no_member_started_is_not_found() {
        let store = Arc::new(PartitionStore::default());
        // Without leases every read may create its query's state (embedded executors).
        store.set_unknown_query_wait(Duration::ZERO);
        store.await_known("anything").await.expect("no leases");
        store.renew(HashSet::new(), Instant::now());
        store.set_unknown_query_wait(Duration::from_millis(10));
        let err = store.await_known("made-up").await.expect_err("made up");
        assert_eq!(err.reason, FailureReason::NotFound);
        assert_eq!(store.stats().queries, 0, "nothing was created");
        // A query a task here started, or one a lease names while a reader waits.
        store.query("started").expect("query");
        store.await_known("started").await.expect("started here");
        store.set_unknown_query_wait(Duration::from_secs(3600));
        let waiting = {
            let store = Arc::clone(&store);
            SpawnedTask::spawn(async move { store.await_known("starting").await })
        };
        tokio::task::yield_now().await;
        store.renew(["starting".to_string()].into(), Instant::now());
        waiting
            .join()
            .await
            .expect("join")
            .expect("named by the lease");
    }
}
