//! In-memory distributed tables: layout and system tables, loads that fail leaving
//! nothing behind, DROP and UNCACHE returning memory to zero, the memory limit, one
//! consistent version per query, CACHE TABLE over files, locality of scans, and
//! statistics that answer queries without scanning.

mod common;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use fletch::LocalCluster;

async fn run(ctx: &SessionContext, statement: &str) -> Result<Vec<RecordBatch>> {
    fletch::sql(ctx, statement).await?.collect().await
}

async fn must(ctx: &SessionContext, statement: &str) -> Vec<RecordBatch> {
    run(ctx, statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

async fn rows(ctx: &SessionContext, statement: &str) -> Vec<String> {
    common::rows(&must(ctx, statement).await)
}

fn held_bytes(cluster: &LocalCluster) -> Vec<usize> {
    cluster.fragment_stats().iter().map(|s| s.bytes).collect()
}

fn assert_nothing_held(cluster: &LocalCluster, when: &str) {
    for (stats, (used, _)) in cluster.fragment_stats().iter().zip(cluster.memory()) {
        assert_eq!((stats.pieces, stats.bytes), (0, 0), "fragments left {when}");
        assert_eq!(used, 0, "memory still reserved {when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_fragmented_replicated_listed_and_dropped() {
    let cluster = LocalCluster::start(3).await.expect("cluster");
    let ctx = cluster.session();
    must(
        &ctx,
        "CREATE TABLE t (k INT, v VARCHAR) PARTITION BY HASH (k) INTO 6 FRAGMENTS REPLICAS 2",
    )
    .await;
    let count = rows(
        &ctx,
        "INSERT INTO t SELECT value, 'v' || value FROM generate_series(1, 10000)",
    )
    .await;
    assert_eq!(count, ["10000"]);

    let tables = rows(&ctx, "SHOW TABLES").await;
    assert_eq!(tables.len(), 1, "{tables:?}");
    let cells: Vec<&str> = tables[0].split('|').collect();
    assert_eq!(cells[0], "t");
    assert_eq!(cells[1], "in memory");
    assert_eq!(cells[2], "10000");
    assert!(cells[3].parse::<usize>().expect("bytes") > 0);
    assert_eq!(&cells[4..], ["6", "2", "hash(k)"]);

    let fragments = rows(
        &ctx,
        "SELECT fragment, rows, bytes, executors FROM fletch.fragments WHERE table_name = 't' ORDER BY fragment",
    )
    .await;
    assert_eq!(fragments.len(), 6);
    let mut total = 0;
    for (f, line) in fragments.iter().enumerate() {
        let cells: Vec<&str> = line.split('|').collect();
        assert_eq!(cells[0], f.to_string());
        let rows: usize = cells[1].parse().expect("rows");
        total += rows;
        assert!(rows > 1000, "hash fragments are balanced: {line}");
        let holders: Vec<&str> = cells[3].split(", ").collect();
        assert_eq!(holders.len(), 2, "two replicas: {line}");
        assert_ne!(holders[0], holders[1]);
        assert!(
            holders
                .iter()
                .all(|h| cluster.executor_urls().iter().any(|u| u == h))
        );
    }
    assert_eq!(total, 10000);
    // 6 fragments x 2 replicas over 3 executors: each holds 4 pieces.
    let pieces: Vec<usize> = cluster.fragment_stats().iter().map(|s| s.pieces).collect();
    assert_eq!(pieces, [4, 4, 4]);

    // The same answers as single-node DataFusion over the same rows.
    let oracle = common::oracle();
    common::query(
        &oracle,
        "CREATE TABLE t AS SELECT CAST(value AS INT) AS k, 'v' || value AS v FROM generate_series(1, 10000)",
    )
    .await;
    for query in [
        "SELECT count(*), sum(k), min(v), max(v) FROM t",
        "SELECT k % 7 AS g, count(*) FROM t GROUP BY g",
        "SELECT a.k, b.v FROM t a JOIN t b ON a.k = b.k WHERE a.k % 1000 = 0",
    ] {
        let ours = common::sorted(rows(&ctx, query).await);
        let expected = common::sorted(common::rows(&common::query(&oracle, query).await));
        assert_eq!(ours, expected, "{query}");
    }

    must(&ctx, "DROP TABLE t").await;
    assert!(rows(&ctx, "SHOW TABLES").await.is_empty());
    assert_nothing_held(&cluster, "after DROP TABLE");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_leaves_nothing_behind() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    // The cast fails on one row, after other fragments may already be stored.
    let bad = "SELECT CAST(CASE WHEN value = 77777 THEN 'x' ELSE CAST(value AS VARCHAR) END AS INT) AS k \
               FROM generate_series(1, 100000)";
    let err = run(&ctx, &format!("CREATE TABLE broken AS {bad}"))
        .await
        .expect_err("the cast must fail");
    assert!(err.to_string().contains("'x'"), "{err}");
    assert!(rows(&ctx, "SHOW TABLES").await.is_empty());
    assert_nothing_held(&cluster, "after a failed CREATE TABLE AS");

    must(
        &ctx,
        "CREATE TABLE kept AS SELECT value AS k FROM generate_series(1, 1000)",
    )
    .await;
    let before = held_bytes(&cluster);
    let err = run(&ctx, &format!("INSERT INTO kept {bad}")).await;
    assert!(err.is_err());
    assert_eq!(rows(&ctx, "SELECT count(*) FROM kept").await, ["1000"]);
    assert_eq!(
        held_bytes(&cluster),
        before,
        "a failed INSERT stored nothing"
    );
    must(&ctx, "DROP TABLE kept").await;
    assert_nothing_held(&cluster, "after DROP TABLE");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_an_executor_fails_with_the_sizes_and_nothing_left() {
    let cluster = LocalCluster::start_with(2, Some(4 << 20))
        .await
        .expect("cluster");
    let ctx = cluster.session();
    let err = run(
        &ctx,
        "CREATE TABLE huge AS SELECT value AS k, repeat('x', 100) AS pad FROM generate_series(1, 200000)",
    )
    .await
    .expect_err("20 MB cannot fit in 4 MiB executors");
    let message = err.to_string();
    assert!(message.contains("table huge"), "{message}");
    assert!(message.contains("executor http://127.0.0.1:"), "{message}");
    assert!(message.contains("4.0 MB"), "the limit is named: {message}");
    assert_nothing_held(&cluster, "after a load that did not fit");

    // The cluster keeps serving, and a table that fits loads.
    must(
        &ctx,
        "CREATE TABLE small AS SELECT value AS k FROM generate_series(1, 1000)",
    )
    .await;
    assert_eq!(rows(&ctx, "SELECT count(*) FROM small").await, ["1000"]);
    must(&ctx, "DROP TABLE small").await;
    assert_nothing_held(&cluster, "after DROP TABLE");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_is_a_setting() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    let load = "CREATE TABLE t AS SELECT value AS k, repeat('x', 100) AS pad FROM generate_series(1, 100000)";
    must(&ctx, "SET fletch.executor_memory = '2MB'").await;
    let err = run(&ctx, load).await.expect_err("does not fit in 2 MiB");
    assert!(err.to_string().contains("table t"), "{err}");
    assert!(cluster.memory().iter().all(|(_, limit)| *limit == 2 << 20));
    assert_nothing_held(&cluster, "after a load that did not fit");

    must(&ctx, "SET fletch.executor_memory = '1GiB'").await;
    must(&ctx, load).await;
    assert_eq!(rows(&ctx, "SELECT count(*) FROM t").await, ["100000"]);
    assert!(
        cluster
            .memory()
            .iter()
            .all(|(used, limit)| *limit == 1 << 30 && *used > 0)
    );
    // SHOW EXECUTORS reads the same figures.
    let listed = rows(
        &ctx,
        "SELECT DISTINCT memory_limit, memory_used > 0, state FROM fletch.executors",
    )
    .await;
    assert_eq!(listed, [format!("{}|true|alive", 1u64 << 30)]);

    // Refused when set, by name, and the limit in force stays.
    let bad = run(&ctx, "SET fletch.executor_memory = 'lots'")
        .await
        .expect_err("an invalid size must be refused")
        .to_string();
    assert!(
        bad.contains("'lots'") && bad.contains("fletch.executor_memory"),
        "{bad}"
    );
    must(&ctx, "SELECT count(*) FROM t").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_the_version_it_was_planned_on() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    must(
        &ctx,
        "CREATE TABLE t AS SELECT value AS k FROM generate_series(1, 100)",
    )
    .await;
    let (before, _) = common::fletch_plan(&ctx, "SELECT count(*), sum(k) FROM t").await;
    must(
        &ctx,
        "INSERT INTO t SELECT value FROM generate_series(101, 150)",
    )
    .await;
    let old = datafusion::physical_plan::collect(before, ctx.task_ctx())
        .await
        .expect("old plan runs");
    assert_eq!(common::rows(&old), ["100|5050"]);
    assert_eq!(
        rows(&ctx, "SELECT count(*), sum(k) FROM t").await,
        ["150|11325"]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_table_loads_files_and_uncache_gives_them_back() {
    let dir = std::env::temp_dir().join(format!("fletch-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("points.csv");
    let mut text = String::from("id,grp,score\n");
    for i in 0..5000 {
        text.push_str(&format!("{i},g{},{}\n", i % 13, (i * 37) % 1000));
    }
    std::fs::write(&csv, text).expect("csv");

    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    let create = format!(
        "CREATE EXTERNAL TABLE points STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        csv.display()
    );
    must(&ctx, &create).await;
    let query = "SELECT grp, count(*), sum(score) FROM points GROUP BY grp";
    let oracle = common::oracle();
    common::query(&oracle, &create).await;
    let from_file = common::sorted(common::rows(&common::query(&oracle, query).await));
    assert_eq!(common::sorted(rows(&ctx, query).await), from_file);

    must(
        &ctx,
        "CACHE TABLE points PARTITION BY HASH (grp) REPLICAS 1",
    )
    .await;
    let listed = rows(&ctx, "SELECT kind, rows, replicas FROM fletch.tables").await;
    assert_eq!(listed, ["cached|5000|1"]);
    assert_eq!(common::sorted(rows(&ctx, query).await), from_file);
    let err = run(&ctx, "CACHE TABLE points")
        .await
        .expect_err("cached twice");
    assert!(err.to_string().contains("already in memory"), "{err}");

    // With one replica each fragment lives on one executor; its scan runs there.
    let reads: usize = cluster.fragment_stats().iter().map(|s| s.local_reads).sum();
    assert!(reads > 0);
    assert!(cluster.fragment_stats().iter().all(|s| s.served_reads == 0));

    must(&ctx, "UNCACHE TABLE points").await;
    assert_eq!(
        rows(&ctx, "SELECT kind FROM fletch.tables").await,
        ["external"]
    );
    assert_eq!(common::sorted(rows(&ctx, query).await), from_file);
    assert_nothing_held(&cluster, "after UNCACHE TABLE");
    let err = run(&ctx, "UNCACHE TABLE points")
        .await
        .expect_err("not cached");
    assert!(err.to_string().contains("not a cached table"), "{err}");
    must(&ctx, "UNCACHE TABLE IF EXISTS nothing_here").await;
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_statistics_answer_queries_without_a_scan() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    must(
        &ctx,
        "CREATE TABLE t AS SELECT value AS k FROM generate_series(1, 5000)",
    )
    .await;
    let query = "SELECT count(*), min(k), max(k) FROM t";
    let (_, text) = common::fletch_plan(&ctx, query).await;
    assert!(!text.contains("FragmentScanExec"), "{text}");
    assert_eq!(rows(&ctx, query).await, ["5000|1|5000"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_table_statements_get_clear_errors() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    for (statement, expected) in [
        (
            "CREATE TABLE t (a INT) PARTITION BY HASH (b)",
            "no column b",
        ),
        ("CREATE TABLE t (a INT) REPLICAS 3", "REPLICAS 3"),
        (
            "CREATE TABLE t (a INT) INTO 0 FRAGMENTS",
            "FRAGMENTS must be a positive",
        ),
        (
            "CREATE TABLE t (a INT) PARTITION BY RANGE (a)",
            "HASH (columns) or ROUND ROBIN",
        ),
        ("CACHE TABLE missing", "not found"),
        ("CREATE TABLE other.t (a INT)", "default schema"),
    ] {
        let err = run(&ctx, statement).await.expect_err(statement).to_string();
        assert!(err.contains(expected), "{statement}: {err}");
    }
    assert!(rows(&ctx, "SHOW TABLES").await.is_empty());
    must(&ctx, "CREATE TABLE t (a INT)").await;
    let err = run(&ctx, "CREATE TABLE t (a INT)")
        .await
        .expect_err("exists");
    assert!(err.to_string().contains("already exists"), "{err}");
    must(&ctx, "CREATE TABLE IF NOT EXISTS t (a INT)").await;
    let err = run(&ctx, "INSERT OVERWRITE t VALUES (1)").await;
    assert!(err.is_err());
    assert_nothing_held(&cluster, "after statements that failed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_cleanly_and_the_cluster_keeps_serving() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    must(
        &ctx,
        "CREATE TABLE t AS SELECT value AS k, repeat('x', 50) AS pad FROM generate_series(1, 300000)",
    )
    .await;
    let held: Vec<usize> = cluster.memory().iter().map(|m| m.0).collect();
    // Less than each executor already holds: any query that needs memory must fail.
    must(&ctx, "SET fletch.executor_memory = '1MB'").await;
    let err = run(
        &ctx,
        "SELECT a.k, count(*) FROM t a JOIN t b ON a.pad = b.pad AND a.k = b.k GROUP BY a.k",
    )
    .await
    .expect_err("a hash join over 300K rows cannot run in 1 MiB");
    assert!(err.to_string().contains("Resources exhausted"), "{err}");
    let after: Vec<usize> = cluster.memory().iter().map(|m| m.0).collect();
    assert_eq!(after, held, "the failed query returned all its memory");

    must(&ctx, "SET fletch.executor_memory = '4GiB'").await;
    assert_eq!(rows(&ctx, "SELECT count(*) FROM t").await, ["300000"]);
    must(&ctx, "DROP TABLE t").await;
    assert_nothing_held(&cluster, "after DROP TABLE");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_two_replicas_answers_without_one_of_its_executors_and_is_rereplicated() {
    let mut cluster = LocalCluster::start(3).await.expect("cluster");
    let ctx = cluster.session();
    must(
        &ctx,
        "CREATE TABLE t PARTITION BY HASH (k) INTO 3 FRAGMENTS REPLICAS 2 AS \
         SELECT value AS k, value % 10 AS g FROM generate_series(1, 30000)",
    )
    .await;
    must(
        &ctx,
        "CREATE TABLE single PARTITION BY HASH (k) INTO 3 FRAGMENTS REPLICAS 1 AS \
         SELECT value AS k FROM generate_series(1, 300)",
    )
    .await;
    let query = "SELECT g, count(*), sum(k) FROM t GROUP BY g";
    let oracle = common::oracle();
    let before = common::sorted(common::rows(
        &common::run_statements(
            &oracle,
            &[
                "CREATE TABLE t AS SELECT value AS k, value % 10 AS g FROM generate_series(1, 30000)",
                query,
            ],
        )
        .await
        .expect("oracle"),
    ));
    assert_eq!(common::sorted(rows(&ctx, query).await), before);
    let gone = cluster.executor_urls()[0].clone();
    cluster.stop_executor(0).await.expect("stop");

    // Every fragment still has a holder; scans run there.
    assert_eq!(common::sorted(rows(&ctx, query).await), before);
    // Fragment 0 of a one-replica table lived only on the stopped executor.
    // (count(*) would be answered from statistics, without a scan.)
    let err = run(&ctx, "SELECT sum(k) FROM single")
        .await
        .expect_err("a lost fragment cannot be read");
    let message = err.to_string();
    assert!(message.contains("table single fragment 0"), "{message}");
    assert!(message.contains(&gone), "{message}");
    // Its fragments were copied from their other holder onto the third executor.
    cluster.coordinator().wait_for_releases().await;
    let holders = rows(
        &ctx,
        "SELECT executors FROM fletch.fragments WHERE table_name = 't' ORDER BY fragment",
    )
    .await;
    assert_eq!(holders.len(), 3);
    for line in &holders {
        let urls: Vec<&str> = line.split(", ").collect();
        assert_eq!(urls.len(), 2, "two replicas again: {line}");
        assert_ne!(urls[0], urls[1], "{line}");
        assert!(!urls.contains(&gone.as_str()), "{line}");
    }
    // So losing a second executor loses no row of t either.
    cluster.stop_executor(0).await.expect("stop a second");
    assert_eq!(common::sorted(rows(&ctx, query).await), before);
    cluster.shutdown().await;
}

/// DataFusion's own `SessionContext::sql("CREATE TABLE ...")` on a Fletch session would
/// keep the rows on the coordinator and copy them into every plan: it is refused with
/// a pointer to `fletch::sql`, which makes the same table in the executors' memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_create_table_is_refused_with_the_way_that_works() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    let err = ctx
        .sql("CREATE TABLE bare AS VALUES (1), (2)")
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("fletch::sql"), "{err}");
    assert!(
        cluster.coordinator().tables().get("bare").is_none(),
        "nothing was registered"
    );
    must(&ctx, "CREATE TABLE bare AS VALUES (1), (2)").await;
    assert_eq!(
        rows(&ctx, "SELECT sum(column1) AS s FROM bare").await,
        ["3"],
        "the same statement through fletch::sql"
    );
    // DataFusion's own replace would free the table before refusing its MemTable.
    let replace = "CREATE OR REPLACE TABLE bare AS VALUES (5)";
    let err = ctx.sql(replace).await.expect_err(replace).to_string();
    assert!(err.contains("through fletch::sql"), "{err}");
    // Its DROP TABLE is refused too; DataFusion reports any refusal as "doesn't exist".
    assert!(ctx.sql("DROP TABLE bare").await.is_err());
    for bare in [replace, "DROP TABLE bare"] {
        assert_eq!(
            rows(&ctx, "SELECT sum(column1) AS s FROM bare").await,
            ["3"],
            "{bare} left the table as it was"
        );
    }
    assert!(
        held_bytes(&cluster).iter().sum::<usize>() > 0,
        "its rows are in the executors"
    );
    must(&ctx, "DROP TABLE bare").await;
    assert_nothing_held(&cluster, "after DROP TABLE through fletch::sql");
}
