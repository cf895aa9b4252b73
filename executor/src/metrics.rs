//! [`ExecutorMetrics`]: what one executor exports to Prometheus: its tasks (how they
//! ended, how long they took), the bytes they read from its own memory and over Flight,
//! and, read when scraped, its memory, running tasks, exchange buffers and fragments.
//! Every series carries an `executor` label with the executor's URL.

use std::collections::HashMap;
use std::time::Duration;

use fletch_transport::protocol::TaskReport;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    exponential_buckets,
};

/// Bucket bounds of task and query durations, in seconds: 1 ms to about 150 s.
pub fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.5, 14).unwrap_or_default()
}

pub(crate) struct ExecutorMetrics {
    registry: Registry,
    tasks: IntCounterVec,
    task_seconds: Histogram,
    read_bytes: IntCounterVec,
    written_bytes: IntCounter,
    pub(crate) memory_used: IntGauge,
    pub(crate) memory_limit: IntGauge,
    pub(crate) running_tasks: IntGauge,
    pub(crate) buffered_bytes: IntGauge,
    pub(crate) fragment_bytes: IntGauge,
}

impl std::fmt::Debug for ExecutorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorMetrics").finish_non_exhaustive()
    }
}

impl ExecutorMetrics {
    pub(crate) fn new(url: &str) -> prometheus::Result<Self> {
        let labels = HashMap::from([("executor".to_string(), url.to_string())]);
        let registry = Registry::new_custom(Some("fletch_executor".to_string()), Some(labels))?;
        let tasks = IntCounterVec::new(
            Opts::new("tasks_total", "Tasks this executor ran, by how they ended."),
            &["state"],
        )?;
        let task_seconds = Histogram::with_opts(
            HistogramOpts::new("task_duration_seconds", "How long tasks ran here.")
                .buckets(duration_buckets()),
        )?;
        let read_bytes = IntCounterVec::new(
            Opts::new(
                "read_bytes_total",
                "Bytes tasks here read from exchanges and table fragments: local (this \
                 executor's memory) or remote (over Flight, as encoded).",
            ),
            &["origin"],
        )?;
        let written_bytes = IntCounter::new(
            "written_bytes_total",
            "Bytes tasks here wrote to their output partitions.",
        )?;
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let memory_used = gauge("memory_used_bytes", "Bytes in use in the memory pool.")?;
        let memory_limit = gauge("memory_limit_bytes", "The memory pool's limit.")?;
        let running_tasks = gauge("running_tasks", "Tasks running now.")?;
        let buffered_bytes = gauge(
            "exchange_buffer_bytes",
            "Bytes held in exchange output buffers.",
        )?;
        let fragment_bytes = gauge("fragment_bytes", "Bytes of table fragments held here.")?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(task_seconds.clone()))?;
        registry.register(Box::new(read_bytes.clone()))?;
        registry.register(Box::new(written_bytes.clone()))?;
        for g in [
            &memory_used,
            &memory_limit,
            &running_tasks,
            &buffered_bytes,
            &fragment_bytes,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(Self {
            registry,
            tasks,
            task_seconds,
            read_bytes,
            written_bytes,
            memory_used,
            memory_limit,
            running_tasks,
            buffered_bytes,
            fragment_bytes,
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A task ended as `state` after `duration`; `report` when it finished.
    pub(crate) fn task_ended(&self, state: &str, duration: Duration, report: Option<&TaskReport>) {
        self.tasks.with_label_values(&[state]).inc();
        self.task_seconds.observe(duration.as_secs_f64());
        if let Some(report) = report {
            if let Some(reads) = &report.reads {
                self.read_bytes
                    .with_label_values(&["local"])
                    .inc_by(reads.local_bytes);
                self.read_bytes
                    .with_label_values(&["remote"])
                    .inc_by(reads.remote_bytes);
            }
            self.written_bytes
                .inc_by(report.bytes_out.iter().sum::<u64>());
        }
    }
}
