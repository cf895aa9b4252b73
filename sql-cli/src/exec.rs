//! Running SQL text statement by statement: on the embedded cluster or over Flight
//! SQL, with a progress line for long statements, Ctrl-C that cancels, and errors
//! that name the statement and line they came from.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::SessionContext;
use fletch_engine::Coordinator;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;

use crate::output::{Answer, Printer, human_bytes, plural, thousands};

/// Where statements run: the embedded cluster in this process, or a coordinator
/// reached over Flight SQL (`--connect`).
pub enum Target {
    Local(SessionContext),
    Remote(FlightSqlServiceClient<Channel>),
}

impl Target {
    /// Runs one statement to its end; `rows` counts the rows as they arrive.
    pub async fn run(&self, statement: &str, rows: &AtomicUsize) -> Result<Answer, String> {
        match self {
            Target::Local(ctx) => {
                let result = async {
                    let df = fletch_engine::sql(ctx, statement).await?;
                    let mut stream = df.execute_stream().await?;
                    let schema = stream.schema();
                    let mut batches = Vec::new();
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                        batches.push(batch);
                    }
                    Ok::<_, datafusion::error::DataFusionError>(Answer { schema, batches })
                };
                result.await.map_err(|e| tidy(&e.strip_backtrace()))
            }
            Target::Remote(client) => {
                let mut client = client.clone();
                let result = async {
                    let info = client.execute(statement.to_string(), None).await?;
                    let schema = Arc::new(info.clone().try_decode_schema()?);
                    let mut batches: Vec<RecordBatch> = Vec::new();
                    for endpoint in info.endpoint {
                        let Some(ticket) = endpoint.ticket else {
                            continue;
                        };
                        let mut stream = client.do_get(ticket).await?;
                        while let Some(batch) = stream.next().await {
                            let batch = batch?;
                            rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                            batches.push(batch);
                        }
                    }
                    Ok::<_, arrow_flight::error::FlightError>(Answer { schema, batches })
                };
                result.await.map_err(|e| match e {
                    arrow_flight::error::FlightError::Tonic(status) => remote_error(&status),
                    other => tidy(&other.to_string()),
                })
            }
        }
    }

    fn coordinator(&self) -> Option<Arc<Coordinator>> {
        match self {
            Target::Local(ctx) => ctx
                .state_ref()
                .read()
                .config()
                .get_extension::<Coordinator>(),
            Target::Remote(_) => None,
        }
    }
}

/// A status from the coordinator as a person should read it, with what to do where
/// the code says.
pub fn remote_error(status: &tonic::Status) -> String {
    let message = tidy(status.message());
    match status.code() {
        tonic::Code::Unauthenticated if !message.contains("--user") => format!(
            "{message} (sign in with --user NAME --password ..., or FLETCH_USER and FLETCH_PASSWORD)"
        ),
        tonic::Code::Unavailable => {
            format!("{message} (is the coordinator still running at that address?)")
        }
        _ => message,
    }
}

/// `message` without a prefix repeated in it: errors wrapped on their way often say
/// `X: X: detail`.
pub fn tidy(message: &str) -> String {
    let mut parts: Vec<&str> = message.split(": ").collect();
    let mut changed = true;
    while changed {
        changed = false;
        'search: for len in (1..=parts.len() / 2).rev() {
            for start in 0..=parts.len() - 2 * len {
                if parts[start..start + len] == parts[start + len..start + 2 * len] {
                    parts.drain(start + len..start + 2 * len);
                    changed = true;
                    break 'search;
                }
            }
        }
    }
    parts.join(": ")
}

/// Where a script's text came from, for error messages.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Typed at the shell's prompt.
    Prompt,
    /// A `-c` argument.
    Command,
    /// A file (`-f`, `\i`).
    File(&'a str),
}

/// How a script ran.
pub struct ScriptEnd {
    pub failed: usize,
    /// Stopped at a failure (`--bail`) or by Ctrl-C before its last statement.
    pub stopped: bool,
}

/// Runs the statements of `sql` one after another, printing each answer. A failure
/// is reported with its statement number and line; the next statement still runs
/// unless `bail`.
pub async fn run_script(
    target: &Target,
    sql: &str,
    source: Source<'_>,
    printer: &mut Printer,
    bail: bool,
) -> ScriptEnd {
    let mut end = ScriptEnd {
        failed: 0,
        stopped: false,
    };
    let statements = match fletch_engine::split_statements(sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {}", tidy(&e.strip_backtrace()));
            end.failed = 1;
            return end;
        }
    };
    let located = locate(sql, &statements);
    let count = statements.len();
    for (number, (statement, line)) in statements.iter().zip(located).enumerate() {
        let outcome = run_one(target, statement, printer).await;
        let failure = match outcome {
            Ok(()) => continue,
            Err(Failure::Cancelled) => {
                eprintln!("Query cancelled.");
                end.failed += 1;
                end.stopped = number + 1 < count;
                return end;
            }
            Err(Failure::Error(e)) => e,
        };
        end.failed += 1;
        let place = match source {
            Source::Prompt if count == 1 => String::new(),
            Source::Prompt | Source::Command => {
                format!(" in statement {} (line {line})", number + 1)
            }
            Source::File(name) => format!(" in {name}:{line} (statement {})", number + 1),
        };
        eprintln!("Error{place}: {failure}");
        if bail {
            end.stopped = number + 1 < count;
            return end;
        }
    }
    end
}

/// The line each statement starts on (statements are in order in the text).
fn locate(sql: &str, statements: &[String]) -> Vec<usize> {
    let mut from = 0;
    let mut line = 1;
    statements
        .iter()
        .map(|statement| {
            let at = sql[from..]
                .find(statement.as_str())
                .map_or(from, |i| from + i);
            line += sql[from..at].matches('\n').count();
            from = at;
            line
        })
        .collect()
}

enum Failure {
    Cancelled,
    Error(String),
}

/// Runs one statement and prints its answer and status.
async fn run_one(target: &Target, statement: &str, printer: &mut Printer) -> Result<(), Failure> {
    let started = Instant::now();
    let rows = AtomicUsize::new(0);
    let progress = ProgressLine::new(target, printer.quiet);
    let work = target.run(statement, &rows);
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    // Ctrl-C drops the query, which releases its tasks on every executor.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let answer = loop {
        tokio::select! {
            answer = &mut work => break answer,
            _ = &mut interrupted => {
                progress.finish();
                return Err(Failure::Cancelled);
            }
            _ = ticks.tick() => progress.update(started, rows.load(Ordering::Relaxed)),
        }
    };
    progress.finish();
    let answer = answer.map_err(Failure::Error)?;
    let shown = printer
        .print(&answer)
        .map_err(|e| Failure::Error(format!("printing the result: {e}")))?;
    let elapsed = started.elapsed();
    let status = match fletch_engine::loaded_table(statement) {
        Some(table) => load_report(target, &table).await,
        None if answer.schema.fields().is_empty() => "OK".to_string(),
        None => shown.describe(printer.max_rows),
    };
    printer.status(&status, elapsed);
    Ok(())
}

/// What a `CREATE TABLE` or `CACHE TABLE` stored, read back from `fletch.tables`.
async fn load_report(target: &Target, table: &str) -> String {
    let query = format!(
        "SELECT rows, bytes, fragments, replicas FROM fletch.tables WHERE table_name = '{}'",
        table.replace('\'', "''")
    );
    let figures = target
        .run(&query, &AtomicUsize::new(0))
        .await
        .ok()
        .and_then(|answer| {
            let batch = answer.batches.iter().find(|b| b.num_rows() > 0)?;
            let value = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .filter(|a| a.is_valid(0))
                    .map(|a| a.value(0))
            };
            Some((value(0)?, value(1)?, value(2)?, value(3)?))
        });
    match figures {
        Some((rows, bytes, fragments, replicas)) => format!(
            "loaded {} row{} ({}) into {fragments} fragment{} × {replicas} replica{}",
            thousands(rows),
            plural(rows as usize),
            human_bytes(bytes),
            plural(fragments as usize),
            plural(replicas as usize),
        ),
        None => format!("created {table}"),
    }
}

/// A spinner line on stderr for a statement running more than a second: stages and
/// tasks finished (on the embedded cluster), rows so far, time taken.
struct ProgressLine {
    bar: Option<ProgressBar>,
    coordinator: Option<Arc<Coordinator>>,
}

const SHOW_PROGRESS_AFTER: Duration = Duration::from_secs(1);

impl ProgressLine {
    fn new(target: &Target, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::hidden();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Self {
            bar,
            coordinator: target.coordinator(),
        }
    }

    fn update(&self, started: Instant, rows: usize) {
        let Some(bar) = &self.bar else {
            return;
        };
        let elapsed = started.elapsed();
        if elapsed < SHOW_PROGRESS_AFTER {
            return;
        }
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.set_message(progress_message(self.coordinator.as_deref(), rows, elapsed));
        bar.tick();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn progress_message(coordinator: Option<&Coordinator>, rows: usize, elapsed: Duration) -> String {
    let mut parts = Vec::new();
    if let Some(progress) = coordinator.map(Coordinator::progress)
        && progress.queries > 0
    {
        parts.push(format!(
            "stages {}/{}, tasks {}/{}",
            progress.stages_done, progress.stages, progress.tasks_done, progress.tasks
        ));
    }
    parts.push(format!("{} rows", thousands(rows as u64)));
    parts.push(format!("{:.1} s", elapsed.as_secs_f64()));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_prefixes_are_said_once() {
        assert_eq!(
            tidy("Ipc error: Can't handshake: Ipc error: Can't handshake"),
            "Ipc error: Can't handshake"
        );
        assert_eq!(
            tidy("connecting: tcp connect error: tcp connect error: Connection refused"),
            "connecting: tcp connect error: Connection refused"
        );
        assert_eq!(tidy("a: b: a: c"), "a: b: a: c");
    }

    #[test]
    fn statements_are_located_by_their_first_line() {
        let sql = "SELECT 1;\n\n-- two\nSELECT\n 2;SELECT 3";
        let statements = fletch_engine::split_statements(sql).expect("split");
        assert_eq!(locate(sql, &statements), [1, 3, 5]);
    }
}
