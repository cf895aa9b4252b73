//! Shared fixtures of Fletch's criterion benches: the runtime, TPC-H data, and per-
//! iteration timings kept beside criterion's so each bench can print its ratio against
//! the baseline measured in the same run.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fletch_tpch as tpch;
use parking_lot::Mutex;

/// A multi-threaded runtime like the shell's.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// TPC-H at `scale_factor` under `$FLETCH_DATA_DIR` (default `~/.cache/fletch`), the
/// shell's cache: generated once, then reused.
pub fn tpch_data(scale_factor: f64) -> Result<PathBuf> {
    let root = std::env::var_os("FLETCH_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fletch")))
        .unwrap_or_else(|| std::env::temp_dir().join("fletch"));
    let dir = tpch::data_dir(&root, scale_factor);
    tpch::generate(&dir, scale_factor).context("generating TPC-H data")?;
    Ok(dir)
}

/// Per-iteration times of one benchmark function, recorded from `iter_custom`.
#[derive(Debug, Clone, Default)]
pub struct Timings(Arc<Mutex<Vec<Duration>>>);

impl Timings {
    /// Records a sample of `iters` iterations that took `elapsed` in all, and returns
    /// `elapsed` for criterion.
    pub fn record(&self, elapsed: Duration, iters: u64) -> Duration {
        if iters > 0 {
            self.0.lock().push(elapsed / iters as u32);
        }
        elapsed
    }

    pub fn median(&self) -> Option<Duration> {
        let mut samples = self.0.lock().clone();
        samples.sort();
        samples.get(samples.len() / 2).copied()
    }
}

/// Runs `iteration` `iters` times; returns the time they took. A failure panics naming
/// `what`: criterion's routines have no way to report an error.
pub fn time_iterations<E: Display>(
    iters: u64,
    what: &str,
    mut iteration: impl FnMut() -> Result<(), E>,
) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        if let Err(e) = iteration() {
            panic!("{what} failed: {e}");
        }
    }
    started.elapsed()
}

/// [`time_iterations`] for async work.
pub async fn time_async_iterations<F, Fut, E>(iters: u64, what: &str, mut iteration: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let started = Instant::now();
    for _ in 0..iters {
        if let Err(e) = iteration().await {
            panic!("{what} failed: {e}");
        }
    }
    started.elapsed()
}

/// Prints `subject`'s median time over `baseline`'s, both measured in this run.
pub fn print_ratio(what: &str, subject: &Timings, baseline: &Timings, baseline_name: &str) {
    if let (Some(s), Some(b)) = (subject.median(), baseline.median()) {
        println!(
            "{what}: {:.3} ms vs {baseline_name} {:.3} ms, ratio {:.2}\n",
            s.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            s.as_secs_f64() / b.as_secs_f64()
        );
    }
}
