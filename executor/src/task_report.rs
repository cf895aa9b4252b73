//! What a task tells the coordinator when it ends well: a [`TaskReport`] built from what
//! the task counted itself (its writes, its reads by origin, its operators' peak memory)
//! and a snapshot of its stage plan instance's DataFusion metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::common::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use fletch_planner::{ExchangeReaderExec, FragmentScanExec, ReadCounters};
use fletch_transport::metrics_wire::encode_metrics;
use fletch_transport::protocol::{OperatorMetrics, ReadFigures, TaskReport};
use parking_lot::Mutex;

/// The counters of every read one task made (exchanges and fragment scans): each is
/// also registered in its operator's metrics, and is summed here for the task alone.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskReads(Arc<Mutex<Vec<ReadCounters>>>);

impl TaskReads {
    pub(crate) fn record(&self, counters: &ReadCounters) {
        self.0.lock().push(counters.clone());
    }

    fn figures(&self) -> ReadFigures {
        let total = ReadCounters::default();
        for counters in self.0.lock().iter() {
            total.add(counters);
        }
        ReadFigures {
            local_rows: total.local_rows.value() as u64,
            local_bytes: total.local_bytes.value() as u64,
            remote_rows: total.remote_rows.value() as u64,
            remote_bytes: total.remote_bytes.value() as u64,
            input_wait_us: micros(Duration::from_nanos(total.input_wait.value() as u64)),
        }
    }
}

/// Rows and bytes one task wrote per output partition, and its wait for room.
#[derive(Debug)]
pub(crate) struct TaskWrites {
    rows: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
    wait_us: AtomicU64,
}

impl TaskWrites {
    pub(crate) fn new(outputs: usize) -> Self {
        Self {
            rows: (0..outputs).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..outputs).map(|_| AtomicU64::new(0)).collect(),
            wait_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn wrote(&self, output: usize, rows: usize, bytes: usize, waited: Duration) {
        if let (Some(r), Some(b)) = (self.rows.get(output), self.bytes.get(output)) {
            r.fetch_add(rows as u64, Ordering::Relaxed);
            b.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        self.wait_us.fetch_add(micros(waited), Ordering::Relaxed);
    }

    fn load(counters: &[AtomicU64]) -> Vec<u64> {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// The executor's memory pool as one task's operators see it: every reservation goes
/// to the executor's pool, and the task's own share and its peak are tracked.
#[derive(Debug)]
pub(crate) struct TaskMemory {
    executor: Arc<dyn MemoryPool>,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl TaskMemory {
    pub(crate) fn new(executor: Arc<dyn MemoryPool>) -> Self {
        Self {
            executor,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn grew(&self, additional: usize) {
        let now = self.used.fetch_add(additional, Ordering::AcqRel) + additional;
        self.peak.fetch_max(now, Ordering::AcqRel);
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
}

impl std::fmt::Display for TaskMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (this task's peak {})", self.executor, self.peak())
    }
}

impl MemoryPool for TaskMemory {
    fn name(&self) -> &str {
        self.executor.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.executor.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.executor.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.executor.grow(reservation, additional);
        self.grew(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.executor.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::AcqRel);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.executor.try_grow(reservation, additional)?;
        self.grew(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.executor.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.executor.memory_limit()
    }
}

/// Numbers the snapshots an executor takes, so the coordinator keeps the latest one of
/// each plan instance.
pub(crate) static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);

/// One task's own figures, gathered while it runs.
pub(crate) struct TaskFigures {
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    pub(crate) reads: TaskReads,
    pub(crate) writes: Arc<TaskWrites>,
    pub(crate) memory: Arc<TaskMemory>,
}

impl TaskFigures {
    /// The report of the task that ran `partition` of `plan` (the stage instance its
    /// executor shares between the stage's tasks), of a stage of `tasks` tasks.
    pub(crate) fn report(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        partition: usize,
        tasks: usize,
    ) -> TaskReport {
        let duration = self.started.elapsed();
        let reads = self.reads.figures();
        let scanned = scanned_rows(plan, (tasks > 1).then_some(partition));
        // Numbered before it is taken: a higher number never holds older values.
        let snapshot = SNAPSHOTS.fetch_add(1, Ordering::AcqRel) + 1;
        let mut operators = Vec::new();
        operator_metrics(plan, &mut operators);
        TaskReport {
            started_at_ms: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            duration_us: micros(duration),
            rows_out: TaskWrites::load(&self.writes.rows),
            bytes_out: TaskWrites::load(&self.writes.bytes),
            rows_in: scanned as u64 + reads.local_rows + reads.remote_rows,
            reads: Some(reads),
            output_wait_us: self.writes.wait_us.load(Ordering::Relaxed),
            peak_memory: self.memory.peak() as u64,
            operators,
            snapshot,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Whether `node` is a wrapper the executor added over a join (see the task runner's
/// `yielding_joins`): not part of the plan the coordinator knows.
pub(crate) fn is_added_wrapper(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.is::<CooperativeExec>()
        && node
            .children()
            .first()
            .is_some_and(|child| child.name().ends_with("JoinExec"))
}

/// Every operator of `plan` in pre-order, wrappers the executor added left out, with
/// its metrics summed over partitions.
fn operator_metrics(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<OperatorMetrics>) {
    if !is_added_wrapper(plan) {
        out.push(OperatorMetrics {
            name: plan.name().to_string(),
            metrics: plan
                .metrics()
                .map(|m| encode_metrics(&m))
                .unwrap_or_default(),
        });
    }
    for child in plan.children() {
        operator_metrics(child, out);
    }
}

/// Rows the leaf scans of `plan` produced for `partition` (all partitions: `None`),
/// exchange readers and fragment scans excepted: the task counted those itself.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>, partition: Option<usize>) -> usize {
    let children = plan.children();
    if children.is_empty() {
        if plan.is::<ExchangeReaderExec>() || plan.is::<FragmentScanExec>() {
            return 0;
        }
        return plan.metrics().map_or(0, |metrics| {
            metrics
                .iter()
                .filter(|m| partition.is_none() || m.partition() == partition)
                .filter(|m| m.value().name() == "output_rows")
                .map(|m| m.value().as_usize())
                .sum()
        });
    }
    children
        .into_iter()
        .map(|child| scanned_rows(child, partition))
        .sum()
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    #[test]
    fn a_task_tracks_its_own_peak_inside_the_executor_pool() {
        let executor: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let task = Arc::new(TaskMemory::new(Arc::clone(&executor)));
        let pool: Arc<dyn MemoryPool> = Arc::clone(&task) as _;
        let a = MemoryConsumer::new("a").register(&pool);
        let b = MemoryConsumer::new("b").register(&pool);
        a.try_grow(300).expect("room");
        b.try_grow(400).expect("room");
        a.shrink(300);
        b.try_grow(100).expect("room");
        assert_eq!(executor.reserved(), 500);
        assert_eq!(task.peak(), 700);
        let refused = b.try_grow(600).expect_err("over the executor's limit");
        assert!(
            refused.to_string().contains("Resources exhausted"),
            "{refused}"
        );
        assert_eq!(task.peak(), 700, "a refused reservation is not counted");
        drop((a, b));
        assert_eq!(executor.reserved(), 0);
    }
}
