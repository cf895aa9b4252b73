//! `fletch bench tpch`: each TPC-H query on single-node DataFusion (all cores) and on an
//! embedded cluster over the same files, interleaved, answers compared on every run.
//! With `--cached`, Fletch runs over the eight tables cached in the cluster's memory and
//! DataFusion over the same tables in its own memory (`MemTable`), with DataFusion over
//! the parquet files as a third, interleaved column; the load's time and bytes per
//! executor are reported. Prints CSV on stdout; `--json` also writes the figures with
//! what produced them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_engine::LocalCluster;
use fletch_tpch as tpch;
use serde::Serialize;

pub struct TpchBench {
    pub scale_factor: f64,
    pub executors: usize,
    pub queries: Vec<usize>,
    pub iterations: usize,
    pub json: Option<PathBuf>,
    pub cached: bool,
    /// Session settings for Fletch (`KEY=VALUE`, as `SET KEY = 'VALUE'`).
    pub settings: Vec<String>,
}

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct Report {
    suite: &'static str,
    fletch_version: &'static str,
    datafusion_version: &'static str,
    arrow_version: &'static str,
    git_revision: String,
    cores: usize,
    started_unix_s: u64,
    settings: Settings,
    queries: Vec<QueryFigures>,
    total: Totals,
    /// With `--cached`: how loading the tables into the cluster went.
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<LoadFigures>,
}

#[derive(Debug, Serialize)]
struct LoadFigures {
    seconds: f64,
    replicas: usize,
    /// Bytes of table fragments each executor holds (every replica counted where it is).
    bytes_per_executor: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct Settings {
    scale_factor: f64,
    executors: usize,
    iterations: usize,
    /// Partitions per stage in Fletch, and DataFusion's partitions single-node.
    target_partitions: usize,
    data_dir: String,
    /// Fletch over cached tables, DataFusion over `MemTable`s (`datafusion_*` figures).
    cached: bool,
    /// `--set` session settings of Fletch's session.
    fletch_settings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct QueryFigures {
    query: usize,
    datafusion_median_s: f64,
    fletch_median_s: f64,
    ratio: f64,
    datafusion_runs_s: Vec<f64>,
    fletch_runs_s: Vec<f64>,
    /// With `--cached`: DataFusion over the parquet files, and Fletch's time over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    datafusion_parquet_median_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_parquet: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Totals {
    datafusion_s: f64,
    fletch_s: f64,
    ratio: f64,
    worst_query: usize,
    worst_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    datafusion_parquet_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_parquet: Option<f64>,
}

fn median(times: &[Duration]) -> Duration {
    let mut times = times.to_vec();
    times.sort();
    times[times.len() / 2]
}

impl TpchBench {
    pub async fn run(&self, data_root: &Path) -> Result<()> {
        if self.iterations == 0 {
            bail!("--iterations must be at least 1");
        }
        if let Some(bad) = self.queries.iter().find(|&&q| !(1..=22).contains(&q)) {
            bail!("TPC-H has queries 1 to 22, not {bad}");
        }
        let dir = tpch::data_dir(data_root, self.scale_factor);
        tpch::generate(&dir, self.scale_factor).context("generating TPC-H data")?;
        let started_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());

        let cluster = LocalCluster::start(self.executors)
            .await
            .context("starting the embedded cluster")?;
        let fletch = cluster.session();
        for setting in &self.settings {
            let Some((key, value)) = setting.split_once('=') else {
                bail!("--set {setting:?}: expected KEY=VALUE");
            };
            let value = value.trim().replace('\'', "''");
            fletch
                .sql(&format!("SET {} = '{value}'", key.trim()))
                .await
                .with_context(|| format!("--set {setting}"))?
                .collect()
                .await
                .with_context(|| format!("--set {setting}"))?;
        }
        tpch::register(&fletch, &dir).await?;
        let parquet = SessionContext::new_with_config(SessionConfig::new());
        tpch::register(&parquet, &dir).await?;
        let target_partitions = fletch.state().config().target_partitions();
        let (single, load) = if self.cached {
            let started = Instant::now();
            for statement in tpch::cache_statements() {
                fletch_engine::sql(&fletch, &statement)
                    .await
                    .context("caching the TPC-H tables")?
                    .collect()
                    .await
                    .context("caching the TPC-H tables")?;
            }
            let seconds = started.elapsed().as_secs_f64();
            let load = LoadFigures {
                seconds,
                replicas: self.executors.min(2),
                bytes_per_executor: cluster.fragment_stats().iter().map(|f| f.bytes).collect(),
            };
            eprintln!(
                "cached SF{} in {seconds:.2} s; bytes per executor: {:?}",
                self.scale_factor, load.bytes_per_executor
            );
            (in_memory_copy(&parquet).await?, Some(load))
        } else {
            (parquet.clone(), None)
        };

        if self.cached {
            println!(
                "query,datafusion_memory_s,fletch_cached_s,ratio,datafusion_parquet_s,ratio_to_parquet"
            );
        } else {
            println!("query,datafusion_s,fletch_s,ratio");
        }
        let mut figures = Vec::with_capacity(self.queries.len());
        for &n in &self.queries {
            let (mut single_times, mut fletch_times, mut parquet_times) =
                (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.iterations {
                let (t_single, expected) = tpch::run_query(&single, n).await?;
                let (t_fletch, actual) = tpch::run_query(&fletch, n).await?;
                let expected = tpch::canonical_rows(&expected)?;
                if expected != tpch::canonical_rows(&actual)? {
                    bail!("q{n}: Fletch's answer differs from single-node DataFusion's");
                }
                if self.cached {
                    let (t_parquet, over_files) = tpch::run_query(&parquet, n).await?;
                    if expected != tpch::canonical_rows(&over_files)? {
                        bail!("q{n}: DataFusion's answers over memory and files differ");
                    }
                    parquet_times.push(t_parquet);
                }
                single_times.push(t_single);
                fletch_times.push(t_fletch);
            }
            let (s, f) = (median(&single_times), median(&fletch_times));
            let p = (!parquet_times.is_empty()).then(|| median(&parquet_times).as_secs_f64());
            let q = QueryFigures {
                query: n,
                datafusion_median_s: s.as_secs_f64(),
                fletch_median_s: f.as_secs_f64(),
                ratio: f.as_secs_f64() / s.as_secs_f64(),
                datafusion_runs_s: single_times.iter().map(Duration::as_secs_f64).collect(),
                fletch_runs_s: fletch_times.iter().map(Duration::as_secs_f64).collect(),
                datafusion_parquet_median_s: p,
                ratio_to_parquet: p.map(|p| f.as_secs_f64() / p),
            };
            match (q.datafusion_parquet_median_s, q.ratio_to_parquet) {
                (Some(p), Some(r)) => println!(
                    "q{n},{:.3},{:.3},{:.2},{p:.3},{r:.2}",
                    q.datafusion_median_s, q.fletch_median_s, q.ratio
                ),
                _ => println!(
                    "q{n},{:.3},{:.3},{:.2}",
                    q.datafusion_median_s, q.fletch_median_s, q.ratio
                ),
            }
            figures.push(q);
        }
        cluster.shutdown().await;

        let total = totals(&figures);
        match (total.datafusion_parquet_s, total.ratio_to_parquet) {
            (Some(p), Some(r)) => println!(
                "total,{:.3},{:.3},{:.2},{p:.3},{r:.2}",
                total.datafusion_s, total.fletch_s, total.ratio
            ),
            _ => println!(
                "total,{:.3},{:.3},{:.2}",
                total.datafusion_s, total.fletch_s, total.ratio
            ),
        }
        if let Some(path) = &self.json {
            let report = Report {
                suite: "tpch",
                fletch_version: env!("CARGO_PKG_VERSION"),
                datafusion_version: datafusion::DATAFUSION_VERSION,
                arrow_version: arrow::ARROW_VERSION,
                git_revision: git_revision(),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                started_unix_s,
                settings: Settings {
                    scale_factor: self.scale_factor,
                    executors: self.executors,
                    iterations: self.iterations,
                    target_partitions,
                    data_dir: dir.display().to_string(),
                    cached: self.cached,
                    fletch_settings: self.settings.clone(),
                },
                queries: figures,
                total,
                load,
            };
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn totals(figures: &[QueryFigures]) -> Totals {
    let datafusion_s: f64 = figures.iter().map(|q| q.datafusion_median_s).sum();
    let fletch_s: f64 = figures.iter().map(|q| q.fletch_median_s).sum();
    let worst = figures
        .iter()
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
        .map_or((0, 0.0), |q| (q.query, q.ratio));
    let parquet: Option<f64> = figures.iter().map(|q| q.datafusion_parquet_median_s).sum();
    Totals {
        datafusion_s,
        fletch_s,
        ratio: fletch_s / datafusion_s,
        worst_query: worst.0,
        worst_ratio: worst.1,
        datafusion_parquet_s: parquet,
        ratio_to_parquet: parquet.map(|p| fletch_s / p),
    }
}

/// A single-node session with every TPC-H table of `files` loaded into memory, in as
/// many partitions as it has cores: DataFusion's own in-memory tables.
async fn in_memory_copy(files: &SessionContext) -> Result<SessionContext> {
    let memory = SessionContext::new_with_config(SessionConfig::new());
    for (table, _) in tpch::TABLE_KEYS {
        let provider = files.table_provider(table).await?;
        let loaded = MemTable::load(provider, None, &files.state()).await?;
        memory.register_table(table, Arc::new(loaded))?;
    }
    Ok(memory)
}

/// The revision of the checkout this binary was built from (`+dirty` with uncommitted
/// changes), or "unknown" when that checkout is gone or git is missing.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}+dirty") } else { rev }
        }
        _ => "unknown".to_string(),
    }
}
