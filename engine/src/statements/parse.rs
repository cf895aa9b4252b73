//! [`FletchStatement`]: one statement parsed once, in the session's dialect, into what
//! Fletch runs itself (with its own clauses as values, not text) or DataFusion's AST.
//! Nothing downstream looks at the SQL text again.
//!
//! ```text
//! CREATE [OR REPLACE] TABLE [IF NOT EXISTS] name [(columns)]
//!     [PARTITION BY HASH (column, ...) | PARTITION BY ROUND ROBIN]
//!     [INTO n FRAGMENTS] [REPLICAS k] [AS query]
//! CACHE TABLE name [PARTITION BY ...] [INTO n FRAGMENTS] [REPLICAS k] [AS query]
//! UNCACHE TABLE [IF EXISTS] name
//! SHOW TABLES | SHOW EXECUTORS
//! RESET fletch.<name>
//! ```

use datafusion::common::{DataFusionError, Result, TableReference, plan_err};
use datafusion::execution::SessionState;
use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use datafusion::sql::sqlparser::ast::{self, ObjectType};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, dialect_from_str};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{IsOptional, Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// A statement as Fletch runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FletchStatement {
    /// `CREATE TABLE`: DataFusion's statement without Fletch's clauses, and them.
    CreateTable {
        create: Box<ast::Statement>,
        /// The name in the cluster's schema.
        name: String,
        layout: LayoutClauses,
    },
    CacheTable {
        name: String,
        layout: LayoutClauses,
        query: Option<Box<ast::Query>>,
    },
    UncacheTable {
        name: String,
        if_exists: bool,
    },
    ShowTables,
    ShowExecutors,
    /// `RESET fletch.<name>` (the name after `fletch.`), which DataFusion's `RESET`
    /// cannot do for an extension.
    ResetFletchSetting(String),
    /// Anything else, planned by DataFusion as it is.
    DataFusion(DFStatement),
}

/// The layout clauses of `CREATE TABLE` and `CACHE TABLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayoutClauses {
    pub(crate) hash_keys: Vec<String>,
    pub(crate) fragments: Option<usize>,
    pub(crate) replicas: Option<usize>,
}

/// What a statement Fletch runs itself does, for access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FletchStatementKind {
    /// `SHOW TABLES`, `SHOW EXECUTORS`.
    Show,
    /// Creates, caches, uncaches or drops a table.
    Change,
}

impl FletchStatement {
    /// Parses the one statement in `sql` in `state`'s dialect.
    pub(crate) fn parse(state: &SessionState, sql: &str) -> Result<Self> {
        let options = &state.config().options().sql_parser;
        let configured = options.dialect;
        let Some(dialect) = dialect_from_str(configured) else {
            return plan_err!("unsupported SQL dialect: {configured}");
        };
        Self::parse_with(sql, dialect.as_ref(), options.recursion_limit.get())
    }

    /// Parses with the generic dialect: for callers without a session.
    pub(crate) fn parse_generic(sql: &str) -> Result<Self> {
        Self::parse_with(sql, &GenericDialect {}, 50)
    }

    fn parse_with(sql: &str, dialect: &dyn Dialect, recursion_limit: usize) -> Result<Self> {
        let mut df = DFParserBuilder::new(sql)
            .with_dialect(dialect)
            .with_recursion_limit(recursion_limit)
            .build()?;
        let words = leading_words(&df.parser, 4);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let parser = &mut df.parser;
        let statement = match words.as_slice() {
            ["CREATE", "TABLE", ..] | ["CREATE", "OR", "REPLACE", "TABLE"] => {
                parse_create_table(parser)?
            }
            ["CACHE", "TABLE", ..] => parse_cache_table(parser)?,
            ["UNCACHE", "TABLE", ..] => parse_uncache_table(parser)?,
            ["SHOW", "EXECUTORS", "", ..] => skip_words(parser, 2, Self::ShowExecutors),
            ["SHOW", "TABLES", "", ..] => skip_words(parser, 2, Self::ShowTables),
            ["RESET", "FLETCH", ".", ..] => parse_reset(parser),
            _ => return Self::datafusion(df),
        };
        expect_end(parser)?;
        Ok(statement)
    }

    /// The one DataFusion statement `df` holds, as DataFusion's own `SessionContext::sql`
    /// would read it.
    fn datafusion(mut df: DFParser) -> Result<Self> {
        let mut statements = df.parse_statements()?;
        if statements.len() > 1 {
            return plan_err!("one statement at a time, found {}", statements.len());
        }
        let statement = statements.pop_front().ok_or_else(|| {
            DataFusionError::Plan("No SQL statements were provided in the query string".into())
        })?;
        Ok(Self::DataFusion(statement))
    }

    /// What the statement does, if Fletch runs it itself (`DROP TABLE` too, which
    /// DataFusion plans but Fletch waits on).
    pub(crate) fn kind(&self) -> Option<FletchStatementKind> {
        match self {
            Self::ShowTables | Self::ShowExecutors => Some(FletchStatementKind::Show),
            Self::CreateTable { .. } | Self::CacheTable { .. } | Self::UncacheTable { .. } => {
                Some(FletchStatementKind::Change)
            }
            _ if self.drops_table() => Some(FletchStatementKind::Change),
            Self::ResetFletchSetting(_) | Self::DataFusion(_) => None,
        }
    }

    /// Whether Fletch runs it rather than DataFusion (so DataFusion alone may not
    /// parse it).
    pub(crate) fn is_fletch_own(&self) -> bool {
        !matches!(self, Self::ResetFletchSetting(_) | Self::DataFusion(_))
    }

    /// The table a `CREATE TABLE`, `CACHE TABLE` or `UNCACHE TABLE` writes, by its name
    /// in the cluster's schema.
    pub(crate) fn target(&self) -> Option<&str> {
        match self {
            Self::CreateTable { name, .. }
            | Self::CacheTable { name, .. }
            | Self::UncacheTable { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The table a `CREATE TABLE` or `CACHE TABLE` loads.
    pub(crate) fn loads(&self) -> Option<&str> {
        match self {
            Self::CreateTable { name, .. } | Self::CacheTable { name, .. } => Some(name),
            _ => None,
        }
    }

    pub(crate) fn drops_table(&self) -> bool {
        matches!(
            self,
            Self::DataFusion(DFStatement::Statement(s))
                if matches!(s.as_ref(), ast::Statement::Drop { object_type: ObjectType::Table, .. })
        )
    }

    /// Whether it changes the catalog: such statements run one at a time across the
    /// cluster's sessions.
    pub(crate) fn changes_catalog(&self) -> bool {
        match self {
            Self::CreateTable { .. } | Self::CacheTable { .. } | Self::UncacheTable { .. } => true,
            Self::DataFusion(DFStatement::CreateExternalTable(_)) => true,
            Self::DataFusion(DFStatement::Statement(s)) => matches!(
                s.as_ref(),
                ast::Statement::CreateTable(_)
                    | ast::Statement::CreateView(_)
                    | ast::Statement::CreateIndex(_)
                    | ast::Statement::CreateSchema { .. }
                    | ast::Statement::CreateDatabase { .. }
                    | ast::Statement::CreateFunction(_)
                    | ast::Statement::AlterTable(_)
                    | ast::Statement::AlterView { .. }
                    | ast::Statement::Drop { .. }
                    | ast::Statement::DropFunction(_)
            ),
            _ => false,
        }
    }
}

/// The next `n` tokens, unquoted words in upper case; "" past the statement's end.
fn leading_words(parser: &Parser, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match &parser.peek_nth_token_ref(i).token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            Token::EOF | Token::SemiColon => String::new(),
            other => other.to_string(),
        })
        .collect()
}

/// `statement`, once its `n` words are read.
fn skip_words(parser: &mut Parser, n: usize, statement: FletchStatement) -> FletchStatement {
    for _ in 0..n {
        parser.next_token();
    }
    statement
}

fn parse_error(e: ParserError) -> DataFusionError {
    DataFusionError::SQL(Box::new(e), None)
}

/// Refuses anything after the statement but semicolons.
fn expect_end(parser: &mut Parser) -> Result<()> {
    while parser.consume_token(&Token::SemiColon) {}
    match &parser.peek_token_ref().token {
        Token::EOF => Ok(()),
        other => plan_err!("unexpected {other} after the statement"),
    }
}

fn next_word_is(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token_ref().token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

fn expect_word(parser: &mut Parser, word: &str) -> Result<()> {
    if next_word_is(parser, word) {
        parser.next_token();
        Ok(())
    } else {
        plan_err!("expected {word}, found {}", parser.peek_token_ref().token)
    }
}

fn parse_layout(parser: &mut Parser) -> Result<LayoutClauses> {
    let mut clauses = LayoutClauses::default();
    if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        if next_word_is(parser, "HASH") {
            parser.next_token();
            let columns = parser
                .parse_parenthesized_column_list(IsOptional::Mandatory, false)
                .map_err(parse_error)?;
            clauses.hash_keys = columns.into_iter().map(|c| c.value).collect();
        } else if next_word_is(parser, "ROUND") {
            parser.next_token();
            expect_word(parser, "ROBIN")?;
        } else {
            return plan_err!(
                "expected HASH (columns) or ROUND ROBIN after PARTITION BY, found {}",
                parser.peek_token_ref().token
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

/// In-memory tables live in the cluster's default schema.
pub(crate) fn table_name(reference: &TableReference) -> Result<String> {
    match reference.schema() {
        None | Some("public") => Ok(reference.table().to_string()),
        Some(other) => {
            plan_err!("in-memory tables live in the default schema, not in {other}: {reference}")
        }
    }
}

fn cluster_name(object: &ast::ObjectName) -> Result<String> {
    table_name(&TableReference::from(object.to_string()))
}

/// `CREATE TABLE`, its layout clauses taken out: DataFusion plans the rest as it plans
/// any `CREATE TABLE` (columns and their types, constraints, defaults, `AS` query).
fn parse_create_table(parser: &mut Parser) -> Result<FletchStatement> {
    parser
        .expect_keyword(Keyword::CREATE)
        .map_err(parse_error)?;
    let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let object = parser.parse_object_name(false).map_err(parse_error)?;
    let (columns, constraints) = if parser.peek_token_ref().token == Token::LParen {
        parser.parse_columns().map_err(parse_error)?
    } else {
        (Vec::new(), Vec::new())
    };
    let layout = parse_layout(parser)?;
    let query = if parser.parse_keyword(Keyword::AS) {
        Some(parser.parse_query().map_err(parse_error)?)
    } else {
        None
    };
    let name = cluster_name(&object)?;
    let create = CreateTableBuilder::new(object)
        .or_replace(or_replace)
        .if_not_exists(if_not_exists)
        .columns(columns)
        .constraints(constraints)
        .query(query)
        .build();
    Ok(FletchStatement::CreateTable {
        create: Box::new(ast::Statement::CreateTable(create)),
        name,
        layout,
    })
}

fn parse_cache_table(parser: &mut Parser) -> Result<FletchStatement> {
    expect_word(parser, "CACHE")?;
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let object = parser.parse_object_name(false).map_err(parse_error)?;
    let name = cluster_name(&object)?;
    let layout = parse_layout(parser)?;
    let query = if parser.parse_keyword(Keyword::AS) {
        Some(parser.parse_query().map_err(parse_error)?)
    } else {
        None
    };
    if !matches!(parser.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        return plan_err!(
            "unexpected {} in CACHE TABLE {name}",
            parser.peek_token_ref().token
        );
    }
    Ok(FletchStatement::CacheTable {
        name,
        layout,
        query,
    })
}

fn parse_uncache_table(parser: &mut Parser) -> Result<FletchStatement> {
    expect_word(parser, "UNCACHE")?;
    parser.expect_keyword(Keyword::TABLE).map_err(parse_error)?;
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let object = parser.parse_object_name(false).map_err(parse_error)?;
    Ok(FletchStatement::UncacheTable {
        name: cluster_name(&object)?,
        if_exists,
    })
}

/// `RESET fletch.<name>`: the setting's name after `fletch.`.
fn parse_reset(parser: &mut Parser) -> FletchStatement {
    // RESET, fletch and the dot.
    for _ in 0..3 {
        parser.next_token();
    }
    let mut name = String::new();
    while !matches!(parser.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        name.push_str(&parser.next_token().token.to_string());
    }
    FletchStatement::ResetFletchSetting(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> FletchStatement {
        FletchStatement::parse_generic(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn refusal(sql: &str) -> String {
        FletchStatement::parse_generic(sql)
            .expect_err(sql)
            .to_string()
    }

    #[test]
    fn create_table_keeps_its_clauses_as_values_and_the_rest_as_datafusion_ast() {
        let FletchStatement::CreateTable {
            create,
            name,
            layout,
        } = parse(
            "CREATE OR REPLACE TABLE Public.T (k INT PRIMARY KEY, v TEXT) \
             PARTITION BY HASH (k) INTO 8 FRAGMENTS REPLICAS 2 AS SELECT 1, 'a';",
        )
        else {
            panic!("a CREATE TABLE");
        };
        assert_eq!(name, "t", "folded to lower case, in the default schema");
        assert_eq!(
            layout,
            LayoutClauses {
                hash_keys: vec!["k".into()],
                fragments: Some(8),
                replicas: Some(2),
            }
        );
        assert_eq!(
            create.to_string(),
            "CREATE OR REPLACE TABLE Public.T (k INT PRIMARY KEY, v TEXT) AS SELECT 1, 'a'"
        );
        let plain = parse("create table if not exists t as values (1)");
        assert_eq!(plain.target(), Some("t"));
        assert_eq!(plain.kind(), Some(FletchStatementKind::Change));
        assert!(plain.changes_catalog());
    }

    #[test]
    fn fletch_statements_are_told_apart_from_datafusion_ones() {
        let cache = parse("CACHE TABLE lineitem PARTITION BY ROUND ROBIN AS SELECT 1");
        assert_eq!(cache.loads(), Some("lineitem"));
        assert!(matches!(
            cache,
            FletchStatement::CacheTable { query: Some(_), .. }
        ));
        assert_eq!(
            parse("UNCACHE TABLE IF EXISTS x"),
            FletchStatement::UncacheTable {
                name: "x".into(),
                if_exists: true
            }
        );
        assert_eq!(parse("show executors;"), FletchStatement::ShowExecutors);
        assert_eq!(parse("SHOW TABLES"), FletchStatement::ShowTables);
        assert_eq!(
            parse("RESET fletch.result_buffer"),
            FletchStatement::ResetFletchSetting("result_buffer".into())
        );
        let drop = parse("DROP TABLE IF EXISTS t");
        assert!(drop.drops_table() && drop.changes_catalog());
        assert_eq!(drop.kind(), Some(FletchStatementKind::Change));
        assert!(!drop.is_fletch_own());
        let query = parse("SELECT 'CACHE TABLE x' AS text");
        assert!(matches!(query, FletchStatement::DataFusion(_)));
        assert_eq!(query.kind(), None);
        assert!(!query.changes_catalog());
        assert!(matches!(
            parse("SHOW TABLES FROM information_schema"),
            FletchStatement::DataFusion(_)
        ));
    }

    #[test]
    fn bad_statements_are_refused_with_what_was_wrong() {
        let err = refusal("CREATE TABLE t PARTITION BY RANGE (k) AS SELECT 1");
        assert!(err.contains("HASH (columns) or ROUND ROBIN"), "{err}");
        let err = refusal("CREATE TABLE t INTO 0 FRAGMENTS AS SELECT 1");
        assert!(err.contains("FRAGMENTS must be a positive number"), "{err}");
        let err = refusal("CREATE TABLE t INTO 4 PIECES AS SELECT 1");
        assert!(err.contains("expected FRAGMENTS"), "{err}");
        let err = refusal("CREATE TABLE t AS SELECT 1 garbage here");
        assert!(err.contains("unexpected"), "{err}");
        let err = refusal("CACHE TABLE t REPLICAS 2 nonsense");
        assert!(
            err.contains("unexpected nonsense in CACHE TABLE t"),
            "{err}"
        );
        let err = refusal("CREATE TABLE other.t AS SELECT 1");
        assert!(err.contains("default schema"), "{err}");
        let err = refusal("SELECT 1; SELECT 2");
        assert!(err.contains("one statement at a time"), "{err}");
    }
}
