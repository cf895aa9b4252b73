//! The interactive shell: rustyline with history, statements end at `;`.

use std::path::Path;

use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::runtime::Runtime;

use crate::exec::{Printer, Target, run_script};

const HELP: &str = "Statements end with ';'. \\q quits, \\? shows this help.
Try: CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'path'; EXPLAIN SELECT ...;";

pub fn run(runtime: &Runtime, target: &Target, printer: &Printer, data_dir: &Path) -> Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = data_dir.join("history.txt");
    // A missing history file is normal on the first run.
    let _ = editor.load_history(&history);
    if !printer.quiet {
        eprintln!("{HELP}");
    }
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "fletch> "
        } else {
            "     -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if pending.is_empty() {
                    match trimmed {
                        "" => continue,
                        "\\q" | "quit" | "exit" => break,
                        "\\?" | "help" => {
                            eprintln!("{HELP}");
                            continue;
                        }
                        _ => {}
                    }
                }
                pending.push_str(&line);
                pending.push('\n');
                if trimmed.ends_with(';') {
                    let _ = editor.add_history_entry(pending.trim());
                    runtime.block_on(run_script(target, &pending, printer));
                    pending.clear();
                }
            }
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if std::fs::create_dir_all(data_dir).is_ok() {
        let _ = editor.save_history(&history);
    }
    Ok(())
}
