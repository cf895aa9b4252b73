//! Per stage figures of a finished query for `EXPLAIN ANALYZE`: tasks, executors, wall
//! time, skew (min / median / max task time and rows), reads by origin and what each of
//! the stage's inputs produced; with `VERBOSE`, every attempt of every task. Counts are
//! printed exactly (the plan's metrics are rounded for reading).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use fletch_planner::{ExchangeReaderExec, FragmentScanExec, ShuffleWriterExec, StageId};

use super::measured::original;
use crate::query_record::{AttemptRecord, AttemptState, QueryRecord};

/// The stages of `measured` (a plan from [`super::measured::measured_plan`]) from the
/// final one down, each with the leaves it reads from.
pub(crate) fn stages_of(
    measured: &Arc<dyn ExecutionPlan>,
) -> Vec<(StageId, Vec<Arc<dyn ExecutionPlan>>)> {
    let mut stages = Vec::new();
    collect_stages(measured, &mut stages);
    stages
}

fn collect_stages(
    node: &Arc<dyn ExecutionPlan>,
    stages: &mut Vec<(StageId, Vec<Arc<dyn ExecutionPlan>>)>,
) {
    if let Some(writer) = original(node).downcast_ref::<ShuffleWriterExec>() {
        let mut leaves = Vec::new();
        stage_leaves(node, &mut leaves);
        stages.push((writer.stage_id(), leaves));
    }
    for child in node.children() {
        collect_stages(child, stages);
    }
}

/// The leaves of the stage `node` is in: its scans and its exchange readers (whose
/// children, in a measured plan, are the stages they read).
fn stage_leaves(node: &Arc<dyn ExecutionPlan>, leaves: &mut Vec<Arc<dyn ExecutionPlan>>) {
    let children = node.children();
    if children.is_empty() || original(node).is::<ExchangeReaderExec>() {
        leaves.push(Arc::clone(node));
        return;
    }
    for child in children {
        stage_leaves(child, leaves);
    }
}

/// Smallest, median (the lower of two middles) and largest of `values`.
fn spread<T: Copy + Ord>(values: &mut [T]) -> Option<(T, T, T)> {
    values.sort_unstable();
    Some((
        *values.first()?,
        values[(values.len() - 1) / 2],
        *values.last()?,
    ))
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

/// The last finished attempt of each task of `stage` in the record's last run.
fn finished_tasks(attempts: &[AttemptRecord], stage: StageId) -> Vec<&AttemptRecord> {
    let last = attempts.iter().map(|a| a.run).max().unwrap_or(0);
    let mut by_task: BTreeMap<usize, &AttemptRecord> = BTreeMap::new();
    for attempt in attempts {
        if attempt.run == last && attempt.stage == stage && attempt.state == AttemptState::Finished
        {
            by_task.insert(attempt.task, attempt);
        }
    }
    by_task.into_values().collect()
}

/// One stage's figures, as lines of `key=value`.
pub(crate) fn stage_summary(
    stage: StageId,
    planned_tasks: usize,
    leaves: &[Arc<dyn ExecutionPlan>],
    record: &QueryRecord,
) -> String {
    let attempts = record.attempts();
    let last = attempts.iter().map(|a| a.run).max().unwrap_or(0);
    let of_stage: Vec<&AttemptRecord> = attempts
        .iter()
        .filter(|a| a.run == last && a.stage == stage)
        .collect();
    let finished = finished_tasks(&attempts, stage);
    let executors: BTreeSet<&str> = finished.iter().map(|a| a.executor.as_str()).collect();
    let first_launch = of_stage.iter().map(|a| a.launched).min();
    let last_end = of_stage.iter().filter_map(|a| a.ended).max();
    let wall = match (first_launch, last_end) {
        (Some(start), Some(end)) => end.saturating_duration_since(start),
        (Some(start), None) => Instant::now().saturating_duration_since(start),
        _ => Duration::ZERO,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tasks={planned_tasks} finished={} attempts={} executors={} wall={}",
        finished.len(),
        of_stage.len(),
        executors.len(),
        ms(wall)
    );
    let mut times: Vec<Duration> = finished.iter().map(|a| a.duration()).collect();
    if let Some((min, median, max)) = spread(&mut times) {
        let _ = writeln!(
            out,
            "task_time min={} median={} max={}",
            ms(min),
            ms(median),
            ms(max)
        );
    }
    let mut rows: Vec<u64> = finished.iter().map(|a| a.rows_out()).collect();
    let rows_total: u64 = rows.iter().sum();
    if let Some((min, median, max)) = spread(&mut rows) {
        let _ = writeln!(
            out,
            "rows_out total={rows_total} min={min} median={median} max={max}"
        );
    }
    let bytes_out: u64 = finished.iter().map(|a| a.bytes_out()).sum();
    let reads = finished
        .iter()
        .filter_map(|a| a.report.as_ref()?.reads.as_ref())
        .fold([0u64; 5], |mut sum, r| {
            sum[0] += r.local_rows;
            sum[1] += r.local_bytes;
            sum[2] += r.remote_rows;
            sum[3] += r.remote_bytes;
            sum[4] += r.input_wait_us;
            sum
        });
    let peak = finished
        .iter()
        .filter_map(|a| a.report.as_ref().map(|r| r.peak_memory))
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "bytes_out={bytes_out} task_peak_memory_max={peak}\n\
         reads local_rows={} local_bytes={} remote_rows={} remote_bytes={} input_wait={}",
        reads[0],
        reads[1],
        reads[2],
        reads[3],
        ms(Duration::from_micros(reads[4]))
    );
    for leaf in leaves {
        let rows = leaf
            .metrics()
            .and_then(|m| m.output_rows())
            .map_or("unknown".to_string(), |r| r.to_string());
        let _ = writeln!(out, "input {} rows={rows}", leaf_label(leaf));
    }
    out.trim_end().to_string()
}

fn leaf_label(leaf: &Arc<dyn ExecutionPlan>) -> String {
    let leaf = original(leaf);
    if let Some(scan) = leaf.downcast_ref::<FragmentScanExec>() {
        return format!("FragmentScanExec[table={}]", scan.snapshot().table);
    }
    if let Some(reader) = leaf.downcast_ref::<ExchangeReaderExec>() {
        return format!("ExchangeReaderExec[stage={}]", reader.stage_id());
    }
    leaf.name().to_string()
}

/// Every attempt of `stage`'s tasks, one line each (`VERBOSE`).
pub(crate) fn stage_tasks(stage: StageId, record: &QueryRecord) -> String {
    let mut out = String::new();
    for attempt in record.attempts().iter().filter(|a| a.stage == stage) {
        let reads = attempt.report.as_ref().and_then(|r| r.reads.clone());
        let reads = reads.unwrap_or_default();
        let _ = write!(
            out,
            "task={} attempt={} run={} executor={} state={} time={} rows_in={} rows_out={} \
             bytes_out={} read_local_bytes={} read_remote_bytes={} peak_memory={}",
            attempt.task,
            attempt.attempt,
            attempt.run,
            attempt.executor,
            attempt.state.name(),
            ms(attempt.duration()),
            attempt.report.as_ref().map_or(0, |r| r.rows_in),
            attempt.rows_out(),
            attempt.bytes_out(),
            reads.local_bytes,
            reads.remote_bytes,
            attempt.report.as_ref().map_or(0, |r| r.peak_memory),
        );
        if let AttemptState::Failed(why) = &attempt.state {
            let _ = write!(out, " error={why}");
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn the_median_of_an_even_count_is_the_lower_middle() {
        assert_eq!(spread(&mut [4, 1, 3, 2]), Some((1, 2, 4)));
        assert_eq!(spread(&mut [5]), Some((5, 5, 5)));
        assert_eq!(spread::<u32>(&mut []), None);
    }
}
