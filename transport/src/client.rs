//! [`Client`]: one Fletch process calling another, over one channel: the executor's
//! calls ([`ExecutorClient`], in `executor_client.rs`) and the coordinator's
//! ([`CoordinatorClient`], in `coordinator_client.rs`) share how they are made.

use std::marker::PhantomData;

use crate::caller::Caller;
use crate::endpoint::ClusterSecurity;
use crate::failure::TaskFailure;

/// Calls one process in the role `R` says (which calls it offers).
#[derive(Debug, Clone)]
pub struct Client<R> {
    pub(crate) caller: Caller,
    role: PhantomData<R>,
}

/// The role of an executor: runs tasks, holds partitions and pieces.
#[derive(Debug, Clone, Copy)]
pub struct ExecutorRole;

/// The role of the coordinator: membership.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorRole;

/// Calls one executor.
pub type ExecutorClient = Client<ExecutorRole>;

/// Calls the coordinator's membership actions.
pub type CoordinatorClient = Client<CoordinatorRole>;

impl<R> Client<R> {
    /// A client that presents nothing over plain `http://`: enough for an open cluster.
    pub fn new(url: &str) -> Result<Self, TaskFailure> {
        Self::member(url, &ClusterSecurity::open())
    }

    /// A client of a cluster member: every call proves membership with `security`'s
    /// secret (none: an open cluster), and `https://` trusts its certificate.
    pub fn member(url: &str, security: &ClusterSecurity) -> Result<Self, TaskFailure> {
        Ok(Self {
            caller: Caller::member(url, security)?,
            role: PhantomData,
        })
    }

    /// This client, sending `header` as `authorization` with every call.
    pub fn with_authorization(self, header: String) -> Self {
        Self {
            caller: self.caller.with_authorization(header),
            role: PhantomData,
        }
    }

    pub fn url(&self) -> &str {
        self.caller.url()
    }
}
