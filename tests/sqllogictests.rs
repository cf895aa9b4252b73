//! Runs every `tests/sql/**/*.slt` file (plus any under the colon-separated directories
//! in `FLETCH_SLT_DIR`) against Fletch on a 2-executor `LocalCluster` (a fresh one per
//! file) and against single-node DataFusion, the oracle.
//! `FLETCH_SLT_ENGINE=fletch|datafusion` runs one; arguments keep only the files whose
//! path contains one of them (`cargo test --test sqllogictests -- array_length`).
//!
//! On Fletch, statements go through `fletch::sql`, so every `CREATE TABLE` in a file
//! makes an in-memory distributed table, loaded by the executors; after each file every
//! table is dropped and each executor must hold nothing. Values are normalized by
//! DataFusion's own sqllogictest conversions, so DataFusion's test files run unchanged.
//! Statements only one engine understands (Fletch's layout clauses) sit under
//! `onlyif fletch` / `onlyif datafusion`.
//!
//! A query without a top-level `ORDER BY` has no defined row order: single-node
//! DataFusion happens to answer in insertion order, Fletch in fragment order. On Fletch,
//! such a query's expected and actual rows are both compared sorted (the oracle rule);
//! every other query's rows are compared in order. An `EXPLAIN` whose expected answer
//! shows a physical plan is not run on Fletch, whose physical plans are distributed by
//! design (their shapes are checked by `tests/plans.rs`); logical plans are compared.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
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
        let mut rows = convert_batches(&schema, batches, false)?;
        if has_no_row_order(sql) {
            rows.sort_by_cached_key(|row| row.join(" ").trim_end().to_string());
        }
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
    // Each file starts from no scratch data: DataFusion's files `COPY` into
    // `test_files/scratch/` and read the directory back, so another run's (or the other
    // engine's) files would be read too.
    match std::fs::remove_dir_all("test_files/scratch") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("clearing test_files/scratch: {e}"));
        }
        _ => {}
    }
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
            let outcome = run_records_on_fletch(&mut runner, path).await;
            let left = drop_everything(&ctx, &cluster).await;
            cluster.shutdown().await;
            outcome.and(left)
        }
    }
}

/// `EXPLAIN` records not run on Fletch because they expect single-node physical plans.
static PHYSICAL_PLANS_SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Runs `path`'s records on Fletch: the expected rows of each query without a row order
/// sorted the way [`FletchDb`] sorts its answer to it; `EXPLAIN`s of physical plans
/// skipped.
async fn run_records_on_fletch<M: sqllogictest::MakeConnection<Conn = FletchDb>>(
    runner: &mut sqllogictest::Runner<FletchDb, M>,
    path: &Path,
) -> Result<(), String> {
    let records = sqllogictest::parse_file(path).map_err(|e| e.to_string())?;
    for mut record in records {
        if let sqllogictest::Record::Halt { .. } = record {
            break;
        }
        if expects_a_physical_plan(&record) {
            PHYSICAL_PLANS_SKIPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let sqllogictest::Record::Query {
            sql,
            expected:
                sqllogictest::QueryExpect::Results {
                    sort_mode: None,
                    results,
                    ..
                },
            ..
        } = &mut record
            && has_no_row_order(sql)
            && !results.iter().any(|line| line.contains("<slt:ignore>"))
        {
            results.sort_by_cached_key(|line| line.trim_end().to_string());
        }
        runner.run_async(record).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn expects_a_physical_plan(record: &sqllogictest::Record<DFColumnType>) -> bool {
    let sqllogictest::Record::Query {
        sql,
        expected: sqllogictest::QueryExpect::Results { results, .. },
        ..
    } = record
    else {
        return false;
    };
    let explain = sql
        .trim_start()
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("explain"));
    explain
        && results.iter().any(|line| {
            let line = line.trim_start();
            line.starts_with("physical_plan") || line.starts_with("Plan with Metrics")
        })
}

/// Whether `sql` is one query without a top-level `ORDER BY`, whose rows may come in any
/// order.
fn has_no_row_order(sql: &str) -> bool {
    use datafusion::sql::sqlparser::{ast::Statement, dialect::GenericDialect, parser::Parser};
    match Parser::parse_sql(&GenericDialect {}, sql).as_deref() {
        Ok([Statement::Query(query)]) => query.order_by.is_none(),
        _ => false,
    }
}

/// Drops every table and view the file left; then no executor may hold anything.
async fn drop_everything(ctx: &SessionContext, cluster: &LocalCluster) -> Result<(), String> {
    for name in cluster.coordinator().tables().table_names() {
        let kind = match ctx
            .table_provider(TableReference::bare(name.as_str()))
            .await
        {
            Ok(table) if table.table_type() == TableType::View => "VIEW",
            _ => "TABLE",
        };
        fletch::sql(ctx, &format!("DROP {kind} \"{name}\""))
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
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let files: Vec<PathBuf> = test_files()
        .into_iter()
        .filter(|f| filters.is_empty() || filters.iter().any(|s| f.to_string_lossy().contains(s)))
        .collect();
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
    println!(
        "sqllogictests: {passed} passed, {failed} failed; {} EXPLAIN records of \
         single-node physical plans not run on Fletch",
        PHYSICAL_PLANS_SKIPPED.load(Ordering::Relaxed)
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
