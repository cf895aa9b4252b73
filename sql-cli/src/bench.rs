//! `fletch bench tpch`: each TPC-H query on single-node DataFusion (all cores) and on the
//! embedded cluster over the same files, interleaved, answers compared on every run.

use std::time::Duration;

use anyhow::{Result, bail};
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_engine::tpch;

pub struct TpchBench {
    pub queries: Vec<usize>,
    pub iterations: usize,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

impl TpchBench {
    pub async fn run(&self, fletch: &SessionContext, dir: &std::path::Path) -> Result<()> {
        if self.iterations == 0 {
            bail!("--iterations must be at least 1");
        }
        let single = SessionContext::new_with_config(SessionConfig::new());
        tpch::register(&single, dir).await?;
        println!("query,datafusion_s,fletch_s,ratio");
        let (mut total_single, mut total_fletch) = (Duration::ZERO, Duration::ZERO);
        for &n in &self.queries {
            let (mut single_times, mut fletch_times) = (Vec::new(), Vec::new());
            for _ in 0..self.iterations {
                let (t_single, expected) = tpch::run_query(&single, n).await?;
                let (t_fletch, actual) = tpch::run_query(fletch, n).await?;
                if tpch::canonical_rows(&expected)? != tpch::canonical_rows(&actual)? {
                    bail!("q{n}: Fletch's answer differs from single-node DataFusion's");
                }
                single_times.push(t_single);
                fletch_times.push(t_fletch);
            }
            let (s, f) = (median(single_times), median(fletch_times));
            total_single += s;
            total_fletch += f;
            println!(
                "q{n},{:.3},{:.3},{:.2}",
                s.as_secs_f64(),
                f.as_secs_f64(),
                f.as_secs_f64() / s.as_secs_f64()
            );
        }
        println!(
            "total,{:.3},{:.3},{:.2}",
            total_single.as_secs_f64(),
            total_fletch.as_secs_f64(),
            total_fletch.as_secs_f64() / total_single.as_secs_f64()
        );
        Ok(())
    }
}
