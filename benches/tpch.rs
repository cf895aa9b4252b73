//! TPC-H queries 1, 3, 5, 9 and 18 at SF 0.1 on a 2-executor embedded cluster, each beside
//! single-node DataFusion (all cores) over the same parquet files; first `SELECT 1`, the
//! planning and scheduling overhead of a query that does no work.
//!
//! `cargo bench -p fletch-benches --bench tpch` (add `-- q18` to filter).

use std::time::Duration;

use anyhow::{Result, bail};
use criterion::Criterion;
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_benches::{Timings, print_ratio, runtime, time_async_iterations, tpch_data};
use fletch_engine::LocalCluster;
use fletch_tpch as tpch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERIES: [usize; 5] = [1, 3, 5, 9, 18];
const SCALE_FACTOR: f64 = 0.1;

fn main() -> Result<()> {
    let rt = runtime()?;
    let dir = tpch_data(SCALE_FACTOR)?;
    let cluster = rt.block_on(LocalCluster::start(2))?;
    let fletch = cluster.session();
    let single = SessionContext::new_with_config(SessionConfig::new());
    rt.block_on(async {
        tpch::register(&fletch, &dir).await?;
        tpch::register(&single, &dir).await
    })?;

    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("overhead/select_1");
    let (single_times, fletch_times) = (Timings::default(), Timings::default());
    for (name, ctx, times) in [
        ("datafusion", &single, &single_times),
        ("fletch", &fletch, &fletch_times),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let what = format!("SELECT 1 on {name}");
                let select_1 = || async { ctx.sql("SELECT 1").await?.collect().await.map(drop) };
                times.record(time_async_iterations(iters, &what, select_1).await, iters)
            })
        });
    }
    group.finish();
    print_ratio(
        "SELECT 1 fletch",
        &fletch_times,
        &single_times,
        "datafusion",
    );

    for q in QUERIES {
        // Speed of a wrong answer means nothing: check it once before timing.
        let (expected, actual) = rt.block_on(async {
            let (_, expected) = tpch::run_query(&single, q).await?;
            let (_, actual) = tpch::run_query(&fletch, q).await?;
            anyhow::Ok((expected, actual))
        })?;
        if tpch::canonical_rows(&expected)? != tpch::canonical_rows(&actual)? {
            bail!("q{q}: Fletch's answer differs from single-node DataFusion's");
        }

        let mut group = criterion.benchmark_group(format!("tpch_sf{SCALE_FACTOR}/q{q}"));
        let (single_times, fletch_times) = (Timings::default(), Timings::default());
        for (name, ctx, times) in [
            ("datafusion", &single, &single_times),
            ("fletch", &fletch, &fletch_times),
        ] {
            group.bench_function(name, |b| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let what = format!("q{q} on {name}");
                    let query = || async { tpch::run_query(ctx, q).await.map(drop) };
                    times.record(time_async_iterations(iters, &what, query).await, iters)
                })
            });
        }
        group.finish();
        print_ratio(
            &format!("q{q} fletch"),
            &fletch_times,
            &single_times,
            "datafusion",
        );
    }
    criterion.final_summary();
    rt.block_on(cluster.shutdown());
    Ok(())
}
