//! The shell's backslash commands (psql's, where Fletch has the same idea).

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use crate::Format;
use crate::exec::{Source, Target, run_script};
use crate::output::Printer;

pub struct MetaCommand {
    pub name: &'static str,
    pub usage: &'static str,
    pub help: &'static str,
}

pub const COMMANDS: &[MetaCommand] = &[
    MetaCommand {
        name: "\\?",
        usage: "\\?",
        help: "this help",
    },
    MetaCommand {
        name: "\\q",
        usage: "\\q",
        help: "quit (also quit, exit, Ctrl-D)",
    },
    MetaCommand {
        name: "\\d",
        usage: "\\d [NAME]",
        help: "list tables, or describe one: columns, and for in-memory tables layout, fragments and holders",
    },
    MetaCommand {
        name: "\\dt",
        usage: "\\dt",
        help: "list tables",
    },
    MetaCommand {
        name: "\\timing",
        usage: "\\timing [on|off]",
        help: "say how long each statement took",
    },
    MetaCommand {
        name: "\\x",
        usage: "\\x [on|off]",
        help: "expanded rows: one line per column",
    },
    MetaCommand {
        name: "\\pset",
        usage: "\\pset maxrows N | format table|csv|tsv|json|ndjson",
        help: "rows a table shows (0: all), or the output format",
    },
    MetaCommand {
        name: "\\i",
        usage: "\\i FILE",
        help: "run the statements in FILE",
    },
];

/// Fletch's own statements, one line of syntax each.
const STATEMENTS: &[&str] = &[
    "CREATE [OR REPLACE] TABLE [IF NOT EXISTS] name [(columns)] [PARTITION BY HASH (cols) | ROUND ROBIN] [INTO n FRAGMENTS] [REPLICAS k] [AS query]",
    "CACHE TABLE name [PARTITION BY ...] [INTO n FRAGMENTS] [REPLICAS k] [AS query]",
    "UNCACHE TABLE [IF EXISTS] name",
    "DROP TABLE [IF EXISTS] name",
    "SHOW TABLES | SHOW EXECUTORS | SHOW fletch.<setting> | SHOW ALL",
    "SET fletch.<setting> = 'value' | RESET fletch.<setting>",
    "CREATE EXTERNAL TABLE name STORED AS PARQUET|CSV|JSON LOCATION 'path'",
    "EXPLAIN [ANALYZE] query",
];

pub fn help() -> String {
    let mut text = String::from("Backslash commands:\n");
    let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    for command in COMMANDS {
        text.push_str(&format!("  {:<width$}  {}\n", command.usage, command.help));
    }
    text.push_str("\nStatements end with ';'. Besides DataFusion's SQL, Fletch has:\n");
    for statement in STATEMENTS {
        text.push_str(&format!("  {statement}\n"));
    }
    text.push_str("\nTab completes keywords, table and column names, and paths inside quotes.");
    text
}

/// Runs the backslash command `line`; whether the shell should quit.
pub async fn run(line: &str, target: &Target, printer: &mut Printer) -> bool {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    match (command, rest.as_slice()) {
        ("\\q", []) => return true,
        ("\\?", []) => eprintln!("{}", help()),
        ("\\d" | "\\dt", []) => {
            let tables = sql(target, printer, "SELECT table_name, kind, rows, bytes, fragments, replicas FROM fletch.tables ORDER BY table_name").await;
            if tables == 0 {
                eprintln!("No tables yet.");
            }
        }
        ("\\d", [name]) => describe(target, printer, name).await,
        ("\\timing", toggle) => match switch(toggle, printer.timing) {
            Some(on) => {
                printer.timing = on;
                eprintln!("Timing is {}.", on_off(on));
            }
            None => eprintln!("usage: \\timing [on|off]"),
        },
        ("\\x", toggle) => match switch(toggle, printer.expanded) {
            Some(on) => {
                printer.expanded = on;
                eprintln!("Expanded display is {}.", on_off(on));
            }
            None => eprintln!("usage: \\x [on|off]"),
        },
        ("\\pset" | ".maxrows", _) => pset(command, &rest, printer),
        ("\\i", [file]) => match std::fs::read_to_string(file) {
            Ok(text) => {
                let name = Path::new(file).display().to_string();
                run_script(target, &text, Source::File(&name), printer, false).await;
            }
            Err(e) => eprintln!("Error: reading {file}: {e}"),
        },
        _ => eprintln!("Unknown or malformed command '{line}'; \\? lists the commands."),
    }
    false
}

fn pset(command: &str, rest: &[&str], printer: &mut Printer) {
    let rest: Vec<&str> = if command == ".maxrows" {
        std::iter::once("maxrows")
            .chain(rest.iter().copied())
            .collect()
    } else {
        rest.to_vec()
    };
    match rest.as_slice() {
        ["maxrows", n] => match n.parse::<usize>() {
            Ok(0) => {
                printer.max_rows = None;
                eprintln!("Tables show every row.");
            }
            Ok(n) => {
                printer.max_rows = Some(n);
                eprintln!("Tables show at most {n} rows.");
            }
            Err(_) => eprintln!("maxrows takes a number of rows (0: all), not {n:?}"),
        },
        ["maxrows"] => match printer.max_rows {
            Some(n) => eprintln!("Tables show at most {n} rows."),
            None => eprintln!("Tables show every row."),
        },
        ["format", name] => match <Format as clap::ValueEnum>::from_str(name, true) {
            Ok(format) => {
                printer.format = format;
                eprintln!("Output format is {name}.");
            }
            Err(_) => eprintln!("formats: table, csv, tsv, json, ndjson"),
        },
        _ => eprintln!("usage: \\pset maxrows N | \\pset format table|csv|tsv|json|ndjson"),
    }
}

/// `\d NAME`: the columns, and for an in-memory table its layout and fragments.
async fn describe(target: &Target, printer: &mut Printer, name: &str) {
    let literal = name.replace('\'', "''");
    let columns = sql(
        target,
        printer,
        &format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_name = '{literal}' ORDER BY ordinal_position"
        ),
    )
    .await;
    if columns == 0 {
        eprintln!("No table named '{name}'; \\d lists them.");
        return;
    }
    let held = format!("SELECT count(*) FROM fletch.fragments WHERE table_name = '{literal}'");
    let in_memory = target
        .run(&held, &AtomicUsize::new(0))
        .await
        .ok()
        .and_then(|a| {
            let batch = a.batches.into_iter().find(|b| b.num_rows() > 0)?;
            let counts = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()?
                .clone();
            Some(counts.value(0) > 0)
        })
        .unwrap_or(false);
    if in_memory {
        sql(target, printer, &format!(
            "SELECT kind, partitioned_by, fragments, replicas, rows, bytes FROM fletch.tables WHERE table_name = '{literal}'"
        ))
        .await;
        sql(
            target,
            printer,
            &format!(
                "SELECT fragment, rows, bytes, executors AS holders FROM fletch.fragments \
             WHERE table_name = '{literal}' ORDER BY fragment"
            ),
        )
        .await;
    }
}

/// Runs a catalog query and prints its answer without a status line; its row count.
async fn sql(target: &Target, printer: &mut Printer, sql: &str) -> usize {
    match target.run(sql, &AtomicUsize::new(0)).await {
        Ok(answer) if answer.rows() > 0 => match printer.print(&answer) {
            Ok(shown) => shown.rows,
            Err(e) => {
                eprintln!("Error: printing: {e}");
                0
            }
        },
        Ok(_) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            0
        }
    }
}

fn switch(toggle: &[&str], current: bool) -> Option<bool> {
    match toggle {
        [] => Some(!current),
        ["on"] => Some(true),
        ["off"] => Some(false),
        _ => None,
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
