//! The executor's Flight service: `DoAction` runs tasks and releases queries, `DoGet`
//! streams a task output partition. Every malformed request gets `InvalidArgument` with a
//! message naming what was wrong; nothing a client sends can take the server down.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::protocol::{self, PartitionTicket, ReleaseQuery, TaskDefinition};
use crate::status::{TaskFailure, bad_request};
use crate::task::TaskRunner;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) struct ExecutorService {
    pub(crate) runner: Arc<TaskRunner>,
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("a Fletch executor does not serve {what}"))
}

#[tonic::async_trait]
impl FlightService for ExecutorService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unsupported("Handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unsupported("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unsupported("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unsupported("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unsupported("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = PartitionTicket::decode(request.into_inner().ticket)
            .map_err(|e| bad_request(format!("malformed partition ticket: {e}")))?;
        if ticket.query_id.is_empty() {
            return Err(bad_request("partition ticket without a query id"));
        }
        let batches = self
            .runner
            .store
            .read_partition(&ticket, false)
            .map_err(|e| e.to_status())?
            .map_err(|failure| FlightError::ExternalError(Box::new(failure)));
        let encoded = FlightDataEncoderBuilder::new()
            // Resend keeps dictionary types intact, so readers see the declared schema.
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches)
            .map_err(|e| match e {
                FlightError::ExternalError(inner) => match inner.downcast::<TaskFailure>() {
                    Ok(failure) => failure.to_status(),
                    Err(other) => Status::internal(other.to_string()),
                },
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(encoded.boxed()))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(unsupported("DoPut"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        match action.r#type.as_str() {
            protocol::RUN_TASK => {
                let task = TaskDefinition::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed task definition: {e}")))?;
                if task.query_id.is_empty() {
                    return Err(bad_request("task definition without a query id"));
                }
                self.runner.run(task).await.map_err(|f| f.to_status())?;
            }
            protocol::RELEASE_QUERY => {
                let release = ReleaseQuery::decode(action.body)
                    .map_err(|e| bad_request(format!("malformed release request: {e}")))?;
                self.runner.store.release(&release.query_id);
            }
            other => return Err(bad_request(format!("unknown action type {other:?}"))),
        }
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                protocol::RUN_TASK,
                "run one stage task; replies when it has finished",
            ),
            (
                protocol::RELEASE_QUERY,
                "free a query's buffers and abort its tasks",
            ),
        ]
        .map(|(r#type, description)| {
            Ok(ActionType {
                r#type: r#type.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(futures::stream::iter(actions).boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unsupported("DoExchange"))
    }
}
