//! The interactive shell under a pseudo-terminal, as a person uses it: completion,
//! backslash commands, comments after `;`, the progress line, and Ctrl-C stopping a
//! running query on every executor.

use std::process::Command;

use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

/// Generous: a debug build under a loaded CI machine.
const TIMEOUT_MS: u64 = 60_000;

fn shell(data_dir: &std::path::Path) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fletch"));
    command
        .args(["--executors", "2"])
        .env("FLETCH_DATA_DIR", data_dir)
        .env("TERM", "xterm")
        .env("COLUMNS", "200")
        .env("LINES", "100")
        .env_remove("FLETCH_LOG");
    let options = Options {
        timeout_ms: Some(TIMEOUT_MS),
        strip_ansi_escape_codes: true,
    };
    let mut session = spawn_with_options(command, options).expect("spawn the shell");
    session.exp_string("fletch> ").expect("a prompt");
    session
}

fn statement(session: &mut PtySession, sql: &str, expect: &str) -> String {
    session.send_line(sql).expect("send");
    let seen = session
        .exp_string(expect)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    session.exp_string("fletch> ").expect("the next prompt");
    seen
}

#[test]
fn shell_completes_describes_and_accepts_comments_after_the_semicolon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = shell(dir.path());
    statement(
        &mut session,
        "CREATE TABLE readings PARTITION BY HASH (v) INTO 3 FRAGMENTS AS SELECT value AS v, value % 3 AS m FROM generate_series(1, 1000);",
        "loaded 1,000 rows (",
    );
    // Tab completes a table name the catalog has.
    session
        .send("SELECT count(*) AS n FROM readi")
        .expect("send");
    session.send("\t").expect("tab");
    session
        .send_line(" WHERE m = 1; -- a comment")
        .expect("send");
    session
        .exp_string("334")
        .expect("the count, without a second ';'");
    session.exp_string("fletch> ").expect("prompt");

    let described = statement(&mut session, "\\d readings", "holders");
    assert!(described.contains("Int64"), "{described}");
    assert!(described.contains("hash(v)"), "{described}");
    statement(&mut session, "\\timing off", "Timing is off.");
    let help = statement(&mut session, "\\?", "Tab completes");
    assert!(help.contains("\\d [NAME]"), "{help}");
    assert!(help.contains("CACHE TABLE"), "{help}");
    statement(&mut session, "\\pset maxrows 2", "at most 2 rows");
    let cut = statement(
        &mut session,
        "SELECT v FROM readings ORDER BY v;",
        "(2 shown;",
    );
    assert!(cut.contains("1,000 rows"), "{cut}");
    session.send_line("\\q").expect("quit");
    session.exp_eof().expect("the shell ends");
}

#[test]
fn ctrl_c_stops_the_query_on_every_executor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = shell(dir.path());
    statement(
        &mut session,
        "CREATE TABLE pairs AS SELECT value AS v, value % 2 AS m FROM generate_series(1, 100000);",
        "loaded 100,000 rows",
    );
    // Far more work than the test waits for (5 billion joined rows): it only ends by
    // being cancelled. A join emitting from memory never waits on its input, so this
    // also checks that a released task stops at all.
    session
        .send_line("SELECT count(*) FROM pairs a JOIN pairs b ON a.m = b.m;")
        .expect("send");
    // Three seconds in, the join runs (the scans before it take well under that).
    session
        .exp_regex("stages [0-9]+/[0-9]+, tasks [0-9]+/[0-9]+, [0-9]+ rows, [3-9]\\.[0-9] s")
        .expect("the progress line");
    session.send_control('c').expect("Ctrl-C");
    let cancelled = std::time::Instant::now();
    session.exp_string("Query cancelled.").expect("cancelled");
    session.exp_string("fletch> ").expect("prompt");
    // Executors report what they run with each heartbeat (every second); none runs
    // anything once the query is released. The issue asks for a second; this allows
    // five for a loaded machine. A task that cannot be stopped runs on for as long as
    // its join has rows to emit: about a minute here.
    let limit = std::time::Duration::from_secs(5);
    let mut busy = String::new();
    while cancelled.elapsed() < limit {
        session
            .send_line(
                "SELECT 'busy=' || CAST(sum(running_tasks) AS VARCHAR) AS b FROM fletch.executors;",
            )
            .expect("send");
        let (_, seen) = session.exp_regex("busy=[0-9]+").expect("a count");
        session.exp_string("fletch> ").expect("prompt");
        busy = seen;
        if busy == "busy=0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let idle_after = cancelled.elapsed();
    assert!(
        busy == "busy=0" && idle_after < limit,
        "executors still busy ({busy}) {idle_after:?} after the cancel"
    );
    session.send_line("\\q").expect("quit");
    session.exp_eof().expect("the shell ends");
}
