//! Real Python clients against a `fletch serve` process that requires a user and
//! password: ADBC's Flight SQL driver through the DBAPI (its Basic-to-Bearer
//! handshake), and pyarrow.flight speaking Flight SQL
//! (`tests/python/flight_sql_clients.py`), in plain text and over TLS with a
//! self-signed certificate; both also read a result served straight from an executor.
//! The test installs the clients when they are missing — a virtualenv at
//! `FLETCH_PYTHON_VENV` (default `~/.cache/fletch/python`), pinned versions — and
//! compares every answer with single-node DataFusion's.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::oracle_rows;

const PACKAGES: [&str; 3] = [
    "adbc-driver-flightsql==1.13.0",
    "adbc-driver-manager==1.13.0",
    "pyarrow==26.0.1",
];
/// The same data and queries as the script's.
const DATA: &str = "SELECT value AS k, value % 7 AS g, 'row ' || CAST(value AS VARCHAR) AS label \
                    FROM generate_series(1, 2000)";
const QUERY: &str = "SELECT g, count(*) AS n, sum(k) AS s, max(label) AS top FROM t GROUP BY g";

/// A Python with the client packages, installed first if needed: once per test
/// process, since the tests here run in parallel and two installs into one virtualenv
/// collide.
fn python_with_clients() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(install_python_clients).clone()
}

fn install_python_clients() -> PathBuf {
    let venv = std::env::var_os("FLETCH_PYTHON_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fletch/python")))
        .expect("FLETCH_PYTHON_VENV or HOME");
    let python = venv.join("bin/python");
    let ready = |python: &PathBuf| {
        Command::new(python)
            .args([
                "-c",
                "import adbc_driver_flightsql, adbc_driver_manager, pyarrow",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 must be installed to create the client virtualenv");
    assert!(created.success(), "python3 -m venv {}", venv.display());
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .args(PACKAGES)
        .status()
        .expect("run pip");
    assert!(
        installed.success(),
        "installing {PACKAGES:?} into {} failed (PyPI must be reachable)",
        venv.display()
    );
    assert!(
        ready(&python),
        "the packages do not import after installing"
    );
    python
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// Runs the client script against a `fletch serve` process started with
/// `server_args` (and `--user analyst --password pa55word`), at the server's URL with
/// `scheme` (and `host` in place of 127.0.0.1); `ca` is the certificate to trust.
fn run_clients(
    server_args: &[&str],
    scheme: &str,
    host: &str,
    ca: Option<&str>,
) -> serde_json::Value {
    let python = python_with_clients();
    let mut args = vec![
        "-q",
        "--executors",
        "2",
        "--user",
        "analyst",
        "--password",
        "pa55word",
    ];
    args.extend_from_slice(server_args);
    args.extend(["serve", "--listen", "127.0.0.1:0"]);
    let server = common::start(&args);
    let address = server
        .url
        .split_once("://")
        .map(|(_, address)| address.replace("127.0.0.1", host))
        .expect("a URL");
    let url = format!("{scheme}://{address}");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/flight_sql_clients.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .args([url.as_str(), "analyst", "pa55word"])
        .args(ca)
        .output()
        .expect("run the Python clients");
    assert!(
        out.status.success(),
        "the Python clients failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

/// Checks what the clients saw against single-node DataFusion.
async fn assert_oracles_answers(seen: &serde_json::Value) {
    let oracle = common::oracle_with_table_t(DATA).await;
    let expected = oracle_rows(&oracle, QUERY).await;
    assert_eq!(strings(&seen["adbc_query"]), expected);
    assert_eq!(strings(&seen["adbc_from_executor"]), expected);
    assert_eq!(strings(&seen["pyarrow_flight_query"]), expected);
    assert_eq!(strings(&seen["pyarrow_flight_from_executor"]), expected);
    let locations = strings(&seen["pyarrow_flight_locations"]);
    assert!(
        locations.len() == 2
            && locations[0].starts_with("grpc+")
            && locations[1] == "arrow-flight-reuse-connection://?",
        "{locations:?}"
    );
    for bound in [1990, 10] {
        let sql = format!("SELECT k, label FROM t WHERE k > {bound} AND g = 3");
        let expected = oracle_rows(&oracle, &sql).await;
        assert_eq!(
            strings(&seen[format!("adbc_parameters_{bound}").as_str()]),
            expected
        );
        assert_eq!(
            strings(&seen[format!("adbc_qmark_{bound}").as_str()]),
            expected
        );
    }
    assert_eq!(
        seen["adbc_types_default"],
        serde_json::json!(["int64", "int64", "int64", "string"])
    );
    assert_eq!(
        seen["adbc_types_view"],
        serde_json::json!(["int64", "int64", "int64", "string_view"])
    );
    let refused = seen["adbc_wrong_password"]
        .as_str()
        .expect("an error message");
    assert!(refused.contains("wrong user or password"), "{refused}");
    let bad = seen["adbc_bad_sql"].as_str().expect("an error message");
    assert!(
        bad.contains("INVALID_ARGUMENT") && bad.contains("SELEC"),
        "{bad}"
    );
    assert_eq!(
        seen["get_objects"],
        serde_json::json!([["datafusion", "public", "t", ["k", "g", "label"]]])
    );
    assert_eq!(seen["table_schema"], serde_json::json!(["k", "g", "label"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_adbc_and_pyarrow_flight_get_the_oracles_answers() {
    let seen = run_clients(&[], "grpc", "127.0.0.1", None);
    assert_oracles_answers(&seen).await;
}

/// The same clients over TLS, trusting a self-signed certificate made here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_work_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::self_signed_files(dir.path(), &["localhost"]);
    let seen = run_clients(
        &["--tls-cert", &cert, "--tls-key", &key],
        "grpc+tls",
        "localhost",
        Some(&cert),
    );
    assert_oracles_answers(&seen).await;
}
