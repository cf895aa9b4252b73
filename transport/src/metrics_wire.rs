//! DataFusion metrics across the wire: an executor sends each operator's
//! [`MetricsSet`] as [`MetricEntry`]s, the coordinator turns them back into metrics of
//! the same kinds, so DataFusion's own display (and its `analyze_level` and
//! `analyze_categories` filters) treats them as it treats a local plan's.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::format::{MetricCategory, MetricType};
use datafusion::physical_plan::metrics::{
    Count, Gauge, Metric, MetricValue, MetricsSet, PruningMetrics, RatioMetrics, Time,
};

use crate::protocol::MetricEntry;

/// The kind of a [`MetricEntry`]: one per [`MetricValue`] variant that travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Kind {
    OutputRows = 1,
    ElapsedCompute = 2,
    SpillCount = 3,
    SpilledBytes = 4,
    OutputBytes = 5,
    OutputBatches = 6,
    SpilledRows = 7,
    CurrentMemoryUsage = 8,
    Count = 9,
    Gauge = 10,
    PeakMemoryUsage = 11,
    Time = 12,
    Pruning = 13,
    Ratio = 14,
}

impl Kind {
    fn from_i32(kind: i32) -> Option<Self> {
        use Kind::*;
        [
            OutputRows,
            ElapsedCompute,
            SpillCount,
            SpilledBytes,
            OutputBytes,
            OutputBatches,
            SpilledRows,
            CurrentMemoryUsage,
            Count,
            Gauge,
            PeakMemoryUsage,
            Time,
            Pruning,
            Ratio,
        ]
        .into_iter()
        .find(|k| *k as i32 == kind)
    }
}

/// `metrics` summed per name (DataFusion's `aggregate_by_name`), as entries.
/// Timestamps stay behind: a start or end time means nothing summed over executors.
pub fn encode_metrics(metrics: &MetricsSet) -> Vec<MetricEntry> {
    metrics
        .aggregate_by_name()
        .iter()
        .filter_map(|metric| encode_metric(metric))
        .collect()
}

fn encode_metric(metric: &Metric) -> Option<MetricEntry> {
    let value = metric.value();
    let (kind, first, second, third) = match value {
        MetricValue::OutputRows(c) => (Kind::OutputRows, c.value(), 0, 0),
        MetricValue::ElapsedCompute(t) => (Kind::ElapsedCompute, t.value(), 0, 0),
        MetricValue::SpillCount(c) => (Kind::SpillCount, c.value(), 0, 0),
        MetricValue::SpilledBytes(c) => (Kind::SpilledBytes, c.value(), 0, 0),
        MetricValue::OutputBytes(c) => (Kind::OutputBytes, c.value(), 0, 0),
        MetricValue::OutputBatches(c) => (Kind::OutputBatches, c.value(), 0, 0),
        MetricValue::SpilledRows(c) => (Kind::SpilledRows, c.value(), 0, 0),
        MetricValue::CurrentMemoryUsage(g) => (Kind::CurrentMemoryUsage, g.value(), 0, 0),
        MetricValue::Count { count, .. } => (Kind::Count, count.value(), 0, 0),
        MetricValue::Gauge { gauge, .. } => (Kind::Gauge, gauge.value(), 0, 0),
        MetricValue::PeakMemoryUsage { gauge, .. } => (Kind::PeakMemoryUsage, gauge.value(), 0, 0),
        MetricValue::Time { time, .. } => (Kind::Time, time.value(), 0, 0),
        MetricValue::PruningMetrics {
            pruning_metrics, ..
        } => (
            Kind::Pruning,
            pruning_metrics.pruned(),
            pruning_metrics.matched(),
            pruning_metrics.fully_matched(),
        ),
        MetricValue::Ratio { ratio_metrics, .. } => {
            (Kind::Ratio, ratio_metrics.part(), ratio_metrics.total(), 0)
        }
        MetricValue::Custom { value, .. } => (Kind::Count, value.as_usize(), 0, 0),
        MetricValue::StartTimestamp(_) | MetricValue::EndTimestamp(_) => return None,
    };
    Some(MetricEntry {
        kind: kind as i32,
        name: value.name().to_string(),
        value: first as u64,
        second: second as u64,
        third: third as u64,
        dev: metric.metric_type() == MetricType::Dev,
        category: metric
            .metric_category()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    })
}

/// The metrics `entries` describe, each as a metric of all partitions. An entry of a
/// kind this build does not know is left out.
pub fn decode_metrics(entries: &[MetricEntry]) -> MetricsSet {
    let mut set = MetricsSet::new();
    for entry in entries {
        if let Some(metric) = decode_metric(entry) {
            set.push(Arc::new(metric));
        }
    }
    set
}

fn decode_metric(entry: &MetricEntry) -> Option<Metric> {
    let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let count = |n: u64| {
        let c = Count::new();
        c.add(as_usize(n));
        c
    };
    let gauge = |n: u64| {
        let g = Gauge::new();
        g.set(as_usize(n));
        g
    };
    let time = |n: u64| {
        let t = Time::new();
        t.add_duration(Duration::from_nanos(n));
        t
    };
    let name = Cow::Owned(entry.name.clone());
    let value = match Kind::from_i32(entry.kind)? {
        Kind::OutputRows => MetricValue::OutputRows(count(entry.value)),
        Kind::ElapsedCompute => MetricValue::ElapsedCompute(time(entry.value)),
        Kind::SpillCount => MetricValue::SpillCount(count(entry.value)),
        Kind::SpilledBytes => MetricValue::SpilledBytes(count(entry.value)),
        Kind::OutputBytes => MetricValue::OutputBytes(count(entry.value)),
        Kind::OutputBatches => MetricValue::OutputBatches(count(entry.value)),
        Kind::SpilledRows => MetricValue::SpilledRows(count(entry.value)),
        Kind::CurrentMemoryUsage => MetricValue::CurrentMemoryUsage(gauge(entry.value)),
        Kind::Count => MetricValue::Count {
            name,
            count: count(entry.value),
        },
        Kind::Gauge => MetricValue::Gauge {
            name,
            gauge: gauge(entry.value),
        },
        Kind::PeakMemoryUsage => MetricValue::PeakMemoryUsage {
            name,
            gauge: gauge(entry.value),
        },
        Kind::Time => MetricValue::Time {
            name,
            time: time(entry.value),
        },
        Kind::Pruning => {
            let pruning_metrics = PruningMetrics::new();
            pruning_metrics.add_pruned(as_usize(entry.value));
            pruning_metrics.add_matched(as_usize(entry.second));
            pruning_metrics.add_fully_matched(as_usize(entry.third));
            MetricValue::PruningMetrics {
                name,
                pruning_metrics,
            }
        }
        Kind::Ratio => {
            let ratio_metrics = RatioMetrics::new();
            ratio_metrics.add_part(as_usize(entry.value));
            ratio_metrics.add_total(as_usize(entry.second));
            MetricValue::Ratio {
                name,
                ratio_metrics,
            }
        }
    };
    let metric_type = if entry.dev {
        MetricType::Dev
    } else {
        MetricType::Summary
    };
    let mut metric = Metric::new(value, None).with_type(metric_type);
    if let Ok(category) = MetricCategory::from_str(&entry.category) {
        metric = metric.with_category(category);
    }
    Some(metric)
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};

    use super::*;

    #[test]
    fn metrics_come_back_as_the_kinds_they_left_as() {
        let set = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&set).output_rows(0).add(7);
        MetricBuilder::new(&set).output_rows(1).add(5);
        MetricBuilder::new(&set)
            .with_type(MetricType::Summary)
            .elapsed_compute(0)
            .add_duration(Duration::from_millis(3));
        MetricBuilder::new(&set)
            .counter("bytes_remote", 0)
            .add(4096);
        MetricBuilder::new(&set)
            .subset_time("input_wait", 0)
            .add_duration(Duration::from_micros(250));
        MetricBuilder::new(&set).spill_count(1).add(2);
        let sent = encode_metrics(&set.clone_inner());
        // Summed per name: two partitions of output rows travel as one entry.
        assert_eq!(sent.iter().filter(|e| e.name == "output_rows").count(), 1);
        let back = decode_metrics(&sent);
        assert_eq!(back.output_rows(), Some(12));
        assert_eq!(back.spill_count(), Some(2));
        assert_eq!(back.elapsed_compute(), Some(3_000_000));
        let named = |name: &str| back.sum_by_name(name).map(|v| v.as_usize());
        assert_eq!(named("bytes_remote"), Some(4096));
        assert_eq!(named("input_wait"), Some(250_000));
        let elapsed = back
            .iter()
            .find(|m| m.value().name() == "elapsed_compute")
            .expect("elapsed_compute came back");
        assert_eq!(elapsed.metric_type(), MetricType::Summary);
        assert!(matches!(elapsed.value(), MetricValue::ElapsedCompute(_)));
    }

    #[test]
    fn an_entry_of_an_unknown_kind_is_left_out() {
        let unknown = MetricEntry {
            kind: 999,
            name: "from_the_future".to_string(),
            value: 1,
            ..Default::default()
        };
        assert_eq!(decode_metrics(&[unknown]).iter().count(), 0);
    }
}
