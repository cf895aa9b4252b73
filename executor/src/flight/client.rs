//! Clients of executors: task launch, release, and partition fetches. Every channel is
//! built by [`connect`], so limits and frame sizes are set in exactly one place.

use std::collections::HashMap;
use std::sync::Arc;

use crate::flight::encode::{Dictionaries, encode_batches};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{FlightDataDecoder, FlightRecordBatchStream};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{
    Action, FlightClient, FlightData, FlightDescriptor, Ticket, error::FlightError,
};
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_planner::ExchangeSource;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::member::ClusterSecret;
use super::validate::validate_batch;
use super::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use crate::protocol::{
    self, CopyPiece, DropPieces, ExecutorStatus, FletchTicket, MemoryLimit, PartitionTicket,
    PieceId, ReleaseQuery, StageLocations, TaskDefinition, fletch_ticket,
};
use crate::status::{FailureReason, TaskFailure};
use crate::store::PartitionStore;

/// A lazily connecting channel to `url` with Fletch's transport settings.
pub fn connect(url: &str) -> Result<Channel, TaskFailure> {
    let bad = |message: String| TaskFailure::new(FailureReason::BadRequest, message, 0, 0, url);
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(format!("invalid executor URL {url}: {e}")))?;
    if url.starts_with("https://") {
        let Some(ca) = TRUSTED_CA.get() else {
            return Err(bad(format!(
                "{url} serves TLS, but this process trusts no certificate (--tls-ca)"
            )));
        };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| bad(format!("TLS for {url}: {e}")))?;
    }
    Ok(endpoint
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        // A peer that vanished without closing the connection (a host gone, a cable
        // pulled) is noticed by its missing pings, not only by the next call.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// How long opening a connection to another process may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a control call (release, drop, memory limit, membership) may take.
pub const CONTROL_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an HTTP/2 connection is pinged, both ways.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as broken.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The PEM certificate this process trusts for `https://` links to other cluster
/// members (a CA, or their shared self-signed certificate).
static TRUSTED_CA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Makes this process trust `ca_pem` for `https://` links to executors and the
/// coordinator; set once, at start-up. Returns false if one was already set.
pub fn trust_cluster_certificate(ca_pem: Vec<u8>) -> bool {
    TRUSTED_CA.set(ca_pem).is_ok()
}

/// Calls one executor (or the coordinator's membership actions).
#[derive(Debug, Clone)]
pub struct ExecutorClient {
    url: String,
    channel: Channel,
    /// Sent as `authorization` with every call, instead of a member proof.
    authorization: Option<String>,
    /// Proves membership with every call (a fresh proof each time).
    member: Option<ClusterSecret>,
}

impl ExecutorClient {
    /// A client that presents nothing: enough for an open cluster (no secret).
    pub fn new(url: &str) -> Result<Self, TaskFailure> {
        Ok(Self {
            url: url.to_string(),
            channel: connect(url)?,
            authorization: None,
            member: None,
        })
    }

    /// A client of a cluster member: every call proves membership with `secret`
    /// (none: an open cluster).
    pub fn member(url: &str, secret: Option<ClusterSecret>) -> Result<Self, TaskFailure> {
        Ok(Self {
            member: secret,
            ..Self::new(url)?
        })
    }

    /// This client, sending `header` as `authorization` with every call.
    pub fn with_authorization(mut self, header: String) -> Self {
        self.authorization = Some(header);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn service(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// What this client presents: its own header, else a member proof.
    fn authorization(&self) -> Option<String> {
        match (&self.authorization, &self.member) {
            (Some(header), _) => Some(header.clone()),
            (None, Some(secret)) => Some(secret.member_header()),
            (None, None) => None,
        }
    }

    fn flight(&self) -> FlightClient {
        let mut client = FlightClient::new_from_inner(self.service());
        if let Some(header) = self.authorization()
            && let Err(e) = client.add_header("authorization", &header)
        {
            tracing::warn!(url = %self.url, "authorization header not sent: {e}");
        }
        client
    }

    /// The batches of a `DoGet`, each fully validated before anyone reads it.
    async fn do_get(
        &self,
        ticket: Ticket,
    ) -> Result<impl Stream<Item = Result<RecordBatch, FlightError>> + use<>, FlightError> {
        let mut request = tonic::Request::new(ticket);
        if let Some(header) = self.authorization() {
            let value = header.parse().map_err(|_| {
                FlightError::ProtocolError("the authorization is not a header value".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = self.service().do_get(request).await?;
        let flight_data = response
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        Ok(decode_validated(flight_data))
    }

    fn failure(&self, e: FlightError) -> TaskFailure {
        match e {
            FlightError::Tonic(status) => TaskFailure::from_status(&status, &self.url),
            other => TaskFailure::outside_tasks(
                FailureReason::FetchFailed,
                format!("executor {}: {other}", self.url),
                &self.url,
            ),
        }
    }

    /// Runs a task; returns when it has finished writing all its output.
    pub async fn run_task(&self, task: &TaskDefinition) -> Result<(), TaskFailure> {
        self.action(protocol::RUN_TASK, task.encode_to_vec()).await
    }

    /// Returns once a client has read the query result `partition` names to its end;
    /// fails if no reader came within `unread`, or it left before the end.
    pub async fn await_result_read(
        &self,
        partition: &PartitionTicket,
        unread: std::time::Duration,
    ) -> Result<(), TaskFailure> {
        let body = protocol::ResultRead {
            partition: Some(partition.clone()),
            unread_ms: u64::try_from(unread.as_millis()).unwrap_or(u64::MAX),
        };
        self.action(protocol::AWAIT_RESULT_READ, body.encode_to_vec())
            .await
    }

    /// Frees a query's buffers and aborts its tasks on this executor.
    pub async fn release(&self, query_id: &str) -> Result<(), TaskFailure> {
        let body = ReleaseQuery {
            query_id: query_id.to_string(),
        };
        self.action(protocol::RELEASE_QUERY, body.encode_to_vec())
            .await
    }

    /// Performs an action and waits for its (empty) reply stream to end.
    /// Control calls (all but running a task, waiting for a result's reader, copying a
    /// piece and leaving, which hands over every fragment first: these last as long as
    /// their work) get [`CONTROL_CALL_TIMEOUT`].
    async fn action(&self, r#type: &str, body: Vec<u8>) -> Result<(), TaskFailure> {
        let call = self.each_reply(r#type, body, |_| Ok(()));
        let open_ended = [
            protocol::RUN_TASK,
            protocol::AWAIT_RESULT_READ,
            protocol::COPY_PIECE,
            protocol::LEAVE,
        ];
        if open_ended.contains(&r#type) {
            return call.await;
        }
        self.within_deadline(r#type, call).await
    }

    /// Sends an action and hands each reply body to `each` until the stream ends.
    async fn each_reply(
        &self,
        r#type: &str,
        body: Vec<u8>,
        mut each: impl FnMut(bytes::Bytes) -> Result<(), TaskFailure>,
    ) -> Result<(), TaskFailure> {
        let mut replies = self
            .flight()
            .do_action(Action::new(r#type, body))
            .await
            .map_err(|e| self.failure(e))?;
        while let Some(reply) = replies.next().await {
            each(reply.map_err(|e| self.failure(e))?)?;
        }
        Ok(())
    }

    /// `call`, failed as [`FailureReason::FetchFailed`] if it takes longer than
    /// [`CONTROL_CALL_TIMEOUT`].
    async fn within_deadline<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, TaskFailure>>,
    ) -> Result<T, TaskFailure> {
        tokio::time::timeout(CONTROL_CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(TaskFailure::outside_tasks(
                    FailureReason::FetchFailed,
                    format!(
                        "{} did not answer {what} within {CONTROL_CALL_TIMEOUT:?}",
                        self.url
                    ),
                    &self.url,
                ))
            })
    }

    /// Sends `status` to the coordinator at this client's URL with `action`
    /// ([`protocol::REGISTER_EXECUTOR`], [`protocol::HEARTBEAT`] or [`protocol::LEAVE`]).
    pub async fn announce(&self, action: &str, status: &ExecutorStatus) -> Result<(), TaskFailure> {
        self.action(action, status.encode_to_vec()).await
    }

    /// Sends a heartbeat with `status` to the coordinator at this client's URL; returns
    /// the lease it answers with (none from a coordinator that sends none).
    pub async fn heartbeat(
        &self,
        status: &ExecutorStatus,
    ) -> Result<Option<protocol::QueryLease>, TaskFailure> {
        let mut leases = self
            .replies(protocol::HEARTBEAT, status.encode_to_vec(), "lease")
            .await?;
        Ok(leases.pop())
    }

    /// The executors the coordinator at this client's URL knows.
    pub async fn list_executors(&self) -> Result<Vec<ExecutorStatus>, TaskFailure> {
        self.replies(protocol::LIST_EXECUTORS, Vec::new(), "executor status")
            .await
    }

    /// Performs a control action whose replies each carry a `T` (`what`, for errors),
    /// within [`CONTROL_CALL_TIMEOUT`].
    async fn replies<T: Message + Default>(
        &self,
        r#type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Vec<T>, TaskFailure> {
        let call = async {
            let mut decoded = Vec::new();
            self.each_reply(r#type, body, |bytes| {
                decoded.push(T::decode(bytes).map_err(|e| {
                    TaskFailure::outside_tasks(
                        FailureReason::BadRequest,
                        format!("malformed {what} from {}: {e}", self.url),
                        &self.url,
                    )
                })?);
                Ok(())
            })
            .await?;
            Ok(decoded)
        };
        self.within_deadline(r#type, call).await
    }

    /// Has this executor copy a table piece from the executor at `from`.
    pub async fn copy_piece(&self, piece: &PieceId, from: &str) -> Result<(), TaskFailure> {
        let body = CopyPiece {
            piece: Some(piece.clone()),
            from: from.to_string(),
        };
        self.action(protocol::COPY_PIECE, body.encode_to_vec())
            .await
    }

    /// Sets this executor's memory limit.
    pub async fn set_memory_limit(&self, bytes: usize) -> Result<(), TaskFailure> {
        let body = MemoryLimit {
            bytes: bytes as u64,
        };
        self.action(protocol::SET_MEMORY_LIMIT, body.encode_to_vec())
            .await
    }

    /// Frees every fragment of a table incarnation on this executor, or only the pieces
    /// one load wrote.
    pub async fn drop_pieces(&self, table_uid: &str, load: Option<u64>) -> Result<(), TaskFailure> {
        let action = match load {
            Some(_) => protocol::DROP_LOAD,
            None => protocol::DROP_TABLE,
        };
        let body = DropPieces {
            table_uid: table_uid.to_string(),
            load,
        };
        self.action(action, body.encode_to_vec()).await
    }

    /// Stores a replica of a table piece on this executor.
    pub(crate) async fn put_piece(
        &self,
        id: &PieceId,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(), TaskFailure> {
        let descriptor = FlightDescriptor::new_cmd(id.encode_to_vec());
        let data = encode_batches(
            Some(schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
            Dictionaries::Resend,
            Some(descriptor),
        );
        let mut results = self
            .flight()
            .do_put(data)
            .await
            .map_err(|e| self.failure(e))?;
        while let Some(result) = results.next().await {
            result.map_err(|e| self.failure(e))?;
        }
        Ok(())
    }

    /// Streams a table piece this executor holds.
    pub async fn fetch_piece(
        &self,
        id: &PieceId,
    ) -> Result<impl Stream<Item = Result<RecordBatch, TaskFailure>> + use<>, TaskFailure> {
        let ticket = FletchTicket {
            kind: Some(fletch_ticket::Kind::Piece(id.clone())),
        };
        let batches = self
            .do_get(Ticket::new(ticket.encode_to_vec()))
            .await
            .map_err(|e| self.failure(e))?;
        let client = self.clone();
        Ok(batches.map_err(move |e| client.failure(e)))
    }

    /// Streams one task output partition.
    pub fn fetch(&self, ticket: PartitionTicket, schema: SchemaRef) -> SendableRecordBatchStream {
        let client = self.clone();
        let stream = futures::stream::once(async move {
            let ticket = FletchTicket {
                kind: Some(fletch_ticket::Kind::Partition(ticket)),
            };
            let ticket = Ticket::new(ticket.encode_to_vec());
            let batches = client
                .do_get(ticket)
                .await
                .map_err(|e| client.failure(e).into_datafusion())?;
            let client2 = client.clone();
            Ok::<_, datafusion::error::DataFusionError>(
                batches.map_err(move |e| client2.failure(e).into_datafusion()),
            )
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.boxed()))
    }
}

/// Decodes Flight data into batches, each fully validated before anyone reads it.
pub(crate) fn decode_validated(
    flight_data: impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> {
    let flight_data = flight_data.and_then(|data| async move {
        refuse_dictionary_delta(&data)?;
        Ok(data)
    });
    // SAFETY: the decoder's own validation is skipped because `validate_batch` runs
    // the same checks (faster for string views) on every batch before it leaves
    // this function; nothing reads a batch's values in between. The one place the
    // decoder itself reads values, concatenating a dictionary delta onto the
    // dictionary it holds, never runs: deltas are refused before it sees them.
    let decoder = unsafe { FlightDataDecoder::new(flight_data).with_skip_validation() };
    FlightRecordBatchStream::new(decoder).and_then(|batch| async move {
        validate_batch(&batch)?;
        Ok(batch)
    })
}

/// Refuses a dictionary delta: Fletch never sends one (its encoders resend whole
/// dictionaries), and the decoder would concatenate it before any validation.
fn refuse_dictionary_delta(data: &FlightData) -> Result<(), FlightError> {
    if data.data_header.is_empty() {
        return Ok(());
    }
    let message = arrow::ipc::root_as_message(&data.data_header)
        .map_err(|e| FlightError::DecodeError(format!("malformed IPC message header: {e}")))?;
    if message
        .header_as_dictionary_batch()
        .is_some_and(|dictionary| dictionary.isDelta())
    {
        return Err(FlightError::DecodeError(
            "dictionary deltas are not accepted: send whole dictionaries".to_string(),
        ));
    }
    Ok(())
}

/// Reads exchanges of one query over Flight, wherever the upstream tasks ran; inside an
/// executor, partitions written by that same executor are read straight from its store.
#[derive(Debug)]
pub struct FlightExchangeSource {
    query_id: String,
    /// Stage id -> where each of its tasks runs, and whether its outputs are retained.
    locations: HashMap<u64, StageLocations>,
    clients: ClientPool,
    local: Option<LocalPartitions>,
}

/// The partitions of the executor this source runs on, and the URL tasks know it by.
pub(crate) struct LocalPartitions {
    pub(crate) url: String,
    pub(crate) store: Arc<PartitionStore>,
}

impl std::fmt::Debug for LocalPartitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalPartitions({})", self.url)
    }
}

impl FlightExchangeSource {
    pub fn new(
        query_id: String,
        locations: HashMap<u64, StageLocations>,
        clients: ClientPool,
    ) -> Self {
        Self {
            query_id,
            locations,
            clients,
            local: None,
        }
    }

    /// Reads partitions that `local` holds from memory: no IPC, no copy, no socket.
    pub(crate) fn with_local(mut self, local: LocalPartitions) -> Self {
        self.local = Some(local);
        self
    }
}

impl ExchangeSource for FlightExchangeSource {
    fn fetch(
        &self,
        stage: usize,
        task: usize,
        output_partition: usize,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream> {
        let location = self.locations.get(&(stage as u64));
        let url = location
            .and_then(|l| l.task_urls.get(task))
            .ok_or_else(|| {
                exec_datafusion_err!("no location for stage {stage} task {task} in this task")
            })?;
        let ticket = PartitionTicket {
            query_id: self.query_id.clone(),
            stage: stage as u64,
            task: task as u64,
            partition: output_partition as u64,
            retain: location.is_some_and(|l| l.retain),
            attempt: location
                .and_then(|l| l.task_attempts.get(task).copied())
                .unwrap_or(0),
        };
        if let Some(local) = self.local.as_ref().filter(|l| &l.url == url) {
            let batches = local
                .store
                .read_partition(&ticket, true)
                .map_err(TaskFailure::into_datafusion)?
                .map_err(TaskFailure::into_datafusion);
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)));
        }
        let client = self
            .clients
            .get(url)
            .map_err(TaskFailure::into_datafusion)?;
        Ok(client.fetch(ticket, schema))
    }
}

/// One client per executor URL, shared by every task on this process; each proves
/// this process's membership of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClientPool {
    clients: Arc<Mutex<HashMap<String, ExecutorClient>>>,
    secret: Option<ClusterSecret>,
}

impl ClientPool {
    /// A pool whose clients prove membership with `secret` (none: an open cluster).
    pub fn new(secret: Option<ClusterSecret>) -> Self {
        Self {
            clients: Arc::default(),
            secret,
        }
    }

    /// The cluster secret this pool's clients present.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    pub fn get(&self, url: &str) -> Result<ExecutorClient, TaskFailure> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let client = ExecutorClient::member(url, self.secret.clone())?;
        clients.insert(url.to_string(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringDictionaryBuilder};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use arrow::ipc::writer::{
        DictionaryHandling, DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
    };

    use super::*;

    /// Two batches of one dictionary column as Flight data, the second's dictionary
    /// sent with `handling` (a delta, or a whole replacement).
    fn dictionary_stream(handling: DictionaryHandling) -> Vec<FlightData> {
        let field = Field::new(
            "s",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        );
        let schema = Arc::new(Schema::new(vec![field]));
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        builder.append_value("a");
        builder.append_value("b");
        let first = builder.finish_preserve_values();
        builder.append_value("a");
        builder.append_value("d");
        let second = builder.finish_preserve_values();
        let options = IpcWriteOptions::default().with_dictionary_handling(handling);
        let generator = IpcDataGenerator::default();
        let mut tracker = DictionaryTracker::new(false);
        let mut context = IpcWriteContext::default();
        let encoded_schema =
            generator.schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options);
        let mut data: Vec<FlightData> = vec![encoded_schema.into()];
        for column in [first, second] {
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column) as ArrayRef])
                    .expect("batch");
            let (dictionaries, batch) = generator
                .encode(&batch, &mut tracker, &options, &mut context)
                .expect("encode");
            data.extend(dictionaries.into_iter().map(FlightData::from));
            data.push(batch.into());
        }
        data
    }

    async fn decode(data: Vec<FlightData>) -> Result<Vec<RecordBatch>, FlightError> {
        decode_validated(futures::stream::iter(data.into_iter().map(Ok)))
            .try_collect()
            .await
    }

    #[tokio::test]
    async fn dictionary_deltas_are_refused_before_the_decoder_sees_them() {
        let err = decode(dictionary_stream(DictionaryHandling::Delta))
            .await
            .expect_err("a delta")
            .to_string();
        assert!(err.contains("dictionary deltas are not accepted"), "{err}");
        let whole = decode(dictionary_stream(DictionaryHandling::Resend))
            .await
            .expect("whole dictionaries");
        assert_eq!(whole.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    }
}
