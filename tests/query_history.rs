//! The query history: `fletch.queries` and `fletch.tasks` after a query that succeeds,
//! one that fails on the executors, and one that recovers from a crashed executor, each
//! with the state, counts and attempts it really had.

mod common;

use datafusion::prelude::SessionContext;
use fletch::{DistributedExec, LocalCluster};

const CREATE: &str = "CREATE TABLE facts PARTITION BY HASH (id) INTO 6 FRAGMENTS REPLICAS 2 AS \
     SELECT value AS id, value % 7 AS g FROM generate_series(1, 30000)";
const GROUPED: &str = "SELECT g, count(*) AS n FROM facts GROUP BY g";
const FAILING: &str = "SELECT id / (g - g) FROM facts";

/// `fletch.<table>` rows matching `filter`, as text.
async fn history(ctx: &SessionContext, select: &str) -> Vec<String> {
    common::rows(&common::query(ctx, select).await)
}

/// The planned (stages, tasks) of `sql`.
async fn planned(ctx: &SessionContext, sql: &str) -> (usize, usize) {
    let plan = ctx
        .sql(sql)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    let plan = plan
        .downcast_ref::<DistributedExec>()
        .expect("runs distributed")
        .distributed_plan();
    (
        plan.stages.len(),
        plan.stages.iter().map(|s| s.task_count).sum(),
    )
}

/// The one logged query whose text is `sql`: its id and the given columns.
async fn logged(ctx: &SessionContext, sql: &str, columns: &str) -> (String, Vec<String>) {
    let rows = history(
        ctx,
        &format!(
            "SELECT query_id, {columns} FROM fletch.queries WHERE sql = '{}'",
            sql.replace('\'', "''")
        ),
    )
    .await;
    assert_eq!(rows.len(), 1, "{sql} logged once: {rows:?}");
    let mut cells = rows[0].split('|').map(str::to_string);
    let id = cells.next().expect("an id");
    (id, cells.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_holds_what_each_query_did() {
    let mut cluster = LocalCluster::start(3).await.expect("cluster");
    let ctx = cluster.session();
    common::fletch_statements(&ctx, &[CREATE]).await;
    let (stages, tasks) = planned(&ctx, GROUPED).await;

    let answer = common::query(&ctx, GROUPED).await;
    let answer_rows: usize = answer.iter().map(|b| b.num_rows()).sum();
    assert_eq!(answer_rows, 7);
    let (id, cells) = logged(
        &ctx,
        GROUPED,
        "user, state, rows, stages, tasks, tasks_finished, attempts, recoveries, error",
    )
    .await;
    let expected = [
        "local".to_string(),
        "succeeded".to_string(),
        answer_rows.to_string(),
        stages.to_string(),
        tasks.to_string(),
        tasks.to_string(),
        tasks.to_string(),
        "0".to_string(),
        "NULL".to_string(),
    ];
    assert_eq!(cells, expected, "{GROUPED}");
    let task_rows = history(
        &ctx,
        &format!(
            "SELECT state, attempt, count(*), sum(rows_out) FROM fletch.tasks \
             WHERE query_id = '{id}' GROUP BY state, attempt"
        ),
    )
    .await;
    // Every task finished at its first attempt; the final stage's one task wrote the
    // answer and the others wrote what the next stage read.
    assert_eq!(task_rows.len(), 1, "{task_rows:?}");
    assert!(
        task_rows[0].starts_with(&format!("finished|0|{tasks}|")),
        "{task_rows:?}"
    );
    let final_rows = history(
        &ctx,
        &format!(
            "SELECT rows_out FROM fletch.tasks WHERE query_id = '{id}' \
             AND stage = (SELECT max(stage) FROM fletch.tasks WHERE query_id = '{id}')"
        ),
    )
    .await;
    assert_eq!(final_rows, [answer_rows.to_string()]);

    let failure = fletch::sql(&ctx, FAILING)
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("divides by zero");
    assert!(failure.to_string().contains("Divide by zero"), "{failure}");
    let (id, cells) = logged(&ctx, FAILING, "state, error").await;
    assert_eq!(cells[0], "failed");
    assert!(cells[1].contains("Divide by zero"), "{cells:?}");
    let failed = history(
        &ctx,
        &format!(
            "SELECT count(*) FROM fletch.tasks WHERE query_id = '{id}' \
             AND state = 'failed' AND error LIKE '%Divide by zero%'"
        ),
    )
    .await;
    assert_ne!(failed, ["0"], "the failing task is listed with its error");

    // The coordinator still places tasks on the crashed executor: the query finds it
    // dead, recovers, and answers.
    let recovered_sql = format!("{GROUPED} ORDER BY g");
    let dead = cluster.executor_urls()[2].clone();
    cluster.crash_executor(2).await.expect("crash");
    let answer = common::query(&ctx, &recovered_sql).await;
    assert_eq!(answer.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
    let (id, cells) = logged(&ctx, &recovered_sql, "state, recoveries, rows").await;
    assert_eq!(cells, ["succeeded", "1", "7"]);
    let attempts = history(
        &ctx,
        &format!(
            "SELECT max(attempt) + max(run), count(DISTINCT executor) FROM fletch.tasks \
             WHERE query_id = '{id}' AND state = 'finished'"
        ),
    )
    .await;
    assert_eq!(attempts.len(), 1);
    let (later, _) = attempts[0].split_once('|').expect("two cells");
    assert_eq!(later, "1", "the lost tasks ran again once: {attempts:?}");
    let on_dead = history(
        &ctx,
        &format!(
            "SELECT count(*) FROM fletch.tasks WHERE query_id = '{id}' \
             AND executor = '{dead}' AND state = 'finished'"
        ),
    )
    .await;
    assert_eq!(on_dead, ["0"], "nothing finished on the crashed executor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_as_many_finished_queries_as_set() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let ctx = cluster.session();
    let create = CREATE.replace(" REPLICAS 2", "");
    common::fletch_statements(&ctx, &[&create, "SET fletch.query_history = 2"]).await;
    for n in 1..=4 {
        common::query(&ctx, &format!("SELECT count(*) FROM facts WHERE id < {n}")).await;
    }
    let kept = history(
        &ctx,
        "SELECT sql FROM fletch.queries WHERE state = 'succeeded' ORDER BY started, sql",
    )
    .await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let refused = fletch::sql(&ctx, "SET fletch.query_history = 1000000").await;
    let refused = refused.map(|_| ()).expect_err("above the cap");
    assert!(refused.to_string().contains("from 0 to 10000"), "{refused}");
}
