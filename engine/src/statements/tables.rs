//! The statements that make, load and unload in-memory distributed tables:
//! `CREATE TABLE`, `CACHE TABLE`, `UNCACHE TABLE`.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;

use super::parse::{LayoutClauses, table_name};
use super::{coordinator, empty};
use crate::catalog::{FletchTable, TableDefinition, TableLayout, as_fletch_table};
use crate::coordinator::Coordinator;

pub(super) async fn create_table(
    ctx: &SessionContext,
    create: ast::Statement,
    name: &str,
    layout: LayoutClauses,
) -> Result<DataFrame> {
    let plan = ctx
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(create)))
        .await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) = plan else {
        return plan_err!("expected a CREATE TABLE statement for table '{name}'");
    };
    if cmd.temporary {
        return plan_err!("temporary tables are not supported");
    }
    let coordinator = coordinator(ctx)?;
    let name = table_name(&cmd.name)?;
    let exists = coordinator.tables().get(&name).is_some();
    match (cmd.if_not_exists, cmd.or_replace, exists) {
        (true, true, _) => return plan_err!("'IF NOT EXISTS' cannot coexist with 'REPLACE'"),
        (true, false, true) => return empty(ctx),
        (false, false, true) => return exec_err!("Table '{name}' already exists"),
        _ => {}
    }
    let definition = TableDefinition {
        constraints: cmd.constraints.clone(),
        column_defaults: cmd.column_defaults.iter().cloned().collect(),
    };
    let input = Arc::unwrap_or_clone(cmd.input);
    let table = load_table(ctx, &coordinator, &name, input, layout, None, definition).await?;
    if cmd.or_replace {
        return register(ctx, &coordinator, &name, Arc::new(table)).await;
    }
    if !coordinator.tables().insert_new(&name, Arc::new(table)) {
        // Another session made the table while this one loaded: ours is freed.
        coordinator.wait_for_releases().await;
        return exec_err!("Table '{name}' was created by another session meanwhile");
    }
    empty(ctx)
}

/// Puts `table` under `name` and returns once what it replaced is freed on every
/// executor.
async fn register(
    ctx: &SessionContext,
    coordinator: &Coordinator,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<DataFrame> {
    coordinator.tables().replace(name, table);
    coordinator.wait_for_releases().await;
    empty(ctx)
}

pub(super) async fn cache_table(
    ctx: &SessionContext,
    name: &str,
    layout: LayoutClauses,
    query: Option<Box<ast::Query>>,
) -> Result<DataFrame> {
    let coordinator = coordinator(ctx)?;
    let (input, source) = match query {
        Some(query) => {
            let query = DFStatement::Statement(Box::new(ast::Statement::Query(query)));
            (ctx.state().statement_to_plan(query).await?, None)
        }
        None => {
            let Some(source) = coordinator.tables().get(name) else {
                return plan_err!("table '{name}' not found");
            };
            if as_fletch_table(&source).is_some() {
                return plan_err!("table '{name}' is already in memory");
            }
            let input = ctx.table(name).await?.into_unoptimized_plan();
            (input, Some(source))
        }
    };
    let definition = TableDefinition::default();
    let table = load_table(ctx, &coordinator, name, input, layout, source, definition).await?;
    register(ctx, &coordinator, name, Arc::new(table)).await
}

pub(super) async fn uncache_table(
    ctx: &SessionContext,
    name: &str,
    if_exists: bool,
) -> Result<DataFrame> {
    let coordinator = coordinator(ctx)?;
    let table = coordinator.tables().get(name);
    let source = table
        .as_ref()
        .and_then(as_fletch_table)
        .and_then(|t| t.source().cloned());
    match (table, source) {
        (None, _) if if_exists => empty(ctx),
        (None, _) => plan_err!("table '{name}' not found"),
        (Some(_), None) => plan_err!(
            "table '{name}' is not a cached table (DROP TABLE frees a table created in memory)"
        ),
        (Some(_), Some(source)) => register(ctx, &coordinator, name, source).await,
    }
}

/// Creates an in-memory table shaped like `input` and loads `input` into it. The table
/// is registered by the caller, after the load committed: until then no query sees it.
async fn load_table(
    ctx: &SessionContext,
    coordinator: &Arc<Coordinator>,
    name: &str,
    input: LogicalPlan,
    clauses: LayoutClauses,
    source: Option<Arc<dyn TableProvider>>,
    definition: TableDefinition,
) -> Result<FletchTable> {
    let executors = coordinator.executor_urls();
    let slots = ctx.state().config().options().execution.target_partitions;
    let spec = TableLayout {
        hash_keys: clauses.hash_keys,
        fragments: clauses.fragments.unwrap_or(slots.max(executors.len())),
        replicas: clauses.replicas.unwrap_or(executors.len().min(2)),
    };
    let schema = Arc::clone(input.schema().inner());
    let table = FletchTable::new(
        name.to_string(),
        schema,
        spec,
        &executors,
        source,
        definition,
    )?;
    let nothing_to_load = matches!(&input, LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
    if !nothing_to_load {
        let target = provider_as_source(Arc::new(table.clone()));
        let insert =
            LogicalPlanBuilder::insert_into(input, name, target, InsertOp::Append)?.build()?;
        // A failed load has already dropped its pieces everywhere when this returns.
        ctx.execute_logical_plan(insert).await?.collect().await?;
    }
    Ok(table)
}
