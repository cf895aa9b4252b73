//! Failures with a machine-readable reason, kept intact across Flight: an executor puts a
//! [`crate::protocol::ErrorDetail`] into every error status, the caller decodes it, and
//! inside DataFusion streams it travels as `DataFusionError::External(TaskFailure)`.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use prost::Message;
use tonic::{Code, Status};

use crate::protocol::ErrorDetail;
use crate::raised::{ErrorKind, Raised};

/// Why a task, a fetch or a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum FailureReason {
    /// The task's own plan failed (bad cast, division by zero, missing file...).
    TaskFailed = 1,
    /// An input this task reads failed; the root cause is reported by that input's task.
    UpstreamFailed = 2,
    /// The query was released (finished, failed or cancelled) while this ran.
    Cancelled = 3,
    /// The request itself was malformed.
    BadRequest = 4,
    /// The executor could not be reached or the stream broke.
    FetchFailed = 5,
    /// The executor's memory limit left no room (and the operator could not spill).
    OutOfMemory = 6,
    /// The executor could not be reached or its connection broke: it is probably gone.
    ExecutorLost = 7,
    /// The caller is not a member of the cluster (no or a wrong cluster secret) and
    /// asked for something only members may do.
    NotMember = 8,
    /// The query, partition or piece asked for does not exist here.
    NotFound = 9,
    /// The task's plan failed on the data it was given (division by zero, a value
    /// that does not cast or parse, an overflow): the query's fault, not Fletch's.
    InvalidData = 10,
}

impl FailureReason {
    fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::TaskFailed,
            2 => Self::UpstreamFailed,
            3 => Self::Cancelled,
            4 => Self::BadRequest,
            6 => Self::OutOfMemory,
            7 => Self::ExecutorLost,
            8 => Self::NotMember,
            9 => Self::NotFound,
            10 => Self::InvalidData,
            _ => Self::FetchFailed,
        }
    }

    fn code(self) -> Code {
        match self {
            Self::TaskFailed | Self::UpstreamFailed => Code::Aborted,
            Self::Cancelled => Code::Cancelled,
            Self::BadRequest => Code::InvalidArgument,
            Self::FetchFailed => Code::Unavailable,
            Self::OutOfMemory => Code::ResourceExhausted,
            Self::ExecutorLost => Code::Unavailable,
            Self::NotMember => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::InvalidData => Code::InvalidArgument,
        }
    }
}

/// The stage and task of a failure that happened outside any task (reading a table
/// piece for a load, a call that never reached a task).
pub const OUTSIDE_TASKS: usize = usize::MAX;

/// A failure with its reason and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TaskFailure {
    pub reason: FailureReason,
    pub message: String,
    pub stage: usize,
    pub task: usize,
    pub executor: String,
    /// The DataFusion error the task raised, when it raised one.
    pub raised: Raised,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.message, self.place())
    }
}

impl TaskFailure {
    pub fn new(
        reason: FailureReason,
        message: impl Into<String>,
        stage: usize,
        task: usize,
        executor: impl Into<String>,
    ) -> Self {
        Self {
            reason,
            message: message.into(),
            stage,
            task,
            executor: executor.into(),
            raised: Raised::default(),
        }
    }

    /// A failure outside any task: no stage or task to name ([`OUTSIDE_TASKS`]).
    pub fn outside_tasks(
        reason: FailureReason,
        message: impl Into<String>,
        executor: impl Into<String>,
    ) -> Self {
        Self::new(reason, message, OUTSIDE_TASKS, OUTSIDE_TASKS, executor)
    }

    /// Classifies a task's DataFusion error: a failure that came through an exchange
    /// keeps the upstream's reason, anything else is this task's own failure.
    pub fn from_task_error(
        err: &DataFusionError,
        stage: usize,
        task: usize,
        executor: &str,
    ) -> Self {
        if let Some(upstream) = find_failure(err) {
            let (reason, executor) = match upstream.reason {
                FailureReason::Cancelled => (FailureReason::Cancelled, executor),
                // The news that matters is which executor is gone, whoever noticed.
                FailureReason::ExecutorLost => {
                    (FailureReason::ExecutorLost, upstream.executor.as_str())
                }
                _ => (FailureReason::UpstreamFailed, executor),
            };
            return Self {
                raised: upstream.raised.clone(),
                ..Self::new(reason, upstream.message.clone(), stage, task, executor)
            };
        }
        let reason = match err.find_root() {
            DataFusionError::ResourcesExhausted(_) => FailureReason::OutOfMemory,
            _ if is_data_error(err) => FailureReason::InvalidData,
            _ => FailureReason::TaskFailed,
        };
        Self {
            raised: Raised::of(err),
            ..Self::new(reason, err.strip_backtrace(), stage, task, executor)
        }
    }

    /// The error the task raised, as the user should see it: the same kind of
    /// DataFusion error single-node DataFusion raises, with where it was raised.
    pub fn to_user_error(&self) -> Option<DataFusionError> {
        self.raised.rebuild(&self.place())
    }

    /// Where the failure happened, as far as it is known: ` (stage s, task t,
    /// executor e)`, parts left out when unknown, empty when nothing is.
    fn place(&self) -> String {
        let mut parts = Vec::new();
        if self.stage != OUTSIDE_TASKS {
            parts.push(format!("stage {}, task {}", self.stage, self.task));
        }
        if !self.executor.is_empty() {
            parts.push(format!("executor {}", self.executor));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }

    pub fn to_status(&self) -> Status {
        let detail = ErrorDetail {
            reason: self.reason as i32,
            message: self.message.clone(),
            stage: self.stage as u64,
            task: self.task as u64,
            executor: self.executor.clone(),
            error_kind: self.raised.kind as i32,
            error_text: self.raised.text.clone(),
        };
        Status::with_details(
            self.reason.code(),
            self.to_string(),
            detail.encode_to_vec().into(),
        )
    }

    /// Decodes an executor's status. Executors put Fletch detail into every status
    /// they send. Without it: a status this process's transport made (the connection
    /// could not be opened, broke, or stopped answering pings: tonic keeps the error
    /// as the status's source) or `Unavailable` makes the executor lost; any other
    /// status came over a working connection, so it is a failure of the call, never
    /// a lost executor.
    pub fn from_status(status: &Status, executor: &str) -> Self {
        match ErrorDetail::decode(status.details()) {
            Ok(d) if d.reason != 0 => Self {
                reason: FailureReason::from_i32(d.reason),
                message: d.message,
                stage: usize::try_from(d.stage).unwrap_or(OUTSIDE_TASKS),
                task: usize::try_from(d.task).unwrap_or(OUTSIDE_TASKS),
                executor: d.executor,
                raised: Raised {
                    kind: ErrorKind::from_i32(d.error_kind),
                    text: d.error_text,
                },
            },
            _ => {
                let from_transport = std::error::Error::source(status).is_some();
                let gone = from_transport || status.code() == Code::Unavailable;
                let (reason, what) = if gone {
                    (FailureReason::ExecutorLost, "unreachable")
                } else {
                    (FailureReason::FetchFailed, "failed")
                };
                Self::outside_tasks(
                    reason,
                    format!("executor {executor} {what}: {}", status.message()),
                    executor,
                )
            }
        }
    }

    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

/// Whether `err` is a plan failing on the data it was given (division by zero, a
/// value that does not cast or parse, an overflow): the query's fault, not Fletch's.
/// Arrow's `InvalidArgumentError` is left out: Fletch's own bugs raise it too (a batch
/// whose columns do not match its schema).
pub fn is_data_error(err: &DataFusionError) -> bool {
    matches!(
        err.find_root(),
        DataFusionError::ArrowError(arrow, _) if matches!(
            **arrow,
            ArrowError::DivideByZero
                | ArrowError::ArithmeticOverflow(_)
                | ArrowError::CastError(_)
                | ArrowError::ParseError(_)
        )
    )
}

/// The first [`TaskFailure`] in an error's chain, if any.
pub fn find_failure(err: &DataFusionError) -> Option<&TaskFailure> {
    let mut current: &dyn std::error::Error = err;
    loop {
        if let Some(f) = current.downcast_ref::<TaskFailure>() {
            return Some(f);
        }
        if let Some(DataFusionError::External(inner)) = current.downcast_ref::<DataFusionError>()
            && let Some(f) = inner.downcast_ref::<TaskFailure>()
        {
            return Some(f);
        }
        current = current.source()?;
    }
}

/// A refusal of a malformed request, with Fletch's typed reason (`BadRequest`).
pub fn bad_request(message: impl Into<String>) -> Status {
    TaskFailure::new(FailureReason::BadRequest, message, 0, 0, "").to_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:1";

    #[test]
    fn only_a_broken_link_makes_an_executor_lost() {
        let broken = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(
            TaskFailure::from_status(&broken, URL).reason,
            FailureReason::ExecutorLost
        );
        let unavailable = Status::unavailable("connection refused");
        assert_eq!(
            TaskFailure::from_status(&unavailable, URL).reason,
            FailureReason::ExecutorLost
        );
        // Sent by a live executor (or a proxy) without Fletch detail: an IPC error,
        // an unknown failure. The executor answered, so it is not lost.
        for status in [
            Status::internal("Ipc error: invalid dictionary delta"),
            Status::unknown("something odd"),
            Status::cancelled("cancelled"),
        ] {
            let failure = TaskFailure::from_status(&status, URL);
            assert_eq!(failure.reason, FailureReason::FetchFailed, "{status}");
            assert!(failure.message.contains(status.message()), "{failure}");
        }
    }

    #[test]
    fn typed_detail_survives_the_wire() {
        let sent = TaskFailure::new(FailureReason::NotMember, "members only", 1, 2, URL);
        let received = TaskFailure::from_status(&sent.to_status(), "elsewhere");
        assert_eq!(received, sent);
        assert_eq!(sent.to_status().code(), Code::PermissionDenied);
        let raised = DataFusionError::Execution("step can't be 0".into());
        let sent = TaskFailure::from_task_error(&raised, 3, 4, URL);
        let received = TaskFailure::from_status(&sent.to_status(), "elsewhere");
        assert_eq!(received, sent);
        let shown = received
            .to_user_error()
            .expect("an execution error")
            .to_string();
        assert_eq!(
            shown,
            format!("Execution error: step can't be 0 (stage 3, task 4, executor {URL})")
        );
    }

    #[test]
    fn a_failure_outside_tasks_names_only_its_executor() {
        let failure =
            TaskFailure::outside_tasks(FailureReason::FetchFailed, "piece 3 cannot be read", URL);
        let received = TaskFailure::from_status(&failure.to_status(), "elsewhere");
        assert_eq!(
            received.to_string(),
            format!("piece 3 cannot be read (executor {URL})")
        );
        let nowhere = TaskFailure::outside_tasks(FailureReason::NotMember, "members only", "");
        assert_eq!(nowhere.to_string(), "members only");
    }
}
