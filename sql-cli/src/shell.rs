//! The interactive shell: rustyline with history and Tab completion, statements end
//! at a `;` (comments may follow it), backslash commands between statements.

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use anyhow::Result;
use arrow::array::StringArray;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};
use tokio::runtime::Runtime;

use crate::complete::{Names, ShellHelper};
use crate::exec::{Source, Target, run_script};
use crate::meta;
use crate::output::Printer;

const BANNER: &str =
    "Statements end with ';'. \\? lists commands and Fletch's statements, \\q quits.";

pub fn run(
    runtime: &Runtime,
    target: &Target,
    printer: &mut Printer,
    data_dir: &Path,
) -> Result<()> {
    let config = Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper::new()));
    let history = data_dir.join("history.txt");
    // A missing history file is normal on the first run.
    let _ = editor.load_history(&history);
    if !printer.quiet {
        eprintln!("{BANNER}");
    }
    refresh_names(runtime, target, &editor);
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
                    if trimmed.is_empty() {
                        continue;
                    }
                    if matches!(trimmed, "quit" | "exit" | "help") || is_meta(trimmed) {
                        let _ = editor.add_history_entry(trimmed);
                        let command = match trimmed {
                            "quit" | "exit" => "\\q",
                            "help" => "\\?",
                            other => other,
                        };
                        if runtime.block_on(meta::run(command, target, printer)) {
                            break;
                        }
                        continue;
                    }
                }
                pending.push_str(&line);
                pending.push('\n');
                if is_complete(&pending) {
                    let _ = editor.add_history_entry(pending.trim());
                    let changes_names = may_change_names(&pending);
                    runtime.block_on(run_script(target, &pending, Source::Prompt, printer, false));
                    pending.clear();
                    if changes_names {
                        refresh_names(runtime, target, &editor);
                    }
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

fn is_meta(line: &str) -> bool {
    line.starts_with('\\') || line.starts_with(".maxrows")
}

/// Whether `text` ends a statement: its last token, comments and whitespace aside, is
/// a `;` (an unterminated string or comment is not the end).
fn is_complete(text: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return false;
    };
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t, Token::Whitespace(_)))
        .is_some_and(|t| *t == Token::SemiColon)
}

/// Statements after which table and column names are read again for completion.
fn may_change_names(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    ["CREATE", "DROP", "CACHE", "ALTER"]
        .iter()
        .any(|w| upper.contains(w))
}

/// Reads the catalog's table and column names for completion.
fn refresh_names(runtime: &Runtime, target: &Target, editor: &Editor<ShellHelper, DefaultHistory>) {
    let Some(helper) = editor.helper() else {
        return;
    };
    let read = |sql: &str| -> Vec<String> {
        let Ok(answer) = runtime.block_on(target.run(sql, &AtomicUsize::new(0))) else {
            return Vec::new();
        };
        answer
            .batches
            .iter()
            .filter_map(|b| b.column(0).as_any().downcast_ref::<StringArray>().cloned())
            .flat_map(|names| {
                names
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let tables = read(
        "SELECT DISTINCT table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'",
    );
    let columns = read(
        "SELECT DISTINCT column_name FROM information_schema.columns WHERE table_schema <> 'information_schema'",
    );
    if let Ok(mut names) = helper.names.lock() {
        *names = Names { tables, columns };
    }
}

#[cfg(test)]
mod tests {
    use super::is_complete;

    #[test]
    fn a_statement_ends_at_a_semicolon_even_with_a_comment_after_it() {
        assert!(is_complete("SELECT 3;"));
        assert!(is_complete("SELECT 3; -- comment\n"));
        assert!(is_complete("SELECT 3; /* note */"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("SELECT 3 -- ;"));
        assert!(!is_complete("SELECT 'open;"));
    }
}
