//! Stage plans survive the trip through bytes: every stage of a distributed plan decodes
//! to a plan that displays exactly like the one encoded, readers as leaves.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_planner::{
    DeclaredPropertiesExec, ExchangeReaderExec, decode_stage_plan, distribute, encode_stage_plan,
};

fn show(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan")
}

#[tokio::test]
async fn every_stage_round_trips() {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    ctx.sql("CREATE TABLE t (k INT, v VARCHAR) AS VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .expect("create")
        .collect()
        .await
        .expect("create");
    let sql = "SELECT t.v, count(*) AS n, max(u.k) FROM t JOIN t AS u ON t.k = u.k \
               WHERE t.k > (SELECT min(k) FROM t) GROUP BY t.v ORDER BY n DESC, t.v";
    let distributed =
        distribute(physical(&ctx, sql).await, ctx.state().config_options()).expect("distribute");
    assert!(distributed.stages.len() >= 3, "{}", show(&distributed.root));
    let task_ctx = ctx.task_ctx();
    for stage in &distributed.stages {
        let bytes = encode_stage_plan(&stage.plan).expect("encode");
        let decoded = decode_stage_plan(&bytes, &task_ctx).expect("decode");
        assert_eq!(show(&decoded), show(&stage.plan), "stage {}", stage.id);
        assert!(
            bytes.len() < 64 * 1024,
            "stage {} encodes to {} bytes",
            stage.id,
            bytes.len()
        );
    }
}

#[test]
fn garbage_bytes_are_an_error_not_a_panic() {
    let ctx = SessionContext::new();
    for bytes in [&b""[..], b"\x00\x01\x02", b"not a plan at all", &[0xff; 64]] {
        assert!(decode_stage_plan(bytes, &ctx.task_ctx()).is_err());
    }
}

#[tokio::test]
async fn a_reader_still_attached_to_its_stage_does_not_encode() {
    // Stages ship readers as leaves; encoding one that still holds its upstream stage
    // would ship two stages in one.
    let ctx = SessionContext::new();
    let plan = physical(
        &ctx,
        "SELECT count(*) FROM (VALUES (1), (2)) AS v(x) GROUP BY x",
    )
    .await;
    let distributed = distribute(plan, ctx.state().config_options()).expect("distribute");
    assert!(distributed.root.is::<ExchangeReaderExec>());
    assert!(encode_stage_plan(&distributed.root).is_err());
}

/// A reader standing for a subtree whose output is sorted two ways, has `a = d` and a
/// constant `e = 5`: the properties q47's window was planned on, and more.
fn richly_described_reader(with_properties: bool) -> Arc<dyn ExecutionPlan> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::{
        AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalSortExpr,
    };
    use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
    use datafusion::physical_plan::{Partitioning, PlanProperties};
    use fletch_planner::ExchangeMode;

    let schema = Arc::new(Schema::new(
        ["a", "b", "c", "d", "e"]
            .map(|name| Field::new(name, DataType::Int64, true))
            .to_vec(),
    ));
    let c = |name: &str| col(name, &schema).expect("column");
    let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
    if with_properties {
        eq.add_equal_conditions(c("a"), c("d")).expect("a = d");
        eq.add_constants([ConstExpr::new(
            c("e"),
            AcrossPartitions::Uniform(Some(ScalarValue::Int64(Some(5)))),
        )])
        .expect("e = 5");
        eq.add_orderings([
            vec![
                PhysicalSortExpr::new_default(c("a")),
                PhysicalSortExpr::new_default(c("b")),
            ],
            vec![PhysicalSortExpr::new_default(c("c")).desc()],
        ]);
    }
    let properties = PlanProperties::new(
        eq,
        Partitioning::UnknownPartitioning(2),
        EmissionType::Incremental,
        Boundedness::Bounded,
    );
    Arc::new(ExchangeReaderExec::new(
        7,
        ExchangeMode::Forward,
        Arc::new(properties),
        None,
    ))
}

#[test]
fn a_reader_keeps_every_ordering_equivalence_and_constant() {
    use datafusion::physical_expr::AcrossPartitions;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::col;
    use fletch_planner::check_same_properties;

    let reader = richly_described_reader(true);
    let bytes = encode_stage_plan(&reader).expect("encode");
    let decoded = decode_stage_plan(&bytes, &SessionContext::new().task_ctx()).expect("decode");
    check_same_properties(7, &reader, &decoded).expect("nothing lost");

    let eq = &decoded.properties().eq_properties;
    let schema = decoded.schema();
    let c = |name: &str| col(name, &schema).expect("column");
    // Through the equivalence a = d, sorted on (a, b) is sorted on (d, b).
    assert!(
        eq.ordering_satisfy([
            PhysicalSortExpr::new_default(c("d")),
            PhysicalSortExpr::new_default(c("b")),
        ])
        .expect("ordering check")
    );
    assert!(
        eq.ordering_satisfy([PhysicalSortExpr::new_default(c("c")).desc()])
            .expect("ordering check")
    );
    assert_eq!(
        eq.is_expr_constant(&c("e")),
        Some(AcrossPartitions::Uniform(Some(
            datafusion::common::ScalarValue::Int64(Some(5))
        )))
    );
}

#[test]
fn a_decoded_plan_that_knows_less_fails_the_check() {
    use fletch_planner::check_same_properties;

    let planned = richly_described_reader(true);
    let weaker = richly_described_reader(false);
    let error = check_same_properties(7, &planned, &weaker)
        .expect_err("an ordering went missing")
        .to_string();
    assert!(
        error.contains("ExchangeReaderExec lost ordering"),
        "{error}"
    );
    // Knowing more than the coordinator planned with is harmless.
    check_same_properties(7, &weaker, &planned).expect("gaining is fine");
}

/// datafusion-proto drops the one empty set of `GROUPING SETS (())` (no rows came back);
/// several empty sets cannot be restored, so they are refused before anything is sent.
#[tokio::test]
async fn an_aggregate_over_one_empty_grouping_set_still_answers() {
    use datafusion::physical_plan::aggregates::AggregateExec;
    use datafusion::physical_plan::collect;

    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    ctx.sql("CREATE TABLE t (k INT) AS VALUES (1), (2), (3)")
        .await
        .expect("create")
        .collect()
        .await
        .expect("create");
    let plan = physical(&ctx, "SELECT count(*) FROM t GROUP BY GROUPING SETS (())").await;
    let bytes = encode_stage_plan(&plan).expect("encode");
    let decoded = decode_stage_plan(&bytes, &ctx.task_ctx()).expect("decode");
    let mut sets = Vec::new();
    decoded
        .apply(|node| {
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                sets.push(aggregate.group_expr().groups().len());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .expect("walk");
    assert!(!sets.is_empty() && sets.iter().all(|n| *n == 1), "{sets:?}");
    let batches = collect(decoded, ctx.task_ctx()).await.expect("run");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 1, "{}", show(&plan));

    let twice = physical(
        &ctx,
        "SELECT count(*) FROM t GROUP BY GROUPING SETS ((), ())",
    )
    .await;
    let err = encode_stage_plan(&twice).expect_err("two empty sets are refused");
    assert!(err.to_string().contains("empty grouping sets"), "{err}");
}

/// datafusion-proto sends a `Float16` literal as a `Float32` one; the decoded plan then
/// adds `Float16 + Float32`, which arrow refuses.
#[tokio::test]
async fn float16_literals_keep_their_type() {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::collect;

    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    ctx.sql(
        "CREATE TABLE h AS SELECT arrow_cast(column1, 'Float16') AS x \
         FROM (VALUES (1.0), (2.5), (NULL)) AS v(column1)",
    )
    .await
    .expect("create")
    .collect()
    .await
    .expect("create");
    let sql = "SELECT x + 1::tinyint AS plus, x IN (arrow_cast(1.0, 'Float16'), \
               arrow_cast(2.0, 'Float16')) AS listed FROM h";
    let plan = physical(&ctx, sql).await;
    let bytes = encode_stage_plan(&plan).expect("encode");
    let decoded = decode_stage_plan(&bytes, &ctx.task_ctx()).expect("decode");
    assert_eq!(show(&decoded), show(&plan));
    let expected = collect(plan, ctx.task_ctx())
        .await
        .expect("run the original");
    let got = collect(decoded, ctx.task_ctx())
        .await
        .expect("run the decoded plan");
    let table = |b: &[datafusion::arrow::array::RecordBatch]| {
        pretty_format_batches(b).expect("format").to_string()
    };
    assert_eq!(table(&got), table(&expected));
}

/// Runs `plan` and its encoded-then-decoded copy, and returns both answers as tables.
async fn run_original_and_decoded(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> (String, String) {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::collect;

    let bytes = encode_stage_plan(&plan).expect("encode");
    let decoded = decode_stage_plan(&bytes, &ctx.task_ctx()).expect("decode");
    let table = |b: &[datafusion::arrow::array::RecordBatch]| {
        pretty_format_batches(b).expect("format").to_string()
    };
    let expected = collect(plan, ctx.task_ctx())
        .await
        .expect("run the original");
    let got = collect(decoded, ctx.task_ctx())
        .await
        .expect("run the decoded plan");
    (table(&expected), table(&got))
}

#[tokio::test]
async fn compressed_files_and_csv_terminators_read_the_same_after_decoding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for (format, file) in [("CSV", "rows.csv.gz"), ("JSON", "rows.json.gz")] {
        let copy = format!(
            "COPY (VALUES (1, 'Foo'), (2, 'Bar')) TO '{}' STORED AS {format} \
             OPTIONS ('format.compression' 'gzip')",
            path(file)
        );
        ctx.sql(&copy)
            .await
            .expect("copy")
            .collect()
            .await
            .expect("copy");
    }
    std::fs::write(dir.path().join("hashes.csv"), "a,b#1,x#2,y#").expect("write");
    // (Schema inference ignores the terminator: that table states its columns.)
    let tables = [
        ("", "CSV", "rows.csv.gz", "'format.compression' 'gzip'"),
        ("", "JSON", "rows.json.gz", "'format.compression' 'gzip'"),
        (
            "(a INT, b VARCHAR)",
            "CSV",
            "hashes.csv",
            "'format.terminator' '#', 'format.has_header' 'true'",
        ),
    ];
    for (i, (columns, format, file, options)) in tables.into_iter().enumerate() {
        let create = format!(
            "CREATE EXTERNAL TABLE t{i} {columns} STORED AS {format} LOCATION '{}' \
             OPTIONS ({options})",
            path(file)
        );
        ctx.sql(&create)
            .await
            .expect("create")
            .collect()
            .await
            .expect("create");
        let query = format!("SELECT * FROM t{i}");
        // Also under a Fletch node, whose children datafusion-proto encodes on its own.
        // (A fresh plan each time: a file scan instance hands its files out once.)
        let scan = physical(&ctx, &query).await;
        let properties = Arc::clone(scan.properties());
        let wrapped: Arc<dyn ExecutionPlan> =
            Arc::new(DeclaredPropertiesExec::new(scan, properties));
        for plan in [physical(&ctx, &query).await, wrapped] {
            let (expected, got) = run_original_and_decoded(&ctx, Arc::clone(&plan)).await;
            assert!(
                expected.lines().count() > 4,
                "{file} read no rows:\n{expected}\n{}",
                displayable(plan.as_ref()).indent(true)
            );
            assert_eq!(got, expected, "{file}");
        }
    }
}

#[tokio::test]
async fn a_series_scan_that_reads_no_column_still_counts_its_rows() {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for sql in [
        "SELECT count(*) FROM generate_series(1, 10)",
        "SELECT g1.value FROM generate_series(1, 3) g1 CROSS JOIN generate_series(1, 3) g2",
        "SELECT count(*) FROM range(1, 10) WHERE 1 = 1",
    ] {
        let plan = physical(&ctx, sql).await;
        let (expected, got) = run_original_and_decoded(&ctx, plan).await;
        assert_eq!(got, expected, "{sql}");
    }
}

/// Catalog listings are told apart from other unencodable plans by the debug names of
/// DataFusion's private `information_schema` streams: this breaks loudly if DataFusion
/// renames them, instead of turning `SHOW TABLES` into a refused query.
#[tokio::test]
async fn catalog_listings_are_recognised() {
    use fletch_planner::NotDistributable;

    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    for sql in [
        "SHOW TABLES",
        "SELECT table_name FROM information_schema.tables",
        "SHOW COLUMNS FROM information_schema.tables",
        "SELECT * FROM information_schema.df_settings",
    ] {
        let distributed =
            distribute(physical(&ctx, sql).await, ctx.state().config_options()).expect(sql);
        let refusal = distributed
            .stages
            .iter()
            .find_map(|s| encode_stage_plan(&s.plan).err().map(|e| (s, e)))
            .map(|(stage, error)| NotDistributable::unencodable(stage, error));
        assert!(
            matches!(refusal, Some(NotDistributable::CatalogListing)),
            "{sql}: {refusal:?}"
        );
    }
}
