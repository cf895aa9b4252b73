//! TPC-H differential test: all 22 queries at SF 0.1 on a 2-executor LocalCluster must
//! return exactly what single-node DataFusion returns on the same files, with target
//! partitions 1, 3 and 8; on a single executor, where every exchange is read from the
//! executor's own memory instead of over Flight; and over the eight tables cached in the
//! cluster's memory, hash-fragmented on their keys. Answers are compared as
//! `common::answers` says: rows as multisets, and the ORDER BY's key sequence.

mod common;

use common::answers::compare;
use common::{oracle, rows, run_statements, tpch_sf01};
use fletch::{DistributedExec, LocalCluster, default_session_config};
use fletch_tpch as tpch;

async fn check_all_queries(executors: usize, target_partitions: usize) {
    check(executors, target_partitions, false).await;
}

async fn check(executors: usize, target_partitions: usize, cached: bool) {
    let dir = tpch_sf01().await;
    let cluster = LocalCluster::start(executors).await.expect("cluster");
    let ctx = cluster
        .session_with_config(default_session_config().with_target_partitions(target_partitions));
    tpch::register(&ctx, dir).await.expect("register");
    if cached {
        for statement in tpch::cache_statements() {
            common::fletch_statements(&ctx, &[&statement]).await;
        }
        let kinds = rows(&common::query(&ctx, "SELECT DISTINCT kind FROM fletch.tables").await);
        assert_eq!(kinds, ["cached"]);
    }
    let single = oracle();
    tpch::register(&single, dir).await.expect("register oracle");

    let mut failures = Vec::new();
    let mut ordered = 0;
    for n in 1..=22 {
        let statements = tpch::query_statements(n).expect("query text");
        let expected = run_statements(&single, &statements).await.expect("oracle");
        let actual = match run_statements(&ctx, &statements).await {
            Ok(batches) => batches,
            Err(e) => {
                failures.push(format!("q{n}: {e}"));
                continue;
            }
        };
        if statements.len() == 1 {
            let plan = ctx.sql(statements[0]).await.expect("plan");
            let plan = plan.create_physical_plan().await.expect("physical plan");
            let distributed = plan
                .downcast_ref::<DistributedExec>()
                .expect("TPC-H queries run distributed");
            for (stage, size) in distributed.stage_plan_sizes().into_iter().enumerate() {
                // Plans carry file references or fragment lists, never data: far below
                // gRPC's limits.
                assert!(
                    size < 256 * 1024,
                    "q{n} stage {} plan is {size} bytes",
                    stage + 1
                );
            }
        }
        // q15 creates and drops a view around its query.
        let answer_sql = statements
            .iter()
            .rfind(|s| {
                let first_word = s
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with("--"))
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                first_word.starts_with("select") || first_word.starts_with("with")
            })
            .expect("a query");
        match compare(answer_sql, &expected, &actual) {
            Ok(order_checked) => ordered += usize::from(order_checked),
            Err(difference) => failures.push(format!("q{n}: {difference}")),
        }
    }
    for stats in cluster.executor_stats() {
        assert_eq!(
            stats.buffered_bytes, 0,
            "exchange memory left behind: {stats:?}"
        );
        assert_eq!(stats.queries, 0, "query state left behind: {stats:?}");
    }
    let reads = cluster.exchange_reads();
    if cached {
        let fragments = cluster.fragment_stats();
        assert!(
            fragments
                .iter()
                .all(|f| f.local_reads > 0 && f.served_reads == 0),
            "every scan runs on a holder of its fragment: {fragments:?}"
        );
        for (table, _) in tpch::TABLE_KEYS {
            fletch::sql(&ctx, &format!("UNCACHE TABLE {table}"))
                .await
                .expect("uncache")
                .collect()
                .await
                .expect("uncache");
        }
        for (fragments, (used, _)) in cluster.fragment_stats().iter().zip(cluster.memory()) {
            assert_eq!((fragments.bytes, used), (0, 0), "UNCACHE frees everything");
        }
    }
    cluster.shutdown().await;
    if cached {
        // Exchanges above the scans cross executors as they do over files.
    } else if executors == 1 {
        // Only the coordinator, reading each query's final stage, goes through Flight.
        let local: usize = reads.iter().map(|r| r.local).sum();
        let served: usize = reads.iter().map(|r| r.served).sum();
        assert!(local > 0, "no exchange was read locally: {reads:?}");
        assert!(
            served < local,
            "one executor served {served} reads over Flight: {reads:?}"
        );
    } else {
        assert!(
            reads.iter().all(|r| r.local > 0 && r.served > 0),
            "each executor reads some partitions locally and serves others: {reads:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "executors={executors} target_partitions={target_partitions}:\n{}",
        failures.join("\n")
    );
    // 18 of the 22 queries end in an ORDER BY (not q6, q14, q17, q19); q18's answer
    // at SF 0.1 has no rows, so 17 orders are checked.
    assert_eq!(ordered, 17, "queries whose order was checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_target_partitions_1() {
    check_all_queries(2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_target_partitions_3() {
    check_all_queries(2, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_target_partitions_8() {
    check_all_queries(2, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_one_executor_reads_its_own_partitions() {
    check_all_queries(1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_over_cached_tables() {
    check(2, 3, true).await;
}
