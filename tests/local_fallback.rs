//! A query the executors cannot run is never run on the coordinator in silence: it is
//! marked in `EXPLAIN` with the reason, and refused with that reason when the session
//! sets `fletch.allow_local_fallback = false`. Catalog listings, which only the
//! coordinator can answer, run there either way.

mod common;

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use fletch::LocalCluster;

/// A stream source: DataFusion plans it as a `StreamingTableExec`, which
/// datafusion-proto cannot encode, so no stage holding it can reach an executor.
#[derive(Debug)]
struct Numbers {
    schema: SchemaRef,
    batch: RecordBatch,
}

impl Numbers {
    fn table() -> StreamingTable {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(1..=10))],
        )
        .expect("batch");
        let numbers = Arc::new(Self {
            schema: Arc::clone(&schema),
            batch,
        });
        StreamingTable::try_new(schema, vec![numbers]).expect("streaming table")
    }
}

impl PartitionStream for Numbers {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(
            MemoryStream::try_new(vec![self.batch.clone()], Arc::clone(&self.schema), None)
                .expect("memory stream"),
        )
    }
}

const SUM: &str = "SELECT sum(n) AS total, count(*) AS rows FROM numbers WHERE n % 2 = 0";

async fn explain(ctx: &SessionContext, sql: &str) -> String {
    common::rows(&common::query(ctx, &format!("EXPLAIN {sql}")).await).join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_query_is_marked_or_refused_never_silent() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    ctx.register_table("numbers", Arc::new(Numbers::table()))
        .expect("register");
    let oracle = common::oracle();
    oracle
        .register_table("numbers", Arc::new(Numbers::table()))
        .expect("register");

    // Allowed by default: the oracle's answer, and EXPLAIN names the node and why.
    let expected = common::rows(&common::query(&oracle, SUM).await);
    assert_eq!(common::rows(&common::query(&ctx, SUM).await), expected);
    let plan = explain(&ctx, SUM).await;
    assert!(
        plan.contains("LocalPlanExec: on the coordinator, as stage")
            && plan.contains("holds StreamingTableExec, which cannot be sent to executors"),
        "{plan}"
    );
    assert!(!plan.contains("DistributedExec"), "{plan}");

    common::query(&ctx, "SET fletch.allow_local_fallback = false").await;
    let err = ctx
        .sql(SUM)
        .await
        .expect("a logical plan")
        .collect()
        .await
        .expect_err("refused without the fallback")
        .to_string();
    assert!(
        err.contains("the executors cannot run this query")
            && err.contains("StreamingTableExec")
            && err.contains("SET fletch.allow_local_fallback = true"),
        "{err}"
    );

    // What the executors can run is untouched by the setting.
    let distributed = "SELECT count(*) FROM (VALUES (1), (2), (3)) AS v(x)";
    let plan = explain(&ctx, distributed).await;
    assert!(plan.contains("DistributedExec"), "{plan}");
    assert_eq!(common::rows(&common::query(&ctx, distributed).await), ["3"]);

    // The catalog lives on the coordinator: listing it is not a fallback.
    let listing = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'";
    let tables = common::rows(&common::query(&ctx, listing).await);
    assert_eq!(tables, ["numbers"]);
    let plan = explain(&ctx, "SELECT table_name FROM information_schema.tables").await;
    assert!(
        plan.contains("LocalPlanExec: on the coordinator, as it lists the coordinator's catalog"),
        "{plan}"
    );

    common::fletch_statements(&ctx, &["RESET fletch.allow_local_fallback"]).await;
    assert_eq!(common::rows(&common::query(&ctx, SUM).await), expected);
}
