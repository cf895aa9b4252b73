//! Running SQL text statement by statement and printing results.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tonic::transport::Channel;

use crate::Format;

/// Where statements run: the embedded cluster in this process, or a coordinator
/// reached over Flight SQL (`--connect`).
pub enum Target {
    Local(SessionContext),
    Remote(FlightSqlServiceClient<Channel>),
}

impl Target {
    async fn run(&self, statement: &str) -> Result<Vec<RecordBatch>, String> {
        match self {
            Target::Local(ctx) => {
                let result = async {
                    let df = fletch_engine::sql(ctx, statement).await?;
                    let mut stream = df.execute_stream().await?;
                    let mut batches = Vec::new();
                    while let Some(batch) = stream.next().await {
                        batches.push(batch?);
                    }
                    Ok::<_, datafusion::error::DataFusionError>(batches)
                };
                result.await.map_err(|e| e.strip_backtrace())
            }
            Target::Remote(client) => {
                let mut client = client.clone();
                let result = async {
                    let info = client.execute(statement.to_string(), None).await?;
                    let mut batches = Vec::new();
                    for endpoint in info.endpoint {
                        let Some(ticket) = endpoint.ticket else {
                            continue;
                        };
                        let mut stream = client.do_get(ticket).await?;
                        while let Some(batch) = stream.next().await {
                            batches.push(batch?);
                        }
                    }
                    Ok::<_, arrow_flight::error::FlightError>(batches)
                };
                result.await.map_err(|e| match e {
                    arrow_flight::error::FlightError::Tonic(status) => status.message().to_string(),
                    other => other.to_string(),
                })
            }
        }
    }
}

pub struct Printer {
    pub format: Format,
    pub quiet: bool,
}

/// Runs every statement in `sql`; errors go to stderr and the next statement still runs.
/// Returns whether all statements succeeded.
pub async fn run_script(target: &Target, sql: &str, printer: &Printer) -> bool {
    let statements = match fletch_engine::split_statements(sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return false;
        }
    };
    let mut ok = true;
    for statement in statements {
        let started = Instant::now();
        // Ctrl-C drops the query, which cancels its tasks on every executor.
        let result = tokio::select! {
            r = target.run(&statement) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("Query cancelled.");
                ok = false;
                continue;
            }
        };
        match result {
            Ok(batches) => {
                if let Err(e) = printer.print(&batches, started) {
                    eprintln!("Error: {e}");
                    ok = false;
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ok = false;
            }
        }
    }
    ok
}

impl Printer {
    fn print(&self, batches: &[RecordBatch], started: Instant) -> Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Table => {
                if batches.iter().any(|b| b.num_columns() > 0) {
                    writeln!(out, "{}", pretty_format_batches(batches)?)?;
                }
            }
            Format::Csv if rows > 0 => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            Format::Json if rows > 0 => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                writeln!(out)?;
            }
            Format::Csv | Format::Json => {}
        }
        out.flush()?;
        if !self.quiet {
            eprintln!("{rows} row(s) in {:.3}s", started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}
