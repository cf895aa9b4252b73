//! The stage graph of a query as an SVG picture: one box per stage (tasks done of
//! total, rows and bytes written, wall time, task-time skew), an arrow per exchange
//! from the stage that writes it to the stage that reads it. Drawn on the server, so
//! the page shows it without JavaScript.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use fletch_planner::StageId;

use super::pages::{escape, human_bytes, ms};
use crate::query_log::StageShape;
use crate::query_record::StageFigures;

const BOX_WIDTH: usize = 250;
const BOX_HEIGHT: usize = 104;
const GAP_X: usize = 40;
const GAP_Y: usize = 56;

/// Each stage's column (its depth from the final stage) and row within the column.
fn layout(stages: &[StageShape]) -> HashMap<StageId, (usize, usize)> {
    let readers: HashMap<StageId, Vec<StageId>> = stages.iter().fold(HashMap::new(), |mut m, s| {
        for input in &s.inputs {
            m.entry(*input).or_insert_with(Vec::new).push(s.id);
        }
        m
    });
    // Depth: the longest path to the final stage. Stages are upstream first, so
    // walking them backwards sees every reader before the stages it reads.
    let mut depth: HashMap<StageId, usize> = HashMap::new();
    for stage in stages.iter().rev() {
        let d = readers.get(&stage.id).map_or(0, |r| {
            r.iter()
                .filter_map(|id| depth.get(id))
                .max()
                .map_or(0, |d| d + 1)
        });
        depth.insert(stage.id, d);
    }
    let mut columns: BTreeMap<usize, Vec<StageId>> = BTreeMap::new();
    for stage in stages {
        columns.entry(depth[&stage.id]).or_default().push(stage.id);
    }
    let deepest = columns.keys().max().copied().unwrap_or(0);
    let mut places = HashMap::new();
    for (d, ids) in columns {
        for (row, id) in ids.into_iter().enumerate() {
            // Upstream stages on the left, the final stage on the right.
            places.insert(id, (deepest - d, row));
        }
    }
    places
}

/// The SVG of `stages` with each one's `figures`.
pub(super) fn stage_graph(
    stages: &[StageShape],
    figures: &HashMap<StageId, StageFigures>,
) -> String {
    let places = layout(stages);
    let columns = places.values().map(|p| p.0 + 1).max().unwrap_or(1);
    let rows = places.values().map(|p| p.1 + 1).max().unwrap_or(1);
    let width = columns * (BOX_WIDTH + GAP_X) + GAP_X;
    let height = rows * (BOX_HEIGHT + GAP_Y) + GAP_Y;
    let corner = |id: &StageId| {
        let (c, r) = places.get(id).copied().unwrap_or((0, 0));
        (
            GAP_X + c * (BOX_WIDTH + GAP_X),
            GAP_Y / 2 + r * (BOX_HEIGHT + GAP_Y),
        )
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="stage-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="stage graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>"##
    );
    for stage in stages {
        let (x2, y2) = corner(&stage.id);
        for input in &stage.inputs {
            let (x1, y1) = corner(input);
            let _ = write!(
                svg,
                r##"<line class="exchange" data-from="{input}" data-to="{}" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>"##,
                stage.id,
                x1 + BOX_WIDTH,
                y1 + BOX_HEIGHT / 2,
                x2,
                y2 + BOX_HEIGHT / 2
            );
        }
    }
    for stage in stages {
        let (x, y) = corner(&stage.id);
        let f = figures.get(&stage.id).cloned().unwrap_or_default();
        let state = if f.finished >= stage.tasks {
            "done"
        } else if f.running > 0 || f.finished > 0 {
            "running"
        } else {
            "waiting"
        };
        let skew = match f.task_time {
            Some((min, median, max)) => format!("{} / {} / {}", ms(min), ms(median), ms(max)),
            None => "–".to_string(),
        };
        let _ = write!(
            svg,
            r#"<g class="stage {state}" data-stage="{id}" data-tasks-done="{done}" data-tasks="{tasks}"><rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6"/><text x="{tx}" y="{l1}" class="title">Stage {id}: {top}</text><text x="{tx}" y="{l2}">tasks {done}/{tasks} · {wall}</text><text x="{tx}" y="{l3}">rows {rows} · {bytes}</text><text x="{tx}" y="{l4}">task time {skew}</text></g>"#,
            id = stage.id,
            done = f.finished,
            tasks = stage.tasks,
            tx = x + 10,
            l1 = y + 22,
            l2 = y + 44,
            l3 = y + 66,
            l4 = y + 88,
            top = escape(&stage.top),
            wall = ms(f.wall),
            rows = f.rows_out,
            bytes = human_bytes(f.bytes_out),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(id: StageId, inputs: &[StageId]) -> StageShape {
        StageShape {
            id,
            tasks: 2,
            inputs: inputs.to_vec(),
            top: "Op".to_string(),
        }
    }

    #[test]
    fn upstream_stages_sit_left_of_their_readers() {
        // 1 and 2 feed 3, which feeds 4 (the final stage).
        let stages = [
            shape(1, &[]),
            shape(2, &[]),
            shape(3, &[1, 2]),
            shape(4, &[3]),
        ];
        let places = layout(&stages);
        assert_eq!(places[&4].0, 2);
        assert_eq!(places[&3].0, 1);
        assert_eq!((places[&1].0, places[&2].0), (0, 0));
        assert_ne!(places[&1].1, places[&2].1);
        let svg = stage_graph(&stages, &HashMap::new());
        assert_eq!(svg.matches("<g class=\"stage").count(), 4);
        assert_eq!(svg.matches("class=\"exchange\"").count(), 3);
    }
}
