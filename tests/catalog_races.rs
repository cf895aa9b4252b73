//! Catalog changes are atomic with respect to each other: the same DDL fired from 32
//! sessions at once never fails because another session won the race, and leaves
//! exactly one table (or none).

mod common;

use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use fletch::LocalCluster;
use futures::future::join_all;

const SESSIONS: usize = 32;

async fn run(ctx: &SessionContext, statement: &str) -> Result<()> {
    fletch::sql(ctx, statement)
        .await?
        .collect()
        .await
        .map(|_| ())
}

/// Runs `statement` from every session at once; the errors, if any.
async fn everywhere(sessions: &[SessionContext], statement: &str) -> Vec<String> {
    join_all(sessions.iter().map(|ctx| run(ctx, statement)))
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect()
}

async fn tables_named(ctx: &SessionContext, name: &str) -> usize {
    let batches = common::query(
        ctx,
        &format!("SELECT count(*) FROM fletch.tables WHERE table_name = '{name}'"),
    )
    .await;
    common::rows(&batches)
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ddl_from_32_sessions_at_once_never_fails() {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let sessions: Vec<SessionContext> = (0..SESSIONS).map(|_| cluster.session()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "id,name\n1,ada\n2,grace\n").expect("write csv");
    let location = csv.display();

    let statements = [
        (
            format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS people STORED AS CSV LOCATION '{location}' \
                 OPTIONS ('format.has_header' 'true')"
            ),
            "people",
            1,
        ),
        (
            "CREATE TABLE IF NOT EXISTS numbers AS SELECT value AS n FROM generate_series(1, 100)"
                .to_string(),
            "numbers",
            1,
        ),
        (
            "CREATE OR REPLACE VIEW small AS SELECT 1 AS one".to_string(),
            "small",
            1,
        ),
        ("DROP TABLE IF EXISTS people".to_string(), "people", 0),
        ("DROP TABLE IF EXISTS numbers".to_string(), "numbers", 0),
        ("DROP VIEW IF EXISTS small".to_string(), "small", 0),
    ];
    for (statement, table, expected) in &statements {
        let errors = everywhere(&sessions, statement).await;
        assert!(errors.is_empty(), "{statement}: {errors:?}");
        assert_eq!(
            tables_named(&sessions[0], table).await,
            *expected,
            "after {statement}"
        );
    }
    cluster.shutdown().await;
}
