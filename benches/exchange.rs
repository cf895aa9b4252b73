//! Flight exchange throughput between two processes on loopback, beside a raw TCP stream
//! of the same number of bytes measured in the same run.
//!
//! The bench re-runs its own binary as a child process that hosts a Fletch executor and a
//! raw TCP sender. A task on that executor scans TPC-H lineitem (SF 0.1) into a retained
//! output partition; each iteration then reads the whole partition with `DoGet` through
//! `ExecutorClient::fetch`, the client every executor's shuffle reads use: IPC encoding,
//! HTTP/2 framing, loopback TCP and IPC decoding, as in a real exchange. "wide" carries all
//! 16 lineitem columns, "narrow" four integer columns.
//!
//! `cargo bench -p fletch-benches --bench exchange`

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use criterion::{Criterion, Throughput};
use datafusion::common::runtime::SpawnedTask;
use datafusion::prelude::{SessionConfig, SessionContext};
use fletch_benches::{Timings, runtime, time_async_iterations, tpch_data};
use fletch_executor::start_executor;
use fletch_planner::{ShuffleWriterExec, encode_stage_plan};
use fletch_transport::ExecutorClient;
use fletch_transport::protocol::{PartitionTicket, TaskDefinition};
use futures::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child's environment: run as the remote executor, not as the bench.
const CHILD_ROLE: &str = "FLETCH_BENCH_EXCHANGE_CHILD";
const CHUNK: usize = 1 << 20;

const WIDE: &str = "SELECT * FROM lineitem";
const NARROW: &str = "SELECT l_orderkey, l_partkey, l_suppkey, l_linenumber FROM lineitem";

fn main() -> Result<()> {
    if std::env::var_os(CHILD_ROLE).is_some() {
        return runtime()?.block_on(serve_as_child());
    }
    let rt = runtime()?;
    let child = RemoteExecutor::spawn(&rt)?;
    let client = {
        let _runtime = rt.enter();
        ExecutorClient::new(&child.executor_url).map_err(|e| anyhow!("{e}"))?
    };
    let dir = tpch_data(0.1)?;
    let wide = rt.block_on(load_partition(&client, &dir, "wide", WIDE))?;
    let narrow = rt.block_on(load_partition(&client, &dir, "narrow", NARROW))?;
    let raw = rt.block_on(TcpStream::connect(child.raw_addr))?;
    raw.set_nodelay(true)?;
    // The connection and the one buffer every read reuses.
    let raw = Arc::new(tokio::sync::Mutex::new((raw, vec![0u8; CHUNK])));

    let mut criterion = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("exchange_loopback");
    let raw_times = Timings::default();
    group.throughput(Throughput::Bytes(wide.bytes));
    group.bench_function("raw_tcp", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (raw, raw_times, bytes) = (Arc::clone(&raw), &raw_times, wide.bytes);
            async move {
                let elapsed = on_worker(async move {
                    let receive = || async {
                        let mut connection = raw.lock().await;
                        let (stream, buffer) = &mut *connection;
                        receive_raw(stream, bytes, buffer).await
                    };
                    time_async_iterations(iters, "raw TCP baseline", receive).await
                })
                .await;
                raw_times.record(elapsed, iters)
            }
        })
    });
    let mut figures = vec![("raw TCP", wide.bytes, raw_times)];
    for partition in [&wide, &narrow] {
        let times = Timings::default();
        group.throughput(Throughput::Bytes(partition.bytes));
        group.bench_function(format!("flight_doget_{}", partition.name), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (client, partition, times) = (client.clone(), partition.clone(), &times);
                async move {
                    let elapsed = on_worker(async move {
                        let read = || read_whole_partition(&client, &partition);
                        time_async_iterations(iters, "DoGet", read).await
                    })
                    .await;
                    times.record(elapsed, iters)
                }
            })
        });
        figures.push((partition.label, partition.bytes, times));
    }
    group.finish();
    for (label, bytes, times) in &figures {
        if let Some(median) = times.median() {
            println!(
                "{label}: {:.2} GB/s ({bytes} bytes in {:.2} ms)",
                *bytes as f64 / median.as_secs_f64() / 1e9,
                median.as_secs_f64() * 1e3
            );
        }
    }
    criterion.final_summary();
    drop(child);
    Ok(())
}

/// One retained task output on the child's executor.
#[derive(Clone)]
struct LoadedPartition {
    name: &'static str,
    label: &'static str,
    query_id: String,
    schema: SchemaRef,
    /// Bytes of Arrow data in the partition (the sum of its arrays' buffers).
    bytes: u64,
}

/// Runs `sql` as a one-task stage on the executor, its output retained for repeated reads.
async fn load_partition(
    client: &ExecutorClient,
    dir: &std::path::Path,
    name: &'static str,
    sql: &str,
) -> Result<LoadedPartition> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    fletch_tpch::register(&ctx, dir).await?;
    let scan = ctx.sql(sql).await?.create_physical_plan().await?;
    let schema = scan.schema();
    let plan = ShuffleWriterExec::try_new(0, scan, None)?;
    let query_id = format!("exchange-bench-{name}");
    client
        .run_task(&TaskDefinition {
            query_id: query_id.clone(),
            stage: 0,
            task: 0,
            plan: encode_stage_plan(&(Arc::new(plan) as _))?,
            inputs: vec![],
            config: vec![],
            retain_outputs: true,
            attempt: 0,
        })
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut partition = LoadedPartition {
        name,
        label: if name == "wide" {
            "Flight DoGet, lineitem all 16 columns"
        } else {
            "Flight DoGet, lineitem 4 integer columns"
        },
        query_id,
        schema,
        bytes: 0,
    };
    partition.bytes = read_partition(client, &partition).await?;
    if partition.bytes == 0 {
        bail!("the {name} partition is empty");
    }
    Ok(partition)
}

/// Runs `work` on a runtime worker, where an executor's tasks read exchanges, not on
/// the thread criterion blocks on (one more thread hop per wake-up).
async fn on_worker<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match SpawnedTask::spawn(work).join().await {
        Ok(value) => value,
        Err(e) => panic!("reader task failed: {e}"),
    }
}

/// Reads the whole partition and checks it carried every byte it did when loaded.
async fn read_whole_partition(client: &ExecutorClient, partition: &LoadedPartition) -> Result<()> {
    let bytes = read_partition(client, partition).await?;
    if bytes != partition.bytes {
        bail!("read {bytes} bytes, expected {}", partition.bytes);
    }
    Ok(())
}

/// Reads the whole partition; returns its Arrow bytes.
async fn read_partition(client: &ExecutorClient, partition: &LoadedPartition) -> Result<u64> {
    let ticket = PartitionTicket {
        query_id: partition.query_id.clone(),
        stage: 0,
        task: 0,
        partition: 0,
        retain: true,
        attempt: 0,
    };
    let batches = client.fetch(ticket, partition.schema.clone());
    let bytes = batches
        .try_fold(
            0u64,
            |sum, batch| async move { Ok(sum + arrow_bytes(&batch)) },
        )
        .await?;
    Ok(bytes)
}

fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

async fn receive_raw(stream: &mut TcpStream, bytes: u64, buffer: &mut [u8]) -> Result<()> {
    stream.write_u64(bytes).await?;
    let mut left = bytes as usize;
    while left > 0 {
        let want = left.min(buffer.len());
        let n = stream.read(&mut buffer[..want]).await?;
        if n == 0 {
            bail!("raw sender closed the connection with {left} bytes to go");
        }
        left -= n;
    }
    Ok(())
}

/// The child process: the executor that holds the data, and the raw sender.
struct RemoteExecutor {
    process: Child,
    executor_url: String,
    raw_addr: SocketAddr,
}

impl RemoteExecutor {
    fn spawn(rt: &tokio::runtime::Runtime) -> Result<Self> {
        let mut process = Command::new(std::env::current_exe()?)
            .env(CHILD_ROLE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the executor process")?;
        let stdout = process.stdout.take().context("child stdout")?;
        // Own the child before anything can fail, so it is killed on every path.
        let mut remote = Self {
            process,
            executor_url: String::new(),
            raw_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        };
        let line = rt.block_on(async {
            let stdout = tokio::process::ChildStdout::from_std(stdout)?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).await?;
            anyhow::Ok(line)
        })?;
        let mut parts = line.split_whitespace();
        remote.executor_url = parts.next().context("child printed no URL")?.to_string();
        remote.raw_addr = parts.next().context("child printed no address")?.parse()?;
        Ok(remote)
    }
}

impl Drop for RemoteExecutor {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Serves until stdin closes, which happens when the parent exits however it exits.
async fn serve_as_child() -> Result<()> {
    let executor = start_executor(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let raw = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    println!("{} {}", executor.url(), raw.local_addr()?);
    let sender = SpawnedTask::spawn(send_raw(raw));
    let mut ignored = Vec::new();
    tokio::io::stdin().read_to_end(&mut ignored).await?;
    drop(sender); // aborts the sender
    executor.shutdown().await;
    Ok(())
}

/// Answers each request (a u64 byte count) with that many bytes from one reused buffer.
async fn send_raw(listener: TcpListener) -> Result<()> {
    let chunk = vec![7u8; CHUNK];
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        while let Ok(bytes) = stream.read_u64().await {
            let mut left = bytes as usize;
            while left > 0 {
                let n = left.min(CHUNK);
                stream.write_all(&chunk[..n]).await?;
                left -= n;
            }
        }
    }
}
