//! TPC-DS differential test: the 99 queries (103 statements) on a 2-executor
//! LocalCluster must answer what single-node DataFusion answers on the same files, read
//! from parquet and again from the tables cached in the cluster's memory. See
//! `common::answers` for how answers are compared.
//!
//! `FLETCH_TPCDS_QUERIES=47,57` runs only those queries (while debugging).

mod common;

use common::answers::compare;
use common::{oracle, run_statements, tpcds};
use fletch::{DistributedExec, LocalCluster, default_session_config};

fn selected_queries() -> Vec<usize> {
    match std::env::var("FLETCH_TPCDS_QUERIES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|n| n.trim().parse().expect("FLETCH_TPCDS_QUERIES: numbers"))
            .collect(),
        _ => (1..=99).collect(),
    }
}

async fn check(cached: bool) {
    let dir = tpcds::data().await;
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session_with_config(default_session_config().with_target_partitions(3));
    tpcds::register(&ctx, dir).await.expect("register");
    if cached {
        for table in tpcds::TABLES {
            common::fletch_statements(&ctx, &[&format!("CACHE TABLE {table}")]).await;
        }
    }
    let single = oracle();
    tpcds::register(&single, dir)
        .await
        .expect("register oracle");

    let mut failures = Vec::new();
    let mut statements_run = 0;
    let mut errors = 0;
    let mut ordered = 0;
    for n in selected_queries() {
        for (i, sql) in tpcds::query_statements(n).iter().enumerate() {
            statements_run += 1;
            let name = format!("q{n}.{}", i + 1);
            // A query the cutter cannot distribute would run whole on the coordinator
            // and still answer correctly: that is a failure here too.
            if let Ok(df) = ctx.sql(sql).await
                && let Ok(plan) = df.create_physical_plan().await
                && !plan.is::<DistributedExec>()
            {
                failures.push(format!("{name}: not distributed"));
            }
            let expected = run_statements(&single, &[sql]).await;
            let actual = run_statements(&ctx, &[sql]).await;
            match (expected, actual) {
                (Ok(expected), Ok(actual)) => match compare(sql, &expected, &actual) {
                    Ok(order_checked) => ordered += usize::from(order_checked),
                    Err(difference) => failures.push(format!("{name}: {difference}")),
                },
                // The parameters do not suit every scale factor (q90 divides by zero
                // at 0.01): the same error is the right answer.
                (Err(want), Err(got)) => {
                    let want = want.strip_backtrace();
                    let got = got.strip_backtrace();
                    let cause = want.rsplit(": ").next().unwrap_or(&want);
                    if !got.contains(cause) {
                        failures.push(format!("{name}: expected error {want:?}, got {got:?}"));
                    }
                    errors += 1;
                }
                (Err(want), Ok(_)) => failures.push(format!(
                    "{name}: answered where single-node DataFusion fails with {want}"
                )),
                (Ok(_), Err(got)) => failures.push(format!("{name}: {got}")),
            }
        }
    }
    for stats in cluster.executor_stats() {
        assert_eq!(stats.buffered_bytes, 0, "exchange memory left: {stats:?}");
        assert_eq!(stats.queries, 0, "query state left behind: {stats:?}");
    }
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {statements_run} statements differ (cached: {cached}; {errors} fail on both):\n{}",
        failures.len(),
        failures.join("\n")
    );
    if statements_run == 103 {
        // Those whose ORDER BY starts with output columns and whose answer has rows:
        // guards against the comparison silently checking less.
        assert_eq!(ordered, 53, "statements whose order was checked");
    }
    eprintln!(
        "{statements_run} statements, {ordered} with their ORDER BY checked, {errors} failing on both"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcds_over_files() {
    check(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcds_over_cached_tables() {
    check(true).await;
}
