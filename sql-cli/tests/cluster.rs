//! A real multi-process cluster: `fletch coordinator` and `fletch executor` processes
//! on loopback with OS-picked ports. Executors join, are listed, and the coordinator
//! declares one lost when it is killed, and one left when it stops on SIGTERM. Every
//! process is killed when the test ends, whatever happens.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{HEARTBEATS, Process, send_signal, start, start_executor as start_executor_signed_in};
use std::time::{Duration, Instant};

use fletch_transport::protocol::ExecutorStatus;
use fletch_transport::{CoordinatorClient, ExecutorClient};

fn start_executor(coordinator: &str) -> Process {
    start_executor_signed_in(coordinator, &[])
}

/// Polls the coordinator until `done` holds for its executor list (at most 30 s).
async fn wait_for(
    coordinator: &CoordinatorClient,
    what: &str,
    done: impl Fn(&[ExecutorStatus]) -> bool,
) -> Vec<ExecutorStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let executors = coordinator.list_executors().await.expect("list executors");
        if done(&executors) {
            return executors;
        }
        assert!(Instant::now() < deadline, "{what}: {executors:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of<'a>(executors: &'a [ExecutorStatus], url: &str) -> Option<&'a str> {
    executors
        .iter()
        .find(|e| e.url == url)
        .map(|e| e.state.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_join_are_lost_when_killed_and_leave_on_sigterm() {
    let mut args = vec!["coordinator", "--listen", "127.0.0.1:0"];
    args.extend(HEARTBEATS);
    let coordinator = start(&args);
    let client = CoordinatorClient::new(&coordinator.url).expect("client");

    let mut killed = start_executor(&coordinator.url);
    let mut stopped = start_executor(&coordinator.url);
    let joined = wait_for(&client, "both executors alive", |e| {
        e.len() == 2 && e.iter().all(|e| e.state == "alive")
    })
    .await;
    for executor in &joined {
        assert_eq!(executor.slots, 2);
        assert_eq!(executor.memory_limit, 256 << 20);
    }

    killed.child.kill().expect("SIGKILL");
    let after_kill = wait_for(&client, "the killed executor declared lost", |e| {
        state_of(e, &killed.url) == Some("lost")
    })
    .await;
    assert_eq!(state_of(&after_kill, &stopped.url), Some("alive"));

    send_signal(&stopped, "-TERM");
    let exit = stopped.child.wait().expect("executor exits");
    assert!(exit.success(), "a stopped executor exits cleanly: {exit:?}");
    let after_term = client.list_executors().await.expect("list");
    assert_eq!(state_of(&after_term, &stopped.url), Some("left"));

    // A new executor joins the running cluster.
    let newcomer = start_executor(&coordinator.url);
    wait_for(&client, "the newcomer alive", |e| {
        state_of(e, &newcomer.url) == Some("alive")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_garbage_and_keeps_serving() {
    let coordinator = start(&["coordinator", "--listen", "127.0.0.1:0"]);
    let mut flight = arrow_flight::FlightClient::new(
        tonic::transport::Channel::from_shared(coordinator.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    for (kind, body) in [
        ("fletch.heartbeat", vec![0xff, 0xff, 0xff]),
        ("fletch.register_executor", Vec::new()),
        ("fletch.no_such_action", Vec::new()),
    ] {
        let result = flight
            .do_action(arrow_flight::Action::new(kind, body))
            .await;
        let err = match result {
            Err(e) => e.to_string(),
            Ok(mut stream) => {
                use futures::StreamExt;
                match stream.next().await {
                    Some(Err(e)) => e.to_string(),
                    other => panic!("{kind}: expected an error, got {other:?}"),
                }
            }
        };
        assert!(!err.is_empty(), "{kind}");
    }
    let client = CoordinatorClient::new(&coordinator.url).expect("client");
    assert!(
        client
            .list_executors()
            .await
            .expect("still serving")
            .is_empty()
    );
}

/// Queries run on executor processes that joined an in-process coordinator; a table
/// with two replicas still answers once one executor is killed and declared lost, its
/// fragments are re-replicated, and it answers after a second executor is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_on_executor_processes_and_survive_a_lost_replica() {
    use datafusion::prelude::{SessionConfig, SessionContext};

    let ProcessCluster {
        coordinator,
        server,
        client,
        executors,
        ctx,
    } = process_cluster(3).await;
    let oracle = SessionContext::new_with_config(SessionConfig::new());
    let load = "CREATE TABLE t PARTITION BY HASH (k) INTO 3 FRAGMENTS REPLICAS 2 AS \
                SELECT value AS k, value % 7 AS g FROM generate_series(1, 20000)";
    collect(fletch_engine::sql(&ctx, load).await).await;
    collect(
        oracle
            .sql("CREATE TABLE t AS SELECT value AS k, value % 7 AS g FROM generate_series(1, 20000)")
            .await,
    )
    .await;
    let query = "SELECT g, count(*), sum(k) FROM t GROUP BY g ORDER BY g";
    let expected = text(collect(oracle.sql(query).await).await);
    assert_eq!(fletch_text(&ctx, query).await, expected);

    let mut executors = executors;
    let victim_url = kill_and_wait_lost(&mut executors, &client).await;
    assert_eq!(fletch_text(&ctx, query).await, expected);

    // The lost executor's fragments are copied onto the third executor: two replicas
    // each again, so a second loss loses nothing either.
    coordinator.wait_for_releases().await;
    let holders = fletch_text(
        &ctx,
        "SELECT executors FROM fletch.fragments ORDER BY fragment",
    )
    .await;
    // Three fragments, two replicas, two executors left: each holds every fragment.
    for url in executors.iter().map(|e| e.url.as_str()) {
        assert_eq!(holders.matches(url).count(), 3, "{holders}");
    }
    assert!(!holders.contains(&victim_url), "{holders}");
    kill_and_wait_lost(&mut executors, &client).await;
    assert_eq!(fletch_text(&ctx, query).await, expected);
    drop(executors);
    server.shutdown().await;
}

/// SIGKILLs the first executor and waits until the coordinator calls it lost.
async fn kill_and_wait_lost(executors: &mut Vec<Process>, client: &CoordinatorClient) -> String {
    let victim = executors.remove(0);
    let url = victim.url.clone();
    drop(victim); // SIGKILL
    wait_for(client, "the killed executor declared lost", |e| {
        state_of(e, &url) == Some("lost")
    })
    .await;
    url
}

/// The answer of `sql` on a Fletch session, as a table of text.
async fn fletch_text(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
    text(collect(fletch_engine::sql(ctx, sql).await).await)
}

async fn collect(
    df: datafusion::error::Result<datafusion::dataframe::DataFrame>,
) -> Vec<arrow::array::RecordBatch> {
    df.expect("plan").collect().await.expect("run")
}

fn text(batches: Vec<arrow::array::RecordBatch>) -> String {
    arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string()
}

/// The rows of table `t` in the join tests.
const JOIN_DATA: &str =
    "SELECT value AS k, value % 101 AS g, value % 997 AS j FROM generate_series(1, 300000)";
/// A join of `t` with itself that takes about half a second on a debug build.
const JOIN_QUERY: &str = "SELECT a.g, count(*), sum(b.k) FROM t a JOIN t b \
     ON a.j = b.j AND a.g = b.g GROUP BY a.g ORDER BY a.g";

/// Single-node DataFusion's answer to [`JOIN_QUERY`].
async fn join_oracle() -> String {
    use datafusion::prelude::{SessionConfig, SessionContext};

    let oracle = SessionContext::new_with_config(SessionConfig::new());
    collect(oracle.sql(&format!("CREATE TABLE t AS {JOIN_DATA}")).await).await;
    text(collect(oracle.sql(JOIN_QUERY).await).await)
}

/// Loads `t` into the cluster, hash-fragmented with two replicas.
async fn load_join_table(ctx: &datafusion::prelude::SessionContext) {
    let load =
        format!("CREATE TABLE t PARTITION BY HASH (k) INTO 6 FRAGMENTS REPLICAS 2 AS {JOIN_DATA}");
    collect(fletch_engine::sql(ctx, &load).await).await;
}

/// Chaos: a query runs on three executor processes over a table with two replicas;
/// one executor is SIGKILLed once the query has finished a seeded share of its tasks.
/// The answer must equal the oracle's every time, and a run counts only if the
/// coordinator recovered (a query that ended first, or lost nothing it needed, proves
/// nothing): seeds go on past `FLETCH_CHAOS_SEEDS` (default 1,2,3,4) until as many
/// runs as it names have recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_query_survives_an_executor_killed_mid_run() {
    let seeds = chaos_seeds("1,2,3,4");
    let wanted = seeds.len();
    let expected = join_oracle().await;
    let query = JOIN_QUERY;

    let mut recovered = 0;
    for (run, seed) in more_seeds(&seeds).enumerate() {
        assert!(
            run < 4 * wanted,
            "only {recovered} of {run} runs made the coordinator recover; wanted {wanted}"
        );
        let ProcessCluster {
            coordinator,
            server,
            mut executors,
            ctx,
            ..
        } = process_cluster(3).await;
        load_join_table(&ctx).await;
        let before = coordinator.recovery_stats();
        let share = seeded(seed, 1) % 90;
        let running = QueryRun::start({
            let ctx = ctx.clone();
            async move { fletch_engine::sql(&ctx, query).await?.collect().await }
        });
        let mid_run = running.until_tasks_done(&coordinator, share).await;
        let victim = executors.remove((seed % 3) as usize);
        drop(victim); // SIGKILL
        let answer = running.join().await.map(text);
        let stats = coordinator.recovery_stats();
        match answer {
            Ok(answer) if answer == expected => {}
            Ok(answer) => panic!("seed {seed}: wrong answer\n{answer}\nexpected\n{expected}"),
            Err(e) => panic!("seed {seed}: the query failed: {e}"),
        }
        let exercised = mid_run && stats != before;
        recovered += usize::from(exercised);
        println!(
            "seed {seed}: executor killed after {share}% of the tasks (mid-run: {mid_run}), \
             answer correct, recovery: {stats:?}{}",
            if exercised {
                ""
            } else {
                " (no recovery: not counted)"
            }
        );
        drop(executors);
        server.shutdown().await;
        if recovered == wanted {
            break;
        }
    }
    println!("chaos: {recovered} runs recovered from a killed executor, every answer correct");
}

/// Seeds from `FLETCH_CHAOS_SEEDS`, else `default`.
fn chaos_seeds(default: &str) -> Vec<u64> {
    std::env::var("FLETCH_CHAOS_SEEDS")
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// `seeds`, then new ones, for runs that did not exercise recovery.
fn more_seeds(seeds: &[u64]) -> impl Iterator<Item = u64> + '_ {
    seeds.iter().copied().chain(1000..)
}

/// The `n`th pseudo-random number of `seed`.
fn seeded(seed: u64, n: u64) -> u64 {
    (0..n).fold(seed, |x, _| {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    }) >> 33
}

/// A query running in its own task, which says when it has ended.
struct QueryRun<T> {
    task: datafusion::common::runtime::SpawnedTask<T>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl<T: Send + 'static> QueryRun<T> {
    fn start(query: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let task = datafusion::common::runtime::SpawnedTask::spawn(async move {
            let answer = query.await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            answer
        });
        Self { task, ended }
    }

    /// Waits until the coordinator's running queries have finished `percent` of their
    /// tasks: a moment set by the query's state, not by a clock. False if the query
    /// ended first.
    async fn until_tasks_done(
        &self,
        coordinator: &fletch_engine::Coordinator,
        percent: u64,
    ) -> bool {
        loop {
            if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            let progress = coordinator.progress();
            if progress.queries > 0
                && progress.tasks > 0
                && progress.tasks_done as u64 * 100 >= progress.tasks as u64 * percent
            {
                return true;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn join(self) -> T {
        self.task.join().await.expect("query task")
    }
}

/// With every executor gone, a query fails within a few attempts instead of hanging,
/// the next one says the cluster has no executors, and once an executor joins again
/// queries run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_executor_left_queries_fail_fast_and_run_again_when_one_returns() {
    let ProcessCluster {
        server,
        client,
        executors,
        ctx,
        ..
    } = process_cluster(2).await;
    let query = "SELECT value % 10 AS g, count(*) FROM generate_series(1, 10000) GROUP BY g";
    let run = |ctx: datafusion::prelude::SessionContext| async move {
        // Only a hang detector: a failing query takes milliseconds.
        tokio::time::timeout(Duration::from_secs(60), async move {
            fletch_engine::sql(&ctx, query).await?.collect().await
        })
        .await
        .expect("the query must not hang")
    };
    assert_eq!(
        text(run(ctx.clone()).await.expect("runs")).lines().count(),
        14
    );

    drop(executors); // SIGKILL both
    let err = run(ctx.clone()).await.expect_err("no executor can run it");
    assert!(err.to_string().contains("was lost"), "{err}");
    let err = run(ctx.clone()).await.expect_err("still none");
    assert!(err.to_string().contains("no executors"), "{err}");

    let _back = start_executor(server.url());
    wait_for(&client, "an executor alive again", |e| {
        e.iter().any(|e| e.state == "alive")
    })
    .await;
    assert_eq!(
        text(run(ctx).await.expect("runs again")).lines().count(),
        14
    );
    server.shutdown().await;
}

/// Random bytes on every entry point of an executor and a coordinator process: each
/// gets an error status, and both keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_port_is_refused_and_the_processes_keep_serving() {
    use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, Ticket};
    use futures::StreamExt;

    let mut args = vec!["coordinator", "--listen", "127.0.0.1:0"];
    args.extend(HEARTBEATS);
    let coordinator = start(&args);
    let executor = start_executor(&coordinator.url);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random_bytes = |max: usize| -> Vec<u8> {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let len = (next() as usize) % max;
        (0..len).map(|_| next() as u8).collect()
    };
    let connect = |url: String| async move {
        FlightClient::new(
            tonic::transport::Channel::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect"),
        )
    };
    let actions = [
        "fletch.run_task",
        "fletch.release_query",
        "fletch.drop_table",
        "fletch.drop_load",
        "fletch.set_memory_limit",
        "fletch.register_executor",
        "fletch.heartbeat",
        "fletch.leave",
        "no.such.action",
    ];
    let mut refused = 0;
    for url in [&executor.url, &coordinator.url] {
        let mut flight = connect(url.clone()).await;
        for round in 0..40 {
            let ticket = Ticket::new(random_bytes(200));
            if let Ok(mut stream) = flight.do_get(ticket).await {
                while let Some(item) = stream.next().await {
                    if item.is_err() {
                        break;
                    }
                }
            }
            let kind = actions[round % actions.len()];
            let outcome = match flight.do_action(Action::new(kind, random_bytes(300))).await {
                Err(_) => Err(()),
                Ok(mut replies) => match replies.next().await {
                    Some(Err(_)) => Err(()),
                    _ => Ok(()),
                },
            };
            refused += usize::from(outcome.is_err());
            let data = FlightData::new()
                .with_descriptor(FlightDescriptor::new_cmd(random_bytes(100)))
                .with_data_header(random_bytes(100))
                .with_data_body(random_bytes(1000));
            let put = futures::stream::iter(vec![Ok(data)]);
            if let Ok(mut results) = flight.do_put(put).await {
                while let Some(item) = results.next().await {
                    if item.is_err() {
                        break;
                    }
                }
            }
        }
    }
    assert!(
        refused > 40,
        "most random actions are refused: {refused} of 80"
    );
    // Both still serve: the coordinator lists the executor, which still answers.
    let client = CoordinatorClient::new(&coordinator.url).expect("client");
    let executors = wait_for(&client, "the executor still alive", |e| {
        state_of(e, &executor.url) == Some("alive")
    })
    .await;
    assert_eq!(
        executors.len(),
        1,
        "random registrations were refused: {executors:?}"
    );
    let executor_client = ExecutorClient::new(&executor.url).expect("client");
    executor_client
        .set_memory_limit(256 << 20)
        .await
        .expect("the executor still serves");
}

/// Chaos over TPC-H at SF 0.1: three executor processes; a query over the parquet
/// files loses one executor at a seeded moment, then, with the tables cached (two
/// replicas, hash-fragmented on their keys), another query loses a second one. Every
/// answer equals single-node DataFusion's. `FLETCH_CHAOS_SEEDS` picks the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_tpch_over_files_then_cached_tables_loses_two_executors() {
    use datafusion::prelude::{SessionConfig, SessionContext};
    use fletch_tpch as tpch;

    let dir = std::env::var_os("FLETCH_TEST_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fletch-test-data"))
        .join("tpch-sf0.1");
    let generated = dir.clone();
    tokio::task::spawn_blocking(move || tpch::generate(&generated, 0.1))
        .await
        .expect("generation task")
        .expect("TPC-H generation");
    let oracle = SessionContext::new_with_config(SessionConfig::new());
    tpch::register(&oracle, &dir)
        .await
        .expect("register oracle");

    let seeds = chaos_seeds("1");
    let wanted = seeds.len();
    let queries = [3usize, 5, 9, 10, 18, 21];
    let (mut runs, mut recovered) = (0, 0);
    for (attempt, seed) in more_seeds(&seeds).enumerate() {
        assert!(
            attempt < 4 * wanted,
            "only {recovered} of {attempt} seeds made the coordinator recover both times; \
             wanted {wanted}"
        );
        let ProcessCluster {
            coordinator,
            server,
            client,
            mut executors,
            ctx,
        } = process_cluster(3).await;
        tpch::register(&ctx, &dir).await.expect("register");

        let mut random = seed;
        let mut next = move || {
            random = random
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            random >> 33
        };
        let mut both_recovered = true;
        for cached in [false, true] {
            if cached {
                for statement in tpch::cache_statements() {
                    fletch_engine::sql(&ctx, &statement)
                        .await
                        .expect("cache the tables")
                        .collect()
                        .await
                        .expect("cache the tables");
                }
            }
            let n = queries[(next() as usize) % queries.len()];
            let (_, expected) = tpch::run_query(&oracle, n).await.expect("oracle");
            let expected = tpch::canonical_rows(&expected).expect("rows");
            let before = coordinator.recovery_stats();
            let share = next() % 90;
            let running = QueryRun::start({
                let ctx = ctx.clone();
                async move { tpch::run_query(&ctx, n).await }
            });
            let mid_run = running.until_tasks_done(&coordinator, share).await;
            let victim = executors.remove((next() as usize) % executors.len());
            let victim_url = victim.url.clone();
            drop(victim); // SIGKILL
            let (_, actual) = running
                .join()
                .await
                .unwrap_or_else(|e| panic!("seed {seed} q{n} (cached: {cached}): {e}"));
            assert_eq!(
                tpch::canonical_rows(&actual).expect("rows"),
                expected,
                "seed {seed} q{n} (cached: {cached})"
            );
            let stats = coordinator.recovery_stats();
            let exercised = mid_run && stats != before;
            both_recovered &= exercised;
            println!(
                "seed {seed}: q{n} over {} lost an executor after {share}% of its tasks \
                 (mid-run: {mid_run}); answer correct; recovery: {stats:?}",
                if cached { "cached tables" } else { "files" },
            );
            runs += 1;
            wait_for(&client, "the killed executor declared lost", |e| {
                state_of(e, &victim_url) == Some("lost")
            })
            .await;
            coordinator.wait_for_releases().await;
        }
        drop(executors);
        server.shutdown().await;
        recovered += usize::from(both_recovered);
        if recovered == wanted {
            break;
        }
    }
    println!(
        "chaos tpch: {runs} runs correct; {recovered} seeds recovered from both of their kills"
    );
}

/// A coordinator in this process, serving on loopback, and executor processes that
/// joined it, with a session over it.
struct ProcessCluster {
    coordinator: Arc<fletch_engine::Coordinator>,
    server: fletch_engine::CoordinatorServer,
    client: CoordinatorClient,
    executors: Vec<Process>,
    ctx: datafusion::prelude::SessionContext,
}

async fn process_cluster(executors: usize) -> ProcessCluster {
    use fletch_engine::{Coordinator, MembershipOptions, default_session_config, fletch_session};

    let options = MembershipOptions {
        heartbeat_interval: Duration::from_millis(250),
        lost_after: 8,
    };
    let coordinator = Coordinator::with_membership(&[], options).expect("coordinator");
    let server = fletch_engine::serve_coordinator(
        Arc::clone(&coordinator),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("serve");
    let client = CoordinatorClient::new(server.url()).expect("client");
    let processes: Vec<Process> = (0..executors)
        .map(|_| start_executor(server.url()))
        .collect();
    wait_for(&client, "every executor alive", |e| {
        e.iter().filter(|e| e.state == "alive").count() == executors
    })
    .await;
    let ctx = fletch_session(Arc::clone(&coordinator), default_session_config());
    ProcessCluster {
        coordinator,
        server,
        client,
        executors: processes,
        ctx,
    }
}

/// An executor frozen mid-query (SIGSTOP: its connections stay open, it answers
/// nothing) is declared lost when its heartbeats stop, and the query that was waiting
/// on it runs again on the others instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_executor_is_declared_lost_and_its_query_runs_again() {
    let ProcessCluster {
        coordinator,
        server,
        client,
        executors,
        ctx,
    } = process_cluster(3).await;
    let expected = join_oracle().await;
    load_join_table(&ctx).await;
    let query = JOIN_QUERY;

    let before = coordinator.recovery_stats();
    let running = QueryRun::start({
        let ctx = ctx.clone();
        // Only a hang detector: the test passes in seconds.
        tokio::time::timeout(Duration::from_secs(120), async move {
            fletch_engine::sql(&ctx, query).await?.collect().await
        })
    });
    assert!(
        running.until_tasks_done(&coordinator, 0).await,
        "the query must be running when the executor freezes"
    );
    let frozen = &executors[1];
    send_signal(frozen, "-STOP");
    let answer = running
        .join()
        .await
        .expect("the query must not hang")
        .map(text)
        .expect("the query runs again on the others");
    assert_eq!(answer, expected);
    assert_ne!(
        coordinator.recovery_stats(),
        before,
        "the frozen executor's work ran again elsewhere"
    );
    let states = client.list_executors().await.expect("list");
    assert_eq!(state_of(&states, &frozen.url), Some("lost"), "{states:?}");
    drop(coordinator);
    drop(executors); // SIGKILL, stopped or not
    server.shutdown().await;
}

/// SIGTERM mid-query: the executor leaves the cluster (no new work goes to it), hands
/// the fragments it held over to the others — even those of a one-replica table, which
/// only it had — and lets the running query finish before it stops, so the query
/// answers without running anything again, no row is lost, and the process exits
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_stopped_with_sigterm_lets_its_running_query_finish() {
    let ProcessCluster {
        coordinator,
        server,
        client,
        mut executors,
        ctx,
    } = process_cluster(3).await;
    let expected = join_oracle().await;
    load_join_table(&ctx).await;
    let single = "SELECT g, sum(k), count(*) FROM single GROUP BY g ORDER BY g";
    let oracle = datafusion::prelude::SessionContext::new();
    collect(
        oracle
            .sql(&format!("CREATE TABLE single AS {JOIN_DATA}"))
            .await,
    )
    .await;
    let expected_single = text(collect(oracle.sql(single).await).await);
    let load = format!("CREATE TABLE single INTO 6 FRAGMENTS REPLICAS 1 AS {JOIN_DATA}");
    collect(fletch_engine::sql(&ctx, &load).await).await;
    let before = coordinator.recovery_stats();

    let running = QueryRun::start({
        let ctx = ctx.clone();
        async move { fletch_engine::sql(&ctx, JOIN_QUERY).await?.collect().await }
    });
    assert!(
        running.until_tasks_done(&coordinator, 0).await,
        "the query must still run when the executor is told to stop"
    );
    let stopping = executors.remove(0);
    send_signal(&stopping, "-TERM");
    let answer = running.join().await.map(text).expect("the query");
    assert_eq!(answer, expected);
    assert_eq!(
        coordinator.recovery_stats(),
        before,
        "the leaving executor finished its tasks: nothing ran again"
    );
    let mut stopping = stopping;
    let exit = stopping.child.wait().expect("executor exits");
    assert!(exit.success(), "a drained executor exits cleanly: {exit:?}");
    let states = client.list_executors().await.expect("list");
    assert_eq!(state_of(&states, &stopping.url), Some("left"), "{states:?}");
    // Every fragment of the one-replica table now lives on a remaining executor.
    let answer = text(collect(fletch_engine::sql(&ctx, single).await).await);
    assert_eq!(answer, expected_single);
    let holders = text(collect(ctx.sql("SELECT executors FROM fletch.fragments").await).await);
    assert!(!holders.contains(&stopping.url), "{holders}");
    drop(executors);
    server.shutdown().await;
}

/// A caller that drops a running query's stream stops its tasks on every executor
/// process, which give back all the memory they held for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_stops_its_tasks_on_every_executor_process() {
    use futures::StreamExt;

    let ProcessCluster {
        coordinator,
        server,
        client,
        executors,
        ctx,
    } = process_cluster(2).await;
    let query = "SELECT a.value % 1000 AS g, count(*) \
                 FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b \
                 ON a.value = b.value GROUP BY g";
    let running = {
        let ctx = ctx.clone();
        datafusion::common::runtime::SpawnedTask::spawn(async move {
            let mut stream = fletch_engine::sql(&ctx, query)
                .await?
                .execute_stream()
                .await?;
            while let Some(batch) = stream.next().await {
                batch?;
            }
            Ok::<_, datafusion::error::DataFusionError>(())
        })
    };
    let busy = wait_for(&client, "tasks running on the executors", |e| {
        e.iter().any(|e| e.running_tasks > 0)
    })
    .await;
    assert!(busy.iter().all(|e| e.state == "alive"), "{busy:?}");
    // The caller walks away: the task reading the stream is aborted, dropping it.
    drop(running);
    coordinator.wait_for_releases().await;
    wait_for(&client, "no task running and no memory held", |e| {
        e.len() == 2 && e.iter().all(|e| e.running_tasks == 0 && e.memory_used == 0)
    })
    .await;
    drop(executors);
    server.shutdown().await;
}

/// TLS on every link: the coordinator and the executors serve `https://` with one
/// self-signed certificate made here and trust it, so task launches, exchanges between
/// executors, fragment replicas and the shell's statements all cross TLS.
#[test]
fn a_cluster_runs_over_tls_on_every_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::self_signed_files(dir.path(), &["127.0.0.1", "localhost"]);
    let (cert, key) = (cert.as_str(), key.as_str());
    let tls = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", cert];
    let mut args = tls.to_vec();
    args.extend(["coordinator", "--listen", "127.0.0.1:0"]);
    args.extend(HEARTBEATS);
    let coordinator = start(&args);
    assert!(
        coordinator.url.starts_with("https://"),
        "{}",
        coordinator.url
    );
    let executors: Vec<Process> = (0..2)
        .map(|_| start_executor_signed_in(&coordinator.url, &tls))
        .collect();
    assert!(executors.iter().all(|e| e.url.starts_with("https://")));
    let run = |sql: &str| common::connect_sql(&coordinator.url, &["--tls-ca", cert], sql);
    common::wait_until_alive(run, 2);
    let out = run(
        "CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS REPLICAS 2 AS \
         SELECT value AS k, value % 10 AS g FROM generate_series(1, 1000); \
         SELECT count(*) AS n, sum(a.k) AS s FROM t a JOIN t b ON a.g = b.g AND a.k = b.k",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n,s\n1000,500500\n");
}

/// `fletch --connect URL` runs statements on a coordinator process over Flight SQL:
/// tables made there live in the executor processes, and errors come back as errors.
/// The coordinator admits one user; the members share a cluster secret. A shell
/// without credentials, and an executor without the secret, are refused.
#[test]
fn the_shell_connects_to_a_coordinator_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = common::cluster_secret_file(dir.path());
    let member = ["--cluster-secret-file", secret.as_str()];
    let sign_in = ["--user", "ops", "--password", "hunter2"];
    let mut args = [sign_in.as_slice(), member.as_slice()].concat();
    args.extend(["coordinator", "--listen", "127.0.0.1:0"]);
    args.extend(HEARTBEATS);
    let coordinator = start(&args);
    let _executors: Vec<Process> = (0..2)
        .map(|_| start_executor_signed_in(&coordinator.url, &member))
        .collect();
    // A user's password means nothing to an executor: refused as such.
    let confused = Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args(sign_in)
        .args(["executor", "--coordinator", &coordinator.url])
        .output()
        .expect("run an executor with a user's credentials");
    assert!(
        String::from_utf8_lossy(&confused.stderr).contains("does not apply to `fletch executor`"),
        "{confused:?}"
    );
    // An executor without the cluster secret is not a member.
    let stranger = Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args([
            "executor",
            "--coordinator",
            &coordinator.url,
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run an executor without the cluster secret");
    assert!(!stranger.status.success());
    let stderr = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        stderr.contains("credentials required") && stderr.contains("cluster secret"),
        "{stderr}"
    );
    let anonymous = Command::new(env!("CARGO_BIN_EXE_fletch"))
        .args(["--connect", &coordinator.url, "-q", "-c", "SELECT 1"])
        .output()
        .expect("run fletch --connect without credentials");
    assert!(!anonymous.status.success());
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        stderr.contains("credentials required") && stderr.contains("--user NAME --password"),
        "the refusal says how to sign in: {stderr}"
    );
    let run = |sql: &str| common::connect_sql(&coordinator.url, &sign_in, sql);
    // Executors may still be registering: wait until both are listed.
    common::wait_until_alive(run, 2);
    let out = run(
        "CREATE TABLE t PARTITION BY HASH (k) REPLICAS 2 AS SELECT value AS k FROM generate_series(1, 1000); \
         SELECT count(*) AS n, sum(k) AS s FROM t; \
         SELECT sum(rows) AS stored FROM fletch.fragments",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "n,s\n1000,500500\n\nstored\n1000\n"
    );
    let out = run("SELEC 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SELEC"), "{stderr}");

    // The executors' own ports want the secret: nothing, the user's credentials, or a
    // proof made with another secret are refused.
    let out = run("SELECT url FROM fletch.executors ORDER BY url LIMIT 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let executor = stdout.lines().nth(1).expect("an executor url").to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refusal = |authorization: Option<String>| {
        runtime.block_on(async {
            let mut client = ExecutorClient::new(&executor).expect("client");
            if let Some(header) = authorization {
                client = client.with_authorization(header);
            }
            let refused = client.release("no-such-query").await;
            refused.expect_err("refused").to_string()
        })
    };
    let err = refusal(None);
    assert!(err.contains("cluster members only"), "{err}");
    let user = fletch_transport::Credentials {
        user: "ops".into(),
        password: "hunter2".into(),
    };
    let err = refusal(Some(user.basic_header()));
    assert!(err.contains("cluster members only"), "{err}");
    let other = fletch_transport::ClusterSecret::new("another cluster's secret").expect("secret");
    let err = refusal(Some(other.member_header()));
    assert!(err.contains("wrong cluster secret"), "{err}");
}

/// An executor process killed while a client reads a query result straight from it
/// (`fletch.result_endpoints = 'executors'`): the read fails instead of ending quietly
/// short (rows the client has cannot be taken back), and the coordinator keeps
/// answering on the executor left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_executor_serving_a_result_fails_the_read_and_the_cluster_serves_on() {
    use futures::TryStreamExt;

    let ProcessCluster {
        coordinator,
        server,
        client: _,
        mut executors,
        ctx: _,
    } = process_cluster(2).await;
    let mut sql_client = common::flight_sql_client(server.url()).await;
    sql_client.handshake("a", "").await.expect("handshake");
    sql_client
        .execute_update("SET fletch.result_endpoints = 'executors'".into(), None)
        .await
        .expect("SET");
    let total = 3_000_000usize;
    let info = sql_client
        .execute(
            format!("SELECT value, value * 2 AS twice FROM generate_series(1, {total})"),
            None,
        )
        .await
        .expect("plan");
    let endpoint = &info.endpoint[0];
    let url = endpoint.location[0].uri.replace("grpc+tcp://", "http://");
    let serving = executors
        .iter()
        .position(|e| e.url == url)
        .expect("the location is one of the executor processes");
    let mut direct = common::flight_sql_client(&url).await;
    let ticket = endpoint.ticket.clone().expect("ticket");
    let mut stream = direct.do_get(ticket.clone()).await.expect("do_get");
    let first = stream
        .try_next()
        .await
        .expect("a batch")
        .expect("not the end yet");
    let mut rows = first.num_rows();
    drop(executors.remove(serving)); // SIGKILL
    let end = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.try_next().await {
                Ok(Some(batch)) => rows += batch.num_rows(),
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the read must not hang");
    assert!(
        end.is_err() && rows < total,
        "the read must fail, not end quietly: {rows} of {total} rows, {end:?}"
    );

    // The coordinator gives the query up: its ticket is no longer served there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let redeemed = match sql_client.do_get(ticket.clone()).await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = redeemed
            .expect_err("a lost result cannot be read")
            .to_string();
        if err.contains("no result") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still served: {err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    sql_client
        .execute_update("SET fletch.result_endpoints = 'coordinator'".into(), None)
        .await
        .expect("SET");
    let info = sql_client
        .execute(
            "SELECT sum(value) AS s FROM generate_series(1, 1000)".into(),
            None,
        )
        .await
        .expect("the cluster still plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let batches: Vec<arrow::array::RecordBatch> = sql_client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("the executor left answers");
    let answer = text(batches);
    assert!(answer.contains("| 500500 |"), "{answer}");
    drop(coordinator);
    drop(executors);
    server.shutdown().await;
}
