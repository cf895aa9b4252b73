//! [`Caller`]: the plumbing the executor and coordinator clients share: one channel,
//! what each call presents (a header of its own, else a fresh member proof), actions
//! with or without a deadline, and validated `DoGet` streams.

use arrow::array::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, Ticket, error::FlightError};
use datafusion::physical_plan::metrics::Count;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use crate::decode::decode_validated;
use crate::endpoint::{CONTROL_CALL_TIMEOUT, ClusterSecurity, MAX_MESSAGE_BYTES, connect};
use crate::failure::{FailureReason, TaskFailure};
use crate::member::ClusterSecret;

/// Calls one Fletch process.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    url: String,
    channel: Channel,
    /// Sent as `authorization` with every call, instead of a member proof.
    authorization: Option<String>,
    /// Proves membership with every call (a fresh proof each time).
    member: Option<ClusterSecret>,
}

/// Whether an action lasts as long as its work (no deadline) or is a control call
/// bounded by [`CONTROL_CALL_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    Control,
    OpenEnded,
}

impl Caller {
    /// A caller of `url` presenting `security`'s secret (if any) as a member.
    pub(crate) fn member(url: &str, security: &ClusterSecurity) -> Result<Self, TaskFailure> {
        Ok(Self {
            url: url.to_string(),
            channel: connect(url, security)?,
            authorization: None,
            member: security.secret().cloned(),
        })
    }

    pub(crate) fn with_authorization(mut self, header: String) -> Self {
        self.authorization = Some(header);
        self
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn service(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// What this caller presents: its own header, else a member proof.
    fn authorization(&self) -> Option<String> {
        match (&self.authorization, &self.member) {
            (Some(header), _) => Some(header.clone()),
            (None, Some(secret)) => Some(secret.member_header()),
            (None, None) => None,
        }
    }

    pub(crate) fn flight(&self) -> FlightClient {
        let mut client = FlightClient::new_from_inner(self.service());
        if let Some(header) = self.authorization()
            && let Err(e) = client.add_header("authorization", &header)
        {
            tracing::warn!(url = %self.url, "authorization header not sent: {e}");
        }
        client
    }

    /// The batches of a `DoGet`, each fully validated before anyone reads it; the
    /// encoded bytes received are added to `wire_bytes`, when given.
    pub(crate) async fn do_get(
        &self,
        ticket: Ticket,
        wire_bytes: Option<Count>,
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
            .map_err(|status| FlightError::Tonic(Box::new(status)))
            .inspect_ok(move |data| {
                if let Some(wire) = &wire_bytes {
                    wire.add(data.data_header.len() + data.data_body.len());
                }
            });
        Ok(decode_validated(flight_data))
    }

    /// A Flight error as the typed failure its status carries.
    pub(crate) fn failure(&self, e: FlightError) -> TaskFailure {
        match e {
            FlightError::Tonic(status) => TaskFailure::from_status(&status, &self.url),
            other => TaskFailure::outside_tasks(
                FailureReason::FetchFailed,
                format!("executor {}: {other}", self.url),
                &self.url,
            ),
        }
    }

    /// Performs an action and waits for its (empty) reply stream to end.
    pub(crate) async fn action(
        &self,
        r#type: &str,
        body: Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), TaskFailure> {
        let call = self.each_reply(r#type, body, |_| Ok(()));
        match deadline {
            Deadline::OpenEnded => call.await,
            Deadline::Control => self.within_deadline(r#type, call).await,
        }
    }

    /// Performs an action whose one reply body is a `T` (`what`, for errors); an empty
    /// reply stream gives `T::default()`.
    pub(crate) async fn action_reply<T: Message + Default>(
        &self,
        r#type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<T, TaskFailure> {
        let mut reply = T::default();
        self.each_reply(r#type, body, |bytes| {
            reply = self.decode_reply(bytes, what)?;
            Ok(())
        })
        .await?;
        Ok(reply)
    }

    fn decode_reply<T: Message + Default>(
        &self,
        bytes: bytes::Bytes,
        what: &str,
    ) -> Result<T, TaskFailure> {
        T::decode(bytes).map_err(|e| {
            TaskFailure::outside_tasks(
                FailureReason::BadRequest,
                format!("malformed {what} from {}: {e}", self.url),
                &self.url,
            )
        })
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

    /// Performs a control action whose replies each carry a `T` (`what`, for errors),
    /// within [`CONTROL_CALL_TIMEOUT`].
    pub(crate) async fn replies<T: Message + Default>(
        &self,
        r#type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Vec<T>, TaskFailure> {
        let call = async {
            let mut decoded = Vec::new();
            self.each_reply(r#type, body, |bytes| {
                decoded.push(self.decode_reply(bytes, what)?);
                Ok(())
            })
            .await?;
            Ok(decoded)
        };
        self.within_deadline(r#type, call).await
    }
}
