//! Runs every `tests/sql/**/*.slt` file (plus any under the colon-separated directories
//! in `FLETCH_SLT_DIR`) against Fletch on a 2-executor `LocalCluster` and against
//! single-node DataFusion, the oracle. `FLETCH_SLT_ENGINE=fletch|datafusion` runs one.
//!
//! Engines are driven through DataFusion's own sqllogictest adapter, so values are
//! normalized exactly as in DataFusion's test files and those files run unchanged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_sqllogictest::{
    DataFusion, df_value_validator, read_dir_recursive, value_normalizer,
};
use fletch::LocalCluster;
use indicatif::ProgressBar;
use sqllogictest::strict_column_validator;

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

async fn run_file(engine: Engine, cluster: &LocalCluster, path: &Path) -> Result<(), String> {
    let make_ctx = || match engine {
        Engine::Fletch => cluster.session(),
        Engine::DataFusion => {
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true))
        }
    };
    let relative = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .to_path_buf();
    let ctx = make_ctx();
    let mut runner = sqllogictest::Runner::new(|| {
        let ctx = ctx.clone();
        let relative = relative.clone();
        async move { Ok(DataFusion::new(ctx, relative, ProgressBar::hidden())) }
    });
    runner.add_label(match engine {
        Engine::Fletch => "fletch",
        Engine::DataFusion => "datafusion",
    });
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    runner.run_file_async(path).await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
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
        let cluster = LocalCluster::start(2).await.expect("cluster");
        let (mut passed, mut failed) = (0usize, 0usize);
        for engine in engines {
            for file in &files {
                match run_file(engine, &cluster, file).await {
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
        for stats in cluster.executor_stats() {
            if stats.buffered_bytes != 0 || stats.queries != 0 {
                println!("FAILED executor state left behind after all files: {stats:?}");
                failed += 1;
            }
        }
        cluster.shutdown().await;
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
