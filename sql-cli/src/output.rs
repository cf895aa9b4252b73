//! Printing answers: a table for people (row limit, expanded rows, sizes made
//! readable, a pager), CSV, TSV, JSON and NDJSON for programs (exact values, a header
//! or `[]` even for no rows, NULLs kept), and the status line on stderr.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{Cell, ContentArrangement, Table, presets};

use crate::Format;

/// What a statement returned.
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Answer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// How answers are printed; the shell's backslash commands change it.
pub struct Printer {
    pub format: Format,
    /// No status lines on stderr.
    pub quiet: bool,
    /// Status lines say how long a statement took.
    pub timing: bool,
    /// Rows the table format shows at most (`None`: all).
    pub max_rows: Option<usize>,
    /// The table format prints one block per row, a line per column.
    pub expanded: bool,
    /// Long tables go through a pager when stdout is a terminal.
    pub pager: bool,
    /// Statements that printed something on stdout, for separators between them.
    printed: usize,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, max_rows: Option<usize>) -> Self {
        Self {
            format,
            quiet,
            timing: true,
            max_rows,
            expanded: false,
            pager: false,
            printed: 0,
        }
    }

    /// Prints `answer` on stdout in the chosen format.
    pub fn print(&mut self, answer: &Answer) -> Result<Shown> {
        let rows = answer.rows();
        let shown = Shown {
            rows,
            cut: self.format == Format::Table && self.max_rows.is_some_and(|max| rows > max),
        };
        if answer.schema.fields().is_empty() {
            return Ok(shown);
        }
        let mut text = Vec::new();
        let separate = self.printed > 0;
        match self.format {
            Format::Table => text.extend(self.table(answer)?.into_bytes()),
            Format::Csv | Format::Tsv => {
                if separate {
                    text.push(b'\n');
                }
                let delimiter = if self.format == Format::Tsv {
                    b'\t'
                } else {
                    b','
                };
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_delimiter(delimiter)
                    .build(&mut text);
                // An empty answer still has its header: a consumer can tell it from a
                // failure.
                let empty = RecordBatch::new_empty(answer.schema.clone());
                for batch in answer.batches.iter().chain(std::iter::once(&empty)) {
                    writer.write(batch)?;
                }
            }
            Format::Json => {
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(&mut text);
                for batch in &answer.batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                drop(writer);
                if rows == 0 {
                    text = b"[]".to_vec();
                }
                text.push(b'\n');
            }
            Format::Ndjson => {
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut text);
                for batch in &answer.batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
        }
        self.printed += 1;
        self.emit(&text)?;
        Ok(shown)
    }

    fn emit(&self, text: &[u8]) -> Result<()> {
        let stdout = std::io::stdout();
        if self.pager && stdout.is_terminal() && needs_pager(text) && page(text).is_some() {
            return Ok(());
        }
        let mut out = stdout.lock();
        out.write_all(text)?;
        out.flush()?;
        Ok(())
    }

    fn table(&self, answer: &Answer) -> Result<String> {
        let options = FormatOptions::default().with_null("NULL");
        let limit = if self.format == Format::Table {
            self.max_rows.unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        let names: Vec<&str> = answer
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let mut rows: Vec<Vec<String>> = Vec::new();
        'batches: for batch in &answer.batches {
            let formatters = batch
                .columns()
                .iter()
                .zip(answer.schema.fields())
                .map(|(column, field)| {
                    Ok(Column {
                        formatter: ArrayFormatter::try_new(column.as_ref(), &options)?,
                        bytes: is_bytes(field)
                            .then(|| column.as_primitive_opt::<UInt64Type>())
                            .flatten(),
                    })
                })
                .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
            for row in 0..batch.num_rows() {
                if rows.len() == limit {
                    break 'batches;
                }
                rows.push(formatters.iter().map(|c| c.value(row)).collect());
            }
        }
        if self.expanded {
            return Ok(expanded(&names, &rows));
        }
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(names.iter().map(Cell::new));
        for row in rows {
            table.add_row(row);
        }
        // Numbers line up on their last digit, as in psql.
        for (i, field) in answer.schema.fields().iter().enumerate() {
            if field.data_type().is_numeric()
                && let Some(column) = table.column_mut(i)
            {
                column.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        Ok(format!("{table}\n"))
    }

    /// The line on stderr after a statement: rows (and how many were shown), or what
    /// a load stored, and the time taken.
    pub fn status(&self, what: &str, elapsed: Duration) {
        if self.quiet {
            return;
        }
        if self.timing {
            eprintln!("{what} in {}", seconds(elapsed));
        } else {
            eprintln!("{what}");
        }
    }
}

/// What [`Printer::print`] showed of an answer.
pub struct Shown {
    pub rows: usize,
    /// Rows were left out by the row limit.
    pub cut: bool,
}

impl Shown {
    pub fn describe(&self, max_rows: Option<usize>) -> String {
        let rows = format!("{} row{}", thousands(self.rows as u64), plural(self.rows));
        match max_rows {
            Some(max) if self.cut => {
                format!("{rows} ({max} shown; \\pset maxrows 0 shows all)")
            }
            _ => rows,
        }
    }
}

struct Column<'a> {
    formatter: ArrayFormatter<'a>,
    bytes: Option<&'a arrow::array::PrimitiveArray<UInt64Type>>,
}

impl Column<'_> {
    fn value(&self, row: usize) -> String {
        match self.bytes {
            Some(bytes) if bytes.is_valid(row) => human_bytes(bytes.value(row)),
            _ => self.formatter.value(row).to_string(),
        }
    }
}

fn is_bytes(field: &arrow::datatypes::Field) -> bool {
    field
        .metadata()
        .get(fletch_engine::UNIT_KEY)
        .is_some_and(|unit| unit == "bytes")
}

/// psql's `\x` layout: a header line per record, then `column | value` lines.
fn expanded(names: &[&str], rows: &[Vec<String>]) -> String {
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&format!(
            "-[ RECORD {} ]{}\n",
            i + 1,
            "-".repeat(width.max(4))
        ));
        for (name, value) in names.iter().zip(row) {
            out.push_str(&format!("{name:<width$} | {value}\n"));
        }
    }
    out
}

fn needs_pager(text: &[u8]) -> bool {
    let lines = text.iter().filter(|b| **b == b'\n').count();
    let width = text
        .split(|b| *b == b'\n')
        .map(|line| String::from_utf8_lossy(line).chars().count())
        .max()
        .unwrap_or(0);
    let (columns, rows) = terminal_size();
    lines + 2 > rows || width > columns
}

/// The terminal's size from `COLUMNS`/`LINES` or `stty`, else 80×24.
fn terminal_size() -> (usize, usize) {
    let from_env = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let (Some(columns), Some(rows)) = (from_env("COLUMNS"), from_env("LINES")) {
        return (columns, rows);
    }
    // A pseudo-terminal nobody sized says 0 0: not a size to page by.
    std::process::Command::new("stty")
        .arg("size")
        .stdin(std::process::Stdio::inherit())
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8(out.stdout).ok()?;
            let mut parts = text.split_whitespace();
            let rows = parts.next()?.parse().ok()?;
            let columns = parts.next()?.parse().ok()?;
            (rows > 0 && columns > 0).then_some((columns, rows))
        })
        .unwrap_or((80, 24))
}

/// Shows `text` in `$PAGER` (default `less -FRSX`); `None` if no pager could run.
fn page(text: &[u8]) -> Option<()> {
    let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -FRSX".to_string());
    let mut words = pager.split_whitespace();
    let program = words.next()?;
    let mut child = std::process::Command::new(program)
        .args(words)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    // A pager quit early closes its input; that is not an error.
    let _ = child.stdin.take()?.write_all(text);
    child.wait().ok()?;
    Some(())
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `6001215` as `6,001,215`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count for people: `735.2 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn seconds(elapsed: Duration) -> String {
    format!("{:.3} s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6_001_215), "6,001,215");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(735 << 20), "735.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn expanded_rows_name_each_column() {
        let text = expanded(&["a", "long_name"], &[vec!["1".into(), "x".into()]]);
        assert_eq!(
            text,
            "-[ RECORD 1 ]---------\na         | 1\nlong_name | x\n"
        );
    }
}
