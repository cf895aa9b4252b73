//! `EXPLAIN ANALYZE` of a distributed plan reports what the executors measured: every
//! stage of TPC-H q3 (SF 0.1, tables cached in the cluster) appears with its figures,
//! and the figures agree with each other and with the data: the final stage wrote the
//! answer's rows, each cached table's scan read the table's rows, every row a stage
//! wrote through a shuffle or a forward exchange was read once downstream, and bytes
//! crossed Flight between two executors but not within one.

mod common;

use std::collections::BTreeMap;

use common::{oracle, rows, tpch_sf01};
use datafusion::arrow::array::{Array, StringArray};
use datafusion::prelude::SessionContext;
use fletch::{DistributedExec, LocalCluster, default_session_config};
use fletch_tpch as tpch;

/// One `Stage N` row of the report, its `key=value` figures read back.
#[derive(Debug)]
struct StageFigures {
    rows_out: u64,
    tasks: u64,
    finished: u64,
    executors: u64,
    remote_bytes: u64,
    remote_rows: u64,
    /// `input <label> rows=<n>` lines: label to rows.
    inputs: Vec<(String, u64)>,
}

fn number_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    text[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {text}: {e}"))
}

fn stage_figures(text: &str) -> StageFigures {
    let inputs = text
        .lines()
        .filter_map(|line| line.strip_prefix("input "))
        .map(|line| {
            let (label, rows) = line.rsplit_once(" rows=").expect("input rows");
            (label.to_string(), rows.parse().expect("exact input rows"))
        })
        .collect();
    StageFigures {
        rows_out: number_after(text, "rows_out total="),
        tasks: number_after(text, "tasks="),
        finished: number_after(text, " finished="),
        executors: number_after(text, " executors="),
        remote_bytes: number_after(text, " remote_bytes="),
        remote_rows: number_after(text, " remote_rows="),
        inputs,
    }
}

/// Whether stage `upstream` is read as a broadcast build side in `plan`: its reader sits
/// right under the `CoalescePartitionsExec` that gathers a `CollectLeft` join's build.
fn broadcasts(plan: &str, upstream: usize) -> bool {
    let lines: Vec<&str> = plan.lines().collect();
    let reader = format!("ExchangeReaderExec: forward from stage {upstream},");
    lines.windows(2).any(|pair| {
        pair[0].trim_start().starts_with("CoalescePartitionsExec")
            && pair[1].trim_start().starts_with(&reader)
    })
}

/// The report's rows: plan type to text.
async fn report(ctx: &SessionContext, sql: &str) -> BTreeMap<String, String> {
    let batches = common::query(ctx, sql).await;
    let mut rows = BTreeMap::new();
    for batch in &batches {
        let column = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text column")
                .clone()
        };
        let (kinds, texts) = (column(0), column(1));
        for i in 0..kinds.len() {
            rows.insert(kinds.value(i).to_string(), texts.value(i).to_string());
        }
    }
    rows
}

async fn count(ctx: &SessionContext, table: &str) -> u64 {
    let counted = rows(&common::query(ctx, &format!("SELECT count(*) FROM {table}")).await);
    counted[0].parse().expect("a count")
}

/// Runs q3 on `executors` executors over cached tables; checks the report's figures
/// and returns the bytes its stages read over Flight.
async fn q3_report(executors: usize, verbose: bool) -> u64 {
    let dir = tpch_sf01().await;
    let cluster = LocalCluster::start(executors).await.expect("cluster");
    let ctx = cluster.session_with_config(default_session_config().with_target_partitions(2));
    tpch::register(&ctx, dir).await.expect("register");
    for statement in tpch::cache_statements() {
        common::fletch_statements(&ctx, &[&statement]).await;
    }
    let single = oracle();
    tpch::register(&single, dir).await.expect("register oracle");
    let q3 = tpch::query_statements(3).expect("q3")[0].to_string();
    let answer = common::query(&single, &q3).await;
    let answer_rows: usize = answer.iter().map(|b| b.num_rows()).sum();

    let plan = ctx.sql(&q3).await.expect("plan");
    let plan = plan.create_physical_plan().await.expect("physical plan");
    let distributed = plan
        .downcast_ref::<DistributedExec>()
        .expect("q3 runs distributed")
        .distributed_plan();
    let final_stage = distributed.stages.last().expect("a final stage").id;

    let explain = if verbose {
        format!("EXPLAIN ANALYZE VERBOSE {q3}")
    } else {
        format!("EXPLAIN ANALYZE {q3}")
    };
    let report = report(&ctx, &explain).await;
    let plan_text = &report["Plan with Metrics"];
    assert!(plan_text.contains("DistributedExec"), "{plan_text}");
    assert!(plan_text.contains("metrics=[output_rows="), "{plan_text}");
    assert!(
        report["Query"].starts_with(&format!("rows={answer_rows} ")),
        "{}",
        report["Query"]
    );

    let mut stages = BTreeMap::new();
    for stage in &distributed.stages {
        let text = report
            .get(&format!("Stage {}", stage.id))
            .unwrap_or_else(|| panic!("no row for stage {}: {report:?}", stage.id));
        assert!(
            plan_text.contains(&format!("[Stage {}] ShuffleWriterExec", stage.id)),
            "{plan_text}"
        );
        let figures = stage_figures(text);
        assert_eq!(figures.tasks, stage.task_count as u64, "{text}");
        assert_eq!(
            figures.finished, figures.tasks,
            "every task finished: {text}"
        );
        if verbose {
            let tasks = &report[&format!("Stage {} tasks", stage.id)];
            assert_eq!(
                tasks
                    .lines()
                    .filter(|l| l.contains("state=finished"))
                    .count(),
                stage.task_count,
                "{tasks}"
            );
        }
        stages.insert(stage.id, figures);
    }
    assert_eq!(
        stages[&final_stage].rows_out, answer_rows as u64,
        "the final stage wrote the answer"
    );
    let mut scanned = 0;
    for (id, figures) in &stages {
        for (label, rows) in &figures.inputs {
            if let Some(table) = label
                .strip_prefix("FragmentScanExec[table=")
                .and_then(|t| t.strip_suffix(']'))
            {
                assert_eq!(
                    *rows,
                    count(&single, table).await,
                    "stage {id} scans {table}"
                );
                scanned += 1;
            }
            if let Some(upstream) = label
                .strip_prefix("ExchangeReaderExec[stage=")
                .and_then(|s| s.strip_suffix(']'))
            {
                let upstream: usize = upstream.parse().expect("a stage id");
                // A broadcast build side is read whole once per executor of the stage
                // that builds on it (its tasks there share one hash table).
                let readers = if broadcasts(plan_text, upstream) {
                    figures.executors
                } else {
                    1
                };
                assert_eq!(
                    *rows,
                    stages[&upstream].rows_out * readers,
                    "stage {id} read every row stage {upstream} wrote, {readers} times"
                );
            }
        }
    }
    assert_eq!(scanned, 3, "q3 scans customer, orders and lineitem");
    let remote_rows: u64 = stages.values().map(|s| s.remote_rows).sum();
    let remote_bytes: u64 = stages.values().map(|s| s.remote_bytes).sum();
    assert_eq!(
        remote_rows > 0,
        remote_bytes > 0,
        "rows over Flight come with bytes"
    );
    remote_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_executors_report_every_stage_and_bytes_over_flight() {
    let remote = q3_report(2, false).await;
    assert!(remote > 0, "two executors exchange over Flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_executor_reads_every_exchange_from_its_own_memory() {
    assert_eq!(q3_report(1, true).await, 0, "nothing crosses Flight");
}
