//! What the Flight SQL endpoint remembers between calls: client sessions by bearer
//! token, statements planned by `GetFlightInfo` and waiting for their `DoGet`, results
//! being streamed (so `CancelFlightInfo` can stop them), queries whose results clients
//! read from executors, and prepared statements.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::common::runtime::SpawnedTask;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::future::AbortHandle;
use parking_lot::Mutex;
use tonic::Status;

use fletch_executor::Credentials;

use crate::query_run::ServedResult;

/// How many handles of each kind may wait at once; beyond that the oldest is forgotten
/// (its later use gets NotFound).
const WAITING: usize = 1024;

/// A map of handles that forgets its oldest entry when full.
pub(crate) struct Handles<T> {
    entries: Mutex<(HashMap<String, T>, std::collections::VecDeque<String>)>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
        }
    }
}

impl<T: Clone> Handles<T> {
    /// Stores `value` under a new handle and returns it.
    pub(crate) fn insert(&self, value: T) -> String {
        let handle = uuid::Uuid::new_v4().to_string();
        self.insert_at(handle.clone(), value);
        handle
    }

    pub(crate) fn insert_at(&self, handle: String, value: T) {
        let mut guard = self.entries.lock();
        let (map, order) = &mut *guard;
        while map.len() >= WAITING {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            map.remove(&oldest);
        }
        if map.insert(handle.clone(), value).is_none() {
            order.push_back(handle);
        }
    }

    pub(crate) fn get(&self, handle: &str) -> Option<T> {
        self.entries.lock().0.get(handle).cloned()
    }

    pub(crate) fn remove(&self, handle: &str) -> Option<T> {
        let mut guard = self.entries.lock();
        let (map, order) = &mut *guard;
        let value = map.remove(handle)?;
        order.retain(|h| h != handle);
        Some(value)
    }
}

/// One client's session: its settings, temporary state and tables it registered.
pub(crate) type ClientSession = Arc<SessionContext>;

/// A prepared statement: its text, the session it was prepared in, and the parameters
/// bound last (if any).
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) session: ClientSession,
    pub(crate) sql: String,
    pub(crate) parameters: Option<ParamValues>,
}

/// A query whose result a client reads straight from an executor. It is owned here and
/// runs until the client has read the result, cancels it, or it fails; dropping this
/// stops it and frees it on every executor.
pub(crate) struct Served {
    pub(crate) result: ServedResult,
    pub(crate) schema: SchemaRef,
    pub(crate) _query: SpawnedTask<datafusion::error::Result<()>>,
}

/// A session and when its token was last used.
#[derive(Clone)]
pub(crate) struct SessionEntry {
    session: ClientSession,
    last_used: Arc<Mutex<Instant>>,
}

/// Client sessions by bearer token; a token unused for longer than `idle` expires.
pub(crate) struct Sessions {
    tokens: Handles<SessionEntry>,
    idle: Duration,
    /// Signs tokens, so executors serving results can check them.
    credentials: Option<Credentials>,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, credentials: Option<Credentials>) -> Self {
        Self {
            tokens: Handles::default(),
            idle,
            credentials,
        }
    }

    /// A new session's token.
    pub(crate) fn open(&self, session: ClientSession) -> String {
        let token = match &self.credentials {
            Some(credentials) => credentials.issue_token(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let entry = SessionEntry {
            session,
            last_used: Arc::new(Mutex::new(Instant::now())),
        };
        self.tokens.insert_at(token.clone(), entry);
        token
    }

    /// The session of `token`, which counts as a use.
    pub(crate) fn get(&self, token: &str) -> Result<ClientSession, Status> {
        let entry = self
            .tokens
            .get(token)
            .ok_or_else(|| Status::unauthenticated("unknown session token: hand-shake again"))?;
        let mut last_used = entry.last_used.lock();
        if last_used.elapsed() >= self.idle {
            drop(last_used);
            self.tokens.remove(token);
            return Err(Status::unauthenticated(format!(
                "session token expired after {:?} unused: hand-shake again",
                self.idle
            )));
        }
        *last_used = Instant::now();
        Ok(Arc::clone(&entry.session))
    }
}

/// Everything the endpoint keeps between calls.
pub(crate) struct State {
    pub(crate) sessions: Sessions,
    /// Statements planned and waiting for their `DoGet`.
    pub(crate) waiting: Handles<DataFrame>,
    pub(crate) running: Handles<AbortHandle>,
    /// Queries serving their results from executors, by the handle in their tickets.
    pub(crate) served: Handles<Arc<Served>>,
    pub(crate) prepared: Handles<Prepared>,
}

impl State {
    pub(crate) fn new(session_idle: Duration, credentials: Option<Credentials>) -> Self {
        Self {
            sessions: Sessions::new(session_idle, credentials),
            waiting: Handles::default(),
            running: Handles::default(),
            served: Handles::default(),
            prepared: Handles::default(),
        }
    }
}

/// A handle carried as bytes by the protocol.
pub(crate) fn handle_text(bytes: &[u8], what: &str) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument(format!("malformed {what} handle")))
}
