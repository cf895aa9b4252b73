//! [`NotDistributable`]: why a plan cannot run on the executors, so the coordinator can
//! say so (in its log, in `EXPLAIN`, or in the error that refuses it) instead of
//! quietly running it alone.

use std::fmt;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::StreamingTableExec;

use crate::codec::encode_stage_plan;
use crate::stage::{Stage, StageId};

/// Why a plan stays on the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDistributable {
    /// It lists the coordinator's catalog (`information_schema`, `SHOW`), which lives
    /// on the coordinator alone: staying there is its nature, not a fallback.
    CatalogListing,
    /// A stage holds a node (or, inside it, an expression or type) that cannot be
    /// encoded, so no executor could rebuild the stage.
    Unencodable {
        stage: StageId,
        node: String,
        why: String,
    },
    /// The stage cutter failed on the plan: a Fletch bug, named as such.
    Uncut { why: String },
}

impl NotDistributable {
    /// Whether running on the coordinator is a fallback the user may refuse
    /// (`fletch.allow_local_fallback = false`), rather than the plan's nature.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, Self::CatalogListing)
    }

    pub fn uncut(error: DataFusionError) -> Self {
        Self::Uncut {
            why: first_line(&error.strip_backtrace()),
        }
    }

    /// `stage` failed to encode with `error`: finds the deepest node that does not
    /// encode, so the reason names it rather than dumping the whole plan.
    pub fn unencodable(stage: &Stage, error: DataFusionError) -> Self {
        let (node, error) =
            deepest_unencodable(&stage.plan).unwrap_or((Arc::clone(&stage.plan), error));
        if is_catalog_listing(&node) {
            return Self::CatalogListing;
        }
        let text = error.strip_backtrace();
        let why = if text.contains("extension codec failed") {
            "neither datafusion-proto nor Fletch's codec can encode it".to_string()
        } else {
            first_line(&text)
        };
        Self::Unencodable {
            stage: stage.id,
            node: node.name().to_string(),
            why,
        }
    }
}

impl fmt::Display for NotDistributable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CatalogListing => f.write_str("it lists the coordinator's catalog"),
            Self::Unencodable { stage, node, why } => write!(
                f,
                "stage {stage} holds {node}, which cannot be sent to executors: {why}"
            ),
            Self::Uncut { why } => write!(f, "the stage cutter failed on it: {why}"),
        }
    }
}

impl std::error::Error for NotDistributable {}

/// The first node, bottom up, whose subtree does not encode, with its error.
fn deepest_unencodable(
    plan: &Arc<dyn ExecutionPlan>,
) -> Option<(Arc<dyn ExecutionPlan>, DataFusionError)> {
    for child in plan.children() {
        if let Some(found) = deepest_unencodable(child) {
            return Some(found);
        }
    }
    encode_stage_plan(plan)
        .err()
        .map(|error| (Arc::clone(plan), error))
}

/// DataFusion's `information_schema` tables are streams of its own private types;
/// their debug names are the only mark they carry.
fn is_catalog_listing(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.downcast_ref::<StreamingTableExec>().is_some_and(|s| {
        !s.partitions().is_empty()
            && s.partitions()
                .iter()
                .all(|p| format!("{p:?}").starts_with("InformationSchema"))
    })
}

/// An error's message without backtrace, cut before the plan dump datafusion-proto
/// appends and before DataFusion's "please file a bug" advice.
fn first_line(text: &str) -> String {
    let text = text.split(". Plan: ").next().unwrap_or(text);
    text.lines()
        .next()
        .unwrap_or(text)
        .trim_end_matches('.')
        .to_string()
}
