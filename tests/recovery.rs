//! Lineage recovery on an embedded cluster: when an executor dies, a query runs again
//! only the tasks whose outputs went with it and those that had read part of them, and
//! still answers exactly what single-node DataFusion answers.

mod common;

use datafusion::prelude::SessionContext;
use fletch::{DistributedExec, LocalCluster, RecoveryStats};

const TABLES: [&str; 2] = [
    "CREATE TABLE facts AS SELECT value AS id, value % 97 AS k, value % 7 AS g \
     FROM generate_series(1, 60000)",
    "CREATE TABLE dims AS SELECT value AS k, value * 3 AS w FROM generate_series(0, 96)",
];
const LAYOUTS: [&str; 2] = [
    " PARTITION BY HASH (id) INTO 6 FRAGMENTS REPLICAS 2",
    " INTO 3 FRAGMENTS REPLICAS 2",
];
const QUERY: &str = "SELECT f.g, count(*) AS n, sum(d.w) AS w, max(f.id) AS top \
     FROM facts f JOIN dims d ON f.k = d.k GROUP BY f.g";

/// A 3-executor cluster holding both tables with 2 replicas, and the oracle's answer.
async fn cluster_and_oracle() -> (LocalCluster, SessionContext, Vec<String>) {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let ctx = cluster.session();
    let oracle = SessionContext::new();
    for (create, layout) in TABLES.iter().zip(LAYOUTS) {
        let (head, tail) = create.split_once(" AS ").expect("CREATE ... AS");
        let statement = format!("{head}{layout} AS {tail}");
        fletch::sql(&ctx, &statement)
            .await
            .expect("plan the load")
            .collect()
            .await
            .expect("load");
        common::query(&oracle, create).await;
    }
    let expected = common::sorted(common::rows(&common::query(&oracle, QUERY).await));
    (cluster, ctx, expected)
}

async fn answer(ctx: &SessionContext) -> Vec<String> {
    common::sorted(common::rows(&common::query(ctx, QUERY).await))
}

async fn task_count(ctx: &SessionContext) -> usize {
    let plan = ctx
        .sql(QUERY)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    let distributed = plan
        .downcast_ref::<DistributedExec>()
        .expect("the query runs distributed");
    distributed
        .distributed_plan()
        .stages
        .iter()
        .map(|s| s.task_count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_executor_costs_only_the_tasks_its_lineage_names() {
    let (mut cluster, ctx, expected) = cluster_and_oracle().await;
    let tasks = task_count(&ctx).await;
    assert_eq!(answer(&ctx).await, expected);
    assert_eq!(
        cluster.coordinator().recovery_stats(),
        RecoveryStats::default()
    );

    // The coordinator still places tasks on executor 2: the query finds it dead.
    cluster.crash_executor(2).await.expect("crash");
    assert_eq!(answer(&ctx).await, expected);
    let stats = cluster.coordinator().recovery_stats();
    eprintln!("recovered from a crashed executor: {stats:?} of {tasks} tasks");
    assert_eq!(stats.whole_reruns, 0, "{stats:?}");
    assert!(stats.lineage_recoveries >= 1, "{stats:?}");
    assert!(
        stats.tasks_rerun < tasks,
        "tasks on live executors that read nothing lost keep their outputs: \
         {stats:?} of {tasks} tasks"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stage_recovery_the_whole_query_runs_again() {
    let (mut cluster, ctx, expected) = cluster_and_oracle().await;
    common::query(&ctx, "SET fletch.stage_recovery = false").await;
    cluster.crash_executor(0).await.expect("crash");
    assert_eq!(answer(&ctx).await, expected);
    let stats = cluster.coordinator().recovery_stats();
    assert_eq!(stats.lineage_recoveries, 0, "{stats:?}");
    assert!(stats.whole_reruns >= 1, "{stats:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_result_buffer_size_is_refused_by_name() {
    let (cluster, ctx, expected) = cluster_and_oracle().await;
    let err = common::run_statements(&ctx, &["SET fletch.result_buffer = 'lots'", QUERY])
        .await
        .expect_err("an unparsable size");
    assert!(err.to_string().contains("fletch.result_buffer"), "{err}");
    common::query(&ctx, "SET fletch.result_buffer = '1KiB'").await;
    assert_eq!(answer(&ctx).await, expected);
    cluster.shutdown().await;
}

/// Tasks start as slots free up, each placed when it starts: an executor that joins
/// while a query runs gets that query's later tasks. Two slots for sixteen tasks a
/// stage, on any machine, so tasks are still waiting when the newcomer joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_joining_mid_query_gets_its_later_tasks() {
    let mut cluster = LocalCluster::start_with_options(fletch::LocalClusterOptions {
        executors: 1,
        slots_per_executor: Some(2),
        ..Default::default()
    })
    .await
    .expect("cluster");
    let config = fletch::default_session_config().with_target_partitions(16);
    let ctx = cluster.session_with_config(config);
    let query = "SELECT a.value % 10 AS g, count(*) AS n FROM generate_series(1, 1000000) a \
                 JOIN generate_series(1, 1000000) b ON a.value = b.value GROUP BY g";
    let oracle = SessionContext::new();
    let expected = common::sorted(common::rows(&common::query(&oracle, query).await));

    let running = {
        let ctx = ctx.clone();
        datafusion::common::runtime::SpawnedTask::spawn(async move {
            common::sorted(common::rows(&common::query(&ctx, query).await))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cluster.executor_stats()[0].running_tasks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the query never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cluster.add_executor().await.expect("a new executor");
    assert_eq!(running.join().await.expect("query task"), expected);
    let newcomer = cluster.exchange_reads()[1];
    assert!(
        newcomer.local + newcomer.served > 0,
        "the newcomer ran some of the query's tasks: {newcomer:?}"
    );
    cluster.shutdown().await;
}
