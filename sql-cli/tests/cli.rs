//! The `fletch` binary's one-shot modes: what reaches stdout, stderr and the exit code.

mod common;

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

/// Fails the test with the command's stderr unless it succeeded.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command failed, and its stderr says `text`.
fn assert_failed_saying(out: &std::process::Output, text: &str) {
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(text), "stderr: {stderr}");
}

#[test]
fn csv_stdout_carries_only_results() {
    let out = fletch(&[
        "--format",
        "csv",
        "-c",
        "CREATE TABLE t (a INT, b VARCHAR) AS VALUES (2, 'y'), (1, 'x'); SELECT a, b FROM t ORDER BY a; SELECT count(*) AS n FROM t",
    ]);
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a,b\n1,x\n2,y\n\nn\n2\n",
        "each statement's CSV, a blank line between them"
    );
    // Banners, loads and timings go to stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loaded 2 rows ("), "{stderr}");
    assert!(stderr.contains("1 row in"), "{stderr}");
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
    assert_failed_saying(&out, "Error in statement 1 (line 1)");
    assert_failed_saying(&out, "missing_table");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "seven\n7\n");
}

#[test]
fn bail_stops_at_the_first_failure_and_errors_name_the_file_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("script.sql");
    std::fs::write(
        &file,
        "SELECT 1 AS one;\n\n-- the broken one\nSELECT *\nFROM nowhere;\nSELECT 3 AS three;\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let out = fletch(&["-q", "--format", "csv", "--bail", "-f", path]);
    assert_failed_saying(&out, &format!("Error in {path}:3 (statement 2)"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n");
    let out = fletch(&["-q", "--format", "csv", "-f", path]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n\nthree\n3\n");
}

/// Byte for byte: empty answers, NULLs, separators between statements.
#[test]
fn one_shot_formats_keep_empty_answers_nulls_and_statement_boundaries() {
    let sql = "SELECT 1 AS x WHERE false; SELECT 1 AS x, NULL AS n, 'a,b' AS s";
    let stdout = |format: &str| {
        let out = fletch(&["-q", "--format", format, "-c", sql]);
        assert_succeeded(&out);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(stdout("csv"), "x\n\nx,n,s\n1,,\"a,b\"\n");
    assert_eq!(stdout("tsv"), "x\n\nx\tn\ts\n1\t\ta,b\n");
    assert_eq!(stdout("json"), "[]\n[{\"x\":1,\"n\":null,\"s\":\"a,b\"}]\n");
    assert_eq!(stdout("ndjson"), "{\"x\":1,\"n\":null,\"s\":\"a,b\"}\n");
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
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"[{"answer":42}]"#
    );
}

#[test]
fn bench_compares_with_single_node_datafusion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = fletch(&[
        "-q",
        "bench",
        "tpch",
        "--sf",
        "0.01",
        "--executors",
        "3",
        "--queries",
        "1,6",
        "--iterations",
        "2",
        "--set",
        "fletch.stage_recovery=false",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "query,datafusion_s,fletch_s,ratio");
    assert!(
        lines[1].starts_with("q1,") && lines[2].starts_with("q6,"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("total,"), "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("report is JSON");
    assert_eq!(report["settings"]["executors"], 3);
    assert_eq!(report["settings"]["iterations"], 2);
    assert_eq!(
        report["settings"]["fletch_settings"],
        serde_json::json!(["fletch.stage_recovery=false"])
    );
    assert_eq!(report["datafusion_version"], datafusion::DATAFUSION_VERSION);
    assert!(report["cores"].as_u64().is_some_and(|c| c >= 1), "{report}");
    let in_checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.git")
        .exists();
    if in_checkout {
        let revision = report["git_revision"].as_str().expect("git revision");
        let hex = revision.trim_end_matches("+dirty");
        assert!(
            hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{revision}"
        );
    }
    let queries = report["queries"].as_array().expect("queries array");
    assert_eq!(queries.len(), 2);
    assert_eq!(queries[1]["query"], 6);
    assert_eq!(
        queries[0]["fletch_runs_s"].as_array().map(Vec::len),
        Some(2)
    );
    let total_fletch = report["total"]["fletch_s"].as_f64().expect("total");
    let summed: f64 = queries
        .iter()
        .filter_map(|q| q["fletch_median_s"].as_f64())
        .sum();
    assert!((total_fletch - summed).abs() < 1e-9, "{report}");
}

#[test]
fn bench_over_cached_tables_reports_both_ratios_and_the_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("cached.json");
    let out = fletch(&[
        "-q",
        "bench",
        "tpch",
        "--sf",
        "0.01",
        "--cached",
        "--queries",
        "3,18",
        "--iterations",
        "1",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "query,datafusion_memory_s,fletch_cached_s,ratio,datafusion_parquet_s,ratio_to_parquet"
    );
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[3].starts_with("total,") && lines[3].split(',').count() == 6,
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("report is JSON");
    assert_eq!(report["settings"]["cached"], true);
    let load = &report["load"];
    assert!(
        load["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    let bytes = load["bytes_per_executor"]
        .as_array()
        .expect("bytes per executor");
    assert_eq!(bytes.len(), 2);
    assert!(
        bytes.iter().all(|b| b.as_u64().is_some_and(|b| b > 0)),
        "{report}"
    );
    let total = &report["total"];
    let ratio = total["ratio_to_parquet"]
        .as_f64()
        .expect("ratio to parquet");
    let expected = total["fletch_s"].as_f64().expect("fletch")
        / total["datafusion_parquet_s"].as_f64().expect("parquet");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
}

#[test]
fn bench_rejects_unknown_queries() {
    let out = fletch(&["-q", "bench", "tpch", "--sf", "0.01", "--queries", "23"]);
    assert_failed_saying(&out, "queries 1 to 22, not 23");
}

#[test]
fn bench_rejects_a_setting_that_does_not_exist() {
    let out = fletch(&[
        "-q",
        "bench",
        "tpch",
        "--sf",
        "0.01",
        "--queries",
        "6",
        "--set",
        "fletch.no_such_setting=1",
    ]);
    assert_failed_saying(&out, "no_such_setting");
}

#[test]
fn settings_come_from_defaults_then_the_config_file_then_the_environment_then_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("fletch.toml");
    std::fs::write(
        &file,
        "executors = 3\nformat = \"csv\"\n[executor]\nslots = 5\n",
    )
    .expect("write config");
    let count = "SELECT count(*) AS n FROM fletch.executors";
    let run = |env: Option<&str>, extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fletch"));
        command
            .env("FLETCH_DATA_DIR", dir.path())
            .env_remove("FLETCH_EXECUTORS")
            .args(["-q", "--config", file.to_str().expect("utf-8 path")])
            .args(extra)
            .args(["-c", count]);
        if let Some(executors) = env {
            command.env("FLETCH_EXECUTORS", executors);
        }
        let out = command.output().expect("run fletch");
        assert_succeeded(&out);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(run(None, &[]), "n\n3\n", "the file over the default (2)");
    assert_eq!(
        run(Some("1"), &[]),
        "n\n1\n",
        "the environment over the file"
    );
    assert_eq!(
        run(Some("1"), &["--executors", "2"]),
        "n\n2\n",
        "a flag over the environment"
    );

    std::fs::write(&file, "executers = 3\n").expect("write config");
    let out = fletch(&[
        "--config",
        file.to_str().expect("utf-8 path"),
        "-c",
        "SELECT 1",
    ]);
    assert_failed_saying(&out, "unknown setting \"executers\"");
}

fn help(args: &[&str]) -> String {
    let out = fletch(args);
    assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether a `--help` text lists `flag` as an option (not just mentions it).
fn lists(help: &str, flag: &str) -> bool {
    help.lines().any(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix("-q, ").unwrap_or(line);
        line.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '<']))
    })
}

#[test]
fn each_command_lists_only_the_options_it_uses() {
    let check = |args: &[&str], used: &[&str], unused: &[&str]| {
        let text = help(args);
        for flag in used {
            assert!(lists(&text, flag), "{args:?} lacks {flag}:\n{text}");
        }
        for flag in unused {
            assert!(!lists(&text, flag), "{args:?} lists {flag}:\n{text}");
        }
    };
    check(
        &["serve", "--help"],
        &[
            "--executors",
            "--memory",
            "--users",
            "--tls-cert",
            "--allow-location",
        ],
        &[
            "--max-task-partitions",
            "--cluster-secret-file",
            "--data-dir",
            "--tls-ca",
        ],
    );
    check(
        &["bench", "tpch", "--help"],
        &["--executors", "--memory", "--sf"],
        &[
            "--tls-cert",
            "--users",
            "--user",
            "--session-idle-secs",
            "--max-request-size",
        ],
    );
    check(
        &["executor", "--help"],
        &["--memory", "--cluster-secret-file", "--max-task-partitions"],
        &["--executors", "--users", "--user", "--data-dir"],
    );
    check(
        &["--help"],
        &["--maxrows", "--format", "--connect", "--user", "--tls-ca"],
        &[
            "--users",
            "--tls-cert",
            "--allow-location",
            "--cluster-secret-file",
        ],
    );
}

#[test]
fn an_option_for_another_command_is_refused_by_name() {
    let out = fletch(&["bench", "tpch", "--tls-cert", "cert.pem", "--sf", "0.01"]);
    assert_failed_saying(&out, "--tls-cert does not apply to `fletch bench`");
    let out = fletch(&["--users", "users.toml", "-c", "SELECT 1"]);
    assert_failed_saying(&out, "--users does not apply to the shell");
}

/// Shared options go after the subcommand as well as before it.
#[test]
fn shared_options_are_accepted_after_the_subcommand() {
    let server = common::start(&[
        "-q",
        "serve",
        "--executors",
        "3",
        "--memory",
        "256MiB",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = common::connect_sql(
        &server.url,
        &[],
        "SELECT count(*) AS n, min(memory_limit) AS m FROM fletch.executors",
    );
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n,m\n3,{}\n", 256u64 << 20)
    );
}

#[test]
fn json_logs_are_one_object_a_line_with_the_query_and_task_spans() {
    let out = Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args([
            "--log-format",
            "json",
            "-c",
            "CREATE TABLE t AS SELECT * FROM generate_series(1, 100); SELECT sum(value) FROM t",
        ])
        .env(
            "FLETCH_DATA_DIR",
            std::env::temp_dir().join("fletch-cli-test"),
        )
        .env("FLETCH_LOG", "debug")
        .output()
        .expect("run fletch");
    assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Log lines are JSON objects (the shell's own messages share stderr); none is in
    // the text format, which starts with a timestamp.
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("20") && l.contains("DEBUG")),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let in_span = |name: &str, fields: &[&str]| {
        lines.iter().any(|line| {
            line["span"]["name"] == name && fields.iter().all(|f| !line["span"][f].is_null())
        })
    };
    assert!(in_span("query", &["query_id"]), "{stderr}");
    assert!(
        in_span(
            "task",
            &["query_id", "stage", "task", "attempt", "executor"]
        ),
        "{stderr}"
    );
}
