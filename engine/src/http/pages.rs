//! The web UI's pages, rendered on the server from what the coordinator knows now:
//! the overview (executors, tables, queries) and a page per query (its SQL, the stage
//! graph, every task attempt, errors and recoveries). Every page is whole without
//! JavaScript; `ui.js` only refreshes the page while something runs.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::catalog::as_fletch_table;
use crate::coordinator::Coordinator;
use crate::query_log::{LoggedQuery, QueryState};
use crate::query_record::AttemptState;

pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn ms(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1e3;
    if millis >= 10_000.0 {
        format!("{:.1} s", millis / 1e3)
    } else {
        format!("{millis:.1} ms")
    }
}

pub(super) fn human_bytes(bytes: u64) -> String {
    datafusion::execution::memory_pool::human_readable_size(
        usize::try_from(bytes).unwrap_or(usize::MAX),
    )
}

fn clock(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

/// A whole page: `title`, `body`, and whether it refreshes itself while shown.
fn page(title: &str, body: &str, live: bool) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Fletch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/ui.css">
<script src="/static/ui.js" defer></script></head>
<body data-live="{live}"><header><a href="/">Fletch</a> <span class="where">{title}</span>
<span id="refresh" class="note">This page shows the cluster as it was when it was served; with JavaScript it refreshes itself while queries run, without it reload the page to see more.</span></header>
<main id="content">{body}</main></body></html>"#,
        title = escape(title),
    )
}

fn state_class(state: QueryState) -> &'static str {
    state.name()
}

/// `/`: executors, tables and queries.
pub(super) fn overview(coordinator: &Coordinator) -> String {
    let mut body = String::new();
    let executors = coordinator.executors();
    let _ = write!(
        body,
        "<h2>Executors ({})</h2><table id=\"executors\"><tr><th>executor</th><th>state</th><th>slots</th><th>running tasks</th><th>memory used</th><th>memory limit</th><th>last heartbeat</th></tr>",
        executors.len()
    );
    for e in &executors {
        let _ = write!(
            body,
            "<tr class=\"executor {state}\"><td>{url}</td><td>{state}</td><td>{slots}</td><td>{running}</td><td>{used}</td><td>{limit}</td><td>{beat} ms ago</td></tr>",
            url = escape(&e.url),
            state = escape(&e.state),
            slots = e.slots,
            running = e.running_tasks,
            used = human_bytes(e.memory_used),
            limit = human_bytes(e.memory_limit),
            beat = e.since_heartbeat_ms,
        );
    }
    body.push_str("</table>");

    body.push_str("<h2>In-memory tables</h2><table id=\"tables\"><tr><th>table</th><th>rows</th><th>bytes</th><th>fragments</th><th>replicas</th><th>holders (by fragment)</th></tr>");
    for (name, table) in coordinator.tables().all() {
        let Some(t) = as_fletch_table(&table) else {
            continue;
        };
        let sizes = t.fragment_sizes();
        let holders: Vec<String> = t
            .holders()
            .iter()
            .enumerate()
            .map(|(f, h)| format!("{f}: {}", escape(&h.join(", "))))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&name),
            sizes.iter().map(|s| s.0).sum::<usize>(),
            human_bytes(sizes.iter().map(|s| s.1 as u64).sum()),
            t.layout().fragments,
            t.layout().replicas,
            holders.join("<br>"),
        );
    }
    body.push_str("</table>");

    let queries = coordinator.query_log().queries();
    let _ = write!(
        body,
        "<h2>Queries</h2><table id=\"queries\"><tr><th>started</th><th>user</th><th>state</th><th>progress</th><th>duration</th><th>rows</th><th>SQL</th></tr>"
    );
    for query in queries.iter().rev() {
        let now = query.snapshot();
        let finished = query.record.finished_tasks();
        let _ = write!(
            body,
            "<tr class=\"query {class}\"><td>{started}</td><td>{user}</td><td>{state}</td><td><progress max=\"{tasks}\" value=\"{finished}\"></progress> {finished}/{tasks} tasks</td><td>{duration}</td><td>{rows}</td><td><a href=\"/query/{id}\"><code>{sql}</code></a></td></tr>",
            class = state_class(now.state),
            started = clock(query.started_at),
            user = escape(&query.label.user),
            state = now.state.name(),
            tasks = query.tasks,
            duration = ms(now.duration),
            rows = now.rows,
            id = escape(&query.id),
            sql = escape(&shorten(&query.label.sql, 160)),
        );
    }
    body.push_str("</table>");
    let live = queries
        .iter()
        .any(|q| q.snapshot().state == QueryState::Running);
    page("overview", &body, live)
}

fn shorten(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().nth(chars).is_some() {
        out.push('…');
    }
    out
}

/// `/query/{id}`: one query.
pub(super) fn query_page(query: &LoggedQuery) -> String {
    let now = query.snapshot();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>Query <code>{id}</code></h2><p class=\"query-state {class}\">{state} · {user} · started {started} · {duration} · {rows} rows · {stages} stages · {tasks} tasks · {recoveries} recoveries</p><pre class=\"sql\">{sql}</pre>",
        id = escape(&query.id),
        class = state_class(now.state),
        state = now.state.name(),
        user = escape(&query.label.user),
        started = clock(query.started_at),
        duration = ms(now.duration),
        rows = now.rows,
        stages = query.stages,
        tasks = query.tasks,
        recoveries = now.recoveries,
        sql = escape(&query.label.sql),
    );
    if let Some(error) = &now.error {
        let _ = write!(
            body,
            "<h3>Error</h3><pre class=\"error\">{}</pre>",
            escape(error)
        );
    }
    let recoveries = query.record.recoveries();
    if !recoveries.is_empty() {
        body.push_str("<h3>Recoveries</h3><ul class=\"recoveries\">");
        for recovery in recoveries {
            let _ = write!(body, "<li>{}</li>", escape(&recovery));
        }
        body.push_str("</ul>");
    }
    let figures: HashMap<_, _> = query
        .shape
        .iter()
        .map(|s| (s.id, query.record.stage_figures(s.id)))
        .collect();
    body.push_str("<h3>Stages</h3><div class=\"graph\">");
    body.push_str(&super::graph::stage_graph(&query.shape, &figures));
    body.push_str("</div>");

    body.push_str("<h3>Tasks</h3><table id=\"tasks\"><tr><th>stage</th><th>task</th><th>attempt</th><th>run</th><th>executor</th><th>state</th><th>time</th><th>rows in</th><th>rows out</th><th>bytes out</th><th>read local</th><th>read over Flight</th><th>peak memory</th><th>error</th></tr>");
    for attempt in query.record.attempts() {
        let reads = attempt
            .report
            .as_ref()
            .and_then(|r| r.reads.clone())
            .unwrap_or_default();
        let error = match &attempt.state {
            AttemptState::Failed(why) => escape(why),
            _ => String::new(),
        };
        let _ = write!(
            body,
            "<tr class=\"task {state}\"><td>{stage}</td><td>{task}</td><td>{attempt_no}</td><td>{run}</td><td>{executor}</td><td>{state}</td><td>{time}</td><td>{rows_in}</td><td>{rows_out}</td><td>{bytes_out}</td><td>{local}</td><td>{remote}</td><td>{peak}</td><td>{error}</td></tr>",
            state = attempt.state.name(),
            stage = attempt.stage,
            task = attempt.task,
            attempt_no = attempt.attempt,
            run = attempt.run,
            executor = escape(&attempt.executor),
            time = ms(attempt.duration()),
            rows_in = attempt.report.as_ref().map_or(0, |r| r.rows_in),
            rows_out = attempt.rows_out(),
            bytes_out = human_bytes(attempt.bytes_out()),
            local = human_bytes(reads.local_bytes),
            remote = human_bytes(reads.remote_bytes),
            peak = human_bytes(attempt.report.as_ref().map_or(0, |r| r.peak_memory)),
        );
    }
    body.push_str("</table>");
    page(
        &format!("query {}", query.id),
        &body,
        now.state == QueryState::Running,
    )
}

/// A page for a query the log does not hold.
pub(super) fn unknown_query(id: &str) -> String {
    page(
        "unknown query",
        &format!(
            "<p>No query <code>{}</code> is running or among the last finished ones \
             (<code>fletch.query_history</code> says how many are kept). \
             <a href=\"/\">All queries</a></p>",
            escape(id)
        ),
        false,
    )
}
