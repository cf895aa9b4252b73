//! One query as its caller's stream sees it: runs its plan's tasks on the executors,
//! streams the final stage and, when executors are lost, recovers: runs again what
//! they took with them — the tasks their lineage names ([`crate::recovery`]), or the
//! whole plan when it loads a table or `fletch.stage_recovery` is off. Results are held
//! back up to `fletch.result_buffer` so a restart of the final stage stays invisible.
//!
//! Words, each with one meaning here and in the code:
//! - a **run** is one execution of the whole plan under one query id ([`run::Run`]); a
//!   query has a first run, and a new run when a recovery restarts the whole plan;
//! - a **round** is one launch of tasks within a run: round 0 launches every task,
//!   and each recovery by lineage starts a round that launches the tasks it reruns;
//! - an **attempt** is one try of one task, numbered by the round that launched it
//!   (the `attempt` in task definitions and partition tickets);
//! - a **recovery** is what a lost executor costs: a new round, or a new run; a query
//!   makes at most [`MAX_RECOVERIES`].
//!
//! The run is a state machine driven by one loop ([`run::Run::next`]); what ran where
//! is the pure [`task_table::TaskTable`]; every way a query ends passes through one
//! exit in [`QueryRun::next`], which releases the run's executors.

mod held_results;
mod run;
mod task_table;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fletch_planner::{DistributedPlan, FletchOptions};
use fletch_transport::TaskFailure;
use fletch_transport::protocol::PartitionTicket;
use tracing::Instrument;

use self::held_results::HeldResults;
use self::run::{Event, Run};
use crate::coordinator::Coordinator;
use crate::query_log::{LOCAL_USER, LoggedQuery, QueryLabel, QueryState, StageShape};
use crate::query_record::QueryRecord;
use crate::recovery::TaskKey;

/// Running a plan is this module's job; these are the coordinator's doors to it.
impl Coordinator {
    /// Runs a distributed plan; executors lost under it are recovered from
    /// ([`crate::query_run`]).
    pub(crate) fn run(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.run_recorded(plan, encoded, ctx, Arc::default())
    }

    /// [`Self::run`], recording every attempt into `record`; once the stream has
    /// ended, the record is complete (see [`run::Run::finish`]).
    pub(crate) fn run_recorded(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
        record: Arc<QueryRecord>,
    ) -> Result<SendableRecordBatchStream> {
        QueryRun::start(self, plan, encoded, ctx, false, record).map(|(stream, _)| stream)
    }

    /// Runs a query whose result a client reads straight from the executor of its final
    /// task, pinned there now (before any task runs, so the client may start reading at
    /// once). The stream yields no rows: it drives the query until the client has read
    /// the result, and must be polled until it ends; dropping it stops the query.
    pub(crate) fn run_served(
        self: Arc<Self>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
    ) -> Result<(SendableRecordBatchStream, ServedResult)> {
        let (stream, served) = QueryRun::start(self, plan, encoded, ctx, true, Arc::default())?;
        let served = served.ok_or_else(|| {
            DataFusionError::Internal("a served query has no result place".to_string())
        })?;
        Ok((stream, served))
    }
}

/// The most recoveries one query makes; the next loss fails it.
pub const MAX_RECOVERIES: usize = 2;

/// How long a result served from an executor waits, once computed, for its client to
/// start reading; then the query fails and frees its memory.
pub const UNREAD_RESULT: Duration = Duration::from_secs(300);

/// Where a query's result waits for a client that reads it straight from the executor
/// that ran the final stage (`fletch.result_endpoints = 'executors'`).
#[derive(Debug, Clone)]
pub struct ServedResult {
    pub url: String,
    pub partition: PartitionTicket,
}

struct QueryRun {
    coordinator: Arc<Coordinator>,
    run: Run,
    recoveries: usize,
    held: HeldResults,
    /// The query has ended: what is held is all that is left to return.
    over: bool,
    /// The query as `fletch.queries` shows it.
    logged: Arc<LoggedQuery>,
    /// Finished queries the log keeps (`fletch.query_history`).
    keep: usize,
}

impl Drop for QueryRun {
    /// A query whose stream is dropped before its end was cancelled by its caller.
    fn drop(&mut self) {
        self.end(QueryState::Cancelled, None);
        for cancelled in self.run.record().cancel_running() {
            self.coordinator.metrics().attempt_ended(&cancelled);
        }
    }
}

impl QueryRun {
    fn start(
        coordinator: Arc<Coordinator>,
        plan: Arc<DistributedPlan>,
        encoded: Arc<Vec<Bytes>>,
        ctx: Arc<TaskContext>,
        serve: bool,
        record: Arc<QueryRecord>,
    ) -> Result<(SendableRecordBatchStream, Option<ServedResult>)> {
        let options = FletchOptions::of(ctx.session_config().options());
        let stage_recovery = options.stage_recovery && !plan.writes_fragments();
        let hold_back = options.result_buffer.0;
        let run = Run::new(
            &coordinator,
            &plan,
            &encoded,
            &ctx,
            stage_recovery,
            Default::default(),
            serve,
        )?
        .recorded_in(record, 0);
        let served = run.served().cloned();
        let label = ctx
            .session_config()
            .get_extension::<QueryLabel>()
            .map(|label| (*label).clone())
            .unwrap_or_else(|| QueryLabel {
                user: LOCAL_USER.to_string(),
                sql: String::new(),
            });
        let logged = coordinator.query_log().begin(
            run.query_id().to_string(),
            label,
            StageShape::of(&plan),
            Arc::clone(run.record()),
        );
        coordinator.metrics().query_started();
        let query = Self {
            coordinator,
            run,
            recoveries: 0,
            held: HeldResults::new(hold_back),
            over: false,
            logged,
            keep: options.query_history,
        };
        // Every log line of the query's coordinator side names it.
        let span = tracing::info_span!("query", query_id = %query.logged.id);
        let stream = futures::stream::unfold((query, span), |(mut query, span)| async move {
            let item = query.next().instrument(span.clone()).await?;
            Some((item, (query, span)))
        });
        Ok((
            Box::pin(RecordBatchStreamAdapter::new(plan.root.schema(), stream)),
            served,
        ))
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.held.pop() {
                self.logged
                    .returned(batch.num_rows(), batch.get_array_memory_size());
                return Some(Ok(batch));
            }
            if self.over {
                return None;
            }
            let ending = match self.run.next().await {
                Event::Batch(batch) => {
                    self.held.push(batch);
                    continue;
                }
                Event::Lost { error, url, task } => match self.recover(error, &url, task).await {
                    Ok(()) => continue,
                    Err(error) => Err(error),
                },
                Event::End => Ok(()),
                Event::Failed(error) => Err(as_raised(error)),
            };
            // The one way out: however the query ends, its executors are freed here.
            self.run.finish().await;
            self.over = true;
            match ending {
                Ok(()) => {
                    self.held.end();
                    if self.run.served().is_some() {
                        let (rows, bytes) = self.run.record().final_output();
                        self.logged.returned(rows, bytes);
                    }
                    self.end(QueryState::Succeeded, None);
                }
                Err(error) => {
                    self.held.discard();
                    self.end(QueryState::Failed, Some(error.to_string()));
                    return Some(Err(error));
                }
            }
        }
    }

    /// The query ended as `state`: logged, counted, and the log trimmed (once).
    fn end(&self, state: QueryState, error: Option<String>) {
        if self.logged.ended(state, error) {
            let duration = self.logged.snapshot().duration;
            self.coordinator.metrics().query_ended(state, duration);
        }
        self.coordinator.query_log().trim(self.keep);
    }

    /// Recovers from the loss of the executor at `url`: a new round that runs again
    /// what the loss took, or a new run of the whole plan; or says why it cannot (the
    /// query then fails with `error` and that reason).
    async fn recover(
        &mut self,
        error: DataFusionError,
        url: &str,
        task: Option<TaskKey>,
    ) -> Result<()> {
        self.coordinator.suspect_lost(url);
        self.run.lose(url);
        let recoveries = self.recoveries;
        let give_up = |why: String| {
            Err(error.context(format!(
                "executor {url} was lost {why} (after {recoveries} of at most \
                 {MAX_RECOVERIES} recoveries)"
            )))
        };
        if self.recoveries >= MAX_RECOVERIES {
            return give_up("again".to_string());
        }
        // A client reading the result from an executor cannot be told to start over.
        let served_from = self.run.served().map(|s| {
            format!(
                "while its result was served from executor {} (fletch.result_endpoints = \
                 'executors'), and the final stage must run again; results read through \
                 the coordinator survive this",
                s.url
            )
        });
        if self.run.stage_recovery() {
            let round = self.run.plan_round(task);
            if round.restarts_final_stage {
                if let Some(why) = served_from {
                    return give_up(why);
                }
                if self.held.delivered_rows() > 0 {
                    return give_up(format!(
                        "after {} rows were returned, and the final stage must run again \
                         (fletch.result_buffer holds back more)",
                        self.held.delivered_rows()
                    ));
                }
                self.held.discard();
            }
            self.recoveries += 1;
            self.logged.recovered();
            tracing::warn!(
                %url,
                recovery = self.recoveries,
                tasks = round.tasks.len(),
                "executor lost during a query; running its lost tasks again"
            );
            self.coordinator
                .recovery_counters()
                .lineage(round.tasks.len());
            self.coordinator
                .metrics()
                .lineage_recovery(round.tasks.len());
            self.run.record().recovered(format!(
                "recovery {}: executor {url} lost; {} tasks run again in a new round",
                self.recoveries,
                round.tasks.len()
            ));
            return self.run.recovery_round(&round.tasks).map_err(|e| {
                e.context(format!("running tasks again after executor {url} was lost"))
            });
        }
        if let Some(why) = served_from {
            return give_up(why);
        }
        if self.held.delivered_rows() > 0 {
            return give_up("after rows were returned, so it cannot run again".to_string());
        }
        self.run.finish().await;
        self.recoveries += 1;
        self.logged.recovered();
        tracing::warn!(%url, recovery = self.recoveries, "executor lost during a query; running it again");
        self.held.discard();
        self.coordinator.recovery_counters().whole();
        self.coordinator.metrics().whole_recovery();
        let record = Arc::clone(self.run.record());
        record.recovered(format!(
            "recovery {}: executor {url} lost; the whole plan runs again (run {})",
            self.recoveries,
            self.run.index() + 1
        ));
        let index = self.run.index() + 1;
        let next = Run::new(
            &self.coordinator,
            self.run.plan(),
            self.run.encoded(),
            self.run.ctx(),
            false,
            self.run.lost(),
            false,
        )
        .map_err(|e| {
            e.context(format!(
                "running the query again after executor {url} was lost"
            ))
        })?
        .recorded_in(record, index);
        self.run = next;
        Ok(())
    }
}

/// A task's failure as the error the task raised (`Execution error: ...` and where),
/// the error single-node DataFusion gives; any other error as it is.
fn as_raised(error: DataFusionError) -> DataFusionError {
    let raised = match &error {
        DataFusionError::External(inner) => inner
            .downcast_ref::<TaskFailure>()
            .and_then(TaskFailure::to_user_error),
        _ => None,
    };
    raised.unwrap_or(error)
}
