//! Fletch's SQL statements on top of DataFusion's. [`sql`] runs one statement, parsed
//! once into a [`parse::FletchStatement`]: Fletch's own (`CREATE TABLE` with its layout
//! clauses, `CACHE TABLE`, `UNCACHE TABLE`, `SHOW TABLES`, `SHOW EXECUTORS`,
//! `RESET fletch.<name>`), or DataFusion's AST, planned by DataFusion.
//!
//! Every `CREATE TABLE` makes an in-memory distributed table; its rows are loaded by
//! the executors (the coordinator never holds them) and become visible only when the
//! whole load has been stored. `INSERT INTO` an in-memory table runs through the
//! table's own distributed load.

mod parse;
mod tables;

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use fletch_planner::FletchOptions;

pub(crate) use self::parse::{FletchStatement, FletchStatementKind};
use crate::catalog::through_fletch;
use crate::coordinator::Coordinator;
use crate::query_log::{LOCAL_USER, QueryLabel, SessionUser};

/// Splits SQL text into statements at top-level semicolons, each with its own text;
/// statements of nothing but whitespace and comments are left out.
pub fn split_statements(sql: &str) -> Result<Vec<String>> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut blank = true;
    for token in tokenize(sql)? {
        match token.token {
            Token::SemiColon => {
                let end = offset(sql, token.span.start);
                if !blank {
                    statements.push(sql[start..end].trim().to_string());
                }
                start = offset(sql, token.span.end);
                blank = true;
            }
            Token::Whitespace(_) => {}
            _ => blank = false,
        }
    }
    if !blank {
        statements.push(sql[start..].trim().to_string());
    }
    Ok(statements)
}

/// `statement` parsed in `ctx`'s dialect, as [`sql`] will parse it: for access checks
/// that must read the same statement that runs.
pub(crate) fn parse_statement(ctx: &SessionContext, statement: &str) -> Result<FletchStatement> {
    FletchStatement::parse(&ctx.state(), statement)
}

/// The table a `CREATE TABLE` or `CACHE TABLE` statement loads (for a shell to say
/// what it stored), by its name in the cluster's schema; `None` for other statements.
pub fn loaded_table(statement: &str) -> Option<String> {
    FletchStatement::parse_generic(statement)
        .ok()?
        .loads()
        .map(str::to_string)
}

/// Whether `statement` is one Fletch runs itself rather than DataFusion (so DataFusion
/// alone may not parse it).
pub(crate) fn is_fletch_statement(ctx: &SessionContext, statement: &str) -> bool {
    FletchStatement::parse(&ctx.state(), statement).is_ok_and(|s| s.is_fletch_own())
}

/// Runs one SQL statement on a Fletch session. Statements that change the catalog
/// run one at a time across the cluster's sessions, so an `IF NOT EXISTS` never
/// fails because another session created the same name meanwhile.
pub async fn sql(ctx: &SessionContext, statement: &str) -> Result<DataFrame> {
    label_session(ctx, statement);
    let parsed = FletchStatement::parse(&ctx.state(), statement)?;
    if parsed.changes_catalog()
        && let Ok(coordinator) = coordinator(ctx)
    {
        let _change = coordinator.catalog_change().await;
        return run(ctx, parsed).await;
    }
    run(ctx, parsed).await
}

/// The most of a statement's text the query log keeps.
const LOGGED_SQL_BYTES: usize = 64 << 10;

/// Marks `ctx` as running `statement`, so the queries it runs (the one a data frame
/// runs later too: it plans with a copy of the session's state) are logged with its
/// text and the session's user.
fn label_session(ctx: &SessionContext, statement: &str) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let user = state
        .config()
        .get_extension::<SessionUser>()
        .map_or_else(|| LOCAL_USER.to_string(), |u| u.0.clone());
    let mut sql = statement.trim().to_string();
    if sql.len() > LOGGED_SQL_BYTES {
        let mut cut = LOGGED_SQL_BYTES;
        while !sql.is_char_boundary(cut) {
            cut -= 1;
        }
        sql.truncate(cut);
        sql.push_str(" …");
    }
    state
        .config_mut()
        .set_extension(Arc::new(QueryLabel { user, sql }));
}

async fn run(ctx: &SessionContext, statement: FletchStatement) -> Result<DataFrame> {
    let drops_table = statement.drops_table();
    match statement {
        FletchStatement::CreateTable {
            create,
            name,
            layout,
        } => tables::create_table(ctx, *create, &name, layout).await,
        FletchStatement::CacheTable {
            name,
            layout,
            query,
        } => tables::cache_table(ctx, &name, layout, query).await,
        FletchStatement::UncacheTable { name, if_exists } => {
            tables::uncache_table(ctx, &name, if_exists).await
        }
        FletchStatement::ShowExecutors => {
            ctx.sql("SELECT * FROM fletch.executors ORDER BY url").await
        }
        FletchStatement::ShowTables => {
            ctx.sql("SELECT * FROM fletch.tables ORDER BY table_name")
                .await
        }
        FletchStatement::ResetFletchSetting(name) => reset_fletch_setting(ctx, &name),
        FletchStatement::DataFusion(statement) => {
            let result = through_fletch(run_datafusion(ctx, statement)).await?;
            if drops_table {
                // The fragments are freed in the background; the statement ends when
                // they are.
                coordinator(ctx)?.wait_for_releases().await;
            }
            Ok(result)
        }
    }
}

/// Plans and runs a DataFusion statement as `SessionContext::sql` would.
async fn run_datafusion(ctx: &SessionContext, statement: DFStatement) -> Result<DataFrame> {
    let plan = ctx.state().statement_to_plan(statement).await?;
    ctx.execute_logical_plan(plan).await
}

/// `RESET fletch.<name>`: the setting goes back to its default in this session.
fn reset_fletch_setting(ctx: &SessionContext, name: &str) -> Result<DataFrame> {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let Some(options) = state
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<FletchOptions>()
        else {
            return plan_err!("this session has no Fletch settings to reset");
        };
        options.reset(name)?;
    }
    empty(ctx)
}

fn coordinator(ctx: &SessionContext) -> Result<Arc<Coordinator>> {
    ctx.state()
        .config()
        .get_extension::<Coordinator>()
        .ok_or_else(|| DataFusionError::Plan("not a Fletch session (no coordinator)".into()))
}

fn empty(ctx: &SessionContext) -> Result<DataFrame> {
    let plan = LogicalPlanBuilder::empty(false).build()?;
    Ok(DataFrame::new(ctx.state(), plan))
}

pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            DataFusionError::SQL(Box::new(ParserError::TokenizerError(e.to_string())), None)
        })
}

/// Byte offset of a tokenizer location (1-based line and column, columns in chars).
pub(crate) fn offset(sql: &str, location: Location) -> usize {
    if location.line == 0 {
        return sql.len();
    }
    let mut line_start = 0;
    for _ in 1..location.line {
        match sql[line_start..].find('\n') {
            Some(i) => line_start += i + 1,
            None => return sql.len(),
        }
    }
    sql[line_start..]
        .char_indices()
        .nth(location.column.saturating_sub(1) as usize)
        .map_or(sql.len(), |(i, _)| line_start + i)
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_split_at_top_level_semicolons_and_blank_ones_are_dropped() {
        let sql = "SELECT 1; -- a comment\n ;\nSELECT 'a;b' AS x;\n  ";
        let statements = split_statements(sql).expect("split");
        assert_eq!(statements, ["SELECT 1", "SELECT 'a;b' AS x"]);
        assert!(split_statements(" -- nothing\n").expect("split").is_empty());
    }
}
