//! Tab completion in the shell: SQL keywords, table and column names of the session's
//! catalog, backslash commands, and file paths inside quotes.

use std::sync::{Arc, Mutex};

use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::meta::COMMANDS;

/// The catalog's names, refreshed by the shell after statements that may change it.
#[derive(Default)]
pub struct Names {
    pub tables: Vec<String>,
    pub columns: Vec<String>,
}

pub struct ShellHelper {
    pub names: Arc<Mutex<Names>>,
    files: FilenameCompleter,
}

impl ShellHelper {
    pub fn new() -> Self {
        Self {
            names: Arc::default(),
            files: FilenameCompleter::new(),
        }
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // Inside an open quote: a file path.
        if before.matches('\'').count() % 2 == 1 {
            return self.files.complete(line, pos, ctx);
        }
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\' || c == '.'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let candidates = if word.starts_with('\\') {
            COMMANDS
                .iter()
                .map(|c| c.name)
                .filter(|name| name.starts_with(word))
                .map(|name| pair(name.to_string()))
                .collect()
        } else {
            let names = self.names.lock().map_or_else(
                |_| Names::default(),
                |n| Names {
                    tables: n.tables.clone(),
                    columns: n.columns.clone(),
                },
            );
            completions(word, &names)
        };
        Ok((start, candidates))
    }
}

/// Names and keywords that start with `word` (case-insensitively): names first, as
/// they are; keywords in the case `word` is typed in.
fn completions(word: &str, names: &Names) -> Vec<Pair> {
    let lower = word.to_ascii_lowercase();
    let mut found: Vec<String> = names
        .tables
        .iter()
        .chain(&names.columns)
        .filter(|name| name.to_ascii_lowercase().starts_with(&lower))
        .cloned()
        .collect();
    found.sort();
    found.dedup();
    let typed_lower = word.chars().all(|c| !c.is_ascii_uppercase());
    found.extend(
        ALL_KEYWORDS
            .iter()
            .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
            .map(|k| {
                if typed_lower {
                    k.to_ascii_lowercase()
                } else {
                    k.to_string()
                }
            }),
    );
    found.into_iter().map(pair).collect()
}

fn pair(text: String) -> Pair {
    Pair {
        display: text.clone(),
        replacement: text,
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_before_keywords_in_the_case_typed() {
        let names = Names {
            tables: vec!["lineitem".into(), "nation".into()],
            columns: vec!["l_orderkey".into(), "n_name".into()],
        };
        let found: Vec<String> = completions("l", &names)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(found[..2], ["l_orderkey", "lineitem"]);
        assert!(found.contains(&"limit".to_string()), "{found:?}");
        let upper: Vec<String> = completions("SEL", &names)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(upper, ["SELECT"]);
    }
}
