//! [`ClientPool`]: one [`ExecutorClient`] per executor URL, shared by every task and
//! control call of a process, each presenting that process's [`ClusterSecurity`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::client::ExecutorClient;
use crate::endpoint::ClusterSecurity;
use crate::failure::TaskFailure;

#[derive(Debug, Clone, Default)]
pub struct ClientPool {
    clients: Arc<Mutex<HashMap<String, ExecutorClient>>>,
    security: ClusterSecurity,
}

impl ClientPool {
    /// A pool whose clients present `security`.
    pub fn new(security: ClusterSecurity) -> Self {
        Self {
            clients: Arc::default(),
            security,
        }
    }

    /// What this pool's clients present and trust.
    pub fn security(&self) -> &ClusterSecurity {
        &self.security
    }

    pub fn get(&self, url: &str) -> Result<ExecutorClient, TaskFailure> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let client = ExecutorClient::member(url, &self.security)?;
        clients.insert(url.to_string(), client.clone());
        Ok(client)
    }
}
