//! Runs every `tests/sql/**/*.slt` file (plus any under the colon-separated directories
//! in `FLETCH_SLT_DIR`) against Fletch on a 2-executor `LocalCluster` (a fresh one per
//! file) and against single-node DataFusion, the oracle.
//! `FLETCH_SLT_ENGINE=fletch|datafusion` runs one.
//!
//! On Fletch, statements go through `fletch::sql`, so every `CREATE TABLE` in a file
//! makes an in-memory distributed table, loaded by the executors; after each file every
//! table is dropped and each executor must hold nothing. Values are normalized by
//! DataFusion's own sqllogictest conversions, so DataFusion's test files run unchanged.
//! Statements only one engine understands (Fletch's layout clauses) sit under
//! `onlyif fletch` / `onlyif datafusion`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_sqllogictest::{
    DFColumnType, DFOutput, DFSqlLogicTestError, DataFusion, convert_batches,
    convert_schema_to_types, df_value_validator, read_dir_recursive, value_normalizer,
};
use fletch::LocalCluster;
use indicatif::ProgressBar;
use sqllogictest::{AsyncDB, DBOutput, strict_column_validator};

#[derive(Clone, Copy, Debug)]
enum Engine {
    Fletch,
    DataFusion,
}

fn test_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("tests").join("sql")];
    if let Some(extra) = std::env::var_os("FLETCH_SLT_DIR") {
        dirs.extend(std::env::split_paths(&extra));
    }
    let mut files = Vec::new();
    for dir in dirs {
        match read_dir_recursive(&dir) {
            Ok(found) => files.extend(
                found
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "slt")),
            ),
            Err(e) => eprintln!("cannot read {}: {e}", dir.display()),
        }
    }
    files.sort();
    files
}

/// Fletch as a sqllogictest database: every statement through `fletch::sql`.
struct FletchDb {
    ctx: SessionContext,
}

#[async_trait]
impl AsyncDB for FletchDb {
    type Error = DFSqlLogicTestError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DFOutput, DFSqlLogicTestError> {
        let df = fletch::sql(&self.ctx, sql).await?;
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let stream = execute_stream(plan, task_ctx)?;
        let types = convert_schema_to_types(stream.schema().fields());
        let batches = collect(stream).await?;
        let rows = convert_batches(&schema, batches, false)?;
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    fn engine_name(&self) -> &str {
        "Fletch"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    async fn shutdown(&mut self) {}
}

fn configure<D: AsyncDB<ColumnType = DFColumnType>, M: sqllogictest::MakeConnection<Conn = D>>(
    runner: &mut sqllogictest::Runner<D, M>,
    label: &str,
) {
    runner.add_label(label);
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
}

async fn run_file(engine: Engine, path: &Path) -> Result<(), String> {
    let relative = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .to_path_buf();
    match engine {
        Engine::DataFusion => {
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
            let mut runner = sqllogictest::Runner::new(|| {
                let ctx = ctx.clone();
                let relative = relative.clone();
                async move { Ok(DataFusion::new(ctx, relative, ProgressBar::hidden())) }
            });
            configure(&mut runner, "datafusion");
            runner.run_file_async(path).await.map_err(|e| e.to_string())
        }
        Engine::Fletch => {
            let cluster = LocalCluster::start(2).await.map_err(|e| e.to_string())?;
            let ctx = cluster.session();
            let mut runner = sqllogictest::Runner::new(|| {
                let ctx = ctx.clone();
                async move { Ok(FletchDb { ctx }) }
            });
            configure(&mut runner, "fletch");
            let outcome = runner.run_file_async(path).await.map_err(|e| e.to_string());
            let left = drop_everything(&ctx, &cluster).await;
            cluster.shutdown().await;
            outcome.and(left)
        }
    }
}

/// Drops every table the file left; then no executor may hold anything.
async fn drop_everything(ctx: &SessionContext, cluster: &LocalCluster) -> Result<(), String> {
    for name in cluster.coordinator().tables().table_names() {
        fletch::sql(ctx, &format!("DROP TABLE \"{name}\""))
            .await
            .map_err(|e| format!("dropping {name}: {e}"))?
            .collect()
            .await
            .map_err(|e| format!("dropping {name}: {e}"))?;
    }
    cluster.coordinator().wait_for_releases().await;
    let exchange = cluster.executor_stats();
    let fragments = cluster.fragment_stats();
    let memory = cluster.memory();
    let clean = exchange
        .iter()
        .all(|s| s.buffered_bytes == 0 && s.queries == 0)
        && fragments.iter().all(|f| f.pieces == 0 && f.bytes == 0)
        && memory.iter().all(|(used, _)| *used == 0);
    if clean {
        Ok(())
    } else {
        Err(format!(
            "executor state left behind after dropping every table: {exchange:?} {fragments:?} {memory:?}"
        ))
    }
}

fn main() -> ExitCode {
    // DataFusion's files write scratch data under `test_files/scratch/`, relative to
    // the working directory: keep it out of the checkout, and gone afterwards.
    let scratch = tempfile::tempdir().expect("scratch directory");
    std::env::set_current_dir(scratch.path()).expect("enter scratch directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let engines = match std::env::var("FLETCH_SLT_ENGINE").as_deref() {
        Ok("fletch") => vec![Engine::Fletch],
        Ok("datafusion") => vec![Engine::DataFusion],
        _ => vec![Engine::DataFusion, Engine::Fletch],
    };
    let files = test_files();
    let (passed, failed) = runtime.block_on(async {
        let (mut passed, mut failed) = (0usize, 0usize);
        for engine in engines {
            for file in &files {
                match run_file(engine, file).await {
                    Ok(()) => {
                        passed += 1;
                        println!("ok     {engine:?} {}", file.display());
                    }
                    Err(e) => {
                        failed += 1;
                        println!("FAILED {engine:?} {}\n{e}", file.display());
                    }
                }
            }
        }
        (passed, failed)
    });
    if files.is_empty() {
        println!("no .slt files found");
        return ExitCode::FAILURE;
    }
    println!("sqllogictests: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
