//! The web UI in a real browser: headless Chromium (Debian's `chromium`, installed here
//! when missing) renders the overview and the page of a query held mid-run, then of
//! the same query once it has finished; the test reads the rendered DOM (stage boxes,
//! task counts that advance, executors listed) and writes a screenshot of each page
//! under the target directory. The pages are whole as served, before any script runs
//! (Chromium's DOM dump needs scripts on, so that is read over plain HTTP), and ask for
//! a sign-in when the cluster has users.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use datafusion::prelude::SessionContext;
use futures::StreamExt;

use fletch::LocalCluster;

const CREATE: &str = "CREATE TABLE facts PARTITION BY HASH (id) INTO 4 FRAGMENTS AS \
     SELECT value AS id, value % 7 AS g FROM generate_series(1, 1000000)";
/// Sorted in four tasks, merged in one: read slowly, the merge waits on its reader
/// while the sorts have finished.
const QUERY: &str = "SELECT id, g FROM facts ORDER BY id";

/// Debian's Chromium, installed with apt-get the first time it is missing.
fn chromium() -> &'static Path {
    static CHROMIUM: OnceLock<PathBuf> = OnceLock::new();
    CHROMIUM.get_or_init(|| {
        let path = PathBuf::from("/usr/bin/chromium");
        if !path.exists() {
            let installed = Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .expect("run apt-get to install chromium (the browser test needs it)");
            assert!(installed.success(), "apt-get install chromium failed");
        }
        assert!(
            path.exists(),
            "no {} after installing chromium",
            path.display()
        );
        path
    })
}

/// Runs headless Chromium on `url` with `extra` arguments; its standard output.
fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The DOM of `url` once its scripts have run (for up to a second of page time).
fn rendered(url: &str) -> String {
    browse(url, &["--virtual-time-budget=1000", "--dump-dom"])
}

fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-ui");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let path = dir.join(name);
    browse(
        url,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", path.display()),
        ],
    );
    assert!(path.exists(), "no screenshot at {}", path.display());
    path
}

/// Each stage box's `(tasks done, tasks)`, as the DOM shows them.
fn stage_counts(dom: &str) -> Vec<(usize, usize)> {
    dom.split("data-tasks-done=\"")
        .skip(1)
        .map(|rest| {
            let (done, rest) = rest.split_once('"').expect("a count");
            let tasks = rest
                .split_once("data-tasks=\"")
                .and_then(|(_, t)| t.split_once('"'))
                .map(|(t, _)| t)
                .expect("a total");
            (
                done.parse().expect("done is a number"),
                tasks.parse().expect("tasks is a number"),
            )
        })
        .collect()
}

async fn running_query_id(ctx: &SessionContext) -> String {
    let ids = common::rows(
        &common::query(
            ctx,
            &format!(
                "SELECT query_id FROM fletch.queries WHERE sql = '{QUERY}' AND state = 'running'"
            ),
        )
        .await,
    );
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_the_cluster_and_a_query_as_it_runs() {
    let mut cluster = LocalCluster::start(2).await.expect("cluster");
    let port = cluster
        .serve_http(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .expect("HTTP port");
    let base = format!("http://{port}");
    let ctx = cluster.session();
    common::fletch_statements(&ctx, &[CREATE, "SET fletch.result_buffer = 0"]).await;

    let mut results = fletch::sql(&ctx, QUERY)
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("start");
    let mut rows = results
        .next()
        .await
        .expect("a batch")
        .expect("no error")
        .num_rows();
    let id = running_query_id(&ctx).await;
    let page = format!("{base}/query/{id}");

    let held = rendered(&page);
    let counts = stage_counts(&held);
    assert!(counts.len() >= 2, "a box per stage: {held}");
    let done: usize = counts.iter().map(|c| c.0).sum();
    let tasks: usize = counts.iter().map(|c| c.1).sum();
    assert!(done < tasks, "the query is not done while held: {counts:?}");
    assert!(
        held.contains("class=\"exchange\""),
        "exchanges drawn as arrows"
    );
    assert!(
        held.contains("Live: refreshing every second."),
        "the script ran: {held}"
    );
    assert!(held.contains("ORDER BY id"), "the SQL is shown");
    let overview = rendered(&format!("{base}/"));
    for url in cluster.executor_urls() {
        assert!(
            overview.contains(&format!("<td>{url}</td>")),
            "{url} listed: {overview}"
        );
    }
    assert!(overview.contains("<td>facts</td>"), "the table is listed");
    assert!(
        overview.contains(&format!("/query/{id}")),
        "the query is listed"
    );
    let shots = [
        screenshot(&page, "query-running.png"),
        screenshot(&format!("{base}/"), "overview.png"),
    ];

    while let Some(batch) = results.next().await {
        rows += batch.expect("no error").num_rows();
    }
    drop(results);
    assert_eq!(rows, 1_000_000);
    let finished = rendered(&page);
    let after = stage_counts(&finished);
    assert_eq!(after.len(), counts.len());
    assert!(
        after.iter().all(|(done, tasks)| done == tasks),
        "every task done at the end: {after:?}"
    );
    assert!(
        after.iter().map(|c| c.0).sum::<usize>() > done,
        "the counts advanced"
    );
    assert!(finished.contains("succeeded"), "{finished}");
    assert!(
        finished.contains("Up to date"),
        "the script stops refreshing"
    );
    let shot = screenshot(&page, "query-finished.png");
    eprintln!("screenshots: {shots:?} {shot:?}");

    // Without JavaScript (or before ui.js loads) a browser shows the page as served:
    // whole, saying that it does not refresh itself.
    let (status, _, served) = common::http_get(port, &format!("/query/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(stage_counts(&served), after);
    assert!(served.contains("reload the page"), "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_users_every_page_asks_for_a_sign_in() {
    let mut cluster = LocalCluster::start(1).await.expect("cluster");
    let credentials = fletch::Credentials {
        user: "ada".to_string(),
        password: "correct horse".to_string(),
    };
    let users = fletch::Users::single_admin(&credentials).expect("a user");
    let port = cluster
        .serve_http(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(std::sync::Arc::new(users)),
        )
        .await
        .expect("HTTP port");
    use base64::Engine;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:correct horse")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:wrong")
    );
    for path in ["/", "/metrics", "/query/nope", "/static/ui.js"] {
        let (status, headers, _) = common::http_get(port, path, None).await;
        assert_eq!(status, 401, "{path} without credentials");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic")),
            "{headers:?}"
        );
        let (status, _, _) = common::http_get(port, path, Some(&bad)).await;
        assert_eq!(status, 401, "{path} with a wrong password");
    }
    let (status, _, body) = common::http_get(port, "/", Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Executors (1)"), "{body}");
    // What a request names is shown escaped, never as markup.
    let (status, _, body) = common::http_get(port, "/query/%3Cscript%3E", Some(&good)).await;
    assert_eq!(status, 404);
    assert!(body.contains("<code>&lt;script&gt;</code>"), "{body}");
}
