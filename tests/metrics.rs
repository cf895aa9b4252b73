//! Prometheus metrics: the coordinator's port (with its embedded executors' series)
//! and an executor's own port, scraped over HTTP during and after a query, parsed with
//! a real parser (`prometheus-parse`); counters move by what the query did, as the
//! query history independently says.

mod common;

use std::net::SocketAddr;

use futures::StreamExt;
use prometheus_parse::{Scrape, Value};

use fletch::LocalCluster;

const CREATE: &str = "CREATE TABLE facts PARTITION BY HASH (id) INTO 4 FRAGMENTS AS \
     SELECT value AS id, value % 7 AS g FROM generate_series(1, 40000)";
/// Many batches, read through an exchange: the query is still running after the first.
const QUERY: &str = "SELECT f.id, f.g, d.g AS h FROM facts f JOIN facts d ON f.id = d.id + 1";

/// `GET /metrics` on `addr`, parsed.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = common::http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    let kind = headers.iter().find(|(k, _)| k == "content-type");
    assert!(
        kind.is_some_and(|(_, v)| v.starts_with("text/plain")),
        "{headers:?}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The sum of `metric`'s samples whose labels include every `(name, value)` of `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => 0.0,
        })
        .sum()
}

fn histogram_count(scrape: &Scrape, metric: &str) -> f64 {
    value(scrape, &format!("{metric}_count"), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_the_query_did() {
    let mut cluster = LocalCluster::start(2).await.expect("cluster");
    let coordinator = cluster
        .serve_http(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .expect("coordinator HTTP port");
    let executor = cluster
        .serve_executor_metrics(0)
        .await
        .expect("executor metrics port");
    let executor_url = cluster.executor_urls()[0].clone();
    let ctx = cluster.session();
    common::fletch_statements(&ctx, &[CREATE, "SET fletch.result_buffer = 0"]).await;

    let before = scrape(coordinator).await;
    assert_eq!(
        value(&before, "fletch_executors", &[("state", "alive")]),
        2.0
    );
    assert!(value(&before, "fletch_fragment_bytes", &[]) > 0.0);
    assert!(value(&before, "fletch_memory_limit_bytes", &[]) > 0.0);
    let running_before = value(&before, "fletch_queries_running", &[]);

    let mut results = fletch::sql(&ctx, QUERY)
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("start");
    let first = results.next().await.expect("a batch").expect("no error");
    let mut rows = first.num_rows();
    let during = scrape(coordinator).await;
    assert_eq!(
        value(&during, "fletch_queries_running", &[]),
        running_before + 1.0,
        "the query is running while its rows are read"
    );
    while let Some(batch) = results.next().await {
        rows += batch.expect("no error").num_rows();
    }
    drop(results);
    assert_eq!(rows, 39999);

    let after = scrape(coordinator).await;
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(value(&after, "fletch_queries_running", &[]), running_before);
    assert_eq!(
        delta("fletch_queries_total", &[("state", "succeeded")]),
        1.0
    );
    assert_eq!(
        histogram_count(&after, "fletch_query_duration_seconds")
            - histogram_count(&before, "fletch_query_duration_seconds"),
        1.0
    );

    // The history says what the query did; the counters must agree with it.
    let id = common::rows(
        &common::query(
            &ctx,
            &format!("SELECT query_id FROM fletch.queries WHERE sql = '{QUERY}'"),
        )
        .await,
    );
    let tasks = common::rows(
        &common::query(
            &ctx,
            &format!(
                "SELECT count(*), sum(bytes_read_remote), sum(bytes_read_local) \
                 FROM fletch.tasks WHERE query_id = '{}' AND state = 'finished'",
                id[0]
            ),
        )
        .await,
    );
    let figures: Vec<f64> = tasks[0]
        .split('|')
        .map(|n| n.parse().expect("a number"))
        .collect();
    let (finished, remote, local) = (figures[0], figures[1], figures[2]);
    assert!(finished > 0.0 && remote > 0.0, "{tasks:?}");
    assert_eq!(
        delta("fletch_tasks_total", &[("state", "finished")]),
        finished
    );
    assert_eq!(
        delta("fletch_exchange_bytes_total", &[("origin", "remote")]),
        remote
    );
    assert_eq!(
        delta("fletch_exchange_bytes_total", &[("origin", "local")]),
        local
    );
    // Every finished task was counted by its executor too.
    assert_eq!(
        delta("fletch_executor_tasks_total", &[("state", "finished")]),
        finished
    );

    // The executor's own port shows the same series as the coordinator's port shows
    // under its label.
    let own = scrape(executor).await;
    let labelled = [("executor", executor_url.as_str()), ("state", "finished")];
    assert_eq!(
        value(&own, "fletch_executor_tasks_total", &labelled),
        value(&after, "fletch_executor_tasks_total", &labelled)
    );
    assert!(value(&own, "fletch_executor_memory_limit_bytes", &[]) > 0.0);
    assert!(value(&own, "fletch_executor_fragment_bytes", &[]) > 0.0);
}
