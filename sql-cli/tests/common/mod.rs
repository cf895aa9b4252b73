//! Helpers shared by the tests that run `fletch` processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::SessionContext;
use tonic::transport::Channel;

/// Each row as `v1|v2|...`, sorted (for queries without ORDER BY).
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = fletch_tpch::rows_as_text(batches).expect("rows");
    rows.sort();
    rows
}

/// A single-node DataFusion session with table `t` made by the query `data`.
pub async fn oracle_with_table_t(data: &str) -> SessionContext {
    let oracle = SessionContext::new();
    oracle
        .sql(&format!("CREATE TABLE t AS {data}"))
        .await
        .expect("oracle table")
        .collect()
        .await
        .expect("oracle table");
    oracle
}

/// Single-node DataFusion's answer to `sql`, as [`sorted_rows`].
pub async fn oracle_rows(oracle: &SessionContext, sql: &str) -> Vec<String> {
    let batches = oracle
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    sorted_rows(&batches)
}

/// A child process killed and reaped on drop.
pub struct Process {
    pub child: Child,
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (such as `-TERM`) to the process.
pub fn send_signal(process: &Process, signal: &str) {
    let pid = process.child.id().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Starts `fletch args...` and waits for its `listening on URL` line.
pub fn start(args: &[&str]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fletch");
    let stdout = child.stdout.take().expect("stdout");
    let mut process = Process {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("fletch {args:?} printed {line:?}"));
    process.url = url.to_string();
    process
}

/// One statement through the shell: `fletch FLAGS --connect URL -q --format csv -c SQL`.
pub fn connect_sql(url: &str, flags: &[&str], sql: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args(flags)
        .args(["--connect", url, "-q", "--format", "csv", "-c", sql])
        .output()
        .expect("run fletch --connect")
}

/// A Flight SQL client connected to the endpoint at `url`.
pub async fn flight_sql_client(url: &str) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    FlightSqlServiceClient::new(channel)
}

/// A self-signed certificate for `names` and its key, written as PEM files in `dir`;
/// returns their paths.
pub fn self_signed_files(dir: &std::path::Path, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let path = |p: std::path::PathBuf| p.to_str().expect("utf-8 path").to_string();
    (path(cert), path(key))
}

/// Runs `run` (a `fletch --connect` of one statement) until the coordinator lists
/// `executors` alive executors (at most 30 s).
pub fn wait_until_alive(run: impl Fn(&str) -> std::process::Output, executors: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let expected = format!("alive\n{executors}\n");
    loop {
        let out = run("SELECT count(*) AS alive FROM fletch.executors WHERE state = 'alive'");
        if String::from_utf8_lossy(&out.stdout) == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A cluster secret written to a file in `dir`; returns its path.
pub fn cluster_secret_file(dir: &std::path::Path) -> String {
    let path = dir.join("cluster-secret");
    std::fs::write(&path, format!("{}\n", uuid_like_secret())).expect("write the secret");
    path.to_str().expect("utf-8 path").to_string()
}

/// A secret that differs per test run.
fn uuid_like_secret() -> String {
    format!(
        "test-secret-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    )
}

/// Creates a prepared statement of `sql` through the raw Flight SQL action (the
/// arrow-flight client keeps the handle private); returns its handle.
pub async fn prepared_statement_handle(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> prost::bytes::Bytes {
    use arrow_flight::sql::ProstMessageExt;
    use futures::TryStreamExt;
    use prost::Message;
    let request = arrow_flight::sql::ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let replies: Vec<arrow_flight::Result> = client
        .do_action(arrow_flight::Action::new(
            "CreatePreparedStatement",
            request.as_any().encode_to_vec(),
        ))
        .await
        .expect("prepare")
        .try_collect()
        .await
        .expect("prepare reply");
    let created: arrow_flight::sql::ActionCreatePreparedStatementResult =
        arrow_flight::sql::Any::decode(replies[0].body.clone())
            .expect("an Any")
            .unpack()
            .expect("a result")
            .expect("of the right type");
    created.prepared_statement_handle
}

/// Heartbeat flags for test clusters. Generous for loaded CI machines: a live executor
/// must never look lost.
pub const HEARTBEATS: [&str; 4] = ["--heartbeat-ms", "250", "--lost-after", "8"];

/// An executor process (256 MB, 2 slots) joining `coordinator`, with `flags` (such as
/// `--cluster-secret-file F`) before its subcommand.
pub fn start_executor(coordinator: &str, flags: &[&str]) -> Process {
    let mut args = flags.to_vec();
    args.extend([
        "--memory",
        "256MB",
        "executor",
        "--coordinator",
        coordinator,
        "--listen",
        "127.0.0.1:0",
        "--slots",
        "2",
    ]);
    args.extend(HEARTBEATS);
    start(&args)
}
