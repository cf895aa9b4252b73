//! Sort-preserving exchanges: where DataFusion keeps an existing order through a
//! repartition (`preserve_order`), the shuffle's reader merges its upstream tasks'
//! sorted streams, so the operators above (sorted aggregates, windows, merges) get the
//! order they were planned for; answers equal single-node DataFusion's, in order.

mod common;

use common::answers::compare;
use common::{fletch_plan, oracle, query};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch::{LocalCluster, default_session_config};

/// Registers `events`: four parquet files, each sorted on `k`, declared `WITH ORDER`.
async fn register_sorted_files(ctx: &SessionContext, dir: &std::path::Path) {
    let location = dir.display();
    query(
        ctx,
        &format!(
            "CREATE EXTERNAL TABLE events (k BIGINT, v BIGINT) STORED AS PARQUET \
             WITH ORDER (k ASC) LOCATION '{location}/'"
        ),
    )
    .await;
}

async fn write_sorted_files(dir: &std::path::Path) {
    let writer = oracle();
    for file in 0..4 {
        query(
            &writer,
            &format!(
                "COPY (SELECT (value * 7 + {file}) % 500 AS k, value AS v \
                 FROM generate_series(1, 5000) ORDER BY k, v) \
                 TO '{}/part-{file}.parquet' STORED AS PARQUET",
                dir.display()
            ),
        )
        .await;
    }
}

fn prefer_existing_sort(config: SessionConfig) -> SessionConfig {
    let mut config = config.with_target_partitions(4);
    config.options_mut().optimizer.prefer_existing_sort = true;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_shuffles_merge_and_answer_like_datafusion() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_sorted_files(dir.path()).await;
    let single = SessionContext::new_with_config(prefer_existing_sort(SessionConfig::new()));
    register_sorted_files(&single, dir.path()).await;
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session_with_config(prefer_existing_sort(default_session_config()));
    register_sorted_files(&ctx, dir.path()).await;

    let queries = [
        "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k ORDER BY k",
        "SELECT k, min(v) AS first, max(v) AS last FROM events WHERE v % 3 = 0 GROUP BY k ORDER BY k DESC LIMIT 20",
    ];
    for sql in queries {
        let (_, text) = fletch_plan(&ctx, sql).await;
        assert!(
            text.contains("merging on"),
            "no merging shuffle for {sql}:\n{text}"
        );
        assert!(
            !text.contains("preserve_order=true"),
            "a repartition left whole:\n{text}"
        );
        let expected = query(&single, sql).await;
        let actual = query(&ctx, sql).await;
        match compare(sql, &expected, &actual) {
            Ok(order_checked) => assert!(order_checked, "{sql}"),
            Err(difference) => panic!("{sql}: {difference}\n{text}"),
        }
    }
    cluster.shutdown().await;
}
