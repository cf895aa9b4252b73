//! [`CoordinatorMetrics`]: what the coordinator exports to Prometheus: queries (running,
//! how they ended, how long they took), task attempts (how they ended, how long they
//! took, the bytes they read locally and over Flight), recoveries and the tasks they
//! ran again, and, read when scraped, the executors by state, their memory and the
//! bytes of the cluster's in-memory tables.

use std::time::Duration;

use fletch_executor::duration_buckets;
use fletch_transport::protocol::ExecutorStatus;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::query_log::QueryState;
use crate::query_record::{AttemptRecord, AttemptState};

pub struct CoordinatorMetrics {
    registry: Registry,
    queries_running: IntGauge,
    queries: IntCounterVec,
    query_seconds: Histogram,
    tasks: IntCounterVec,
    task_seconds: Histogram,
    exchange_bytes: IntCounterVec,
    recoveries: IntCounterVec,
    tasks_rerun: IntCounter,
    executors: IntGaugeVec,
    memory_used: IntGauge,
    memory_limit: IntGauge,
    fragment_bytes: IntGauge,
}

impl std::fmt::Debug for CoordinatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorMetrics").finish_non_exhaustive()
    }
}

/// What the scrape reads of the cluster as it is now.
pub(crate) struct ClusterNow {
    pub(crate) executors: Vec<ExecutorStatus>,
    pub(crate) fragment_bytes: u64,
}

impl CoordinatorMetrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("fletch".to_string()), None)?;
        let queries_running = IntGauge::new("queries_running", "Queries running now.")?;
        let queries = IntCounterVec::new(
            Opts::new(
                "queries_total",
                "Queries run on the executors, by how they ended (succeeded, failed, \
                 cancelled).",
            ),
            &["state"],
        )?;
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new("query_duration_seconds", "How long queries ran.")
                .buckets(duration_buckets()),
        )?;
        let tasks = IntCounterVec::new(
            Opts::new(
                "tasks_total",
                "Task attempts, by how they ended (finished, failed, cancelled).",
            ),
            &["state"],
        )?;
        let task_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "task_duration_seconds",
                "How long task attempts ran, as their executors measured.",
            )
            .buckets(duration_buckets()),
        )?;
        let exchange_bytes = IntCounterVec::new(
            Opts::new(
                "exchange_bytes_total",
                "Bytes finished tasks read from exchanges and table fragments: local (the \
                 executor's own memory) or remote (over Flight, as encoded).",
            ),
            &["origin"],
        )?;
        let recoveries = IntCounterVec::new(
            Opts::new(
                "recoveries_total",
                "Recoveries from a lost executor: lineage (a round of the lost tasks) or \
                 whole (the query ran again).",
            ),
            &["kind"],
        )?;
        let tasks_rerun = IntCounter::new(
            "tasks_rerun_total",
            "Tasks launched again by lineage recoveries.",
        )?;
        let executors = IntGaugeVec::new(
            Opts::new("executors", "Executors the coordinator knows, by state."),
            &["state"],
        )?;
        let memory_used = IntGauge::new(
            "memory_used_bytes",
            "Bytes in use in the live executors' memory pools, together.",
        )?;
        let memory_limit = IntGauge::new(
            "memory_limit_bytes",
            "The live executors' memory limits, together.",
        )?;
        let fragment_bytes = IntGauge::new(
            "fragment_bytes",
            "Bytes of the cluster's in-memory tables (one copy of each fragment).",
        )?;
        registry.register(Box::new(queries_running.clone()))?;
        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(query_seconds.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(task_seconds.clone()))?;
        registry.register(Box::new(exchange_bytes.clone()))?;
        registry.register(Box::new(recoveries.clone()))?;
        registry.register(Box::new(tasks_rerun.clone()))?;
        registry.register(Box::new(executors.clone()))?;
        registry.register(Box::new(memory_used.clone()))?;
        registry.register(Box::new(memory_limit.clone()))?;
        registry.register(Box::new(fragment_bytes.clone()))?;
        Ok(Self {
            registry,
            queries_running,
            queries,
            query_seconds,
            tasks,
            task_seconds,
            exchange_bytes,
            recoveries,
            tasks_rerun,
            executors,
            memory_used,
            memory_limit,
            fragment_bytes,
        })
    }

    pub(crate) fn query_started(&self) {
        self.queries_running.inc();
    }

    pub(crate) fn query_ended(&self, state: QueryState, duration: Duration) {
        self.queries_running.dec();
        self.queries.with_label_values(&[state.name()]).inc();
        self.query_seconds.observe(duration.as_secs_f64());
    }

    pub(crate) fn attempt_ended(&self, attempt: &AttemptRecord) {
        self.tasks.with_label_values(&[attempt.state.name()]).inc();
        self.task_seconds.observe(attempt.duration().as_secs_f64());
        if attempt.state == AttemptState::Finished
            && let Some(reads) = attempt.report.as_ref().and_then(|r| r.reads.as_ref())
        {
            self.exchange_bytes
                .with_label_values(&["local"])
                .inc_by(reads.local_bytes);
            self.exchange_bytes
                .with_label_values(&["remote"])
                .inc_by(reads.remote_bytes);
        }
    }

    pub(crate) fn lineage_recovery(&self, tasks: usize) {
        self.recoveries.with_label_values(&["lineage"]).inc();
        self.tasks_rerun.inc_by(tasks as u64);
    }

    pub(crate) fn whole_recovery(&self) {
        self.recoveries.with_label_values(&["whole"]).inc();
    }

    /// Every family, the gauges set from `now` first.
    pub(crate) fn gather(&self, now: ClusterNow) -> Vec<MetricFamily> {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for state in ["alive", "lost", "left"] {
            let count = now.executors.iter().filter(|e| e.state == state).count();
            self.executors
                .with_label_values(&[state])
                .set(gauge(count as u64));
        }
        let alive = || now.executors.iter().filter(|e| e.state == "alive");
        self.memory_used
            .set(gauge(alive().map(|e| e.memory_used).sum()));
        self.memory_limit
            .set(gauge(alive().map(|e| e.memory_limit).sum()));
        self.fragment_bytes.set(gauge(now.fragment_bytes));
        self.registry.gather()
    }
}
