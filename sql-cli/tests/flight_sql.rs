//! The coordinator's Flight SQL endpoint, driven by the arrow-flight crate's Flight SQL
//! client: statement queries and updates, prepared statements with and without
//! parameters, the catalog calls, SQL info, cancellation, sessions per client, and bad
//! input. Answers are compared with single-node DataFusion's.

mod common;

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, SqlInfo};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use datafusion::prelude::SessionContext;
use fletch_engine::{
    Credentials, EndpointOptions, LocalCluster, Users, serve_coordinator, serve_coordinator_with,
};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

use common::{flight_sql_client as client, oracle_rows, sorted_rows};

const DATA: &str = "SELECT value AS k, value % 7 AS g, 'row ' || CAST(value AS VARCHAR) AS label \
                    FROM generate_series(1, 2000)";

struct Fixture {
    cluster: LocalCluster,
    server: fletch_engine::CoordinatorServer,
    oracle: SessionContext,
}

async fn fixture() -> Fixture {
    let cluster = LocalCluster::start(2).await.expect("cluster");
    let server = serve_coordinator(
        Arc::clone(cluster.coordinator()),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("serve");
    let oracle = common::oracle_with_table_t(DATA).await;
    Fixture {
        cluster,
        server,
        oracle,
    }
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("batches"));
    }
    batches
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).expect("column");
            let array = array.as_any().downcast_ref::<StringArray>().expect("utf8");
            (0..array.len())
                .map(|i| array.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_updates_and_prepared_statements_match_the_oracle() {
    let Fixture {
        cluster,
        server,
        oracle,
    } = fixture().await;
    let mut client = client(server.url()).await;
    client.handshake("anyone", "").await.expect("handshake");
    assert!(
        client.token().is_some(),
        "the handshake gives a session token"
    );

    let created = client
        .execute_update(
            format!("CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS AS {DATA}"),
            None,
        )
        .await
        .expect("CREATE TABLE over Flight SQL");
    assert_eq!(created, 0, "DDL changes no row (as in DataFusion)");
    let inserted = client
        .execute_update(
            "INSERT INTO t VALUES (5000, 1, 'late'), (5001, 2, 'later')".into(),
            None,
        )
        .await
        .expect("INSERT");
    assert_eq!(inserted, 2);
    oracle
        .sql("INSERT INTO t VALUES (5000, 1, 'late'), (5001, 2, 'later')")
        .await
        .expect("oracle insert")
        .collect()
        .await
        .expect("oracle insert");

    let query = "SELECT g, count(*), sum(k), max(label) FROM t GROUP BY g";
    let info = client.execute(query.into(), None).await.expect("execute");
    assert_eq!(
        sorted_rows(&fetch(&mut client, info).await),
        oracle_rows(&oracle, query).await
    );

    // A prepared statement with a parameter, bound twice.
    let mut prepared = client
        .prepare("SELECT k, label FROM t WHERE k > $1 AND g = 3".into(), None)
        .await
        .expect("prepare");
    assert_eq!(
        prepared.parameter_schema().expect("schema").fields().len(),
        1
    );
    assert_eq!(
        prepared.dataset_schema().expect("schema").field(1).name(),
        "label"
    );
    for bound in [1990i64, 10] {
        let parameters = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![bound]))],
        )
        .expect("parameters");
        prepared.set_parameters(parameters).expect("bind");
        let info = prepared.execute().await.expect("execute prepared");
        let expected = oracle_rows(
            &oracle,
            &format!("SELECT k, label FROM t WHERE k > {bound} AND g = 3"),
        )
        .await;
        assert_eq!(sorted_rows(&fetch(&mut client, info).await), expected);
    }
    prepared.close().await.expect("close");

    // Prepared without parameters, and a prepared update (a Fletch statement).
    let mut counted = client
        .prepare("SELECT count(*) FROM t".into(), None)
        .await
        .expect("prepare");
    let info = counted.execute().await.expect("execute");
    assert_eq!(
        sorted_rows(&fetch(&mut client, info).await),
        oracle_rows(&oracle, "SELECT count(*) FROM t").await
    );
    let mut cache = client
        .prepare(
            "CREATE TABLE small INTO 2 FRAGMENTS REPLICAS 1 AS SELECT * FROM t WHERE g = 0".into(),
            None,
        )
        .await
        .expect("a Fletch statement prepares");
    cache.execute_update().await.expect("run it");
    let info = client
        .execute("SELECT count(*) FROM small".into(), None)
        .await
        .expect("query the new table");
    assert_eq!(
        sorted_rows(&fetch(&mut client, info).await),
        oracle_rows(&oracle, "SELECT count(*) FROM t WHERE g = 0").await
    );

    drop(server);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_calls_sql_info_and_keys_answer() {
    let Fixture {
        cluster, server, ..
    } = fixture().await;
    let mut client = client(server.url()).await;
    client
        .execute_update(format!("CREATE TABLE t AS {DATA}"), None)
        .await
        .expect("create");

    let info = client.get_catalogs().await.expect("GetCatalogs");
    let catalogs = strings(&fetch(&mut client, info).await, "catalog_name");
    assert!(catalogs.contains(&"datafusion".to_string()), "{catalogs:?}");

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .expect("GetDbSchemas");
    let schemas = strings(&fetch(&mut client, info).await, "db_schema_name");
    assert!(schemas.contains(&"public".to_string()), "{schemas:?}");
    assert!(schemas.contains(&"fletch".to_string()), "{schemas:?}");

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("t%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .expect("GetTables");
    let tables = fetch(&mut client, info).await;
    assert_eq!(strings(&tables, "table_name"), ["t"]);
    assert_eq!(strings(&tables, "table_type"), ["TABLE"]);
    let schema_bytes = tables[0]
        .column_by_name("table_schema")
        .expect("table_schema")
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .expect("binary")
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).expect("schema");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["k", "g", "label"]);

    let info = client.get_table_types().await.expect("GetTableTypes");
    let types = strings(&fetch(&mut client, info).await, "table_type");
    assert!(types.contains(&"TABLE".to_string()), "{types:?}");

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerVersion,
        ])
        .await
        .expect("GetSqlInfo");
    let info_batches = fetch(&mut client, info).await;
    assert_eq!(info_batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let text = arrow::util::pretty::pretty_format_batches(&info_batches)
        .expect("format")
        .to_string();
    assert!(text.contains("Fletch"), "{text}");

    // JDBC's getTypeInfo: every type, or one asked for.
    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("GetXdbcTypeInfo");
    let types = strings(&fetch(&mut client, info).await, "type_name");
    for name in [
        "BIGINT",
        "DOUBLE",
        "DECIMAL",
        "VARCHAR",
        "DATE",
        "TIMESTAMP",
    ] {
        assert!(types.contains(&name.to_string()), "{types:?}");
    }
    let varchar = arrow_flight::sql::XdbcDataType::XdbcVarchar as i32;
    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo {
            data_type: Some(varchar),
        })
        .await
        .expect("GetXdbcTypeInfo for VARCHAR");
    assert_eq!(
        strings(&fetch(&mut client, info).await, "type_name"),
        ["VARCHAR"]
    );

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "t".into(),
        })
        .await
        .expect("GetPrimaryKeys");
    let keys = fetch(&mut client, info).await;
    assert_eq!(keys.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    drop(server);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cancellation_and_bad_input_get_clear_statuses() {
    let Fixture {
        cluster, server, ..
    } = fixture().await;
    let mut first = client(server.url()).await;
    let mut second = client(server.url()).await;
    first.handshake("a", "").await.expect("handshake");
    second.handshake("b", "").await.expect("handshake");

    // Each hand-shaken client has a session of its own.
    first
        .execute_update("SET datafusion.execution.batch_size = 77".into(), None)
        .await
        .expect("SET");
    let show = "SHOW datafusion.execution.batch_size";
    let info = first.execute(show.into(), None).await.expect("show");
    let mine = strings(&fetch(&mut first, info).await, "value");
    let info = second.execute(show.into(), None).await.expect("show");
    let theirs = strings(&fetch(&mut second, info).await, "value");
    assert_eq!(mine, ["77"]);
    assert_ne!(theirs, ["77"]);

    // A prepared statement belongs to the session that prepared it: another session
    // (or one that knows the handle) does not find it, and closing it there fails.
    let handle = common::prepared_statement_handle(&mut first, "SELECT 42 AS answer").await;
    let command = arrow_flight::sql::CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::ProstMessageExt::as_any(&command).encode_to_vec(),
    );
    // The raw client sends no token by itself.
    let signed = |client: &FlightSqlServiceClient<Channel>| {
        let mut request = tonic::Request::new(descriptor.clone());
        let token = client.token().expect("a session token");
        let header = format!("Bearer {token}").parse().expect("a header value");
        request.metadata_mut().insert("authorization", header);
        request
    };
    let request = signed(&second);
    let err = second
        .inner_mut()
        .get_flight_info(request)
        .await
        .expect_err("another session's prepared statement")
        .to_string();
    assert!(err.contains("in this session"), "{err}");
    let request = signed(&first);
    let info = first
        .inner_mut()
        .get_flight_info(request)
        .await
        .expect("its own")
        .into_inner();
    assert_eq!(
        strings_or_ints(&fetch(&mut first, info).await),
        ["42".to_string()]
    );

    // A planned statement cancelled before its DoGet is gone.
    let info = first
        .execute("SELECT * FROM generate_series(1, 10)".into(), None)
        .await
        .expect("plan");
    assert_eq!(
        cancel(&mut first, info.clone()).await,
        CancelStatus::Cancelled
    );
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let err = error_of(first.do_get(ticket).await, "a cancelled statement").await;
    assert!(err.contains("no statement"), "{err}");

    // Bad SQL: the parser's message, as InvalidArgument.
    let err = first
        .execute("SELEC nonsense".into(), None)
        .await
        .expect_err("bad SQL")
        .to_string();
    assert!(err.contains("SELEC") || err.contains("Expected"), "{err}");

    // A prepared statement handle that does not exist.
    let close = first
        .do_action(Action::new(
            "ClosePreparedStatement",
            arrow_flight::sql::ProstMessageExt::as_any(
                &arrow_flight::sql::ActionClosePreparedStatementRequest {
                    prepared_statement_handle: "no-such-handle".into(),
                },
            )
            .encode_to_vec(),
        ))
        .await;
    let err = error_of(close, "an unknown handle").await;
    assert!(err.contains("no prepared statement"), "{err}");

    // Garbage tickets and unknown command types.
    let garbage = first
        .do_get(arrow_flight::Ticket::new(vec![0xde, 0xad, 0xbe, 0xef]))
        .await;
    let err = error_of(garbage, "a garbage ticket").await;
    assert!(err.to_lowercase().contains("decod"), "{err}");

    // A command type Flight SQL does not know.
    let unknown = arrow_flight::sql::Any {
        type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandNoSuchThing".into(),
        value: vec![1, 2, 3].into(),
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(unknown.encode_to_vec());
    let err = first
        .inner_mut()
        .get_flight_info(descriptor)
        .await
        .expect_err("an unknown command")
        .to_string();
    assert!(
        err.contains("CommandNoSuchThing") || err.contains("not implemented"),
        "{err}"
    );

    // A token the server never gave (or forgot): Unauthenticated, never data.
    let mut stranger = client(server.url()).await;
    stranger.set_token("not-a-token".into());
    let err = stranger
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("unknown token")
        .to_string();
    assert!(err.contains("token"), "{err}");

    // The endpoint still serves.
    let info = second
        .execute("SELECT 1 AS one".into(), None)
        .await
        .expect("still serving");
    assert_eq!(strings_or_ints(&fetch(&mut second, info).await), ["1"]);

    drop(server);
    cluster.shutdown().await;
}

/// With credentials configured: no call without them, a wrong password or a made-up
/// token is `Unauthenticated`; the handshake's Basic credentials give a token that works.
/// Without credentials, the endpoint refuses to listen beyond loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_checked() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let credentials = Credentials {
        user: "ada".into(),
        password: "s3cret".into(),
    };
    let server = serve_coordinator_with(
        Arc::clone(cluster.coordinator()),
        "127.0.0.1:0".parse().expect("address"),
        EndpointOptions {
            users: Some(Arc::new(Users::single_admin(&credentials).expect("users"))),
            ..EndpointOptions::default()
        },
    )
    .await
    .expect("serve");

    let mut anonymous = client(server.url()).await;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("no credentials")
        .to_string();
    assert!(
        err.contains("authentication") && err.contains("credentials required"),
        "{err}"
    );

    let mut wrong = client(server.url()).await;
    let err = wrong
        .handshake("ada", "guess")
        .await
        .expect_err("a wrong password")
        .to_string();
    assert!(err.contains("wrong user or password"), "{err}");

    let mut forged = client(server.url()).await;
    forged.set_token("forged".into());
    let err = forged
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("a made-up token")
        .to_string();
    assert!(err.contains("unknown session token"), "{err}");

    let mut signed_in = client(server.url()).await;
    signed_in
        .handshake("ada", "s3cret")
        .await
        .expect("handshake");
    let info = signed_in
        .execute("SELECT 40 + 2 AS answer".into(), None)
        .await
        .expect("an authenticated query");
    assert_eq!(strings_or_ints(&fetch(&mut signed_in, info).await), ["42"]);

    let open_beyond_loopback = serve_coordinator(
        Arc::clone(cluster.coordinator()),
        "0.0.0.0:0".parse().expect("address"),
    )
    .await;
    let err = open_beyond_loopback.err().expect("refused").to_string();
    assert!(err.contains("needs users"), "{err}");

    // A session token unused for longer than the idle limit (zero here) expires.
    let expiring = serve_coordinator_with(
        Arc::clone(cluster.coordinator()),
        "127.0.0.1:0".parse().expect("address"),
        EndpointOptions {
            users: Some(Arc::new(Users::single_admin(&credentials).expect("users"))),
            session_idle: std::time::Duration::ZERO,
            ..EndpointOptions::default()
        },
    )
    .await
    .expect("serve");
    let mut late = client(expiring.url()).await;
    late.handshake("ada", "s3cret").await.expect("handshake");
    let err = late
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("an expired token")
        .to_string();
    assert!(err.contains("expired"), "{err}");
    drop(expiring);

    drop(server);
    cluster.shutdown().await;
}

/// TLS with a self-signed certificate made here: a client trusting it runs queries
/// over `https://`; a plain-text client gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_over_tls_with_a_self_signed_certificate() {
    let cluster = LocalCluster::start(1).await.expect("cluster");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let cert_pem = certified.cert.pem();
    let server = serve_coordinator_with(
        Arc::clone(cluster.coordinator()),
        "127.0.0.1:0".parse().expect("address"),
        EndpointOptions {
            tls: Some(fletch_engine::TlsIdentity {
                cert_pem: cert_pem.clone().into_bytes(),
                key_pem: certified.signing_key.serialize_pem().into_bytes(),
            }),
            ..EndpointOptions::default()
        },
    )
    .await
    .expect("serve over TLS");
    assert!(server.url().starts_with("https://"), "{}", server.url());

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(server.url().to_string())
        .expect("url")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("a TLS connection");
    let mut trusted = FlightSqlServiceClient::new(channel);
    let info = trusted
        .execute("SELECT 6 * 7 AS answer".into(), None)
        .await
        .expect("a query over TLS");
    assert_eq!(strings_or_ints(&fetch(&mut trusted, info).await), ["42"]);

    let plain_url = server.url().replace("https://", "http://");
    let plain = match Channel::from_shared(plain_url)
        .expect("url")
        .connect()
        .await
    {
        Err(e) => e.to_string(),
        Ok(channel) => FlightSqlServiceClient::new(channel)
            .execute("SELECT 1".into(), None)
            .await
            .expect_err("plain text to a TLS port")
            .to_string(),
    };
    assert!(!plain.contains("42"), "{plain}");

    drop(server);
    cluster.shutdown().await;
}

/// CancelFlightInfo on a statement whose results are streaming stops it: the stream
/// ends early and every executor gives back what it held for the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_streaming_statement_stops_its_tasks() {
    let Fixture {
        cluster, server, ..
    } = fixture().await;
    let mut client = client(server.url()).await;
    client.handshake("a", "").await.expect("handshake");
    // Stream rows as they come instead of holding them back until the end.
    client
        .execute_update("SET fletch.result_buffer = '0'".into(), None)
        .await
        .expect("SET");
    let total = 3_000_000usize;
    let info = client
        .execute(
            format!("SELECT value, value * 2 AS twice FROM generate_series(1, {total})"),
            None,
        )
        .await
        .expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("do_get");
    let first = stream
        .try_next()
        .await
        .expect("a batch")
        .expect("not the end yet");
    assert!(first.num_rows() > 0);
    assert_eq!(cancel(&mut client, info).await, CancelStatus::Cancelled);
    let mut rows = first.num_rows();
    while let Ok(Some(batch)) = stream.try_next().await {
        rows += batch.num_rows();
    }
    assert!(
        rows < total,
        "the stream ended early: {rows} of {total} rows"
    );
    // The server drops the stream (and so releases the query) as the client sees its
    // end.
    wait_until_executors_are_idle(&cluster).await;
    drop(server);
    cluster.shutdown().await;
}

/// Sends `CancelFlightInfo` for `info`; what the server answered.
async fn cancel(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> CancelStatus {
    let request = CancelFlightInfoRequest { info: Some(info) };
    let replies: Vec<arrow_flight::Result> = client
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .expect("cancel")
        .try_collect()
        .await
        .expect("cancel reply");
    let result = CancelFlightInfoResult::decode(replies[0].body.clone()).expect("result");
    CancelStatus::try_from(result.status).expect("a cancel status")
}

/// Waits (with a generous bound) until no executor holds anything of any query.
async fn wait_until_executors_are_idle(cluster: &LocalCluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        cluster.coordinator().wait_for_releases().await;
        let stats = cluster.executor_stats();
        if stats
            .iter()
            .all(|s| s.running_tasks == 0 && s.buffered_bytes == 0 && s.queries == 0)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "executors still hold a query: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_served_from_executors_and_through_the_coordinator() {
    let Fixture {
        cluster,
        server,
        oracle,
    } = fixture().await;
    let mut client = client(server.url()).await;
    client.handshake("a", "").await.expect("handshake");
    client
        .execute_update(
            format!("CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS AS {DATA}"),
            None,
        )
        .await
        .expect("CREATE TABLE");
    client
        .execute_update("SET fletch.result_endpoints = 'executors'".into(), None)
        .await
        .expect("SET");
    let query = "SELECT g, count(*), sum(k), max(label) FROM t GROUP BY g";
    let expected = oracle_rows(&oracle, query).await;
    let executors = cluster.executor_urls();

    // Straight from the executor the endpoint names first.
    let info = client.execute(query.into(), None).await.expect("execute");
    let endpoint = &info.endpoint[0];
    let locations: Vec<&str> = endpoint.location.iter().map(|l| l.uri.as_str()).collect();
    assert_eq!(locations.len(), 2, "{locations:?}");
    assert_eq!(locations[1], "arrow-flight-reuse-connection://?");
    let executor = locations[0].replace("grpc+tcp://", "http://");
    assert!(executors.contains(&executor), "{locations:?} {executors:?}");
    let mut direct = self::client(&executor).await;
    let ticket = endpoint.ticket.clone().expect("ticket");
    let batches: Vec<RecordBatch> = direct
        .do_get(ticket.clone())
        .await
        .expect("do_get at the executor")
        .try_collect()
        .await
        .expect("batches");
    assert_eq!(sorted_rows(&batches), expected);
    // Read once: the query ends and frees everything; the ticket is spent.
    wait_until_executors_are_idle(&cluster).await;
    let err = error_of(client.do_get(ticket).await, "a spent ticket").await;
    assert!(
        err.contains("no result") || err.contains("released"),
        "{err}"
    );

    // The same kind of ticket, redeemed at the coordinator (clients that ignore
    // locations); a prepared statement with a parameter too.
    let info = client.execute(query.into(), None).await.expect("execute");
    assert_eq!(sorted_rows(&fetch(&mut client, info).await), expected);
    let filtered = "SELECT k, label FROM t WHERE k > 1990";
    let mut prepared = client
        .prepare("SELECT k, label FROM t WHERE k > $1".into(), None)
        .await
        .expect("prepare");
    let parameter = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1990]))],
    )
    .expect("parameter");
    prepared.set_parameters(parameter).expect("bind");
    let info = prepared.execute().await.expect("execute prepared");
    assert_eq!(info.endpoint[0].location.len(), 2);
    assert_eq!(
        sorted_rows(&fetch(&mut client, info).await),
        oracle_rows(&oracle, filtered).await
    );
    // Statements that run on the coordinator keep being served by it.
    let info = client
        .execute("EXPLAIN SELECT k FROM t".into(), None)
        .await
        .expect("EXPLAIN");
    assert!(info.endpoint[0].location.is_empty());
    assert!(!fetch(&mut client, info).await.is_empty());
    wait_until_executors_are_idle(&cluster).await;

    // A served result nobody reads is stopped by CancelFlightInfo.
    let info = client.execute(query.into(), None).await.expect("execute");
    assert_eq!(cancel(&mut client, info).await, CancelStatus::Cancelled);
    wait_until_executors_are_idle(&cluster).await;

    // A setting that names no place is refused by name, as the client's mistake, and
    // the session keeps the value it had.
    let err = client
        .execute_update("SET fletch.result_endpoints = 'nowhere'".into(), None)
        .await
        .expect_err("a bad setting")
        .to_string();
    assert!(
        err.contains("fletch.result_endpoints") && err.contains("invalid argument"),
        "{err}"
    );
    let info = client.execute(query.into(), None).await.expect("execute");
    assert!(!fetch(&mut client, info).await.is_empty());
    drop(server);
    cluster.shutdown().await;
}

/// The same over processes: `fletch serve` with `--tls-cert`/`--tls-key`, and the shell
/// with `--connect https://... --tls-ca`; without the CA the shell says what it needs.
#[test]
fn the_shell_connects_to_fletch_serve_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::self_signed_files(dir.path(), &["localhost"]);
    let (cert, key) = (cert.as_str(), key.as_str());
    let server = common::start(&[
        "-q",
        "--executors",
        "1",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // The certificate names localhost; connect by that name.
    let url = server.url.replace("127.0.0.1", "localhost");
    let shell = |flags: &[&str]| common::connect_sql(&url, flags, "SELECT 6 * 7 AS answer");
    let out = shell(&["--tls-ca", cert]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answer\n42\n");
    let out = shell(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-ca"), "{stderr}");
}

/// The error a call returned, at once or within its stream.
async fn error_of<S, T, E1, E2>(result: Result<S, E1>, what: &str) -> String
where
    S: futures::Stream<Item = Result<T, E2>>,
    E1: std::fmt::Display,
    E2: std::fmt::Display,
{
    match result {
        Err(e) => e.to_string(),
        Ok(stream) => {
            let items: Vec<Result<T, E2>> = futures::StreamExt::collect(stream).await;
            items
                .into_iter()
                .find_map(|item| item.err())
                .map(|e| e.to_string())
                .unwrap_or_else(|| panic!("{what} must fail"))
        }
    }
}

fn strings_or_ints(batches: &[RecordBatch]) -> Vec<String> {
    fletch_tpch::rows_as_text(batches).expect("rows")
}

/// A client's mistakes reach it with their own gRPC codes; `Internal` is for bugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_travel_with_their_own_codes() {
    let Fixture {
        cluster, server, ..
    } = fixture().await;
    let mut client = client(server.url()).await;
    client
        .execute_update("CREATE TABLE codes (x INT) AS VALUES (1), (0)".into(), None)
        .await
        .expect("create");
    let code = |result: Result<i64, arrow_flight::error::FlightError>| match result {
        Err(arrow_flight::error::FlightError::Tonic(status)) => status.code(),
        other => panic!("expected a status, got {other:?}"),
    };
    let update = |sql: &str| {
        let mut client = client.clone();
        let sql = sql.to_string();
        async move { client.execute_update(sql, None).await }
    };
    assert_eq!(
        code(update("CREATE TABLE codes (x INT)").await),
        tonic::Code::AlreadyExists
    );
    assert_eq!(
        code(update("DROP TABLE no_such_table").await),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(update("INSERT INTO codes SELECT * FROM no_such_table").await),
        tonic::Code::NotFound
    );
    assert_eq!(code(update("SELEC 1").await), tonic::Code::InvalidArgument);
    let query = |sql: &str| {
        let mut client = client.clone();
        let sql = sql.to_string();
        async move {
            let info = client.execute(sql, None).await?;
            let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
            let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
            Ok::<i64, arrow_flight::error::FlightError>(batches.len() as i64)
        }
    };
    assert_eq!(
        code(query("SELECT 10 / x FROM codes").await),
        tonic::Code::InvalidArgument,
        "a division by zero on an executor"
    );
    drop(server);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_reports_every_stage_and_the_history_names_the_user() {
    let Fixture {
        cluster: _cluster,
        server,
        ..
    } = fixture().await;
    let mut client = client(server.url()).await;
    client.handshake("anyone", "").await.expect("handshake");
    client
        .execute_update(
            format!("CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS AS {DATA}"),
            None,
        )
        .await
        .expect("CREATE TABLE");
    let sql = "EXPLAIN ANALYZE SELECT g, count(*) FROM t GROUP BY g";
    let info = client
        .execute(sql.to_string(), None)
        .await
        .expect("execute");
    let batches = fetch(&mut client, info).await;
    let kinds = strings(&batches, "plan_type");
    let texts = strings(&batches, "plan");
    assert_eq!(kinds.first().map(String::as_str), Some("Plan with Metrics"));
    let query = kinds
        .iter()
        .position(|k| k == "Query")
        .expect("a Query row");
    assert!(texts[query].starts_with("rows=7 "), "{}", texts[query]);
    let stages = kinds.iter().filter(|k| k.starts_with("Stage ")).count();
    assert!(stages >= 2, "a row per stage: {kinds:?}");
    assert!(texts[0].contains("metrics=[output_rows="), "{}", texts[0]);

    let info = client
        .execute(
            format!("SELECT user, state FROM fletch.queries WHERE sql = '{sql}'"),
            None,
        )
        .await
        .expect("execute");
    let logged = fetch(&mut client, info).await;
    assert_eq!(strings(&logged, "user"), ["anonymous"]);
    assert_eq!(strings(&logged, "state"), ["succeeded"]);
}
