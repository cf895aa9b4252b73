//! Running SQL text statement by statement and printing results.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::Format;

pub struct Printer {
    pub format: Format,
    pub quiet: bool,
}

/// Runs every statement in `sql`; errors go to stderr and the next statement still runs.
/// Returns whether all statements succeeded.
pub async fn run_script(ctx: &SessionContext, sql: &str, printer: &Printer) -> bool {
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
        let result = async {
            let df = fletch_engine::sql(ctx, &statement).await?;
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            Ok::<_, datafusion::error::DataFusionError>(batches)
        };
        // Ctrl-C drops the query, which cancels its tasks on every executor.
        let result = tokio::select! {
            r = result => r,
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
                eprintln!("Error: {}", e.strip_backtrace());
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
