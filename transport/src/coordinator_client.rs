//! [`CoordinatorClient`]: the calls an executor (or an operator's tool) makes on the
//! coordinator: join, heartbeat, leave, and list the cluster's executors.

use prost::Message;

use crate::caller::Deadline;
use crate::client::CoordinatorClient;
use crate::failure::TaskFailure;
use crate::protocol::{self, ExecutorStatus, QueryLease};

impl CoordinatorClient {
    /// Joins the cluster (or rejoins after being declared lost) as `status` describes.
    pub async fn register(&self, status: &ExecutorStatus) -> Result<(), TaskFailure> {
        self.caller
            .action(
                protocol::REGISTER_EXECUTOR,
                status.encode_to_vec(),
                Deadline::Control,
            )
            .await
    }

    /// Says the executor `status` describes is alive; returns the lease the coordinator
    /// answers with (none from a coordinator that sends none).
    pub async fn heartbeat(
        &self,
        status: &ExecutorStatus,
    ) -> Result<Option<QueryLease>, TaskFailure> {
        let mut leases = self
            .caller
            .replies(protocol::HEARTBEAT, status.encode_to_vec(), "lease")
            .await?;
        Ok(leases.pop())
    }

    /// Leaves the cluster cleanly; lasts until the coordinator has moved every fragment
    /// the executor held elsewhere.
    pub async fn leave(&self, status: &ExecutorStatus) -> Result<(), TaskFailure> {
        self.caller
            .action(protocol::LEAVE, status.encode_to_vec(), Deadline::OpenEnded)
            .await
    }

    /// The executors the coordinator knows.
    pub async fn list_executors(&self) -> Result<Vec<ExecutorStatus>, TaskFailure> {
        self.caller
            .replies(protocol::LIST_EXECUTORS, Vec::new(), "executor status")
            .await
    }
}
