//! `fletch.queries` (each query the coordinator runs or recently finished: who, what,
//! how it ended, rows and bytes returned, stages, tasks, recoveries) and `fletch.tasks`
//! (each attempt of each of their tasks: where, how it ended, time, rows, bytes, peak
//! memory), from the [`QueryLog`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::Result;

use super::bytes_field;
use crate::query_log::QueryLog;
use crate::query_record::{AttemptRecord, AttemptState};

pub(super) const QUERIES: &str = "queries";
pub(super) const TASKS: &str = "tasks";

fn started_field() -> Field {
    Field::new(
        "started",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

fn millis_since_epoch(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

pub(super) fn queries(log: &QueryLog) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        started_field(),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("rows", DataType::UInt64, false),
        bytes_field("bytes", false),
        Field::new("stages", DataType::UInt64, false),
        Field::new("tasks", DataType::UInt64, false),
        Field::new("tasks_finished", DataType::UInt64, false),
        Field::new("attempts", DataType::UInt64, false),
        Field::new("recoveries", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, true),
    ]));
    let queries = log.queries();
    let snapshots: Vec<_> = queries.iter().map(|q| q.snapshot()).collect();
    let attempts: Vec<Vec<AttemptRecord>> = queries.iter().map(|q| q.record.attempts()).collect();
    let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values((0..queries.len()).map(f)))
    };
    let number = |f: &dyn Fn(usize) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values((0..queries.len()).map(f)))
    };
    let columns = vec![
        text(&|i| queries[i].id.clone()),
        text(&|i| queries[i].label.user.clone()),
        text(&|i| queries[i].label.sql.clone()),
        text(&|i| snapshots[i].state.name().to_string()),
        timestamps(
            queries
                .iter()
                .map(|q| millis_since_epoch(q.started_at))
                .collect(),
        ),
        Arc::new(Float64Array::from_iter_values(
            snapshots.iter().map(|s| s.duration.as_secs_f64() * 1e3),
        )),
        number(&|i| snapshots[i].rows),
        number(&|i| snapshots[i].bytes),
        number(&|i| queries[i].stages as u64),
        number(&|i| queries[i].tasks as u64),
        number(&|i| queries[i].record.finished_tasks() as u64),
        number(&|i| attempts[i].len() as u64),
        number(&|i| snapshots[i].recoveries as u64),
        Arc::new(StringArray::from(
            snapshots
                .iter()
                .map(|s| s.error.clone())
                .collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

pub(super) fn tasks(log: &QueryLog) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("stage", DataType::UInt64, false),
        Field::new("task", DataType::UInt64, false),
        Field::new("attempt", DataType::UInt64, false),
        Field::new("run", DataType::UInt64, false),
        Field::new("executor", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        started_field(),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("rows_in", DataType::UInt64, false),
        Field::new("rows_out", DataType::UInt64, false),
        bytes_field("bytes_out", false),
        bytes_field("bytes_read_local", false),
        bytes_field("bytes_read_remote", false),
        bytes_field("peak_memory", false),
        Field::new("error", DataType::Utf8, true),
    ]));
    let rows: Vec<(String, AttemptRecord)> = log
        .queries()
        .iter()
        .flat_map(|q| {
            let id = q.id.clone();
            q.record
                .attempts()
                .into_iter()
                .map(move |a| (id.clone(), a))
        })
        .collect();
    let text = |f: &dyn Fn(&AttemptRecord) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, a)| f(a)),
        ))
    };
    let number = |f: &dyn Fn(&AttemptRecord) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, a)| f(a)),
        ))
    };
    let reads = |a: &AttemptRecord| {
        a.report
            .as_ref()
            .and_then(|r| r.reads.clone())
            .unwrap_or_default()
    };
    let columns = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(id, _)| id.clone()),
        )) as ArrayRef,
        number(&|a| a.stage as u64),
        number(&|a| a.task as u64),
        number(&|a| a.attempt),
        number(&|a| a.run as u64),
        text(&|a| a.executor.clone()),
        text(&|a| a.state.name().to_string()),
        timestamps(
            rows.iter()
                .map(|(_, a)| millis_since_epoch(a.started_at()))
                .collect(),
        ),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|(_, a)| a.duration().as_secs_f64() * 1e3),
        )),
        number(&|a| a.report.as_ref().map_or(0, |r| r.rows_in)),
        number(&|a| a.rows_out()),
        number(&|a| a.bytes_out()),
        number(&|a| reads(a).local_bytes),
        number(&|a| reads(a).remote_bytes),
        number(&|a| a.report.as_ref().map_or(0, |r| r.peak_memory)),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|(_, a)| match &a.state {
                    AttemptState::Failed(why) => Some(why.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
