//! A hostile client against a real cluster: a `fletch coordinator` process with three
//! users (an admin, a writer, a reader) and two `fletch executor` processes sharing a
//! cluster secret, all on loopback with OS-picked ports. Signed-in users (however
//! privileged) and clients without credentials try what a member would do, at the
//! coordinator and at the executors, plus files outside the allowed location, other
//! sessions' handles and floods. Each gets a clear refusal; afterwards the cluster's
//! executors, tables, fragments and memory are as they were, and a legitimate query
//! still matches single-node DataFusion.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, Ticket};
use fletch_transport::protocol::{
    self, ExecutorStatus, PartitionTicket, PieceId, ResultTicket, TaskDefinition,
};
use fletch_transport::{CoordinatorClient, ExecutorClient, FailureReason};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use common::{HEARTBEATS, Process, flight_sql_client, start};

const ADMIN: (&str, &str) = ("root", "admin pass");
const WRITER: (&str, &str) = ("wendy", "writer pass");
const READER: (&str, &str) = ("rudy", "reader pass");
/// `--max-queries-per-user` of the test cluster.
const QUERIES_PER_USER: usize = 4;

struct Cluster {
    coordinator: Process,
    _executors: Vec<Process>,
    executor_urls: Vec<String>,
    /// The one directory statements may read and write under.
    allowed: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn users_file(dir: &std::path::Path) -> String {
    let entry = |(name, password): (&str, &str), role: &str| {
        format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
            fletch_engine::hash_password(password).expect("hash")
        )
    };
    let text = [
        entry(ADMIN, "admin"),
        entry(WRITER, "writer"),
        entry(READER, "reader"),
    ]
    .join("\n");
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write the users file");
    path.to_str().expect("utf-8").to_string()
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = common::cluster_secret_file(dir.path());
    let users = users_file(dir.path());
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).expect("allowed dir");
    std::fs::write(allowed.join("numbers.csv"), "n\n1\n2\n3\n").expect("csv");
    let allowed_arg = allowed.to_str().expect("utf-8").to_string();
    let queries_per_user = QUERIES_PER_USER.to_string();
    let mut args = vec![
        "--cluster-secret-file",
        secret.as_str(),
        "--users",
        users.as_str(),
        "--allow-location",
        allowed_arg.as_str(),
        "--max-queries-per-user",
        &queries_per_user,
        "coordinator",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(HEARTBEATS);
    let coordinator = start(&args);
    let member = ["--cluster-secret-file", secret.as_str()];
    let executors: Vec<Process> = (0..2)
        .map(|_| common::start_executor(&coordinator.url, &member))
        .collect();
    let executor_urls = executors.iter().map(|e| e.url.clone()).collect();
    let cluster = Cluster {
        coordinator,
        _executors: executors,
        executor_urls,
        allowed,
        _dir: dir,
    };
    let mut admin = cluster.sign_in(ADMIN).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(
        &mut admin,
        "SELECT count(*) FROM fletch.executors WHERE state = 'alive'",
    )
    .await
        != ["2"]
    {
        assert!(Instant::now() < deadline, "executors never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
}

impl Cluster {
    async fn sign_in(&self, (user, password): (&str, &str)) -> FlightSqlServiceClient<Channel> {
        let mut client = flight_sql_client(&self.coordinator.url).await;
        client.handshake(user, password).await.expect("sign in");
        client
    }
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("batches")
}

/// Each row of `sql`'s answer, its values joined by `|`, in the answer's order.
async fn rows(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<String> {
    let info = client.execute(sql.into(), None).await.expect(sql);
    let batches = fetch(client, info).await;
    fletch_tpch::rows_as_text(&batches).expect("rows")
}

async fn refusal<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> String {
    match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    }
}

/// What a hostile client must not change: executors, tables, fragments, memory.
async fn cluster_state(admin: &mut FlightSqlServiceClient<Channel>) -> Vec<String> {
    let mut state = Vec::new();
    for sql in [
        "SELECT url, state, slots, memory_limit, memory_used FROM fletch.executors ORDER BY url",
        "SELECT table_name, kind, rows, fragments, replicas FROM fletch.tables ORDER BY table_name",
        "SELECT table_name, fragment, rows, bytes, executors FROM fletch.fragments \
         ORDER BY table_name, fragment",
    ] {
        state.extend(rows(admin, sql).await);
    }
    state
}

/// The cluster state once two reads three heartbeats apart agree (memory in use is
/// reported with the heartbeats).
async fn stable_state(admin: &mut FlightSqlServiceClient<Channel>) -> Vec<String> {
    let mut last = cluster_state(admin).await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(750)).await;
        let now = cluster_state(admin).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the cluster state never settled: {last:?}");
}

/// The cluster state once it matches `before` (memory in use is reported with the
/// heartbeats, so it may take a beat to settle), or as it is after 30 s.
async fn settled_state(
    admin: &mut FlightSqlServiceClient<Channel>,
    before: &[String],
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = cluster_state(admin).await;
        if now == before || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bearer(client: &FlightSqlServiceClient<Channel>) -> String {
    format!("Bearer {}", client.token().expect("a session token"))
}

/// Every member-only call an executor serves, made with `authorization` (or none).
async fn member_calls_at_an_executor(
    executor: &str,
    other_executor: &str,
    authorization: Option<String>,
) -> Vec<(String, String)> {
    let mut client = ExecutorClient::new(executor).expect("client");
    if let Some(header) = &authorization {
        client = client.with_authorization(header.clone());
    }
    let piece = PieceId {
        table: "t".into(),
        table_uid: "guessed".into(),
        load: 0,
        fragment: 0,
    };
    // A stage plan that would scan /etc/passwd, as bytes a member could send.
    let passwd_plan = {
        let ctx = datafusion::prelude::SessionContext::new();
        let options = datafusion::prelude::CsvReadOptions::new()
            .file_extension("")
            .delimiter(b':')
            .has_header(false);
        ctx.register_csv("passwd", "/etc/passwd", options)
            .await
            .expect("register");
        let plan = ctx
            .sql("SELECT * FROM passwd")
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        fletch_planner::encode_stage_plan(&plan).expect("encode")
    };
    let task = TaskDefinition {
        query_id: "q".into(),
        plan: passwd_plan,
        ..Default::default()
    };
    let huge = TaskDefinition {
        query_id: "q".into(),
        task: u64::from(u32::MAX) + 1,
        stage: u64::from(u32::MAX) + 1,
        ..Default::default()
    };
    let partition = PartitionTicket {
        query_id: "made-up".into(),
        ..Default::default()
    };
    let schema = Arc::new(arrow::datatypes::Schema::empty());
    let mut outcomes = vec![
        (
            "set_memory_limit",
            client.set_memory_limit(1).await.map(|_| ()),
        ),
        (
            "drop_table",
            client.drop_pieces("guessed", None).await.map(|_| ()),
        ),
        (
            "copy_piece",
            client.copy_piece(&piece, other_executor).await.map(|_| ()),
        ),
        (
            "run_task /etc/passwd",
            client.run_task(&task).await.map(|_| ()),
        ),
        (
            "run_task of 2^32 tasks",
            client.run_task(&huge).await.map(|_| ()),
        ),
        ("release_query", client.release("made-up").await),
        (
            "piece DoGet",
            match client.fetch_piece(&piece, None).await {
                Ok(batches) => batches.try_collect::<Vec<_>>().await.map(|_| ()),
                Err(e) => Err(e),
            },
        ),
        (
            "partition DoGet",
            client
                .fetch(partition, schema)
                .try_collect::<Vec<_>>()
                .await
                .map(|_| ())
                .map_err(|e| {
                    fletch_transport::find_failure(&e)
                        .cloned()
                        .unwrap_or_else(|| panic!("{e}"))
                }),
        ),
    ]
    .into_iter()
    .map(|(what, r)| (what.to_string(), r.map_err(|f| f.to_string())))
    .collect::<Vec<_>>();
    // Random bodies under every action type.
    let mut raw = FlightServiceClient::new(
        fletch_transport::connect(executor, &fletch_transport::ClusterSecurity::open())
            .expect("channel"),
    );
    for (i, r#type) in [
        protocol::RUN_TASK,
        protocol::COPY_PIECE,
        protocol::DROP_TABLE,
        protocol::SET_MEMORY_LIMIT,
    ]
    .into_iter()
    .enumerate()
    {
        let body: Vec<u8> = (0..64u32).map(|b| (b * 31 + i as u32 * 7) as u8).collect();
        let mut request = tonic::Request::new(Action::new(r#type, body));
        if let Some(header) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("header"));
        }
        let outcome = match raw.do_action(request).await {
            Ok(replies) => replies
                .into_inner()
                .try_collect::<Vec<_>>()
                .await
                .map(|_| ()),
            Err(status) => Err(status),
        };
        outcomes.push((
            format!("random {type} body"),
            outcome.map_err(|s| s.message().to_string()),
        ));
    }
    outcomes
        .into_iter()
        .map(|(what, outcome)| match outcome {
            Ok(()) => panic!("{what} at {executor} was accepted"),
            Err(message) => (what, message),
        })
        .collect()
}

/// Signed-in users (the admin too) and anonymous callers are no cluster members: at
/// the coordinator they cannot register, leave for an executor or list the members;
/// at an executor they cannot set its memory, drop or copy pieces, run tasks (one
/// scanning /etc/passwd, one claiming 2^32 tasks), read pieces or partitions, or get
/// random action bodies decoded. Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_not_members_at_the_coordinator_or_the_executors() {
    let cluster = cluster().await;
    let mut admin = cluster.sign_in(ADMIN).await;
    admin
        .execute_update(
            "CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS REPLICAS 2 AS \
             SELECT value AS k, value % 10 AS g FROM generate_series(1, 5000)"
                .into(),
            None,
        )
        .await
        .expect("create t");
    let before = stable_state(&mut admin).await;
    let reader = cluster.sign_in(READER).await;

    for (who, header) in [
        ("admin", Some(bearer(&admin))),
        ("reader", Some(bearer(&reader))),
        ("admin's Basic credentials", Some(basic(ADMIN))),
        ("nobody", None),
    ] {
        // At the coordinator: membership actions.
        let mut coordinator = CoordinatorClient::new(&cluster.coordinator.url).expect("client");
        if let Some(header) = &header {
            coordinator = coordinator.with_authorization(header.clone());
        }
        let fake = ExecutorStatus {
            url: "http://127.0.0.1:9".into(),
            slots: 64,
            ..Default::default()
        };
        let real = ExecutorStatus {
            url: cluster.executor_urls[0].clone(),
            ..Default::default()
        };
        for (what, outcome) in [
            ("register", coordinator.register(&fake).await),
            ("leave", coordinator.leave(&real).await),
            ("heartbeat", coordinator.heartbeat(&fake).await.map(|_| ())),
            ("list", coordinator.list_executors().await.map(|_| ())),
        ] {
            let err = refusal(outcome, &format!("{who}: {what} at the coordinator")).await;
            assert!(
                err.contains("cluster members only") || err.contains("credentials required"),
                "{who}: {what}: {err}"
            );
        }
        // At each executor: every member-only call.
        for (executor, other) in [
            (&cluster.executor_urls[0], &cluster.executor_urls[1]),
            (&cluster.executor_urls[1], &cluster.executor_urls[0]),
        ] {
            for (what, message) in
                member_calls_at_an_executor(executor, other, header.clone()).await
            {
                assert!(
                    message.contains("cluster members only"),
                    "{who}: {what} at {executor}: {message}"
                );
            }
        }
    }

    assert_eq!(settled_state(&mut admin, &before).await, before);
    assert_eq!(
        rows(&mut admin, "SELECT count(*), sum(k) FROM t").await,
        ["5000|12502500"]
    );
}

fn basic((user, password): (&str, &str)) -> String {
    fletch_transport::Credentials {
        user: user.into(),
        password: password.into(),
    }
    .basic_header()
}

/// Roles: a reader cannot create, insert, drop or cache; a writer cannot set the
/// executors' memory, nor change a table it did not create, but changes its own; each
/// refusal names the role and what it lacks. Files: outside
/// the allowed location (directly, through `..` or through a symlink) nobody reads or
/// writes, the admin included; inside it a writer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_file_locations_hold() {
    let cluster = cluster().await;
    let mut admin = cluster.sign_in(ADMIN).await;
    admin
        .execute_update(
            "CREATE TABLE t AS SELECT value AS k FROM generate_series(1, 100)".into(),
            None,
        )
        .await
        .expect("create t");
    let before = stable_state(&mut admin).await;

    let mut reader = cluster.sign_in(READER).await;
    for sql in [
        "CREATE TABLE r AS SELECT 1 AS a",
        "INSERT INTO t VALUES (101)",
        "DROP TABLE t",
        "CACHE TABLE t",
        "UNCACHE TABLE t",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let err = refusal(reader.execute_update(sql.into(), None).await, sql).await;
        assert!(
            err.contains("role reader") && err.contains("writer"),
            "{sql}: {err}"
        );
        let err = refusal(reader.execute(sql.into(), None).await, sql).await;
        assert!(err.contains("role reader"), "{sql}: {err}");
    }
    assert_eq!(rows(&mut reader, "SELECT count(*) FROM t").await, ["100"]);

    let mut writer = cluster.sign_in(WRITER).await;
    for sql in [
        "SET fletch.executor_memory = '1'",
        "SET datafusion.runtime.memory_limit = '1K'",
    ] {
        let err = refusal(writer.execute_update(sql.into(), None).await, sql).await;
        assert!(
            err.contains("role writer") && err.contains("admin"),
            "{sql}: {err}"
        );
    }

    // A writer changes its own tables, not the admin's.
    for sql in [
        "INSERT INTO t VALUES (101)",
        "DROP TABLE t",
        "CREATE OR REPLACE TABLE t AS SELECT 1 AS k",
    ] {
        let err = refusal(writer.execute_update(sql.into(), None).await, sql).await;
        assert!(
            err.contains("may not change table")
                && err.contains("created by")
                && err.contains("root"),
            "{sql}: {err}"
        );
    }
    for sql in [
        "CREATE TABLE mine AS SELECT value AS k FROM generate_series(1, 10)",
        "INSERT INTO mine VALUES (11)",
    ] {
        writer
            .execute_update(sql.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(rows(&mut writer, "SELECT sum(k) FROM mine").await, ["66"]);
    writer
        .execute_update("DROP TABLE mine".into(), None)
        .await
        .expect("drop its own table");

    let allowed = cluster.allowed.display().to_string();
    std::os::unix::fs::symlink("/etc", cluster.allowed.join("etc")).expect("symlink");
    let outside = std::env::temp_dir().join(format!("fletch-hostile-{}", std::process::id()));
    for sql in [
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        format!("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '{allowed}/../../../etc/passwd'"),
        format!("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '{allowed}/etc/passwd'"),
        format!(
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION \
             'file://{allowed}/%2e%2e/%2e%2e/%2e%2e/etc/passwd'"
        ),
        format!(
            "COPY (SELECT 1 AS a) TO '{}' STORED AS CSV",
            outside.display()
        ),
        format!("COPY (SELECT 1 AS a) TO '{allowed}/x/../../escape.csv' STORED AS CSV"),
        format!("COPY (SELECT 1 AS a) TO '{allowed}/etc/fletch.csv' STORED AS CSV"),
    ] {
        for (who, client) in [("admin", &mut admin), ("writer", &mut writer)] {
            let err = refusal(client.execute_update(sql.clone(), None).await, &sql).await;
            assert!(err.contains("may not"), "{who}: {sql}: {err}");
        }
    }
    assert!(!outside.exists(), "COPY wrote {}", outside.display());
    assert!(
        !cluster
            .allowed
            .parent()
            .expect("parent")
            .join("escape.csv")
            .exists()
    );

    // Inside the allowed location, a writer reads and writes.
    writer
        .execute_update(
            format!("CREATE EXTERNAL TABLE numbers STORED AS CSV LOCATION '{allowed}/numbers.csv' OPTIONS ('format.has_header' 'true')"),
            None,
        )
        .await
        .expect("an allowed external table");
    assert_eq!(rows(&mut writer, "SELECT sum(n) FROM numbers").await, ["6"]);
    writer
        .execute_update(
            format!("COPY (SELECT 7 AS a) TO '{allowed}/out/seven.csv' STORED AS CSV"),
            None,
        )
        .await
        .expect("an allowed COPY");
    assert!(cluster.allowed.join("out").join("seven.csv").exists());
    writer
        .execute_update("DROP TABLE numbers".into(), None)
        .await
        .expect("drop the external table");

    assert_eq!(settled_state(&mut admin, &before).await, before);
}

/// Sessions: another session's prepared statement, waiting statement and
/// executor-served result are not found, even with the right handle; 2,000 sign-ins by
/// one user leave another user's session working; 1 GiB of parameters is refused
/// once past the endpoint's limit, and more than one parameter row is refused; 10,000 reads of made-up or forged tickets at an
/// executor are refused at once. The next legitimate query is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_handles_and_floods_are_bounded() {
    let cluster = cluster().await;
    let mut admin = cluster.sign_in(ADMIN).await;
    let before = stable_state(&mut admin).await;
    let mut victim = cluster.sign_in(READER).await;
    let mut attacker = cluster.sign_in(WRITER).await;

    // The victim prepares a statement, plans one, and has one served by an executor.
    let handle = common::prepared_statement_handle(&mut victim, "SELECT $1 AS p").await;
    let waiting = victim
        .execute("SELECT 1 AS one".into(), None)
        .await
        .expect("plan");
    victim
        .execute_update("SET fletch.result_endpoints = 'executors'".into(), None)
        .await
        .expect("set");
    let served = victim
        .execute("SELECT value FROM generate_series(1, 10)".into(), None)
        .await
        .expect("serve");

    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.clone(),
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    request
        .metadata_mut()
        .insert("authorization", bearer(&attacker).parse().expect("header"));
    let err = refusal(
        attacker.inner_mut().get_flight_info(request).await,
        "another session's prepared statement",
    )
    .await;
    assert!(err.contains("in this session"), "{err}");
    for (what, info) in [("waiting", &waiting), ("served", &served)] {
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let err = match attacker.do_get(ticket).await {
            Ok(stream) => refusal(stream.try_collect::<Vec<_>>().await, what).await,
            Err(e) => e.to_string(),
        };
        assert!(err.contains("in this session"), "{what}: {err}");
    }

    // A flood of sign-ins by one user only pushes out that user's own sessions.
    let url = cluster.coordinator.url.clone();
    let flood = futures::stream::iter(0..2000)
        .map(|_| {
            let url = url.clone();
            async move {
                let mut client = flight_sql_client(&url).await;
                client.handshake(WRITER.0, WRITER.1).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await;
    flood.expect("2,000 sign-ins");
    assert_eq!(
        fetch(&mut victim, waiting.clone()).await.len(),
        1,
        "the victim's session survived the flood"
    );
    let served_rows: usize = fetch_from_executor(&served)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(served_rows, 10);

    // 1 GiB of parameters, sent lazily: refused once past the endpoint's limit.
    let mut attacker = cluster.sign_in(WRITER).await;
    let handle = common::prepared_statement_handle(&mut attacker, "SELECT $1 AS p").await;
    let err = send_parameters(&mut attacker, handle.clone(), 1 << 30).await;
    assert!(err.contains("exceed"), "{err}");
    let err = send_parameters(&mut attacker, handle, 2 << 20).await;
    assert!(err.contains("one row"), "{err}");

    // 10,000 reads of made-up partitions and forged result tickets at an executor.
    let executor = cluster.executor_urls[0].clone();
    let forged = ResultTicket {
        handle: "made-up".into(),
        partition: Some(PartitionTicket {
            query_id: "made-up".into(),
            ..Default::default()
        }),
        expires_at_ms: u64::MAX,
        signature: vec![0; 32].into(),
    };
    let raw = FlightServiceClient::new(
        fletch_transport::connect(&executor, &fletch_transport::ClusterSecurity::open())
            .expect("channel"),
    );
    let refused = futures::stream::iter(0..10_000)
        .map(|i| {
            let mut client = raw.clone();
            let ticket = if i % 2 == 0 {
                forged.to_ticket_bytes()
            } else {
                protocol::FletchTicket {
                    kind: Some(protocol::fletch_ticket::Kind::Partition(PartitionTicket {
                        query_id: format!("made-up-{i}"),
                        ..Default::default()
                    })),
                }
                .encode_to_vec()
            };
            async move {
                match client.do_get(Ticket::new(ticket)).await {
                    Ok(stream) => stream
                        .into_inner()
                        .try_collect::<Vec<FlightData>>()
                        .await
                        .map(|_| ()),
                    Err(status) => Err(status),
                }
            }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await;
    for outcome in &refused {
        let status = outcome.as_ref().expect_err("a made-up or forged ticket");
        assert!(
            matches!(
                status.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "{status}"
        );
    }
    let failure = fletch_transport::TaskFailure::from_status(
        refused[1].as_ref().expect_err("refused"),
        &executor,
    );
    assert_eq!(failure.reason, FailureReason::NotMember);

    assert_eq!(settled_state(&mut admin, &before).await, before);
    let oracle = datafusion::prelude::SessionContext::new();
    let sql = "SELECT value % 3 AS g, count(*) AS n FROM generate_series(1, 999) GROUP BY 1";
    let expected = common::oracle_rows(&oracle, sql).await;
    let info = admin.execute(sql.into(), None).await.expect("query");
    assert_eq!(
        common::sorted_rows(&fetch(&mut admin, info).await),
        expected
    );
}

/// Binds `total` bytes of parameters (1 MiB batches, made as they are sent) to the
/// prepared statement `handle`; returns the refusal.
async fn send_parameters(
    client: &mut FlightSqlServiceClient<Channel>,
    handle: prost::bytes::Bytes,
    total: usize,
) -> String {
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("p", arrow::datatypes::DataType::Utf8, false),
    ]));
    let batch_bytes = 1 << 20;
    let batches = futures::stream::iter(0..total / batch_bytes).map({
        let schema = Arc::clone(&schema);
        move |_| {
            let column = arrow::array::StringArray::from(vec!["x".repeat(batch_bytes)]);
            Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)]).expect("batch"))
        }
    });
    let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(descriptor))
        .build(batches)
        .map(|d| d.expect("encode"));
    let mut request = tonic::Request::new(data);
    request
        .metadata_mut()
        .insert("authorization", bearer(client).parse().expect("header"));
    match client.inner_mut().do_put(request).await {
        Ok(replies) => {
            refusal(
                replies.into_inner().try_collect::<Vec<_>>().await,
                "1 GiB of parameters",
            )
            .await
        }
        Err(status) => status.to_string(),
    }
}

/// Reads a result served by an executor at the location its endpoint names first,
/// with no credentials: the signed ticket is all it takes.
async fn fetch_from_executor(info: &FlightInfo) -> Vec<RecordBatch> {
    let endpoint = &info.endpoint[0];
    let location = endpoint.location[0].uri.replace("grpc+tcp://", "http://");
    let channel = fletch_transport::connect(&location, &fletch_transport::ClusterSecurity::open())
        .expect("channel");
    let mut client = arrow_flight::FlightClient::new(channel);
    client
        .do_get(endpoint.ticket.clone().expect("ticket"))
        .await
        .expect("do_get at the executor")
        .try_collect()
        .await
        .expect("batches")
}

/// A user runs at most `--max-queries-per-user` statements at once: results served
/// from executors hold their slot until read, the next one is refused naming the
/// limit, another user is not affected, and a slot comes back once a result is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_at_most_the_queries_allowed_at_once() {
    let cluster = cluster().await;
    let mut greedy = cluster.sign_in(READER).await;
    greedy
        .execute_update("SET fletch.result_endpoints = 'executors'".into(), None)
        .await
        .expect("set");
    let sql = "SELECT value FROM generate_series(1, 100)";
    let mut unread = Vec::new();
    for _ in 0..QUERIES_PER_USER {
        unread.push(
            greedy
                .execute(sql.into(), None)
                .await
                .expect("within the cap"),
        );
    }
    let err = refusal(greedy.execute(sql.into(), None).await, "one over the cap").await;
    assert!(
        err.contains("already runs") && err.contains("--max-queries-per-user"),
        "{err}"
    );
    let mut other = cluster.sign_in(WRITER).await;
    assert_eq!(
        rows(&mut other, "SELECT sum(value) FROM generate_series(1, 10)").await,
        ["55"]
    );
    let read: usize = fetch_from_executor(&unread[0])
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(read, 100);
    // The query ends once its result is read; its slot comes back then.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match greedy.execute(sql.into(), None).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no slot came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
