//! Fletch's SQL statements on top of DataFusion's. [`sql`] runs one statement:
//!
//! ```text
//! CREATE [OR REPLACE] TABLE [IF NOT EXISTS] name [(columns)]
//!     [PARTITION BY HASH (column, ...) | PARTITION BY ROUND ROBIN]
//!     [INTO n FRAGMENTS] [REPLICAS k] [AS query]
//! CACHE TABLE name [PARTITION BY ...] [INTO n FRAGMENTS] [REPLICAS k] [AS query]
//! UNCACHE TABLE [IF EXISTS] name
//! DROP TABLE [IF EXISTS] name
//! SHOW TABLES
//! SHOW EXECUTORS
//! ```
//!
//! Every `CREATE TABLE` makes an in-memory distributed table; its rows are loaded by
//! the executors (the coordinator never holds them) and become visible only when the
//! whole load has been stored. Anything else goes to DataFusion unchanged; `INSERT
//! INTO` an in-memory table runs through the table's own distributed load.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference, exec_err, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::{GenericDialect, dialect_from_str};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use fletch_planner::FletchOptions;

use crate::catalog::{FletchTable, TableDefinition, TableLayout, as_fletch_table};
use crate::coordinator::Coordinator;

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

/// Which statement a text is, by its first words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CreateTable,
    CacheTable,
    UncacheTable,
    ShowExecutors,
    ShowTables,
    DropTable,
    /// `RESET fletch.<name>`, which DataFusion's `RESET` cannot do for an extension.
    ResetFletchSetting,
    /// Planned by DataFusion as it is.
    Other,
}

/// The first `n` tokens of a statement, unquoted words in upper case.
fn leading_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

fn kind(tokens: &[TokenWithSpan]) -> Kind {
    let words = leading_words(tokens, 4);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["CREATE", "TABLE", ..] | ["CREATE", "OR", "REPLACE", "TABLE"] => Kind::CreateTable,
        ["CACHE", "TABLE", ..] => Kind::CacheTable,
        ["UNCACHE", "TABLE", ..] => Kind::UncacheTable,
        ["SHOW", "EXECUTORS"] => Kind::ShowExecutors,
        ["SHOW", "TABLES"] => Kind::ShowTables,
        ["DROP", "TABLE", ..] => Kind::DropTable,
        ["RESET", "FLETCH", ".", ..] => Kind::ResetFletchSetting,
        _ => Kind::Other,
    }
}

/// What a statement Fletch runs itself does, for access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FletchStatementKind {
    /// `SHOW TABLES`, `SHOW EXECUTORS`.
    Show,
    /// Creates, caches, uncaches or drops a table.
    Change,
}

/// The kind of `statement` if Fletch runs it itself (including `DROP TABLE`, which
/// DataFusion plans but Fletch waits on).
pub(crate) fn fletch_statement_kind(statement: &str) -> Option<FletchStatementKind> {
    match kind(&tokenize(statement).ok()?) {
        Kind::ShowExecutors | Kind::ShowTables => Some(FletchStatementKind::Show),
        Kind::CreateTable | Kind::CacheTable | Kind::UncacheTable | Kind::DropTable => {
            Some(FletchStatementKind::Change)
        }
        Kind::ResetFletchSetting | Kind::Other => None,
    }
}

/// The table a `CREATE TABLE`, `CACHE TABLE` or `UNCACHE TABLE` statement writes, by
/// its name in the cluster's schema (for access checks); `None` for other statements.
pub(crate) fn fletch_statement_target(statement: &str) -> Option<String> {
    let tokens = tokenize(statement).ok()?;
    if !matches!(
        kind(&tokens),
        Kind::CreateTable | Kind::CacheTable | Kind::UncacheTable
    ) {
        return None;
    }
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
    while !parser.parse_keyword(Keyword::TABLE) {
        if parser.next_token().token == Token::EOF {
            return None;
        }
    }
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
        || parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let object = parser.parse_object_name(false).ok()?;
    table_name(&TableReference::from(object.to_string())).ok()
}

/// The table a `CREATE TABLE` or `CACHE TABLE` statement loads (for a shell to say
/// what it stored), by its name in the cluster's schema; `None` for other statements.
pub fn loaded_table(statement: &str) -> Option<String> {
    let tokens = tokenize(statement).ok()?;
    match kind(&tokens) {
        Kind::CreateTable | Kind::CacheTable => fletch_statement_target(statement),
        _ => None,
    }
}

/// Whether `statement` is one Fletch runs itself rather than DataFusion (so DataFusion
/// alone may not parse it).
pub(crate) fn is_fletch_statement(statement: &str) -> bool {
    tokenize(statement).is_ok_and(|tokens| {
        !matches!(
            kind(&tokens),
            Kind::Other | Kind::DropTable | Kind::ResetFletchSetting
        )
    })
}

/// Whether a statement changes the catalog (by its first word).
fn changes_catalog(tokens: &[TokenWithSpan]) -> bool {
    matches!(
        leading_words(tokens, 1).first().map(String::as_str),
        Some("CREATE" | "DROP" | "ALTER" | "CACHE" | "UNCACHE")
    )
}

/// Runs one SQL statement on a Fletch session. Statements that change the catalog
/// run one at a time across the cluster's sessions, so an `IF NOT EXISTS` never
/// fails because another session created the same name meanwhile.
pub async fn sql(ctx: &SessionContext, statement: &str) -> Result<DataFrame> {
    let tokens = tokenize(statement)?;
    if changes_catalog(&tokens)
        && let Ok(coordinator) = coordinator(ctx)
    {
        let _change = coordinator.catalog_change().await;
        return run(ctx, statement, tokens).await;
    }
    run(ctx, statement, tokens).await
}

async fn run(
    ctx: &SessionContext,
    statement: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<DataFrame> {
    match kind(&tokens) {
        Kind::CreateTable => create_table(ctx, statement, tokens).await,
        Kind::CacheTable => cache_table(ctx, statement, tokens).await,
        Kind::UncacheTable => uncache_table(ctx, tokens).await,
        Kind::ShowExecutors => ctx.sql("SELECT * FROM fletch.executors ORDER BY url").await,
        Kind::ShowTables => {
            ctx.sql("SELECT * FROM fletch.tables ORDER BY table_name")
                .await
        }
        Kind::DropTable => {
            let result = ctx.sql(statement).await?;
            // The fragments are freed in the background; the statement ends when they are.
            coordinator(ctx)?.wait_for_releases().await;
            Ok(result)
        }
        Kind::ResetFletchSetting => reset_fletch_setting(ctx, &tokens),
        Kind::Other => ctx.sql(statement).await,
    }
}

/// `RESET fletch.<name>`: the setting goes back to its default in this session.
fn reset_fletch_setting(ctx: &SessionContext, tokens: &[TokenWithSpan]) -> Result<DataFrame> {
    let name: String = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
        .skip(3)
        .map(|t| t.token.to_string())
        .collect();
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
        options.reset(&name)?;
    }
    empty(ctx)
}

fn coordinator(ctx: &SessionContext) -> Result<Arc<Coordinator>> {
    ctx.state()
        .config()
        .get_extension::<Coordinator>()
        .ok_or_else(|| DataFusionError::Plan("not a Fletch session (no coordinator)".into()))
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

fn parse_error(e: ParserError) -> DataFusionError {
    DataFusionError::SQL(Box::new(e), None)
}

/// The layout clauses of `CREATE TABLE` and `CACHE TABLE`.
#[derive(Debug, Default)]
struct LayoutClauses {
    hash_keys: Vec<String>,
    fragments: Option<usize>,
    replicas: Option<usize>,
}

fn next_word_is(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

fn expect_word(parser: &mut Parser, word: &str) -> Result<()> {
    if next_word_is(parser, word) {
        parser.next_token();
        Ok(())
    } else {
        plan_err!("expected {word}, found {}", parser.peek_token().token)
    }
}

fn parse_layout(parser: &mut Parser) -> Result<LayoutClauses> {
    let mut clauses = LayoutClauses::default();
    if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        if next_word_is(parser, "HASH") {
            parser.next_token();
            let columns = parser
                .parse_parenthesized_column_list(
                    datafusion::sql::sqlparser::parser::IsOptional::Mandatory,
                    false,
                )
                .map_err(parse_error)?;
            clauses.hash_keys = columns.into_iter().map(|c| c.value).collect();
        } else if next_word_is(parser, "ROUND") {
            parser.next_token();
            expect_word(parser, "ROBIN")?;
        } else {
            return plan_err!(
                "expected HASH (columns) or ROUND ROBIN after PARTITION BY, found {}",
                parser.peek_token().token
            );
        }
    }
    if parser.parse_keyword(Keyword::INTO) {
        let n = parser.parse_literal_uint().map_err(parse_error)?;
        expect_word(parser, "FRAGMENTS")?;
        clauses.fragments = Some(positive(n, "FRAGMENTS")?);
    }
    if next_word_is(parser, "REPLICAS") {
        parser.next_token();
        let k = parser.parse_literal_uint().map_err(parse_error)?;
        clauses.replicas = Some(positive(k, "REPLICAS")?);
    }
    Ok(clauses)
}

fn positive(n: u64, what: &str) -> Result<usize> {
    match usize::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => plan_err!("{what} must be a positive number, got {n}"),
    }
}

/// The text of `statement` without the tokens in `skip` (token indices).
fn without(statement: &str, tokens: &[TokenWithSpan], skip: std::ops::Range<usize>) -> String {
    let at = |i: usize| {
        tokens
            .get(i)
            .map_or(statement.len(), |t| offset(statement, t.span.start))
    };
    let (cut_start, cut_end) = (at(skip.start), at(skip.end));
    format!("{} {}", &statement[..cut_start], &statement[cut_end..])
}

/// `CREATE TABLE` without Fletch's layout clauses (for DataFusion to plan), and them.
/// Column types are parsed in the session's dialect (`struct(a int)` is DuckDB's).
fn parse_create_table(
    ctx: &SessionContext,
    statement: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<(String, LayoutClauses)> {
    let configured = ctx.state().config().options().sql_parser.dialect;
    let Some(dialect) = dialect_from_str(configured) else {
        return plan_err!("unsupported SQL dialect: {configured}");
    };
    let mut parser = Parser::new(dialect.as_ref()).with_tokens_with_locations(tokens.clone());
    parser
        .expect_keyword(Keyword::CREATE)
        .map_err(parse_error)?;
    let _ = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    parser.parse_object_name(false).map_err(parse_error)?;
    if parser.peek_token().token == Token::LParen {
        parser.parse_columns().map_err(parse_error)?;
    }
    let clauses_start = parser.index();
    let clauses = parse_layout(&mut parser)?;
    let clauses_end = parser.index();
    let plain = without(statement, &tokens, clauses_start..clauses_end);
    Ok((plain, clauses))
}

async fn create_table(
    ctx: &SessionContext,
    statement: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<DataFrame> {
    let (plain, clauses) = parse_create_table(ctx, statement, tokens)?;
    let plan = ctx.state().create_logical_plan(&plain).await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) = plan else {
        return plan_err!("expected a CREATE TABLE statement: {statement}");
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
    let table = load_table(ctx, &coordinator, &name, input, clauses, None, definition).await?;
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

/// What `CACHE TABLE` names: the table, its layout, and the query after `AS`, if any.
fn parse_cache_table(
    statement: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<(String, LayoutClauses, Option<String>)> {
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens.clone());
    expect_word(&mut parser, "CACHE")?;
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let object = parser.parse_object_name(false).map_err(parse_error)?;
    let name = table_name(&TableReference::from(object.to_string()))?;
    let clauses = parse_layout(&mut parser)?;
    if parser.parse_keyword(Keyword::AS) {
        let query_start = parser.index();
        let query = without(statement, &tokens, 0..query_start);
        return Ok((name, clauses, Some(query)));
    }
    if parser.peek_token().token != Token::EOF {
        return plan_err!(
            "unexpected {} in CACHE TABLE {name}",
            parser.peek_token().token
        );
    }
    Ok((name, clauses, None))
}

async fn cache_table(
    ctx: &SessionContext,
    statement: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<DataFrame> {
    let (name, clauses, query) = parse_cache_table(statement, tokens)?;
    let coordinator = coordinator(ctx)?;
    let (input, source) = match query {
        Some(query) => (ctx.state().create_logical_plan(&query).await?, None),
        None => {
            let Some(source) = coordinator.tables().get(&name) else {
                return plan_err!("table '{name}' not found");
            };
            if as_fletch_table(&source).is_some() {
                return plan_err!("table '{name}' is already in memory");
            }
            let input = ctx.table(name.as_str()).await?.into_unoptimized_plan();
            (input, Some(source))
        }
    };
    let definition = TableDefinition::default();
    let table = load_table(ctx, &coordinator, &name, input, clauses, source, definition).await?;
    register(ctx, &coordinator, &name, Arc::new(table)).await
}

/// The table `UNCACHE TABLE` names, and whether it said `IF EXISTS`.
fn parse_uncache_table(tokens: Vec<TokenWithSpan>) -> Result<(String, bool)> {
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
    expect_word(&mut parser, "UNCACHE")?;
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let object = parser.parse_object_name(false).map_err(parse_error)?;
    Ok((
        table_name(&TableReference::from(object.to_string()))?,
        if_exists,
    ))
}

async fn uncache_table(ctx: &SessionContext, tokens: Vec<TokenWithSpan>) -> Result<DataFrame> {
    let (name, if_exists) = parse_uncache_table(tokens)?;
    let coordinator = coordinator(ctx)?;
    let table = coordinator.tables().get(&name);
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
        (Some(_), Some(source)) => register(ctx, &coordinator, &name, source).await,
    }
}

/// In-memory tables live in the cluster's default schema.
fn table_name(reference: &TableReference) -> Result<String> {
    match reference.schema() {
        None | Some("public") => Ok(reference.table().to_string()),
        Some(other) => {
            plan_err!("in-memory tables live in the default schema, not in {other}: {reference}")
        }
    }
}

fn empty(ctx: &SessionContext) -> Result<DataFrame> {
    let plan = LogicalPlanBuilder::empty(false).build()?;
    Ok(DataFrame::new(ctx.state(), plan))
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
