//! `fletch bench tpch`: each TPC-H query on single-node DataFusion (all cores) and on an
//! embedded cluster over the same files, interleaved, answers compared on every run.
//! Prints CSV on stdout; `--json` also writes the figures with what produced them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_engine::{LocalCluster, tpch};
use serde::Serialize;

pub struct TpchBench {
    pub scale_factor: f64,
    pub executors: usize,
    pub queries: Vec<usize>,
    pub iterations: usize,
    pub json: Option<PathBuf>,
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
}

#[derive(Debug, Serialize)]
struct Settings {
    scale_factor: f64,
    executors: usize,
    iterations: usize,
    /// Partitions per stage in Fletch, and DataFusion's partitions single-node.
    target_partitions: usize,
    data_dir: String,
}

#[derive(Debug, Serialize)]
struct QueryFigures {
    query: usize,
    datafusion_median_s: f64,
    fletch_median_s: f64,
    ratio: f64,
    datafusion_runs_s: Vec<f64>,
    fletch_runs_s: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Totals {
    datafusion_s: f64,
    fletch_s: f64,
    ratio: f64,
    worst_query: usize,
    worst_ratio: f64,
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
        tpch::register(&fletch, &dir).await?;
        let single = SessionContext::new_with_config(SessionConfig::new());
        tpch::register(&single, &dir).await?;
        let target_partitions = fletch.state().config().target_partitions();

        println!("query,datafusion_s,fletch_s,ratio");
        let mut figures = Vec::with_capacity(self.queries.len());
        for &n in &self.queries {
            let (mut single_times, mut fletch_times) = (Vec::new(), Vec::new());
            for _ in 0..self.iterations {
                let (t_single, expected) = tpch::run_query(&single, n).await?;
                let (t_fletch, actual) = tpch::run_query(&fletch, n).await?;
                if tpch::canonical_rows(&expected)? != tpch::canonical_rows(&actual)? {
                    bail!("q{n}: Fletch's answer differs from single-node DataFusion's");
                }
                single_times.push(t_single);
                fletch_times.push(t_fletch);
            }
            let (s, f) = (median(&single_times), median(&fletch_times));
            let q = QueryFigures {
                query: n,
                datafusion_median_s: s.as_secs_f64(),
                fletch_median_s: f.as_secs_f64(),
                ratio: f.as_secs_f64() / s.as_secs_f64(),
                datafusion_runs_s: single_times.iter().map(Duration::as_secs_f64).collect(),
                fletch_runs_s: fletch_times.iter().map(Duration::as_secs_f64).collect(),
            };
            println!(
                "q{n},{:.3},{:.3},{:.2}",
                q.datafusion_median_s, q.fletch_median_s, q.ratio
            );
            figures.push(q);
        }
        cluster.shutdown().await;

        let total = totals(&figures);
        println!(
            "total,{:.3},{:.3},{:.2}",
            total.datafusion_s, total.fletch_s, total.ratio
        );
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
                },
                queries: figures,
                total,
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
    Totals {
        datafusion_s,
        fletch_s,
        ratio: fletch_s / datafusion_s,
        worst_query: worst.0,
        worst_ratio: worst.1,
    }
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
