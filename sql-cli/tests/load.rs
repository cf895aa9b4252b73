//! Load: 32 Flight SQL clients at once against one coordinator endpoint, each signed in
//! with its own session and running TPC-H SF 0.1 queries over parquet files. Every
//! answer must equal single-node DataFusion's on the same files, and afterwards the
//! executors hold no query, no buffered exchange and no memory.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::common::runtime::SpawnedTask;
use datafusion::prelude::SessionContext;
use fletch_engine::{EndpointOptions, LocalCluster, Locations, serve_coordinator_with};
use fletch_tpch as tpch;
use futures::TryStreamExt;
use futures::future::join_all;
use tonic::transport::Channel;

use common::{flight_sql_client, oracle_rows, sorted_rows};

const CLIENTS: usize = 32;
const QUERIES_PER_CLIENT: usize = 2;
/// Queries of every shape TPC-H has (scan-aggregate, multi-way joins, semi and anti
/// joins, subqueries), cheap enough that 64 of them fit a debug build's CI budget.
const QUERIES: [usize; 8] = [1, 3, 4, 5, 6, 10, 12, 14];

fn tpch_dir() -> PathBuf {
    let root = std::env::var_os("FLETCH_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fletch-test-data"));
    tpch::data_dir(&root, 0.1)
}

async fn fetch_all(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(batches)
}

/// Client `c` runs its queries one after another; returns what went wrong.
async fn client_run(url: String, c: usize, expected: Arc<Vec<Vec<String>>>) -> Vec<String> {
    let mut client = flight_sql_client(&url).await;
    if let Err(e) = client.handshake(&format!("client{c}"), "").await {
        return vec![format!("client {c}: handshake: {e}")];
    }
    let mut problems = Vec::new();
    for i in 0..QUERIES_PER_CLIENT {
        let which = (c * QUERIES_PER_CLIENT + i) % QUERIES.len();
        let n = QUERIES[which];
        let sql = tpch::query_statements(n).expect("query")[0];
        match fetch_all(&mut client, sql).await {
            Ok(batches) if sorted_rows(&batches) == expected[which] => {}
            Ok(batches) => problems.push(format!(
                "client {c}, q{n}: {} rows, expected {}",
                batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
                expected[which].len()
            )),
            Err(e) => problems.push(format!("client {c}, q{n}: {e}")),
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_at_once_all_get_the_oracles_answers() {
    let dir = tpch_dir();
    let target = dir.clone();
    tokio::task::spawn_blocking(move || tpch::generate(&target, 0.1))
        .await
        .expect("generation task")
        .expect("TPC-H generation");
    let oracle = SessionContext::new();
    tpch::register(&oracle, &dir).await.expect("oracle tables");
    let mut expected = Vec::new();
    for n in QUERIES {
        let sql = tpch::query_statements(n).expect("query")[0];
        expected.push(oracle_rows(&oracle, sql).await);
    }
    let expected = Arc::new(expected);

    let cluster = LocalCluster::start(2).await.expect("cluster");
    let options = EndpointOptions {
        locations: Locations::allow(std::slice::from_ref(&dir)).expect("location"),
        // One open endpoint: every client is the same (anonymous) user.
        max_queries_per_user: CLIENTS,
        ..EndpointOptions::default()
    };
    let server = serve_coordinator_with(
        Arc::clone(cluster.coordinator()),
        "127.0.0.1:0".parse().expect("address"),
        options,
    )
    .await
    .expect("serve");
    let mut setup = flight_sql_client(server.url()).await;
    setup.handshake("setup", "").await.expect("handshake");
    for table in tpch::TABLES {
        let path = dir.join(format!("{table}.parquet"));
        setup
            .execute_update(
                format!(
                    "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}'",
                    path.display()
                ),
                None,
            )
            .await
            .expect("CREATE EXTERNAL TABLE");
    }

    let runs = (0..CLIENTS).map(|c| {
        SpawnedTask::spawn(client_run(
            server.url().to_string(),
            c,
            Arc::clone(&expected),
        ))
    });
    let mut problems = Vec::new();
    for run in join_all(runs.map(SpawnedTask::join)).await {
        problems.extend(run.expect("client task"));
    }
    assert!(
        problems.is_empty(),
        "{} of {} answers wrong:\n{}",
        problems.len(),
        CLIENTS * QUERIES_PER_CLIENT,
        problems.join("\n")
    );

    // Released queries end their tasks asynchronously; wait (boundedly) for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        cluster.coordinator().wait_for_releases().await;
        let held: Vec<_> = cluster
            .executor_stats()
            .into_iter()
            .zip(cluster.memory())
            .filter(|(s, (used, _))| s.queries + s.buffered_bytes + s.running_tasks + used > 0)
            .collect();
        if held.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "executors still hold something: {held:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(server);
    cluster.shutdown().await;
}
