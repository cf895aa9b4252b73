//! How far the running queries are: tasks and stages finished out of those planned,
//! read by the shell's progress line while a statement runs.

use std::sync::atomic::{AtomicUsize, Ordering};

use fletch_planner::{DistributedPlan, StageId};

/// One run of a query's plan: its stages' task counts and the tasks finished.
#[derive(Debug)]
pub(crate) struct QueryProgress {
    stages: Vec<(StageId, usize, AtomicUsize)>,
}

/// A snapshot of [`QueryProgress`], summed over the queries running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Queries (plan runs) the figures cover.
    pub queries: usize,
    pub stages_done: usize,
    pub stages: usize,
    pub tasks_done: usize,
    pub tasks: usize,
}

impl QueryProgress {
    pub(crate) fn of(plan: &DistributedPlan) -> Self {
        Self {
            stages: plan
                .stages
                .iter()
                .map(|s| (s.id, s.task_count, AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// A task of `stage` finished (a recovered task that finishes again counts once
    /// more, up to the stage's task count).
    pub(crate) fn task_finished(&self, stage: StageId) {
        if let Some((_, _, done)) = self.stages.iter().find(|(id, _, _)| *id == stage) {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_to(&self, progress: &mut Progress) {
        progress.queries += 1;
        for (_, tasks, done) in &self.stages {
            let done = done.load(Ordering::Relaxed).min(*tasks);
            progress.stages += 1;
            progress.tasks += tasks;
            progress.tasks_done += done;
            progress.stages_done += usize::from(done == *tasks);
        }
    }
}
