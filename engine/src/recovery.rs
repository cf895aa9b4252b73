//! Lineage recovery: which tasks of a running query must run again when executors are
//! lost, so that every consumer sees each row of its inputs exactly once.
//!
//! Every exchange is treated as all-to-all at task granularity (a consumer task reads
//! from every task of each input stage), which holds for shuffles, gathers and
//! broadcasts alike. Outputs are retained until the query ends, so a task that runs
//! again re-reads the outputs of live upstream tasks from their first batch.

use std::collections::{BTreeSet, HashMap, HashSet};

use fletch_planner::StageId;

/// One task: (stage, task).
pub(crate) type TaskKey = (StageId, usize);

/// Where a task's current run is and whether it has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRun {
    pub(crate) url: String,
    pub(crate) attempt: u64,
    pub(crate) finished: bool,
}

/// The stages of a query as recovery sees them: what each reads and how many tasks it
/// has. The final stage is read by the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Lineage {
    tasks: HashMap<StageId, usize>,
    inputs: HashMap<StageId, Vec<StageId>>,
    consumers: HashMap<StageId, Vec<StageId>>,
    final_stage: StageId,
}

impl Lineage {
    /// Stages as (id, task count, input stage ids), upstream first; the last is final.
    pub(crate) fn new(stages: impl IntoIterator<Item = (StageId, usize, Vec<StageId>)>) -> Self {
        let mut tasks = HashMap::new();
        let mut inputs = HashMap::new();
        let mut consumers: HashMap<StageId, Vec<StageId>> = HashMap::new();
        let mut final_stage = 0;
        for (id, count, reads) in stages {
            for &input in &reads {
                consumers.entry(input).or_default().push(id);
            }
            tasks.insert(id, count);
            inputs.insert(id, reads);
            final_stage = id;
        }
        Self {
            tasks,
            inputs,
            consumers,
            final_stage,
        }
    }

    pub(crate) fn final_stage(&self) -> StageId {
        self.final_stage
    }

    fn keys(&self) -> impl Iterator<Item = TaskKey> + '_ {
        self.tasks
            .iter()
            .flat_map(|(&stage, &count)| (0..count).map(move |task| (stage, task)))
    }

    /// The tasks that must run again once the executors in `lost` are gone and the
    /// `failed` tasks ended in error:
    /// - a failed task;
    /// - a task whose run is on a lost executor, when someone will still read its
    ///   output (an unfinished consumer, a consumer that runs again, or the coordinator
    ///   for the final stage);
    /// - an unfinished task reading a stage with a task that runs again: it has read
    ///   part of an output that will be written anew, perhaps in another order.
    ///
    /// Tasks that finished on live executors keep their outputs; unfinished ones that
    /// read nothing that runs again keep running. Tasks not launched yet (no run) are
    /// left alone: they read the current runs' locations when they start.
    pub(crate) fn tasks_to_rerun(
        &self,
        runs: &HashMap<TaskKey, TaskRun>,
        lost: &HashSet<String>,
        failed: &[TaskKey],
    ) -> BTreeSet<TaskKey> {
        let finished = |key: &TaskKey| runs.get(key).is_some_and(|r| r.finished);
        let on_lost = |key: &TaskKey| runs.get(key).is_some_and(|r| lost.contains(&r.url));
        let mut rerun: BTreeSet<TaskKey> = failed
            .iter()
            .filter(|k| self.tasks.get(&k.0).is_some_and(|&n| k.1 < n))
            .copied()
            .collect();
        loop {
            let stage_reruns: HashSet<StageId> = rerun.iter().map(|k| k.0).collect();
            let output_needed = |stage: StageId| {
                stage == self.final_stage
                    || self.consumers.get(&stage).into_iter().flatten().any(|c| {
                        (0..self.tasks[c]).any(|t| {
                            let key = (*c, t);
                            rerun.contains(&key) || !finished(&key)
                        })
                    })
            };
            let added: Vec<TaskKey> = self
                .keys()
                .filter(|key| runs.contains_key(key) && !rerun.contains(key))
                .filter(|key| {
                    if on_lost(key) {
                        output_needed(key.0)
                    } else {
                        !finished(key)
                            && self.inputs[&key.0].iter().any(|i| stage_reruns.contains(i))
                    }
                })
                .collect();
            if added.is_empty() {
                return rerun;
            }
            rerun.extend(added);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scan (stage 1, 3 tasks) -> aggregate (stage 2, 2 tasks) -> final (stage 3, 1 task)
    fn three_stages() -> Lineage {
        Lineage::new([(1, 3, vec![]), (2, 2, vec![1]), (3, 1, vec![2])])
    }

    fn runs(placed: &[(TaskKey, &str, bool)]) -> HashMap<TaskKey, TaskRun> {
        placed
            .iter()
            .map(|&(key, url, finished)| {
                let run = TaskRun {
                    url: url.to_string(),
                    attempt: 0,
                    finished,
                };
                (key, run)
            })
            .collect()
    }

    fn lost(url: &str) -> HashSet<String> {
        HashSet::from([url.to_string()])
    }

    #[test]
    fn a_lost_scan_reruns_with_its_readers_but_not_its_finished_siblings() {
        let runs = runs(&[
            ((1, 0), "a", true),
            ((1, 1), "b", true),
            ((1, 2), "c", false),
            ((2, 0), "a", false),
            ((2, 1), "b", false),
            ((3, 0), "a", false),
        ]);
        let rerun = three_stages().tasks_to_rerun(&runs, &lost("c"), &[]);
        assert_eq!(
            rerun,
            BTreeSet::from([(1, 2), (2, 0), (2, 1), (3, 0)]),
            "the lost scan, both aggregates that read part of it, and the final task"
        );
    }

    #[test]
    fn a_finished_output_nobody_reads_again_is_not_recomputed() {
        // Stage 2 has read everything of stage 1 and finished; the lost executor's scan
        // output is not needed, only its aggregate's (which the final task still reads).
        let runs = runs(&[
            ((1, 0), "a", true),
            ((1, 1), "b", true),
            ((1, 2), "c", true),
            ((2, 0), "a", true),
            ((2, 1), "c", true),
            ((3, 0), "a", false),
        ]);
        let rerun = three_stages().tasks_to_rerun(&runs, &lost("c"), &[]);
        // The aggregate on c runs again and reads every scan task: c's scan too.
        assert_eq!(rerun, BTreeSet::from([(1, 2), (2, 1), (3, 0)]));
    }

    #[test]
    fn nothing_reruns_when_the_lost_executor_held_nothing_still_needed() {
        let runs = runs(&[
            ((1, 0), "c", true),
            ((1, 1), "b", true),
            ((1, 2), "b", true),
            ((2, 0), "a", true),
            ((2, 1), "b", true),
            ((3, 0), "a", false),
        ]);
        let rerun = three_stages().tasks_to_rerun(&runs, &lost("c"), &[]);
        assert!(rerun.is_empty(), "{rerun:?}");
    }

    #[test]
    fn a_task_that_failed_on_a_live_executor_reruns_with_everything_downstream() {
        let runs = runs(&[
            ((1, 0), "a", true),
            ((1, 1), "b", true),
            ((1, 2), "a", true),
            ((2, 0), "a", true),
            ((2, 1), "b", false),
            ((3, 0), "a", false),
        ]);
        let rerun = three_stages().tasks_to_rerun(&runs, &lost("c"), &[(2, 1)]);
        assert_eq!(rerun, BTreeSet::from([(2, 1), (3, 0)]));
    }

    #[test]
    fn outputs_lost_in_an_earlier_recovery_are_recomputed_when_read_again() {
        // "c" was lost before while its scan output was not needed; now "b" is lost and
        // its aggregate must run again, which reads c's scan output too.
        let runs = runs(&[
            ((1, 0), "a", true),
            ((1, 1), "c", true),
            ((1, 2), "a", true),
            ((2, 0), "a", true),
            ((2, 1), "b", true),
            ((3, 0), "a", false),
        ]);
        let gone = HashSet::from(["b".to_string(), "c".to_string()]);
        let rerun = three_stages().tasks_to_rerun(&runs, &gone, &[]);
        assert_eq!(rerun, BTreeSet::from([(1, 1), (2, 1), (3, 0)]));
    }

    #[test]
    fn tasks_not_launched_yet_are_left_to_start_later() {
        // The aggregates and the final task wait for free slots; the lost scan's output
        // will be read by them, so it runs again, and nothing else does.
        let runs = runs(&[
            ((1, 0), "a", true),
            ((1, 1), "b", true),
            ((1, 2), "c", true),
        ]);
        let rerun = three_stages().tasks_to_rerun(&runs, &lost("c"), &[]);
        assert_eq!(rerun, BTreeSet::from([(1, 2)]));
    }

    #[test]
    fn unknown_failed_tasks_are_ignored() {
        let runs = runs(&[((1, 0), "a", false)]);
        let lineage = Lineage::new([(1, 1, vec![])]);
        let rerun = lineage.tasks_to_rerun(&runs, &lost("z"), &[(9, 0), (1, 5)]);
        assert!(rerun.is_empty());
    }
}
