//! Stage plans survive the trip through bytes: every stage of a distributed plan decodes
//! to a plan that displays exactly like the one encoded, readers as leaves.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_planner::{ExchangeReaderExec, decode_stage_plan, distribute, encode_stage_plan};

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
    let distributed = distribute(physical(&ctx, sql).await).expect("distribute");
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
    let distributed = distribute(plan).expect("distribute");
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
