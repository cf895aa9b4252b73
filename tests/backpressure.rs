//! A slow consumer slows its producers: while the caller holds a result stream without
//! reading it, executors buffer a few MiB per partition, not the table.

mod common;

use std::time::Duration;

use fletch::LocalCluster;
use fletch_tpch as tpch;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_results_hold_producers_back() {
    let dir = common::tpch_sf01().await;
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    tpch::register(&ctx, dir).await.expect("register");

    let mut stream = ctx
        .sql("SELECT * FROM lineitem")
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("stream");
    let first = stream.next().await.expect("a batch").expect("no error");
    let mut rows = first.num_rows();
    let table_bytes = first.get_array_memory_size() * (600_000 / first.num_rows().max(1));

    // Wait for the event "a writer is blocked on a full partition" (bounded, so a
    // regression fails instead of hanging).
    let mut blocked = false;
    for _ in 0..3000 {
        if cluster
            .executor_stats()
            .iter()
            .any(|s| s.waiting_writers > 0)
        {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(blocked, "no writer ever waited for the paused reader");
    let buffered: usize = cluster
        .executor_stats()
        .iter()
        .map(|s| s.buffered_bytes)
        .sum();
    assert!(
        buffered < table_bytes / 3,
        "{buffered} bytes buffered while paused, the table is ~{table_bytes}"
    );

    while let Some(batch) = stream.next().await {
        rows += batch.expect("no error").num_rows();
    }
    let expected = common::oracle();
    tpch::register(&expected, dir).await.expect("register");
    let count = common::query(&expected, "SELECT count(*) FROM lineitem").await;
    assert_eq!(common::rows(&count), vec![rows.to_string()]);
    cluster.shutdown().await;
}
