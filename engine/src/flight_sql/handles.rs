//! What the Flight SQL endpoint remembers between calls: client sessions by bearer
//! token, and in each session its statements planned by `GetFlightInfo` and waiting
//! for their `DoGet`, results being streamed (so `CancelFlightInfo` can stop them),
//! queries whose results clients read from executors, and prepared statements.
//!
//! Everything a session holds belongs to it: another session's handle is simply not
//! found, a full session forgets its own oldest handle, and all of it goes when the
//! session expires or is closed. Sessions are capped per user, so one user signing in
//! again and again only ever pushes out that user's own oldest session.

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

use super::users::User;
use crate::query_log::SessionUser;
use crate::query_run::ServedResult;

/// How many of each kind of handle a session keeps, and how many sessions a user may
/// hold and the endpoint may hold in all.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Statements, prepared statements and served results, each, per session.
    pub handles_per_session: usize,
    /// Sessions one user may hold; signing in once more forgets the user's least
    /// recently used one.
    pub sessions_per_user: usize,
    /// Sessions the endpoint holds in all; beyond that sign-ins are refused until some
    /// expire.
    pub sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            handles_per_session: 256,
            sessions_per_user: 256,
            sessions: 4096,
        }
    }
}

/// A map of handles that forgets its oldest entry when full.
pub(crate) struct Handles<T> {
    capacity: usize,
    entries: Mutex<(HashMap<String, T>, std::collections::VecDeque<String>)>,
}

impl<T: Clone> Handles<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
        }
    }

    /// Stores `value` under a new handle and returns it.
    pub(crate) fn insert(&self, value: T) -> String {
        let handle = uuid::Uuid::new_v4().to_string();
        self.insert_at(handle.clone(), value);
        handle
    }

    pub(crate) fn insert_at(&self, handle: String, value: T) {
        let mut guard = self.entries.lock();
        let (map, order) = &mut *guard;
        if map.insert(handle.clone(), value).is_none() {
            order.push_back(handle);
        }
        while map.len() > self.capacity {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            map.remove(&oldest);
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().0.len()
    }
}

/// A prepared statement: its text and the parameters bound last (if any).
#[derive(Clone)]
pub(crate) struct Prepared {
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

/// One client's session: who signed in, their settings and temporary state, and the
/// handles of their statements.
pub(crate) struct Session {
    pub(crate) ctx: SessionContext,
    pub(crate) user: Arc<User>,
    last_used: Mutex<Instant>,
    /// Statements planned and waiting for their `DoGet`.
    pub(crate) waiting: Handles<DataFrame>,
    /// Statements streaming their results through the coordinator.
    pub(crate) running: Handles<AbortHandle>,
    /// Queries serving their results from executors, by the handle in their tickets.
    pub(crate) served: Handles<Arc<Served>>,
    pub(crate) prepared: Handles<Prepared>,
}

pub(crate) type ClientSession = Arc<Session>;

impl Session {
    pub(crate) fn new(ctx: SessionContext, user: Arc<User>, limits: &SessionLimits) -> Self {
        let handles = limits.handles_per_session;
        // The query log names who ran each statement.
        ctx.state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::new(SessionUser(user.name.clone())));
        Self {
            ctx,
            user,
            last_used: Mutex::new(Instant::now()),
            waiting: Handles::new(handles),
            running: Handles::new(handles),
            served: Handles::new(handles),
            prepared: Handles::new(handles),
        }
    }
}

/// Client sessions by bearer token; a token unused for longer than `idle` expires.
pub(crate) struct Sessions {
    tokens: Mutex<HashMap<String, ClientSession>>,
    idle: Duration,
    limits: SessionLimits,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, limits: SessionLimits) -> Self {
        Self {
            tokens: Mutex::default(),
            idle,
            limits,
        }
    }

    pub(crate) fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// A new session's token (random, unguessable). Forgets expired sessions, then
    /// the user's least recently used one if the user is at the cap; refused when the
    /// endpoint is full.
    pub(crate) fn open(&self, session: Session) -> Result<String, Status> {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, s| s.last_used.lock().elapsed() < self.idle);
        let mut own: Vec<(Instant, String)> = tokens
            .iter()
            .filter(|(_, s)| s.user.name == session.user.name)
            .map(|(t, s)| (*s.last_used.lock(), t.clone()))
            .collect();
        own.sort();
        let excess = (own.len() + 1).saturating_sub(self.limits.sessions_per_user);
        for (_, oldest) in own.into_iter().take(excess) {
            tokens.remove(&oldest);
        }
        if tokens.len() >= self.limits.sessions {
            return Err(Status::resource_exhausted(format!(
                "the endpoint holds {} sessions, its limit: try again when some expire",
                tokens.len()
            )));
        }
        tokens.insert(token.clone(), Arc::new(session));
        Ok(token)
    }

    /// The session of `token`, which counts as a use.
    pub(crate) fn get(&self, token: &str) -> Result<ClientSession, Status> {
        let mut tokens = self.tokens.lock();
        let session = tokens
            .get(token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown session token: hand-shake again"))?;
        let mut last_used = session.last_used.lock();
        if last_used.elapsed() >= self.idle {
            drop(last_used);
            tokens.remove(token);
            return Err(Status::unauthenticated(format!(
                "session token expired after {:?} unused: hand-shake again",
                self.idle
            )));
        }
        *last_used = Instant::now();
        drop(last_used);
        Ok(session)
    }

    /// How many sessions are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tokens.lock().len()
    }
}

/// A handle carried as bytes by the protocol.
pub(crate) fn handle_text(bytes: &[u8], what: &str) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument(format!("malformed {what} handle")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight_sql::users::Role;

    fn session(user: &Arc<User>, limits: &SessionLimits) -> Session {
        Session::new(SessionContext::new(), Arc::clone(user), limits)
    }

    fn user(name: &str) -> Arc<User> {
        Arc::new(User {
            name: name.into(),
            role: Role::Reader,
        })
    }

    #[test]
    fn a_user_signing_in_again_and_again_pushes_out_only_their_own_sessions() {
        let limits = SessionLimits {
            handles_per_session: 4,
            sessions_per_user: 3,
            sessions: 5,
        };
        let sessions = Sessions::new(Duration::from_secs(3600), limits);
        let (alice, mallory) = (user("alice"), user("mallory"));
        let alice_token = sessions.open(session(&alice, &limits)).expect("alice");
        for _ in 0..100 {
            sessions.open(session(&mallory, &limits)).expect("mallory");
        }
        assert!(sessions.get(&alice_token).is_ok());
        assert_eq!(sessions.len(), 4);
        // The endpoint is full only once every user is at the cap.
        let bob = user("bob");
        sessions.open(session(&bob, &limits)).expect("bob");
        let err = sessions
            .open(session(&user("carol"), &limits))
            .expect_err("full");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn a_full_session_forgets_its_own_oldest_handle() {
        let handles = Handles::new(2);
        let first = handles.insert(1);
        let second = handles.insert(2);
        let third = handles.insert(3);
        assert_eq!(handles.len(), 2);
        assert_eq!(handles.get(&first), None);
        assert_eq!(handles.get(&second), Some(2));
        assert_eq!(handles.get(&third), Some(3));
    }
}
