//! A simple TPC-H timing loop: each query on single-node DataFusion (all cores) and on a
//! 2-executor embedded cluster, over the same parquet files, interleaved, with answers
//! compared on every run. The full benchmark suite comes later; this is its baseline.
//!
//! `cargo run --release --example tpch_timing -- [SF] [ITERATIONS]` (defaults 1 and 3).

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use datafusion::prelude::SessionContext;
use fletch::{LocalCluster, tpch};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn run(ctx: &SessionContext, n: usize) -> (Duration, Vec<String>) {
    let statements = tpch::query_statements(n).expect("query");
    let started = Instant::now();
    let answer = common::run_statements(ctx, &statements).await.expect("run");
    (started.elapsed(), common::sorted(common::rows(&answer)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sf: f64 = args
        .next()
        .map_or(1.0, |a| a.parse().expect("scale factor"));
    let iterations: usize = args.next().map_or(3, |a| a.parse().expect("iterations"));
    let root = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let dir = tpch::data_dir(&root.join(".cache").join("fletch"), sf);
    tpch::generate(&dir, sf).expect("generate");

    let single = common::oracle();
    tpch::register(&single, &dir).await.expect("register");
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let fletch = cluster.session();
    tpch::register(&fletch, &dir).await.expect("register");

    println!("TPC-H SF{sf}, {iterations} iterations, median seconds");
    println!("query  datafusion  fletch(2 executors)  ratio");
    let (mut total_df, mut total_fl) = (Duration::ZERO, Duration::ZERO);
    for n in 1..=22 {
        let (mut df_times, mut fl_times) = (Vec::new(), Vec::new());
        for _ in 0..iterations {
            let (t_df, a_df) = run(&single, n).await;
            let (t_fl, a_fl) = run(&fletch, n).await;
            assert_eq!(
                a_df, a_fl,
                "q{n}: Fletch's answer differs from DataFusion's"
            );
            df_times.push(t_df);
            fl_times.push(t_fl);
        }
        let (df, fl) = (median(df_times), median(fl_times));
        total_df += df;
        total_fl += fl;
        println!(
            "q{n:<5} {:>10.3}  {:>19.3}  {:>5.2}",
            df.as_secs_f64(),
            fl.as_secs_f64(),
            fl.as_secs_f64() / df.as_secs_f64()
        );
    }
    println!(
        "total  {:>10.3}  {:>19.3}  {:>5.2}",
        total_df.as_secs_f64(),
        total_fl.as_secs_f64(),
        total_fl.as_secs_f64() / total_df.as_secs_f64()
    );
    cluster.shutdown().await;
}
