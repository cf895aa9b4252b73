//! Helpers shared by the integration tests: the single-node oracle, result comparison
//! and the TPC-H fixture.

#![allow(dead_code)]

pub mod answers;
pub mod tpcds;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::sync::OnceCell;

/// Each row of `batches` rendered as one string, cells separated by `|`.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    fletch_tpch::rows_as_text(batches).expect("formattable columns")
}

pub fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// Runs every statement of `sql` and returns the rows of the last one that produced a
/// result set.
pub async fn run_statements(ctx: &SessionContext, statements: &[&str]) -> Result<Vec<RecordBatch>> {
    let mut answer = Vec::new();
    for statement in statements {
        let batches = statement_frame(ctx, statement).await?.collect().await?;
        if batches.iter().any(|b| b.num_columns() > 0) {
            answer = batches;
        }
    }
    Ok(answer)
}

/// One statement's data frame: through `fletch::sql` on a Fletch session (which
/// refuses DataFusion's own coordinator-held `CREATE TABLE`), `SessionContext::sql` on
/// the single-node oracle.
pub async fn statement_frame(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
    let fletch_session = ctx
        .state()
        .config()
        .get_extension::<fletch::Coordinator>()
        .is_some();
    if fletch_session {
        fletch::sql(ctx, sql).await
    } else {
        ctx.sql(sql).await
    }
}

/// Runs one statement to completion, through `fletch::sql` on a Fletch session and
/// `SessionContext::sql` on the single-node oracle; panics with the error if it fails.
pub async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    let df = statement_frame(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"));
    df.collect()
        .await
        .unwrap_or_else(|e| panic!("running {sql}: {e}"))
}

/// Runs each statement through `fletch::sql` (Fletch's own statements included);
/// panics with the statement and error if one fails.
pub async fn fletch_statements(ctx: &SessionContext, statements: &[&str]) {
    for statement in statements {
        fletch::sql(ctx, statement)
            .await
            .unwrap_or_else(|e| panic!("planning {statement}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("running {statement}: {e}"));
    }
}

/// The distributed physical plan of `sql` and its indented text.
pub async fn fletch_plan(ctx: &SessionContext, sql: &str) -> (Arc<dyn ExecutionPlan>, String) {
    let plan = fletch::sql(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("physical planning {sql}: {e}"));
    let text = displayable(plan.as_ref()).indent(true).to_string();
    (plan, text)
}

/// A plain single-node DataFusion session: the oracle.
pub fn oracle() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_information_schema(true))
}

/// `name` under the directory generated test data is shared in (`FLETCH_TEST_DATA`,
/// by default `fletch-test-data` in the temporary directory).
pub fn test_data_dir(name: &str) -> PathBuf {
    std::env::var_os("FLETCH_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fletch-test-data"))
        .join(name)
}

/// TPC-H at scale factor 0.1, generated once per test process into a shared directory.
pub async fn tpch_sf01() -> &'static PathBuf {
    static DIR: OnceCell<PathBuf> = OnceCell::const_new();
    DIR.get_or_init(|| async {
        let dir = test_data_dir("tpch-sf0.1");
        let target = dir.clone();
        tokio::task::spawn_blocking(move || fletch_tpch::generate(&target, 0.1))
            .await
            .expect("generation task")
            .expect("TPC-H generation");
        dir
    })
    .await
}

/// One HTTP/1.0 `GET` of `path` on `addr`, with `authorization` as that header when
/// given: the status code, the headers (lower-cased names) and the body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP port");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}
