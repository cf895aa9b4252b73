//! Bad input gets a clear error, and the cluster answers the next query.

mod common;

use fletch::LocalCluster;

async fn assert_serving(ctx: &datafusion::prelude::SessionContext) {
    let batches = common::query(ctx, "SELECT 1 + 1 AS two").await;
    assert_eq!(common::rows(&batches), vec!["2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_the_cluster_keeps_serving() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();

    let err = ctx.sql("SELEC 1").await.expect_err("syntax error");
    assert!(err.to_string().contains("ParserError"), "{err}");
    assert_serving(&ctx).await;

    let err = ctx
        .sql("SELECT * FROM nowhere")
        .await
        .expect_err("unknown table");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert_serving(&ctx).await;

    common::query(&ctx, "CREATE TABLE t (x INT) AS VALUES (1), (0)").await;
    let err = ctx
        .sql("SELECT y FROM t")
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("No field named y"), "{err}");
    assert_serving(&ctx).await;

    // A failing task: DataFusion's own message, naming the stage and the executor.
    let err = ctx
        .sql("SELECT 1 / x FROM t")
        .await
        .expect("plan")
        .collect()
        .await
        .expect_err("division by zero");
    let message = err.to_string();
    assert!(message.contains("Divide by zero"), "{message}");
    assert!(
        message.contains("stage 1") && message.contains("executor http://127.0.0.1:"),
        "{message}"
    );
    assert_serving(&ctx).await;

    // A file whose rows do not match its declared schema fails inside a task.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "a\n1\nnot-a-number\n").expect("write");
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE bad (a INT) STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        path.display()
    ))
    .await
    .expect("create external table");
    let err = ctx
        .sql("SELECT sum(a) FROM bad")
        .await
        .expect("plan")
        .collect()
        .await
        .expect_err("unparsable row");
    assert!(err.to_string().contains("not-a-number"), "{err}");
    assert_serving(&ctx).await;

    // A file that disappears between planning and execution: the task that scans it
    // fails, naming the file, the stage and the executor.
    let path = dir.path().join("vanishing.csv");
    std::fs::write(&path, "a\n1\n2\n").expect("write");
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE vanishing (a INT) STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        path.display()
    ))
    .await
    .expect("create external table");
    let plan = ctx
        .sql("SELECT sum(a) FROM vanishing")
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    std::fs::remove_file(&path).expect("remove");
    let err = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .expect_err("missing file");
    let message = err.to_string();
    assert!(message.contains("vanishing.csv"), "{message}");
    assert!(
        message.contains("stage 1") && message.contains("executor"),
        "{message}"
    );
    assert_serving(&ctx).await;

    // A location that never existed fails at CREATE.
    let err = ctx
        .sql("CREATE EXTERNAL TABLE nothing STORED AS PARQUET LOCATION '/definitely/not/here.parquet'")
        .await
        .expect_err("missing location");
    assert!(err.to_string().to_lowercase().contains("not"), "{err}");
    assert_serving(&ctx).await;

    // Failed queries leave nothing behind on any executor.
    for stats in cluster.executor_stats() {
        assert_eq!(stats.buffered_bytes, 0, "{stats:?}");
        assert_eq!(stats.queries, 0, "{stats:?}");
    }
    cluster.shutdown().await;
}
