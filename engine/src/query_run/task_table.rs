//! [`TaskTable`]: every task of one run and where it stands: pending (not launched
//! yet), placed on an executor as some attempt, in flight, finished; the executors the
//! run lost; the current round. Pure bookkeeping: no network, no clock, so every rule
//! of placement order, slot use and recovery is unit-tested here.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use fletch_planner::{DistributedPlan, StageId};

use crate::recovery::{Lineage, TaskKey, TaskRun};

/// How a task's attempt ended, as the run must take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its output is the task's output now.
    Finished,
    /// It failed while it was the task's current attempt.
    Failed,
    /// A later attempt replaced it, or its executor was lost: its outcome no longer
    /// matters (a needed output on a lost executor runs again in a recovery round).
    Superseded,
}

/// The tasks a recovery round launches again, and whether the final stage is among
/// them (so the result read so far is read again from its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoundPlan {
    pub(crate) tasks: BTreeSet<TaskKey>,
    pub(crate) restarts_final_stage: bool,
}

#[derive(Debug)]
pub(crate) struct TaskTable {
    lineage: Lineage,
    /// Tasks not launched yet, upstream stages first.
    pending: VecDeque<TaskKey>,
    /// Each launched task's current attempt: where it runs, its number, whether it ended.
    placed: HashMap<TaskKey, TaskRun>,
    /// Attempts whose call has not returned (a superseded one may still be here).
    in_flight: HashSet<(TaskKey, u64)>,
    /// Executors this run lost; nothing more is placed there.
    lost: HashSet<String>,
    /// 0 for the first launch, +1 per recovery round.
    round: u64,
}

impl TaskTable {
    /// Every task of `plan` pending, upstream stages first; `lost` are executors an
    /// earlier run of the same query lost.
    pub(crate) fn of(plan: &DistributedPlan, lost: HashSet<String>) -> Self {
        Self::new(
            plan.stages
                .iter()
                .map(|s| (s.id, s.task_count, s.inputs.clone())),
            lost,
        )
    }

    /// Stages as (id, task count, input stage ids), upstream first; the last is final.
    pub(crate) fn new(
        stages: impl IntoIterator<Item = (StageId, usize, Vec<StageId>)>,
        lost: HashSet<String>,
    ) -> Self {
        let stages: Vec<_> = stages.into_iter().collect();
        let pending = stages
            .iter()
            .flat_map(|(id, count, _)| (0..*count).map(move |t| (*id, t)))
            .collect();
        Self {
            lineage: Lineage::new(stages),
            pending,
            placed: HashMap::new(),
            in_flight: HashSet::new(),
            lost,
            round: 0,
        }
    }

    pub(crate) fn final_stage(&self) -> StageId {
        self.lineage.final_stage()
    }

    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the pending tasks that fit in `capacity` slots beside the attempts in
    /// flight (at least one task when nothing is in flight, so a query always moves);
    /// `None`: every pending task, for stages that stream into each other and need all
    /// their readers running.
    pub(crate) fn take_startable(&mut self, capacity: Option<usize>) -> Vec<TaskKey> {
        let free = match capacity {
            Some(slots) => slots.max(1).saturating_sub(self.in_flight.len()),
            None => self.pending.len(),
        };
        (0..free).map_while(|_| self.pending.pop_front()).collect()
    }

    /// Records `key` placed on `url` as attempt `attempt`: the current round's, or
    /// for a served result's final task the one its client's ticket already names.
    pub(crate) fn place(&mut self, key: TaskKey, url: &str, attempt: u64) {
        let run = TaskRun {
            url: url.to_string(),
            attempt,
            finished: false,
        };
        self.placed.insert(key, run);
    }

    /// Where `key`'s current attempt is, once placed.
    pub(crate) fn current(&self, key: TaskKey) -> Option<&TaskRun> {
        self.placed.get(&key)
    }

    /// Marks `key`'s current attempt in flight; returns its number.
    pub(crate) fn launched(&mut self, key: TaskKey) -> Option<u64> {
        let attempt = self.placed.get(&key)?.attempt;
        self.in_flight.insert((key, attempt));
        Some(attempt)
    }

    /// Attempts in flight on `url`.
    pub(crate) fn in_flight_on(&self, url: &str) -> usize {
        self.in_flight
            .iter()
            .filter(|(key, _)| self.placed.get(key).is_some_and(|r| r.url == url))
            .count()
    }

    /// Records the end of `key`'s attempt `attempt`.
    pub(crate) fn ended(&mut self, key: TaskKey, attempt: u64, succeeded: bool) -> Ended {
        self.in_flight.remove(&(key, attempt));
        let lost = &self.lost;
        let Some(run) = self
            .placed
            .get_mut(&key)
            .filter(|r| r.attempt == attempt && !lost.contains(&r.url))
        else {
            return Ended::Superseded;
        };
        if succeeded {
            run.finished = true;
            Ended::Finished
        } else {
            Ended::Failed
        }
    }

    /// Takes `url` for lost; false if it already was.
    pub(crate) fn lose(&mut self, url: &str) -> bool {
        self.lost.insert(url.to_string())
    }

    pub(crate) fn is_lost(&self, url: &str) -> bool {
        self.lost.contains(url)
    }

    pub(crate) fn lost(&self) -> &HashSet<String> {
        &self.lost
    }

    /// What a recovery round would launch again now, `failed` (when known) being the
    /// task whose attempt reported the loss or failed.
    pub(crate) fn plan_round(&self, failed: Option<TaskKey>) -> RoundPlan {
        let failed: Vec<TaskKey> = failed.into_iter().collect();
        let tasks = self
            .lineage
            .tasks_to_rerun(&self.placed, &self.lost, &failed);
        let restarts_final_stage = tasks.iter().any(|k| k.0 == self.final_stage());
        RoundPlan {
            tasks,
            restarts_final_stage,
        }
    }

    /// Starts the next round: tasks placed from now on are its attempts.
    pub(crate) fn next_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// For each of `stage`'s `task_count` tasks: the URL of its current attempt (empty
    /// when not placed yet) and the attempt's number.
    pub(crate) fn locations(&self, stage: StageId, task_count: usize) -> (Vec<String>, Vec<u64>) {
        (0..task_count)
            .map(|t| match self.placed.get(&(stage, t)) {
                Some(run) => (run.url.clone(), run.attempt),
                None => (String::new(), 0),
            })
            .unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scan (stage 1, 3 tasks) -> aggregate (stage 2, 2 tasks) -> final (stage 3, 1 task)
    fn three_stages() -> TaskTable {
        TaskTable::new(
            [(1, 3, vec![]), (2, 2, vec![1]), (3, 1, vec![2])],
            HashSet::new(),
        )
    }

    /// Places and launches `keys` on `url`; returns their attempt numbers.
    fn launch(table: &mut TaskTable, keys: &[TaskKey], url: &str) -> Vec<u64> {
        keys.iter()
            .map(|&key| {
                table.place(key, url, table.round());
                table.launched(key).expect("placed")
            })
            .collect()
    }

    #[test]
    fn tasks_start_upstream_first_within_the_free_slots() {
        let mut table = three_stages();
        assert_eq!(table.take_startable(Some(2)), vec![(1, 0), (1, 1)]);
        launch(&mut table, &[(1, 0), (1, 1)], "a");
        assert!(table.take_startable(Some(2)).is_empty(), "both slots busy");
        assert_eq!(table.ended((1, 0), 0, true), Ended::Finished);
        assert_eq!(table.take_startable(Some(2)), vec![(1, 2)]);
        assert_eq!(table.in_flight_on("a"), 1);
        assert_eq!(
            table.take_startable(None),
            vec![(2, 0), (2, 1), (3, 0)],
            "without slots every pending task starts"
        );
        assert!(!table.has_pending());
    }

    #[test]
    fn a_cluster_without_free_slots_still_moves_one_task() {
        let mut table = three_stages();
        assert_eq!(table.take_startable(Some(0)), vec![(1, 0)]);
    }

    #[test]
    fn outcomes_of_superseded_attempts_and_lost_executors_do_not_count() {
        let mut table = three_stages();
        table.take_startable(None);
        launch(&mut table, &[(1, 0), (1, 1)], "a");
        launch(&mut table, &[(1, 2)], "b");
        // (1, 0) runs again in round 1 elsewhere: round 0's outcome is stale.
        table.next_round();
        launch(&mut table, &[(1, 0)], "c");
        assert_eq!(table.ended((1, 0), 0, true), Ended::Superseded);
        assert_eq!(table.current((1, 0)).map(|r| r.finished), Some(false));
        assert_eq!(table.ended((1, 0), 1, false), Ended::Failed);
        // An executor already lost: its attempts' outcomes are ignored.
        assert!(table.lose("b"));
        assert!(!table.lose("b"), "lost once");
        assert_eq!(table.ended((1, 2), 0, true), Ended::Superseded);
        assert_eq!(table.ended((1, 1), 0, true), Ended::Finished);
        assert_eq!(table.in_flight_on("a"), 0);
    }

    #[test]
    fn a_round_reruns_what_the_lost_executor_took_with_its_readers() {
        let mut table = three_stages();
        table.take_startable(None);
        launch(&mut table, &[(1, 0), (2, 0), (3, 0)], "a");
        launch(&mut table, &[(1, 1), (2, 1)], "b");
        launch(&mut table, &[(1, 2)], "c");
        for key in [(1, 0), (1, 1), (1, 2)] {
            assert_eq!(table.ended(key, 0, true), Ended::Finished);
        }
        table.lose("c");
        let round = table.plan_round(None);
        assert_eq!(
            round.tasks,
            BTreeSet::from([(1, 2), (2, 0), (2, 1), (3, 0)]),
            "the lost scan, both aggregates that read part of it, and the final task"
        );
        assert!(round.restarts_final_stage);
        assert_eq!(table.next_round(), 1);
        table.place((1, 2), "a", table.round());
        assert_eq!(table.launched((1, 2)), Some(1), "attempts carry the round");
        assert_eq!(
            table.locations(1, 3),
            (vec!["a".into(), "b".into(), "a".into()], vec![0, 0, 1])
        );
        assert_eq!(
            table.locations(9, 1),
            (vec![String::new()], vec![0]),
            "nothing placed"
        );
    }

    #[test]
    fn a_failed_task_on_a_live_executor_reruns_without_the_final_stage_when_unread() {
        let mut table = TaskTable::new([(1, 2, vec![]), (2, 1, vec![1])], HashSet::new());
        table.take_startable(None);
        launch(&mut table, &[(1, 0), (1, 1)], "a");
        assert_eq!(table.ended((1, 0), 0, true), Ended::Finished);
        let round = table.plan_round(Some((1, 1)));
        assert_eq!(round.tasks, BTreeSet::from([(1, 1)]));
        assert!(
            !round.restarts_final_stage,
            "the final task is not launched yet"
        );
    }

    #[test]
    fn executors_an_earlier_run_lost_stay_lost() {
        let table = TaskTable::new([(1, 1, vec![])], HashSet::from(["z".to_string()]));
        assert!(table.is_lost("z"));
        assert_eq!(table.lost().len(), 1);
        assert_eq!(table.round(), 0);
    }
}
