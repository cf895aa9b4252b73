//! Real Python clients against a `fletch serve` process that requires a user and
//! password: ADBC's Flight SQL driver through the DBAPI (its Basic-to-Bearer
//! handshake), and pyarrow.flight speaking Flight SQL (`tests/python/flight_sql_clients.py`). The test installs them when they are
//! missing — a virtualenv at `FLETCH_PYTHON_VENV` (default `~/.cache/fletch/python`),
//! pinned versions — and compares every answer with single-node DataFusion's.

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

/// A Python with the client packages, installed first if needed.
fn python_with_clients() -> PathBuf {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_adbc_and_pyarrow_flight_get_the_oracles_answers() {
    let python = python_with_clients();
    let server = common::start(&[
        "-q",
        "--executors",
        "2",
        "--user",
        "analyst",
        "--password",
        "pa55word",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = server.url.replace("http://", "grpc://");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/flight_sql_clients.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .args([url.as_str(), "analyst", "pa55word"])
        .output()
        .expect("run the Python clients");
    assert!(
        out.status.success(),
        "the Python clients failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON from the script");

    let oracle = common::oracle_with_table_t(DATA).await;
    let expected = oracle_rows(&oracle, QUERY).await;
    assert_eq!(strings(&seen["adbc_query"]), expected);
    assert_eq!(strings(&seen["pyarrow_flight_query"]), expected);
    for bound in [1990, 10] {
        let sql = format!("SELECT k, label FROM t WHERE k > {bound} AND g = 3");
        assert_eq!(
            strings(&seen[format!("adbc_parameters_{bound}").as_str()]),
            oracle_rows(&oracle, &sql).await
        );
    }
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
