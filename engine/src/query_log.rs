//! [`QueryLog`]: the queries the coordinator is running and the last ones it finished,
//! each with who asked, its SQL, how it ended and its [`QueryRecord`]: what
//! `fletch.queries` and `fletch.tasks` show. A finished query stays until
//! `fletch.query_history` newer ones have finished.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fletch_planner::{DistributedPlan, StageId};
use parking_lot::Mutex;

use crate::query_record::QueryRecord;

/// Who ran a statement and its text, carried on the statement's session config by
/// [`crate::sql`] (the user comes from the session: a Flight SQL user's name).
#[derive(Debug, Clone, Default)]
pub struct QueryLabel {
    pub user: String,
    pub sql: String,
}

/// The user of a session, as [`QueryLabel`] reads it: set on Flight SQL sessions.
#[derive(Debug, Clone)]
pub struct SessionUser(pub String);

/// Who runs statements on sessions that name nobody (the shell, embedded use).
pub const LOCAL_USER: &str = "local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Running,
    Succeeded,
    Failed,
    /// Its caller stopped reading before the end (a dropped stream, Ctrl-C).
    Cancelled,
}

impl QueryState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
struct Outcome {
    state: QueryState,
    ended: Option<Instant>,
    rows: u64,
    bytes: u64,
    recoveries: usize,
    error: Option<String>,
}

/// One query the log keeps.
#[derive(Debug)]
pub struct LoggedQuery {
    /// The query id of its first run (executors' logs name it too).
    pub id: String,
    pub label: QueryLabel,
    pub started_at: SystemTime,
    started: Instant,
    pub stages: usize,
    pub tasks: usize,
    /// Its stages and the exchanges between them, for the stage graph.
    pub shape: Vec<StageShape>,
    pub record: Arc<QueryRecord>,
    outcome: Mutex<Outcome>,
}

/// One stage of a logged query: what the stage graph draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageShape {
    pub id: StageId,
    pub tasks: usize,
    /// The stages it reads.
    pub inputs: Vec<StageId>,
    /// The operator under its writer, by name: what the stage mainly does.
    pub top: String,
}

impl StageShape {
    /// The shape of every stage of `plan`.
    pub(crate) fn of(plan: &DistributedPlan) -> Vec<Self> {
        plan.stages
            .iter()
            .map(|stage| Self {
                id: stage.id,
                tasks: stage.task_count,
                inputs: stage.inputs.clone(),
                top: stage
                    .plan
                    .children()
                    .first()
                    .map_or_else(|| stage.plan.name().to_string(), |c| c.name().to_string()),
            })
            .collect()
    }
}

/// What a [`LoggedQuery`] says of itself now.
#[derive(Debug, Clone)]
pub struct QuerySnapshot {
    pub state: QueryState,
    pub duration: Duration,
    pub rows: u64,
    pub bytes: u64,
    pub recoveries: usize,
    pub error: Option<String>,
}

impl LoggedQuery {
    /// Rows and bytes (Arrow memory size) returned to the caller.
    pub(crate) fn returned(&self, rows: usize, bytes: usize) {
        let mut outcome = self.outcome.lock();
        outcome.rows += rows as u64;
        outcome.bytes += bytes as u64;
    }

    pub(crate) fn recovered(&self) {
        self.outcome.lock().recoveries += 1;
    }

    /// The query ended as `state`, with `error` if it failed; later calls change
    /// nothing. Whether this call ended it.
    pub(crate) fn ended(&self, state: QueryState, error: Option<String>) -> bool {
        let mut outcome = self.outcome.lock();
        if outcome.state != QueryState::Running {
            return false;
        }
        outcome.state = state;
        outcome.error = error;
        outcome.ended = Some(Instant::now());
        true
    }

    pub fn snapshot(&self) -> QuerySnapshot {
        let outcome = self.outcome.lock();
        QuerySnapshot {
            state: outcome.state,
            duration: outcome
                .ended
                .unwrap_or_else(Instant::now)
                .duration_since(self.started),
            rows: outcome.rows,
            bytes: outcome.bytes,
            recoveries: outcome.recoveries,
            error: outcome.error.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct QueryLog {
    /// Oldest first: running queries and finished ones.
    queries: Mutex<VecDeque<Arc<LoggedQuery>>>,
}

impl QueryLog {
    /// Logs a query starting now.
    pub(crate) fn begin(
        &self,
        id: String,
        label: QueryLabel,
        shape: Vec<StageShape>,
        record: Arc<QueryRecord>,
    ) -> Arc<LoggedQuery> {
        let stages = shape.len();
        let tasks = shape.iter().map(|s| s.tasks).sum();
        let query = Arc::new(LoggedQuery {
            id,
            label,
            started_at: SystemTime::now(),
            started: Instant::now(),
            stages,
            tasks,
            shape,
            record,
            outcome: Mutex::new(Outcome {
                state: QueryState::Running,
                ended: None,
                rows: 0,
                bytes: 0,
                recoveries: 0,
                error: None,
            }),
        });
        self.queries.lock().push_back(Arc::clone(&query));
        query
    }

    /// Forgets the oldest finished queries beyond the newest `keep`; running ones stay.
    pub(crate) fn trim(&self, keep: usize) {
        let mut queries = self.queries.lock();
        let finished = queries
            .iter()
            .filter(|q| q.snapshot().state != QueryState::Running)
            .count();
        let mut excess = finished.saturating_sub(keep);
        queries.retain(|q| {
            if excess > 0 && q.snapshot().state != QueryState::Running {
                excess -= 1;
                return false;
            }
            true
        });
    }

    /// Every query kept, oldest first.
    pub fn queries(&self) -> Vec<Arc<LoggedQuery>> {
        self.queries.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(log: &QueryLog, id: &str) -> Arc<LoggedQuery> {
        log.begin(
            id.to_string(),
            QueryLabel::default(),
            Vec::new(),
            Arc::default(),
        )
    }

    #[test]
    fn trimming_keeps_running_queries_and_the_newest_finished() {
        let log = QueryLog::default();
        let first = begin(&log, "a");
        let running = begin(&log, "b");
        let third = begin(&log, "c");
        let fourth = begin(&log, "d");
        first.ended(QueryState::Succeeded, None);
        third.ended(QueryState::Failed, Some("boom".to_string()));
        fourth.ended(QueryState::Cancelled, None);
        log.trim(1);
        let kept: Vec<String> = log.queries().iter().map(|q| q.id.clone()).collect();
        assert_eq!(kept, ["b", "d"]);
        assert_eq!(running.snapshot().state, QueryState::Running);
    }

    #[test]
    fn a_query_ends_once() {
        let log = QueryLog::default();
        let query = begin(&log, "a");
        query.returned(3, 100);
        assert!(query.ended(QueryState::Failed, Some("first".to_string())));
        assert!(!query.ended(QueryState::Succeeded, None));
        let snapshot = query.snapshot();
        assert_eq!(snapshot.state, QueryState::Failed);
        assert_eq!(snapshot.error.as_deref(), Some("first"));
        assert_eq!((snapshot.rows, snapshot.bytes), (3, 100));
    }
}
