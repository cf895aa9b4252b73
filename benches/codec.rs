//! Serialization on the scheduling path: every stage plan of TPC-H q5 and q18 (SF 0.1,
//! file references only) encoded and decoded with Fletch's codec, beside datafusion-proto
//! encoding and decoding the single-node plan of the same query; and the `TaskDefinition`
//! message each task launch sends.
//!
//! `cargo bench -p fletch-benches --bench codec`

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use criterion::{Criterion, Throughput};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{physical_plan_from_bytes, physical_plan_to_bytes};
use fletch_benches::{Timings, print_ratio, runtime, time_iterations, tpch_data};
use fletch_engine::default_session_config;
use fletch_planner::{decode_stage_plan, distribute, encode_stage_plan};
use fletch_tpch as tpch;
use fletch_transport::protocol::{ConfigEntry, StageLocations, TaskDefinition};
use prost::Message;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An `iter_custom` routine running `f` that also records its timings.
fn timed<'a>(
    times: &'a Timings,
    f: impl Fn() -> datafusion::error::Result<()> + 'a,
) -> impl FnMut(u64) -> Duration + 'a {
    move |iters| times.record(time_iterations(iters, "codec", &f), iters)
}

fn main() -> Result<()> {
    let rt = runtime()?;
    let dir = tpch_data(0.1)?;
    // The single-node plan a Fletch session would distribute (its settings, no rule).
    let ctx = SessionContext::new_with_config(default_session_config().with_target_partitions(4));
    rt.block_on(tpch::register(&ctx, &dir))?;
    let task_ctx = ctx.task_ctx();

    let mut criterion = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for q in [5, 18] {
        let sql = tpch::query_statements(q)
            .and_then(|s| s.last().copied())
            .ok_or_else(|| anyhow::anyhow!("no TPC-H q{q}"))?;
        let plan = rt.block_on(async { ctx.sql(sql).await?.create_physical_plan().await })?;
        let stages: Vec<Arc<dyn ExecutionPlan>> =
            distribute(Arc::clone(&plan), ctx.state().config_options())?
                .stages
                .into_iter()
                .map(|s| s.plan)
                .collect();
        let encoded: Vec<_> = stages
            .iter()
            .map(encode_stage_plan)
            .collect::<datafusion::error::Result<_>>()?;
        let single_bytes = physical_plan_to_bytes(Arc::clone(&plan))?;
        let stage_bytes: usize = encoded.iter().map(|b| b.len()).sum();
        println!(
            "q{q}: {} stages, {stage_bytes} bytes of stage plans; single-node plan {} bytes",
            stages.len(),
            single_bytes.len()
        );

        let mut group = criterion.benchmark_group(format!("plan_codec/q{q}"));
        let times: [Timings; 4] = Default::default();
        group.throughput(Throughput::Bytes(single_bytes.len() as u64));
        group.bench_function("datafusion_proto_encode_single_node", |b| {
            b.iter_custom(timed(&times[0], || {
                physical_plan_to_bytes(Arc::clone(&plan)).map(drop)
            }))
        });
        group.bench_function("datafusion_proto_decode_single_node", |b| {
            b.iter_custom(timed(&times[1], || {
                physical_plan_from_bytes(&single_bytes, &task_ctx).map(drop)
            }))
        });
        group.throughput(Throughput::Bytes(stage_bytes as u64));
        group.bench_function("fletch_encode_all_stages", |b| {
            b.iter_custom(timed(&times[2], || {
                stages
                    .iter()
                    .try_for_each(|s| encode_stage_plan(s).map(drop))
            }))
        });
        group.bench_function("fletch_decode_all_stages", |b| {
            b.iter_custom(timed(&times[3], || {
                encoded
                    .iter()
                    .try_for_each(|bytes| decode_stage_plan(bytes, &task_ctx).map(drop))
            }))
        });
        group.finish();
        print_ratio(
            &format!("q{q} encode all stages"),
            &times[2],
            &times[0],
            "single-node plan",
        );
        print_ratio(
            &format!("q{q} decode all stages"),
            &times[3],
            &times[1],
            "single-node plan",
        );
    }

    // What one task launch carries besides the plan (which is shared, encoded once).
    let task = TaskDefinition {
        query_id: "0b5e0a52-8f1e-4f5c-9d59-8e1f7c1a2b3c".to_string(),
        stage: 7,
        task: 1,
        plan: bytes::Bytes::from(vec![0u8; 16 * 1024]),
        inputs: (0..3)
            .map(|stage| StageLocations {
                stage,
                task_urls: (0..8)
                    .map(|t| format!("http://127.0.0.1:{}", 40000 + t))
                    .collect(),
                retain: false,
                task_attempts: vec![0; 8],
            })
            .collect(),
        config: vec![ConfigEntry {
            key: "datafusion.execution.target_partitions".to_string(),
            value: "8".to_string(),
        }],
        retain_outputs: false,
        attempt: 0,
    };
    let wire = task.encode_to_vec();
    let mut group = criterion.benchmark_group("task_message");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("encode", |b| b.iter(|| task.encode_to_vec()));
    group.bench_function("decode", |b| {
        b.iter(|| TaskDefinition::decode(wire.as_slice()).map(drop))
    });
    group.finish();
    criterion.final_summary();
    Ok(())
}
