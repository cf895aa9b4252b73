//! A failure on a healthy executor is a failed call, never a lost executor. One of two
//! executors sits behind a proxy that forwards every call but answers one `DoGet` with
//! a bare `Internal` IPC error, the way a live executor's failing encoder or a
//! middlebox would (no Fletch detail). The coordinator must not declare it lost: no
//! recovery runs, no fragment moves, it stays placeable, and the next query is right.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::prelude::SessionContext;
use fletch_engine::{
    ClusterSecret, Coordinator, MembershipOptions, default_session_config, fletch_session,
};
use fletch_executor::{ExecutorOptions, start_executor_with};
use fletch_transport::{ClusterSecurity, FlightServer};
use futures::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Forwards Flight calls to an executor; once armed, answers the next `DoGet` with a
/// detail-less `Internal` status instead.
struct FaultyProxy {
    upstream: FlightServiceClient<Channel>,
    armed: Arc<AtomicBool>,
}

/// `body` as a request carrying `from`'s authorization (the member proof).
fn forwarded<T, U>(from: &Request<T>, body: U) -> Request<U> {
    let mut request = Request::new(body);
    if let Some(value) = from.metadata().get("authorization") {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

fn not_forwarded(what: &str) -> Status {
    Status::unimplemented(format!("the test proxy does not forward {what}"))
}

#[tonic::async_trait]
impl FlightService for FaultyProxy {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(not_forwarded("Handshake"))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(not_forwarded("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(not_forwarded("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(not_forwarded("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(not_forwarded("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(Status::internal(
                "Ipc error: the test proxy corrupted this stream",
            ));
        }
        let forward = forwarded(&request, request.get_ref().clone());
        let stream = self.upstream.clone().do_get(forward).await?.into_inner();
        Ok(Response::new(stream.boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let (metadata, extensions, input) = request.into_parts();
        let header = Request::from_parts(metadata, extensions, ());
        let input = input.take_while(|item| futures::future::ready(item.is_ok()));
        let input = input.filter_map(|item| futures::future::ready(item.ok()));
        let forward = forwarded(&header, input);
        let stream = self.upstream.clone().do_put(forward).await?.into_inner();
        Ok(Response::new(stream.boxed()))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let forward = forwarded(&request, request.get_ref().clone());
        let stream = self.upstream.clone().do_action(forward).await?.into_inner();
        Ok(Response::new(stream.boxed()))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(not_forwarded("ListActions"))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(not_forwarded("DoExchange"))
    }
}

async fn rows(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<Vec<String>> {
    let batches = fletch_engine::sql(ctx, sql).await?.collect().await?;
    let mut rows = fletch_tpch::rows_as_text(&batches)?;
    rows.sort();
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipc_error_on_a_live_executor_is_not_a_lost_executor() {
    let secret = ClusterSecret::random().expect("secret");
    let security = ClusterSecurity::open().with_secret(Some(secret));
    let executor = |security: &ClusterSecurity| {
        let options = ExecutorOptions {
            memory_limit: 256 << 20,
            security: security.clone(),
            ..Default::default()
        };
        start_executor_with("127.0.0.1:0".parse().expect("address"), options)
    };
    let behind_proxy = executor(&security).await.expect("executor");
    let direct = executor(&security).await.expect("executor");
    let armed = Arc::new(AtomicBool::new(false));
    let proxy = FaultyProxy {
        upstream: FlightServiceClient::new(
            fletch_transport::connect(behind_proxy.url(), &ClusterSecurity::open())
                .expect("channel"),
        ),
        armed: Arc::clone(&armed),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = FlightServer::serve(listener, proxy).expect("serve the proxy");
    let urls = [proxy.url().to_string(), direct.url().to_string()];
    let coordinator = Coordinator::with_security(&urls, MembershipOptions::default(), security)
        .expect("coordinator");
    let ctx = fletch_session(Arc::clone(&coordinator), default_session_config());

    fletch_engine::sql(
        &ctx,
        "CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS REPLICAS 2 AS \
         SELECT value AS k, value % 10 AS g FROM generate_series(1, 10000)",
    )
    .await
    .expect("plan the load")
    .collect()
    .await
    .expect("load");
    let query = "SELECT g, count(*) AS n, sum(k) AS s FROM t GROUP BY g";
    let oracle = SessionContext::new();
    let expected = {
        let batches = oracle
            .sql(
                "SELECT value % 10 AS g, count(*) AS n, sum(value) AS s \
                 FROM generate_series(1, 10000) GROUP BY 1",
            )
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut rows = fletch_tpch::rows_as_text(&batches).expect("rows");
        rows.sort();
        rows
    };
    let fragments = "SELECT fragment, executors FROM fletch.fragments ORDER BY fragment";
    let holders_before = rows(&ctx, fragments).await.expect("fragments");
    assert!(
        holders_before.iter().all(|h| h.contains(proxy.url())),
        "{holders_before:?}"
    );

    armed.store(true, Ordering::SeqCst);
    // Whether this query fails or gets its answer another way, it must not be wrong.
    if let Ok(answer) = rows(&ctx, query).await {
        assert_eq!(answer, expected);
    }
    assert!(!armed.load(Ordering::SeqCst), "the proxy failed no DoGet");

    coordinator.wait_for_releases().await;
    let stats = coordinator.recovery_stats();
    assert_eq!(
        (stats.lineage_recoveries, stats.whole_reruns),
        (0, 0),
        "a recovery ran: {stats:?}"
    );
    let states: Vec<(String, String)> = coordinator
        .executors()
        .into_iter()
        .map(|e| (e.url, e.state))
        .collect();
    assert!(
        states
            .iter()
            .any(|(url, state)| url == proxy.url() && state == "alive"),
        "{states:?}"
    );
    assert!(
        coordinator
            .executor_urls()
            .contains(&proxy.url().to_string())
    );
    assert_eq!(
        rows(&ctx, fragments).await.expect("fragments"),
        holders_before
    );
    assert_eq!(rows(&ctx, query).await.expect("the next query"), expected);
}
