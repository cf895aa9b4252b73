//! The stage cutter: DataFusion's optimized physical plan in, a DAG of stages out.
//!
//! Passes, bottom up over the plan:
//! 1. every `RepartitionExec` (hash or round robin) becomes a shuffle: its input is a new
//!    stage whose writer partitions rows exactly as the repartition would, and a shuffle
//!    reader takes its place (merging its sorted inputs where the repartition preserves
//!    order);
//! 2. below every gather (`CoalescePartitionsExec`, `SortPreservingMergeExec`) the child
//!    becomes a stage read back partition by partition (forward), the gather stays;
//! 3. the build side of a `CollectLeft` hash join becomes a stage that every probe task
//!    reads whole (broadcast);
//! 4. a join that emits build-side rows after its last probe partition (left, semi,
//!    anti, mark and full joins collecting the left side) becomes a partitioned hash
//!    join, both sides shuffled on the keys; where it cannot (nested loop joins,
//!    null-aware anti joins) its probe side is gathered, so that "last" means the same
//!    thing as on one node;
//! 5. a fragment writer's input is repartitioned by the table's layout;
//! 6. the rest is the final stage, read by the coordinator through one forward reader.
//!
//! A stage whose expressions read uncorrelated scalar subqueries carries its own copy of
//! the `ScalarSubqueryExec` that computes them, since the original may sit in another stage.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, not_impl_err};
use datafusion::logical_expr::physical_planning_context::ScalarSubqueryResults;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::{PhysicalExpr, physical_exprs_equal};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode, PiecewiseMergeJoinExec,
};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::{ScalarSubqueryExec, ScalarSubqueryLink};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::config::FletchOptions;
use crate::declared::DeclaredPropertiesExec;
use crate::exchange::{ExchangeMode, ExchangeReaderExec, ShuffleWriterExec};
use crate::fragment::FragmentWriterExec;

/// Identifies a stage within one query; upstream stages have smaller ids.
pub type StageId = usize;

/// One stage: a plan rooted at a [`ShuffleWriterExec`], run as one task per partition.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: StageId,
    /// The plan as executors receive it: readers are leaves.
    pub plan: Arc<dyn ExecutionPlan>,
    pub task_count: usize,
    /// Stages whose outputs this stage reads.
    pub inputs: Vec<StageId>,
    /// Whether this stage's outputs must stay readable until the query ends: true when
    /// some partition may be read more than once (broadcast build sides, subqueries
    /// computed in several stages). Otherwise every output partition has exactly one
    /// reader, which consumes it as it goes, and a slow reader holds its writer back.
    pub retain_outputs: bool,
}

/// A query cut into stages.
#[derive(Debug, Clone)]
pub struct DistributedPlan {
    /// What the coordinator executes: a forward reader of the final stage, with every
    /// upstream stage attached beneath it for display.
    pub root: Arc<dyn ExecutionPlan>,
    /// Every stage, upstream before downstream; the final stage is last.
    pub stages: Vec<Stage>,
}

impl DistributedPlan {
    /// Whether some stage stores table fragments (a load): such a plan is run again
    /// whole, never task by task, since its pieces are committed as one load.
    pub fn writes_fragments(&self) -> bool {
        self.stages.iter().any(|s| {
            s.plan
                .exists(|node| Ok(node.is::<FragmentWriterExec>()))
                .unwrap_or(true)
        })
    }

    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }
}

/// Cuts `plan` into stages, under the session's `config` (its broadcast limits).
pub fn distribute(plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<DistributedPlan> {
    let mut cutter = Cutter {
        stages: Vec::new(),
        broadcast: BroadcastLimits::from_config(config),
    };
    let plan = if plan.properties().partitioning.partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan)) as Arc<dyn ExecutionPlan>
    } else {
        plan
    };
    let mut cut = cutter.cut(plan, &[])?;
    if cut.properties().partitioning.partition_count() > 1 {
        // Cutting can add partitions (a fragment writer's input is repartitioned into
        // one partition per fragment); the client still reads one stream.
        cut = Arc::new(CoalescePartitionsExec::new(cutter.exchanged(cut, &[])?));
    }
    let properties = Arc::clone(cut.properties());
    let writer = cutter.new_stage(cut, None, &[])?;
    let final_id = cutter.stages.len();
    mark_retained_outputs(&mut cutter.stages);
    let root = Arc::new(ExchangeReaderExec::new(
        final_id,
        ExchangeMode::Forward,
        properties,
        Some(writer),
    ));
    Ok(DistributedPlan {
        root,
        stages: cutter.stages,
    })
}

/// The scalar subqueries in force where the cutter stands.
#[derive(Clone)]
struct SubqueryScope {
    subqueries: Vec<ScalarSubqueryLink>,
    results: ScalarSubqueryResults,
}

struct Cutter {
    stages: Vec<Stage>,
    broadcast: BroadcastLimits,
}

/// Under either limit a join's build side is small enough to broadcast even where it
/// could be shuffled to the probe side's fragments (`fletch.small_build_side`).
#[derive(Debug, Clone, Copy)]
struct BroadcastLimits {
    bytes: usize,
    rows: usize,
}

impl BroadcastLimits {
    fn from_config(config: &ConfigOptions) -> Self {
        let options = FletchOptions::of(config);
        Self {
            bytes: options.small_build_side.0,
            rows: options.small_build_side_rows(),
        }
    }

    /// Whether `plan`'s estimated output is under either limit.
    fn admits(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
        let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
        let small_bytes = stats
            .total_byte_size
            .get_value()
            .is_some_and(|b| *b < self.bytes);
        let small_rows = stats.num_rows.get_value().is_some_and(|r| *r < self.rows);
        Ok(small_bytes || small_rows)
    }
}

impl Cutter {
    fn cut(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        scopes: &[SubqueryScope],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(sq) = plan.downcast_ref::<ScalarSubqueryExec>() {
            let subqueries = sq
                .subqueries()
                .iter()
                .map(|link| {
                    Ok(ScalarSubqueryLink {
                        plan: self.cut(Arc::clone(&link.plan), scopes)?,
                        index: link.index,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut inner = scopes.to_vec();
            inner.push(SubqueryScope {
                subqueries: subqueries.clone(),
                results: sq.results().clone(),
            });
            let input = self.cut(Arc::clone(sq.input()), &inner)?;
            return Ok(Arc::new(ScalarSubqueryExec::new(
                input,
                subqueries,
                sq.results().clone(),
            )));
        }

        let plan = join_co_partitioned_in_place(plan, self.broadcast)?;
        let plan = partition_if_probe_must_be_gathered(plan)?;
        let plan = partition_for_fragments(plan)?;
        let children = plan
            .children()
            .into_iter()
            .map(|c| self.cut(Arc::clone(c), scopes))
            .collect::<Result<Vec<_>>>()?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let input = children
                .into_iter()
                .next()
                .expect("repartition has an input");
            if matches!(repartition.partitioning(), Partitioning::Hash(_, _))
                && input.properties().partitioning == *repartition.partitioning()
            {
                // Already partitioned this way, e.g. by a join this cutter made
                // partitioned: partition i of the input is partition i of the output.
                return Ok(input);
            }
            let upstream_tasks = input.properties().partitioning.partition_count();
            let output = match repartition.partitioning() {
                p @ (Partitioning::Hash(_, _) | Partitioning::RoundRobinBatch(_)) => p.clone(),
                other => return not_impl_err!("exchange by {other}"),
            };
            // Writers route each task's rows in order, so every output partition of
            // a task is as sorted as its input; an order-preserving repartition's
            // reader merges those sorted streams.
            let merge_by = repartition
                .preserve_order()
                .then(|| input.properties().output_ordering().cloned())
                .flatten();
            let writer = self.new_stage(input, Some(output), scopes)?;
            return Ok(Arc::new(
                ExchangeReaderExec::new(
                    self.stages.len(),
                    ExchangeMode::Shuffle { upstream_tasks },
                    Arc::clone(plan.properties()),
                    Some(writer),
                )
                .with_merge_by(merge_by),
            ));
        }

        let mut children = children;
        if emits_build_side_at_end(&plan)
            && children[1].properties().partitioning.partition_count() > 1
        {
            // The build side's unmatched (or matched, for semi/anti) rows are emitted by
            // whichever probe partition finishes last within one plan instance. Probe
            // partitions spread over executors never see each other, so the probe side
            // is gathered into one task.
            let probe = children.remove(1);
            let gathered: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(self.exchanged(probe, scopes)?));
            children.insert(1, gathered);
        }

        let is_gather = plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>();
        let broadcast_build_side = plan
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|j| j.mode == PartitionMode::CollectLeft);
        if is_gather || broadcast_build_side {
            let first = children.remove(0);
            children.insert(0, self.exchanged(first, scopes)?);
        }
        if children.is_empty() {
            return Ok(plan);
        }
        replace_children_if_necessary(plan, children)
    }

    /// `input` as the output of an exchange: itself if it already is one, otherwise a
    /// forward reader of a new stage running it.
    fn exchanged(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        scopes: &[SubqueryScope],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if already_exchanged(&input) {
            Ok(input)
        } else {
            self.forward_stage(input, scopes)
        }
    }

    fn forward_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        scopes: &[SubqueryScope],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let properties = Arc::clone(input.properties());
        let writer = self.new_stage(input, None, scopes)?;
        Ok(Arc::new(ExchangeReaderExec::new(
            self.stages.len(),
            ExchangeMode::Forward,
            properties,
            Some(writer),
        )))
    }

    /// Registers `input` as the next stage; returns its writer, readers still attached.
    fn new_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        output: Option<Partitioning>,
        scopes: &[SubqueryScope],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let id = self.stages.len() + 1;
        let mut input = input;
        for scope in scopes {
            if reads_subquery_results(&input, &scope.results)? {
                input = Arc::new(ScalarSubqueryExec::new(
                    input,
                    scope.subqueries.clone(),
                    scope.results.clone(),
                ));
            }
        }
        let writer: Arc<dyn ExecutionPlan> =
            Arc::new(ShuffleWriterExec::try_new(id, input, output)?);
        let mut inputs = Vec::new();
        let shipped = detach_readers(&writer, &mut inputs)?;
        let task_count = writer
            .downcast_ref::<ShuffleWriterExec>()
            .map_or(1, ShuffleWriterExec::task_count);
        self.stages.push(Stage {
            id,
            plan: shipped,
            task_count,
            inputs,
            retain_outputs: true,
        });
        Ok(writer)
    }
}

/// Decides [`Stage::retain_outputs`]: a stage's outputs are consumed on read only when
/// exactly one reader in the whole query reads them, from a position where each of its
/// partitions is executed once. The final stage is read once, by the coordinator.
fn mark_retained_outputs(stages: &mut [Stage]) {
    let mut reads: HashMap<StageId, (usize, bool)> = HashMap::new();
    for stage in stages.iter() {
        record_reads(&stage.plan, true, &mut reads);
    }
    let final_id = stages.len();
    for stage in stages.iter_mut() {
        stage.retain_outputs = if stage.id == final_id {
            false
        } else {
            !matches!(reads.get(&stage.id), Some((1, true)))
        };
    }
}

fn record_reads(
    plan: &Arc<dyn ExecutionPlan>,
    once: bool,
    reads: &mut HashMap<StageId, (usize, bool)>,
) {
    if let Some(reader) = plan.downcast_ref::<ExchangeReaderExec>() {
        let entry = reads.entry(reader.stage_id()).or_insert((0, true));
        entry.0 += 1;
        entry.1 &= once;
        return;
    }
    for (i, child) in plan.children().into_iter().enumerate() {
        record_reads(child, once && child_partitions_run_once(plan, i), reads);
    }
}

/// Whether `plan` executes each partition of its child `i` at most once per query when
/// each of its own partitions runs once. Nodes that collect a child once per plan
/// instance (and executors each hold an instance) or re-run it do not.
fn child_partitions_run_once(plan: &Arc<dyn ExecutionPlan>, i: usize) -> bool {
    if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        return !(j.mode == PartitionMode::CollectLeft && i == 0);
    }
    if plan.is::<CrossJoinExec>() || plan.is::<NestedLoopJoinExec>() {
        return i != 0;
    }
    if plan.is::<ScalarSubqueryExec>() {
        return i == 0;
    }
    !(plan.is::<RecursiveQueryExec>() || plan.is::<PiecewiseMergeJoinExec>())
}

/// A `CollectLeft` hash join that emits build-side rows after its last probe partition
/// (left, semi, anti, mark, full) would need its whole probe side gathered into one task
/// (see [`Cutter::cut`]): one core probing what single-node DataFusion probes with all of
/// them (TPC-H q21's semi join over all of lineitem ran 1.8x slower). Both sides are
/// hash-partitioned on the join keys instead, into as many partitions as the probe side
/// has, so each task owns a disjoint slice of the build side and emits its rows itself.
/// The same data crosses the network (the probe side moved to one task before); the
/// probe now runs in parallel. Null-aware anti joins (`NOT IN`) keep the gather: one NULL
/// on the probe side must empty every partition's answer.
fn partition_if_probe_must_be_gathered(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(plan);
    };
    let partitions = join.right().properties().partitioning.partition_count();
    if !emits_build_side_at_end(&plan) || join.null_aware || partitions < 2 {
        return Ok(plan);
    }
    let (left, left_keys, right_keys) = build_side_and_keys(join);
    let left = RepartitionExec::try_new(left, Partitioning::Hash(left_keys, partitions))?;
    let right = RepartitionExec::try_new(
        Arc::clone(join.right()),
        Partitioning::Hash(right_keys, partitions),
    )?;
    partitioned(join, Arc::new(left), Arc::new(right))
}

/// One side's join key expressions.
type JoinKeys = Vec<Arc<dyn PhysicalExpr>>;

/// A `CollectLeft` join's build side without the gather DataFusion put over it (a
/// partitioned join replaces that), and the join keys of each side.
fn build_side_and_keys(join: &HashJoinExec) -> (Arc<dyn ExecutionPlan>, JoinKeys, JoinKeys) {
    let mut left = Arc::clone(join.left());
    if let Some(gather) = left.downcast_ref::<CoalescePartitionsExec>() {
        left = Arc::clone(gather.input());
    }
    let (left_keys, right_keys) = join
        .on()
        .iter()
        .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
        .unzip();
    (left, left_keys, right_keys)
}

/// `join` as a partitioned hash join over `left` and `right`.
fn partitioned(
    join: &HashJoinExec,
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    join.builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![left, right])?
        .recompute_properties()
        .reset_state()
        .build_exec()
}

/// A `CollectLeft` hash join whose two inputs are already hash-partitioned on the join
/// keys into the same number of partitions (in-memory tables fragmented on those keys)
/// joins partition `i` with partition `i`, where both live: nothing is broadcast or
/// shuffled. DataFusion picks `CollectLeft` for a small build side without knowing that
/// collecting it moves it over the network while a partitioned join would not. When
/// only the probe side is partitioned on the keys, the build side is shuffled to match.
fn join_co_partitioned_in_place(
    plan: Arc<dyn ExecutionPlan>,
    broadcast: BroadcastLimits,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(plan);
    };
    if join.mode != PartitionMode::CollectLeft || join.null_aware {
        return Ok(plan);
    }
    let (left, left_keys, right_keys) = build_side_and_keys(join);
    let right = Arc::clone(join.right());
    let partitioned_on = |side: &Arc<dyn ExecutionPlan>, keys: &[Arc<dyn PhysicalExpr>]| match &side
        .properties()
        .partitioning
    {
        Partitioning::Hash(exprs, n) if *n > 1 && physical_exprs_equal(exprs, keys) => Some(*n),
        _ => None,
    };
    let left = match (
        partitioned_on(&left, &left_keys),
        partitioned_on(&right, &right_keys),
    ) {
        (Some(l), Some(r)) if l == r => left,
        // Only the probe side is in place: broadcasting the build side sends it to
        // every executor and builds its hash table on each; shuffling it to the probe's
        // partitioning sends it once and builds each part once. Tiny build sides stay
        // broadcast, where the difference is nothing.
        (None, Some(n)) if !broadcast.admits(&left)? => Arc::new(RepartitionExec::try_new(
            left,
            Partitioning::Hash(left_keys, n),
        )?),
        _ => return Ok(plan),
    };
    partitioned(join, left, right)
}

/// A [`FragmentWriterExec`] stores partition `f` as fragment `f`: its input is first
/// repartitioned the way the table's layout says (a shuffle between executors, unless
/// the input already is partitioned that way).
fn partition_for_fragments(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(writer) = plan.downcast_ref::<FragmentWriterExec>() else {
        return Ok(plan);
    };
    if writer.input_is_partitioned() {
        return Ok(plan);
    }
    let input =
        RepartitionExec::try_new(Arc::clone(writer.input()), writer.required_partitioning())?;
    replace_children_if_necessary(plan, vec![Arc::new(input)])
}

/// Whether `plan` is a join that collects its left (build) side once per plan instance
/// and emits build-side rows after the last probe partition ends.
fn emits_build_side_at_end(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let join_type = if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        if j.mode != PartitionMode::CollectLeft {
            return false;
        }
        *j.join_type()
    } else if let Some(j) = plan.downcast_ref::<NestedLoopJoinExec>() {
        *j.join_type()
    } else {
        return false;
    };
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// A reader, or a gather straight over one: cutting again would only add a hop.
fn already_exchanged(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<ExchangeReaderExec>()
        || ((plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>())
            && plan
                .children()
                .first()
                .is_some_and(|c| c.is::<ExchangeReaderExec>()))
}

/// Copies a stage's plan with every reader detached from its upstream stage, and every
/// leaf whose properties would not survive decoding wrapped in a
/// [`DeclaredPropertiesExec`].
fn detach_readers(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &mut Vec<StageId>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(reader) = plan.downcast_ref::<ExchangeReaderExec>() {
        inputs.push(reader.stage_id());
        return Ok(Arc::new(reader.detached()));
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(DeclaredPropertiesExec::where_decoding_loses(Arc::clone(
            plan,
        )));
    }
    let children = children
        .into_iter()
        .map(|c| detach_readers(c, inputs))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(Arc::clone(plan), children)
}

/// Whether any expression in this stage (not crossing exchanges) reads `results`.
fn reads_subquery_results(
    plan: &Arc<dyn ExecutionPlan>,
    results: &ScalarSubqueryResults,
) -> Result<bool> {
    if plan.is::<ExchangeReaderExec>() {
        return Ok(false);
    }
    if let Some(sq) = plan.downcast_ref::<ScalarSubqueryExec>()
        && ScalarSubqueryResults::ptr_eq(sq.results(), results)
    {
        // Already computed inside this stage.
        return Ok(false);
    }
    let mut found = false;
    plan.apply_expressions(&mut |expr| {
        expr.apply(|e| {
            if let Some(sq) = e.downcast_ref::<ScalarSubqueryExpr>()
                && ScalarSubqueryResults::ptr_eq(sq.results(), results)
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    if found {
        return Ok(true);
    }
    for child in plan.children() {
        if reads_subquery_results(child, results)? {
            return Ok(true);
        }
    }
    Ok(false)
}
