//! [`QueryRecord`]: what one query's runs did, attempt by attempt, as the coordinator
//! saw it and as each executor reported it. The run fills it while tasks end; `EXPLAIN
//! ANALYZE` reads it when the query is over.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use fletch_planner::StageId;
use fletch_transport::TaskFailure;
use fletch_transport::protocol::{OperatorMetrics, TaskReport};
use parking_lot::Mutex;

use crate::recovery::TaskKey;

/// How an attempt of a task ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptState {
    Running,
    Finished,
    /// It failed; the message says how.
    Failed(String),
    /// Stopped by the coordinator: the query ended first, or a later attempt replaced it.
    Cancelled,
}

impl AttemptState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One attempt of one task.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Which run of the query (0 first; a recovery that restarts the whole plan starts
    /// the next).
    pub run: usize,
    pub stage: StageId,
    pub task: usize,
    pub attempt: u64,
    pub executor: String,
    pub state: AttemptState,
    pub launched: Instant,
    /// The same moment on the coordinator's wall clock.
    pub launched_at: SystemTime,
    /// When the coordinator heard how it ended.
    pub ended: Option<Instant>,
    /// What the executor measured; present when the attempt finished. Its operator
    /// metrics are kept per plan instance instead (see [`QueryRecord::instances`]).
    pub report: Option<TaskReport>,
}

impl AttemptRecord {
    /// The task's time: the executor's measure when it reported one, else the
    /// coordinator's from launch to end (or to now, for a running attempt).
    pub fn duration(&self) -> Duration {
        match &self.report {
            Some(report) => Duration::from_micros(report.duration_us),
            None => self
                .ended
                .unwrap_or_else(Instant::now)
                .duration_since(self.launched),
        }
    }

    pub fn rows_out(&self) -> u64 {
        self.report.as_ref().map_or(0, |r| r.rows_out.iter().sum())
    }

    pub fn bytes_out(&self) -> u64 {
        self.report.as_ref().map_or(0, |r| r.bytes_out.iter().sum())
    }

    /// When the task started: the executor's clock when it reported, else the
    /// coordinator's at launch.
    pub fn started_at(&self) -> SystemTime {
        match &self.report {
            Some(report) => SystemTime::UNIX_EPOCH + Duration::from_millis(report.started_at_ms),
            None => self.launched_at,
        }
    }
}

/// One stage's figures so far (see [`QueryRecord::stage_figures`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageFigures {
    /// Tasks finished (each once), and attempts running now.
    pub finished: usize,
    pub running: usize,
    pub rows_out: u64,
    pub bytes_out: u64,
    /// From its first launch to its last end (or to now, while it runs).
    pub wall: Duration,
    /// Smallest, median and largest time of its finished tasks.
    pub task_time: Option<(Duration, Duration, Duration)>,
}

/// One stage plan instance: the tasks of a stage an executor ran in one attempt share
/// it, and so its operator metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceKey {
    pub run: usize,
    pub stage: StageId,
    pub attempt: u64,
    pub executor: String,
}

#[derive(Debug, Default)]
struct Recorded {
    attempts: Vec<AttemptRecord>,
    /// The latest snapshot of each instance's operators, with its number.
    instances: HashMap<InstanceKey, (u64, Vec<OperatorMetrics>)>,
    recoveries: Vec<String>,
}

#[derive(Debug, Default)]
pub struct QueryRecord {
    inner: Mutex<Recorded>,
}

impl QueryRecord {
    pub(crate) fn launched(&self, run: usize, key: TaskKey, attempt: u64, executor: &str) {
        self.inner.lock().attempts.push(AttemptRecord {
            run,
            stage: key.0,
            task: key.1,
            attempt,
            executor: executor.to_string(),
            state: AttemptState::Running,
            launched: Instant::now(),
            launched_at: SystemTime::now(),
            ended: None,
            report: None,
        });
    }

    /// How attempt `attempt` of `key` in `run` ended: its report, or its failure.
    /// Returns the attempt as recorded (its operator metrics left out), unless it was
    /// not running.
    pub(crate) fn ended(
        &self,
        run: usize,
        key: TaskKey,
        attempt: u64,
        result: std::result::Result<TaskReport, &TaskFailure>,
    ) -> Option<AttemptRecord> {
        let mut inner = self.inner.lock();
        let Recorded {
            attempts,
            instances,
            ..
        } = &mut *inner;
        let record = attempts.iter_mut().rev().find(|a| {
            a.run == run && (a.stage, a.task) == key && a.attempt == attempt && a.ended.is_none()
        })?;
        record.ended = Some(Instant::now());
        match result {
            Ok(mut report) => {
                let instance = InstanceKey {
                    run,
                    stage: key.0,
                    attempt,
                    executor: record.executor.clone(),
                };
                let operators = std::mem::take(&mut report.operators);
                let latest = instances.entry(instance).or_insert((0, Vec::new()));
                if report.snapshot >= latest.0 {
                    *latest = (report.snapshot, operators);
                }
                record.state = AttemptState::Finished;
                record.report = Some(report);
            }
            Err(failure) if failure.reason == fletch_transport::FailureReason::Cancelled => {
                record.state = AttemptState::Cancelled;
            }
            Err(failure) => record.state = AttemptState::Failed(failure.to_string()),
        }
        Some(record.clone())
    }

    /// Attempts still running when the query ended were stopped by it; returns them.
    pub(crate) fn cancel_running(&self) -> Vec<AttemptRecord> {
        let now = Instant::now();
        let mut cancelled = Vec::new();
        for attempt in &mut self.inner.lock().attempts {
            if attempt.state == AttemptState::Running {
                attempt.state = AttemptState::Cancelled;
                attempt.ended = Some(now);
                cancelled.push(attempt.clone());
            }
        }
        cancelled
    }

    pub(crate) fn recovered(&self, what: String) {
        self.inner.lock().recoveries.push(what);
    }

    pub fn attempts(&self) -> Vec<AttemptRecord> {
        self.inner.lock().attempts.clone()
    }

    /// Every plan instance's latest operator snapshot.
    pub fn instances(&self) -> Vec<(InstanceKey, Vec<OperatorMetrics>)> {
        self.inner
            .lock()
            .instances
            .iter()
            .map(|(key, (_, operators))| (key.clone(), operators.clone()))
            .collect()
    }

    /// Rows and bytes the final stage wrote in the last run: what a client read from
    /// the executor that served the result.
    pub(crate) fn final_output(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let last = inner.attempts.iter().map(|a| a.run).max().unwrap_or(0);
        let Some(final_stage) = inner
            .attempts
            .iter()
            .filter(|a| a.run == last)
            .map(|a| a.stage)
            .max()
        else {
            return (0, 0);
        };
        inner
            .attempts
            .iter()
            .filter(|a| a.run == last && a.stage == final_stage)
            .filter(|a| a.state == AttemptState::Finished)
            .fold((0, 0), |(rows, bytes), a| {
                (rows + a.rows_out() as usize, bytes + a.bytes_out() as usize)
            })
    }

    /// Tasks of the last run that finished, each counted once.
    pub fn finished_tasks(&self) -> usize {
        let inner = self.inner.lock();
        let last = inner.attempts.iter().map(|a| a.run).max().unwrap_or(0);
        let mut finished: Vec<TaskKey> = inner
            .attempts
            .iter()
            .filter(|a| a.run == last && a.state == AttemptState::Finished)
            .map(|a| (a.stage, a.task))
            .collect();
        finished.sort_unstable();
        finished.dedup();
        finished.len()
    }

    /// Figures of `stage` in the last run, from its tasks' last finished attempts.
    pub fn stage_figures(&self, stage: StageId) -> StageFigures {
        let attempts = self.attempts();
        let last = attempts.iter().map(|a| a.run).max().unwrap_or(0);
        let of_stage: Vec<&AttemptRecord> = attempts
            .iter()
            .filter(|a| a.run == last && a.stage == stage)
            .collect();
        let mut finished: HashMap<usize, &AttemptRecord> = HashMap::new();
        for attempt in &of_stage {
            if attempt.state == AttemptState::Finished {
                finished.insert(attempt.task, attempt);
            }
        }
        let start = of_stage.iter().map(|a| a.launched).min();
        let end = if of_stage.iter().any(|a| a.ended.is_none()) {
            Some(Instant::now())
        } else {
            of_stage.iter().filter_map(|a| a.ended).max()
        };
        let mut times: Vec<Duration> = finished.values().map(|a| a.duration()).collect();
        times.sort_unstable();
        StageFigures {
            finished: finished.len(),
            running: of_stage
                .iter()
                .filter(|a| a.state == AttemptState::Running)
                .count(),
            rows_out: finished.values().map(|a| a.rows_out()).sum(),
            bytes_out: finished.values().map(|a| a.bytes_out()).sum(),
            wall: match (start, end) {
                (Some(start), Some(end)) => end.saturating_duration_since(start),
                _ => Duration::ZERO,
            },
            task_time: match (times.first(), times.last()) {
                (Some(min), Some(max)) => Some((*min, times[(times.len() - 1) / 2], *max)),
                _ => None,
            },
        }
    }

    /// What each recovery did, in order.
    pub fn recoveries(&self) -> Vec<String> {
        self.inner.lock().recoveries.clone()
    }
}
