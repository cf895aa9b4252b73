//! When a query ends — finished, stopped early by LIMIT, failed, or dropped by its
//! caller — every executor frees the exchange memory and task state it held for it.

mod common;

use fletch::{LocalCluster, StoreStats};
use futures::StreamExt;

fn assert_all_free(cluster: &LocalCluster, when: &str) {
    for stats in cluster.executor_stats() {
        assert_eq!(
            stats,
            StoreStats::default(),
            "executor still holds something after {when}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_memory_returns_to_zero() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    common::query(
        &ctx,
        "CREATE TABLE big AS SELECT value AS n, value % 100 AS k FROM generate_series(1, 200000)",
    )
    .await;
    let join = "SELECT a.n, b.k FROM big a JOIN big b ON a.n = b.n";

    let rows: usize = common::query(&ctx, join)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 200_000);
    assert_all_free(&cluster, "a finished query");

    let limited = common::query(&ctx, &format!("{join} LIMIT 5")).await;
    assert_eq!(common::rows(&limited).len(), 5);
    assert_all_free(&cluster, "a query stopped early by LIMIT");

    let err = ctx
        .sql("SELECT n / (k - k) FROM big")
        .await
        .expect("plan")
        .collect()
        .await;
    assert!(err.is_err());
    assert_all_free(&cluster, "a failed query");

    // The caller reads one batch, then drops the stream mid-query (with results
    // streamed at once, not held back until the query ends).
    common::query(&ctx, "SET fletch.result_buffer = '0'").await;
    let mut stream = ctx
        .sql(join)
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("stream");
    let first = stream.next().await.expect("a batch").expect("no error");
    assert!(first.num_rows() > 0);
    let during = cluster.executor_stats();
    assert!(
        during.iter().any(|s| s.queries > 0),
        "the running query should hold state: {during:?}"
    );
    drop(stream);
    cluster.coordinator().wait_for_releases().await;
    assert_all_free(&cluster, "a dropped query");
    cluster.shutdown().await;
}
