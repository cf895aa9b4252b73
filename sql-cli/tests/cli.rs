//! The `fletch` binary's one-shot modes: what reaches stdout, stderr and the exit code.

use std::process::Command;

fn fletch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args(args)
        .env(
            "FLETCH_DATA_DIR",
            std::env::temp_dir().join("fletch-cli-test"),
        )
        .output()
        .expect("run fletch")
}

#[test]
fn csv_stdout_carries_only_results() {
    let out = fletch(&[
        "--format",
        "csv",
        "-c",
        "CREATE TABLE t (a INT, b VARCHAR) AS VALUES (2, 'y'), (1, 'x'); SELECT a, b FROM t ORDER BY a; SELECT count(*) AS n FROM t",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a,b\n1,x\n2,y\nn\n2\n"
    );
    // Banners and timings go to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("row(s) in"));
}

#[test]
fn failing_statement_sets_exit_status_and_later_statements_run() {
    let out = fletch(&[
        "-q",
        "--format",
        "csv",
        "-c",
        "SELECT * FROM missing_table; SELECT 7 AS seven",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing_table"), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "seven\n7\n");
}

#[test]
fn runs_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("q.sql");
    std::fs::write(&file, "SELECT 40 + 2 AS answer;\n").expect("write");
    let out = fletch(&[
        "-q",
        "--format",
        "json",
        "-f",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"[{"answer":42}]"#
    );
}

#[test]
fn bench_compares_with_single_node_datafusion() {
    let out = fletch(&[
        "-q",
        "bench",
        "tpch",
        "--sf",
        "0.01",
        "--queries",
        "1,6",
        "--iterations",
        "1",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "query,datafusion_s,fletch_s,ratio");
    assert!(
        lines[1].starts_with("q1,") && lines[2].starts_with("q6,"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("total,"), "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");
}
