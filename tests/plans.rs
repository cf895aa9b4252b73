//! Plan shapes of a few TPC-H queries, pinned with insta snapshots: where the stages are
//! cut, how many tasks each has, which exchanges connect them. q21 pins the semi and anti
//! joins over lineitem running partitioned, not with their probe side gathered. Joins
//! and aggregates of co-partitioned in-memory tables are pinned running in place.

mod common;

use datafusion::physical_plan::displayable;
use fletch::{LocalCluster, default_session_config};
use fletch_tpch as tpch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_plan_shapes() {
    let dir = common::tpch_sf01().await;
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session_with_config(default_session_config().with_target_partitions(2));
    tpch::register(&ctx, dir).await.expect("register");
    let dir_text = dir.to_string_lossy().trim_start_matches('/').to_string();
    let byte_ranges = regex_lite_ranges();

    for n in [1, 3, 12, 18, 21] {
        let statements = tpch::query_statements(n).expect("query text");
        let plan = ctx
            .sql(statements[0])
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let text = byte_ranges(&text.replace(&dir_text, "[TPCH]"));
        insta::assert_snapshot!(format!("tpch_q{n}"), text);
    }
    cluster.shutdown().await;
}

/// Replaces `:123..456` byte ranges (they shift with the data files) by `:<range>`.
fn regex_lite_ranges() -> impl Fn(&str) -> String {
    |text: &str| {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(':') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 && after[digits..].starts_with("..") {
                let tail = &after[digits + 2..];
                let digits2 = tail.chars().take_while(char::is_ascii_digit).count();
                if digits2 > 0 {
                    out.push_str(":<range>");
                    rest = &tail[digits2..];
                    continue;
                }
            }
            out.push(':');
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

/// Tables hash-fragmented on the same key into the same number of fragments are
/// joined and grouped on that key where their fragments are: no shuffle, no
/// broadcast, one stage of tasks over the fragments plus the gather.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_partitioned_tables_join_and_group_in_place() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    common::fletch_statements(
        &ctx,
        &[
            "CREATE TABLE orders (o_id INT, cust INT) PARTITION BY HASH (o_id) INTO 4 FRAGMENTS",
            "CREATE TABLE items (o_id INT, qty INT) PARTITION BY HASH (o_id) INTO 4 FRAGMENTS",
            "INSERT INTO orders SELECT value, value % 10 FROM generate_series(1, 1000)",
            "INSERT INTO items SELECT value % 1000, value FROM generate_series(1, 3000)",
        ],
    )
    .await;
    let oracle = common::oracle();
    common::run_statements(
        &oracle,
        &[
            "CREATE TABLE orders AS SELECT CAST(value AS INT) AS o_id, CAST(value % 10 AS INT) AS cust \
             FROM generate_series(1, 1000)",
            "CREATE TABLE items AS SELECT CAST(value % 1000 AS INT) AS o_id, CAST(value AS INT) AS qty \
             FROM generate_series(1, 3000)",
        ],
    )
    .await
    .expect("oracle tables");
    for (name, query) in [
        (
            "co_partitioned_join_aggregate",
            "SELECT o.o_id, sum(i.qty) FROM orders o JOIN items i ON o.o_id = i.o_id GROUP BY o.o_id",
        ),
        (
            "co_partitioned_semi_join",
            "SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM items i WHERE i.o_id = o.o_id)",
        ),
    ] {
        let (plan, text) = common::fletch_plan(&ctx, query).await;
        assert!(!text.contains("shuffle"), "{text}");
        insta::assert_snapshot!(name, text);
        assert_eq!(
            common::sorted(common::rows(&run(plan, &ctx).await)),
            common::sorted(common::rows(&common::query(&oracle, query).await)),
            "{query}"
        );
    }

    // A build side too big to be worth broadcasting, joined with a probe side already
    // fragmented on the key: only the build side moves, shuffled to the probe's layout.
    common::fletch_statements(
        &ctx,
        &[
            "CREATE TABLE visits PARTITION BY HASH (o_id) INTO 4 FRAGMENTS AS \
             SELECT CAST(value % 5000 AS INT) AS o_id, value AS at FROM generate_series(1, 400000)",
            "CREATE TABLE lookups PARTITION BY ROUND ROBIN AS \
             SELECT CAST(value AS INT) AS o_id, value % 3 AS kind FROM generate_series(1, 150000)",
        ],
    )
    .await;
    let (plan, text) = common::fletch_plan(&ctx, LOOKUP_JOIN).await;
    insta::assert_snapshot!("build_side_shuffled_to_the_probe_fragments", text);
    let expected = common::run_statements(
        &oracle,
        &[
            "CREATE TABLE visits AS SELECT CAST(value % 5000 AS INT) AS o_id, value AS at FROM generate_series(1, 400000)",
            "CREATE TABLE lookups AS SELECT CAST(value AS INT) AS o_id, value % 3 AS kind FROM generate_series(1, 150000)",
            LOOKUP_JOIN,
        ],
    )
    .await
    .expect("oracle");
    let expected = common::sorted(common::rows(&expected));
    assert_eq!(
        common::sorted(common::rows(&run(plan, &ctx).await)),
        expected
    );

    // The same build side under a `fletch.small_build_side` it fits: broadcast whole.
    common::query(&ctx, "SET fletch.small_build_side = '1GiB'").await;
    let (plan, text) = common::fletch_plan(&ctx, LOOKUP_JOIN).await;
    assert!(text.contains("mode=CollectLeft"), "{text}");
    assert_eq!(
        common::sorted(common::rows(&run(plan, &ctx).await)),
        expected
    );
    cluster.shutdown().await;
}

const LOOKUP_JOIN: &str =
    "SELECT l.kind, count(*) FROM visits v JOIN lookups l ON v.o_id = l.o_id GROUP BY l.kind";

async fn run(
    plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ctx: &datafusion::prelude::SessionContext,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .expect("run")
}
