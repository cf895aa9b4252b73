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
