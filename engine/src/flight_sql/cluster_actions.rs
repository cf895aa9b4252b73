//! The cluster's own actions on the coordinator's endpoint: executors register, send
//! heartbeats and leave, and members list them. Only cluster members may call them
//! (users see the executors with `SHOW EXECUTORS`).

use arrow_flight::{Action, ActionType};
use fletch_transport::protocol::{self, ExecutorStatus, QueryLease};
use fletch_transport::{FailureReason, TaskFailure};
use prost::Message;
use tonic::Status;

use crate::coordinator::Coordinator;

pub(crate) fn bad_request(message: impl Into<String>) -> Status {
    TaskFailure::new(FailureReason::BadRequest, message, 0, 0, "").to_status()
}

fn executor_status(body: &[u8]) -> Result<ExecutorStatus, Status> {
    let status = ExecutorStatus::decode(body)
        .map_err(|e| bad_request(format!("malformed executor status: {e}")))?;
    if status.url.is_empty() {
        return Err(bad_request("executor status without a URL"));
    }
    Ok(status)
}

/// Runs a membership action; `None` when `action` is not one.
pub(crate) async fn run(
    coordinator: &Coordinator,
    extensions: &tonic::Extensions,
    action: &Action,
) -> Option<Result<Vec<arrow_flight::Result>, Status>> {
    if !list().iter().any(|a| a.r#type == action.r#type) {
        return None;
    }
    if let Err(refused) =
        fletch_transport::require_member(extensions, &format!("action {:?}", action.r#type))
    {
        return Some(Err(refused));
    }
    let replies = match action.r#type.as_str() {
        protocol::REGISTER_EXECUTOR | protocol::HEARTBEAT => {
            let registering = action.r#type == protocol::REGISTER_EXECUTOR;
            executor_status(&action.body).and_then(|status| {
                coordinator
                    .executor_heard_from(status, registering)
                    .map_err(|f| f.to_status())?;
                // The reply renews the lease of every query still running.
                let lease = QueryLease {
                    live_queries: coordinator.live_queries(),
                };
                Ok(vec![arrow_flight::Result {
                    body: lease.encode_to_vec().into(),
                }])
            })
        }
        protocol::LEAVE => match executor_status(&action.body) {
            Ok(status) => {
                tracing::info!(url = %status.url, "executor leaving: handing over its fragments");
                coordinator.executor_leaving(&status.url).await;
                tracing::info!(url = %status.url, "executor left");
                Ok(vec![])
            }
            Err(e) => Err(e),
        },
        protocol::LIST_EXECUTORS => Ok(coordinator
            .executors()
            .into_iter()
            .map(|s| arrow_flight::Result {
                body: s.encode_to_vec().into(),
            })
            .collect()),
        _ => return None,
    };
    Some(replies)
}

pub(crate) fn list() -> Vec<ActionType> {
    [
        (protocol::REGISTER_EXECUTOR, "an executor joins the cluster"),
        (protocol::HEARTBEAT, "an executor is alive; its status"),
        (protocol::LEAVE, "an executor leaves the cluster"),
        (
            protocol::LIST_EXECUTORS,
            "the cluster's executors and their state",
        ),
    ]
    .into_iter()
    .map(|(r#type, description)| ActionType {
        r#type: r#type.to_string(),
        description: description.to_string(),
    })
    .collect()
}
