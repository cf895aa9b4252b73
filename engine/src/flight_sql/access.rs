//! What a signed-in user's statement needs before it runs: the privilege its kind asks
//! for (read, write or admin), for statements that name files, that every path lies
//! under an allowed location, and for statements that change a table, which table
//! (a writer may change only tables it created: [`Owners`]). Statements are classified
//! from their parse tree, with the same dialect the session will parse them with; a
//! kind not listed here needs admin.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use parking_lot::Mutex;

use datafusion::common::TableReference;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, Set, Statement, TableObject};
use tonic::Status;

use super::users::{Role, User};
use crate::statements::{FletchStatement, FletchStatementKind, parse_statement};

/// Where remote users may read and write files (`--allow-location`).
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// Directories a statement may read files under (their canonical paths).
    pub read: Vec<PathBuf>,
    /// Directories a statement may write files under.
    pub write: Vec<PathBuf>,
}

impl Locations {
    /// Files under `prefixes` may be read and written; each must exist.
    pub fn allow(prefixes: &[PathBuf]) -> Result<Self, String> {
        let canonical = prefixes
            .iter()
            .map(|p| {
                std::fs::canonicalize(p)
                    .map_err(|e| format!("allowed location {}: {e}", p.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            read: canonical.clone(),
            write: canonical,
        })
    }
}

/// What a statement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Privilege {
    Read,
    Write,
    Admin,
}

impl Privilege {
    fn role(self) -> Role {
        match self {
            Self::Read => Role::Reader,
            Self::Write => Role::Writer,
            Self::Admin => Role::Admin,
        }
    }
}

/// A statement's needs: its privilege, what it does (for the refusal), the locations
/// it reads and writes, and the tables it changes.
struct Needs {
    privilege: Privilege,
    what: String,
    reads: Vec<String>,
    writes: Vec<String>,
    tables: Vec<TableChange>,
}

impl Needs {
    fn new(privilege: Privilege, what: impl Into<String>) -> Self {
        Self {
            privilege,
            what: what.into(),
            reads: vec![],
            writes: vec![],
            tables: vec![],
        }
    }

    fn changing(mut self, name: String, change: Change) -> Self {
        self.tables.push(TableChange { name, change });
        self
    }
}

/// A table a statement creates, changes or drops, by its name in the cluster schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableChange {
    pub(crate) name: String,
    pub(crate) change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Creates it, or replaces (or caches, or uncaches) it if it exists.
    Create,
    /// Changes its rows.
    Rows,
    Drop,
}

/// Who created each table through the endpoint. A writer may change or drop only
/// tables it created; a table nobody created here (an admin's, or one from before)
/// only an admin may.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    owners: Mutex<HashMap<String, String>>,
}

impl Owners {
    /// Refuses `changes` by `user` where a table exists (per `exists`) and the user is a
    /// writer who did not create it.
    pub(crate) fn check(
        &self,
        user: &User,
        changes: &[TableChange],
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), Status> {
        if user.role == Role::Admin {
            return Ok(());
        }
        let owners = self.owners.lock();
        for table in changes.iter().filter(|t| exists(&t.name)) {
            let owner = owners.get(&table.name);
            if owner != Some(&user.name) {
                return Err(Status::permission_denied(format!(
                    "user {:?} (role {}) may not change table {:?}: it was created by {}; \
                     a writer changes only its own tables, an admin any",
                    user.name,
                    user.role,
                    table.name,
                    owner.map_or("no writer".to_string(), |o| format!("{o:?}"))
                )));
            }
        }
        Ok(())
    }

    /// Records what `changes` did once they succeeded: `user` owns what it created.
    pub(crate) fn record(&self, user: &User, changes: &[TableChange]) {
        let mut owners = self.owners.lock();
        for table in changes {
            match table.change {
                Change::Create => {
                    owners
                        .entry(table.name.clone())
                        .or_insert_with(|| user.name.clone());
                }
                Change::Drop => {
                    owners.remove(&table.name);
                }
                Change::Rows => {}
            }
        }
    }
}

/// Refuses `sql` for `user` unless the user's role allows it and every location it
/// names is allowed (`locations` `None` allows every location); returns the tables it
/// changes, for [`Owners`].
pub(crate) fn authorize(
    user: &User,
    locations: Option<&Locations>,
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<TableChange>, Status> {
    let needs = needs(ctx, sql)?;
    if user.role < needs.privilege.role() {
        return Err(Status::permission_denied(format!(
            "user {:?} has role {}, which may not {}: that needs role {} or above",
            user.name,
            user.role,
            needs.what,
            needs.privilege.role()
        )));
    }
    if let Some(locations) = locations {
        for location in &needs.reads {
            check_location(location, &locations.read, "read")?;
        }
        for location in &needs.writes {
            check_location(location, &locations.write, "write")?;
        }
    }
    Ok(needs.tables)
}

fn needs(ctx: &SessionContext, sql: &str) -> Result<Needs, Status> {
    // A statement that does not parse changes nothing; running it fails with the
    // parser's own message.
    let Ok(statement) = parse_statement(ctx, sql) else {
        return Ok(Needs::new(Privilege::Read, "run it"));
    };
    if statement.kind() == Some(FletchStatementKind::Show) {
        return Ok(Needs::new(Privilege::Read, "list tables or executors"));
    }
    if let Some(name) = statement.target() {
        return Ok(
            Needs::new(Privilege::Write, "create, cache, uncache or drop tables")
                .changing(name.to_string(), Change::Create),
        );
    }
    Ok(match &statement {
        // DROP TABLE too: DataFusion's own statement, whose AST names the tables.
        FletchStatement::DataFusion(statement) => statement_needs(statement),
        FletchStatement::ResetFletchSetting(name) => setting_needs(&format!("fletch.{name}")),
        // SHOW and the table statements were read above.
        _ => Needs::new(Privilege::Admin, "run this kind of statement"),
    })
}

/// The name a table has in the cluster schema (unquoted parts folded to lower case,
/// as DataFusion does).
fn cluster_name(name: &ObjectName) -> String {
    TableReference::from(name.to_string()).table().to_string()
}

fn statement_needs(statement: &DFStatement) -> Needs {
    match statement {
        DFStatement::Statement(statement) => sql_statement_needs(statement),
        DFStatement::CreateExternalTable(create) => Needs {
            reads: create.locations.clone(),
            ..Needs::new(Privilege::Write, "create tables")
        }
        .changing(cluster_name(&create.name), Change::Create),
        DFStatement::CopyTo(copy) => Needs {
            writes: vec![copy.target.clone()],
            ..Needs::new(Privilege::Write, "write files (COPY)")
        },
        DFStatement::Explain(explain) => statement_needs(&explain.statement),
        DFStatement::Reset(reset) => {
            let datafusion::sql::parser::ResetStatement::Variable(name) = reset;
            setting_needs(&name.to_string())
        }
    }
}

fn sql_statement_needs(statement: &Statement) -> Needs {
    match statement {
        Statement::Query(_) => Needs::new(Privilege::Read, "query"),
        Statement::Explain { statement, .. } => sql_statement_needs(statement),
        Statement::Prepare { statement, .. } => sql_statement_needs(statement),
        // Runs what the same session (the same user) prepared, and was checked then.
        Statement::Execute { .. } | Statement::Deallocate { .. } => {
            Needs::new(Privilege::Read, "run prepared statements")
        }
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowDatabases { .. } => Needs::new(Privilege::Read, "describe"),
        Statement::Set(set) => set_needs(set),
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => Needs::new(Privilege::Write, "insert rows")
                .changing(cluster_name(name), Change::Rows),
            // A table function: nothing a writer owns.
            _ => Needs::new(Privilege::Admin, "insert into a table function"),
        },
        Statement::CreateTable(create) => Needs::new(Privilege::Write, "create tables")
            .changing(cluster_name(&create.name), Change::Create),
        Statement::CreateView(view) => Needs::new(Privilege::Write, "create views")
            .changing(cluster_name(&view.name), Change::Create),
        Statement::Drop { names, .. } => names.iter().fold(
            Needs::new(Privilege::Write, "drop tables or views"),
            |needs, name| needs.changing(cluster_name(name), Change::Drop),
        ),
        _ => Needs::new(Privilege::Admin, "run this kind of statement"),
    }
}

fn set_needs(set: &Set) -> Needs {
    match set {
        Set::SingleAssignment { variable, .. } => setting_needs(&variable.to_string()),
        Set::SetTimeZone { .. } => Needs::new(Privilege::Read, "change session settings"),
        _ => Needs::new(Privilege::Admin, "run this kind of SET"),
    }
}

/// Settings that change more than the session: every executor's memory, and the
/// coordinator's runtime.
fn setting_needs(name: &str) -> Needs {
    let name = name.to_ascii_lowercase();
    if name == "fletch.executor_memory"
        || name == "fletch.query_history"
        || name.starts_with("datafusion.runtime.")
    {
        Needs::new(
            Privilege::Admin,
            format!("set {name}, which changes the whole cluster"),
        )
    } else {
        Needs::new(Privilege::Read, "change session settings")
    }
}

/// The local path DataFusion opens for `location`. It is read with DataFusion's own
/// parser, so `%2e%2e` or `%2F` in a `file://` URL, and `..` in a path, mean here what
/// they mean when the table is scanned or the file written; a glob only filters files
/// under the path it follows, so it is left off.
fn opened_path(location: &str) -> Result<PathBuf, String> {
    if !location.contains("://") && !Path::new(location).is_absolute() {
        return Err("a relative path (give an absolute one)".to_string());
    }
    let url = ListingTableUrl::parse(location).map_err(|e| format!("not a location: {e}"))?;
    if url.scheme() != "file" {
        return Err("only local paths may be named".to_string());
    }
    url.get_url()
        .to_file_path()
        .map_err(|()| "not a local path".to_string())
}

/// Where `path` really is: symlinks resolved and `..` taken out, as far as the
/// path exists; a part that does not exist yet may not climb (`..`).
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut missing: Vec<PathBuf> = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(&existing) {
            if missing.iter().any(|part| part.as_os_str() == "..") {
                return Err("'..' after a part that does not exist".to_string());
            }
            return Ok(missing
                .iter()
                .rev()
                .fold(canonical, |path, part| path.join(part)));
        }
        let last = match existing.components().next_back() {
            Some(Component::Normal(part)) => PathBuf::from(part),
            Some(Component::ParentDir) => PathBuf::from(".."),
            _ => return Err("no part of it exists".to_string()),
        };
        missing.push(last);
        existing.pop();
    }
}

fn check_location(location: &str, allowed: &[PathBuf], action: &str) -> Result<(), Status> {
    let refuse = |why: String| {
        Status::permission_denied(format!(
            "may not {action} {location:?}: {why}; locations allowed to {action}: {}",
            if allowed.is_empty() {
                "none (the server's --allow-location)".to_string()
            } else {
                allowed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    };
    let resolved = opened_path(location)
        .and_then(|path| resolve(&path))
        .map_err(refuse)?;
    if allowed.iter().any(|prefix| resolved.starts_with(prefix)) {
        Ok(())
    } else {
        Err(refuse(format!(
            "it resolves to {}, outside every allowed location",
            resolved.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role) -> User {
        User {
            name: "u".into(),
            role,
        }
    }

    fn check(role: Role, locations: Option<&Locations>, sql: &str) -> Result<(), String> {
        let ctx = SessionContext::new();
        authorize(&user(role), locations, &ctx, sql)
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }

    #[test]
    fn roles_allow_what_they_say() {
        let reads = [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SHOW EXECUTORS",
            "SET datafusion.execution.batch_size = 1024",
            "SET fletch.result_endpoints = 'executors'",
            "SHOW ALL",
        ];
        let writes = [
            "CREATE TABLE t AS SELECT 1",
            "CREATE TABLE t (a INT) PARTITION BY HASH (a)",
            "CACHE TABLE t",
            "UNCACHE TABLE t",
            "DROP TABLE t",
            "INSERT INTO t VALUES (1)",
            "CREATE VIEW v AS SELECT 1",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        ];
        let admin = [
            "SET fletch.executor_memory = '1'",
            "SET FLETCH.EXECUTOR_MEMORY = '1'",
            "RESET fletch.executor_memory",
            "SET fletch.query_history = 5",
            "SET datafusion.runtime.memory_limit = '1G'",
        ];
        for sql in reads {
            assert!(check(Role::Reader, None, sql).is_ok(), "{sql}");
        }
        for sql in writes {
            let err = check(Role::Reader, None, sql).expect_err(sql);
            assert!(
                err.contains("role reader") && err.contains("writer"),
                "{err}"
            );
            assert!(check(Role::Writer, None, sql).is_ok(), "{sql}");
        }
        for sql in admin {
            let err = check(Role::Writer, None, sql).expect_err(sql);
            assert!(
                err.contains("role writer") && err.contains("admin"),
                "{err}"
            );
            assert!(check(Role::Admin, None, sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn files_only_under_allowed_locations_and_no_escape() {
        let root = tempfile::tempdir().expect("dir");
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).expect("dir");
        std::fs::write(allowed.join("data.csv"), "a\n1\n").expect("file");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", allowed.join("etc")).expect("symlink");
        let locations = Locations::allow(std::slice::from_ref(&allowed)).expect("locations");
        let a = allowed.display();
        let ok = [
            format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{a}/data.csv'"),
            format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 'file://{a}/'"),
            format!("COPY (SELECT 1) TO '{a}/new/out.csv' STORED AS CSV"),
        ];
        for sql in &ok {
            assert!(check(Role::Writer, Some(&locations), sql).is_ok(), "{sql}");
        }
        let refused = [
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_string(),
            format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{a}/../../etc/passwd'"),
            format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{a}/etc/passwd'"),
            format!("COPY (SELECT 1) TO '{a}/new/../../../tmp/x.csv' STORED AS CSV"),
            "COPY (SELECT 1) TO '/tmp/fletch-escape.csv' STORED AS CSV".to_string(),
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 's3://bucket/x'".to_string(),
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 'relative.csv'".to_string(),
            "EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv' STORED AS CSV".to_string(),
            // URL parsers read `%2e%2e` as `..`: the path DataFusion opens escapes.
            format!(
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION \
                 'file://{a}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd'"
            ),
            format!("COPY (SELECT 1) TO 'file://{a}/new/%2E%2E/%2E%2E/x.csv' STORED AS CSV"),
            format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 'file://{a}/etc%2Fpasswd'"),
        ];
        for sql in &refused {
            let err = check(Role::Admin, Some(&locations), sql).expect_err(sql);
            assert!(err.contains("may not"), "{sql}: {err}");
        }
        let none = Locations::default();
        let err = check(Role::Admin, Some(&none), &ok[0]).expect_err("no locations");
        assert!(err.contains("none"), "{err}");
        assert!(check(Role::Admin, None, &refused[0]).is_ok());
    }

    #[test]
    fn writers_change_only_the_tables_they_created() {
        let ctx = SessionContext::new();
        let changes = |sql: &str| authorize(&user(Role::Admin), None, &ctx, sql).expect(sql);
        let table = |name: &str, change| TableChange {
            name: name.to_string(),
            change,
        };
        assert_eq!(
            changes("CREATE OR REPLACE TABLE \"Mixed\" PARTITION BY HASH (a) AS SELECT 1 AS a"),
            [table("Mixed", Change::Create)]
        );
        assert_eq!(changes("CACHE TABLE T"), [table("t", Change::Create)]);
        assert_eq!(
            changes("UNCACHE TABLE IF EXISTS public.t"),
            [table("t", Change::Create)]
        );
        assert_eq!(
            changes("INSERT INTO t VALUES (1)"),
            [table("t", Change::Rows)]
        );
        assert_eq!(
            changes("DROP TABLE IF EXISTS t"),
            [table("t", Change::Drop)]
        );
        assert_eq!(changes("DROP VIEW v"), [table("v", Change::Drop)]);
        assert_eq!(
            changes("CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/x.csv'"),
            [table("e", Change::Create)]
        );
        assert!(changes("SELECT 1").is_empty());
        // A table statement without a table does not parse: it changes nothing, and
        // running it fails with the parser's message.
        assert!(changes("CACHE TABLE").is_empty());
        assert!(!crate::statements::is_fletch_statement(&ctx, "CACHE TABLE"));

        let owners = Owners::default();
        let (wendy, walt, root) = (
            User {
                name: "wendy".into(),
                role: Role::Writer,
            },
            User {
                name: "walt".into(),
                role: Role::Writer,
            },
            user(Role::Admin),
        );
        let create = [table("t", Change::Create)];
        assert!(owners.check(&wendy, &create, |_| false).is_ok());
        owners.record(&wendy, &create);
        let insert = [table("t", Change::Rows)];
        assert!(owners.check(&wendy, &insert, |_| true).is_ok());
        let err = owners
            .check(&walt, &insert, |_| true)
            .expect_err("not walt's");
        assert!(err.message().contains("created by \"wendy\""), "{err}");
        assert!(owners.check(&root, &insert, |_| true).is_ok());
        // A table nobody created here is an admin's to change.
        let other = [table("tpch", Change::Drop)];
        let err = owners
            .check(&wendy, &other, |_| true)
            .expect_err("nobody's");
        assert!(err.message().contains("no writer"), "{err}");
        owners.record(&wendy, &[table("t", Change::Drop)]);
        assert!(owners.check(&walt, &create, |_| false).is_ok());
    }
}
