//! The cluster's catalog: [`ClusterSchema`], the tables every session of a cluster
//! sees (in-memory [`FletchTable`]s beside external tables and views), and the
//! `fletch` system schema describing them (`fletch.tables`, `fletch.fragments`).

mod load;
mod table;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use parking_lot::RwLock;

pub use load::LoadCommitExec;
pub(crate) use table::TableDefinition;
pub(crate) use table::as_fletch_table;
pub use table::{FletchTable, TableLayout};

use crate::janitor::{Janitor, JanitorJob};

tokio::task_local! {
    /// Set while `fletch::sql` runs a statement: only then may DataFusion's own
    /// statements drop an in-memory table.
    static THROUGH_FLETCH: ();
}

/// Runs `statement` as `fletch::sql` does: DataFusion's `DROP TABLE` may then free an
/// in-memory table. A bare `SessionContext::sql("CREATE OR REPLACE TABLE t ...")`
/// would otherwise drop `t` before its MemTable is refused.
pub(crate) async fn through_fletch<F: Future>(statement: F) -> F::Output {
    THROUGH_FLETCH.scope((), statement).await
}

/// `datafusion.public` of every Fletch session of one cluster. Dropping or replacing
/// an in-memory table frees its fragments on every executor (in the background; the
/// SQL statements wait for it).
#[derive(Debug)]
pub struct ClusterSchema {
    tables: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    janitor: Janitor,
}

impl ClusterSchema {
    pub(crate) fn new(janitor: Janitor) -> Self {
        Self {
            tables: RwLock::new(HashMap::new()),
            janitor,
        }
    }

    /// Puts `table` under `name` in one step, freeing what it replaces.
    pub(crate) fn replace(
        &self,
        name: &str,
        table: Arc<dyn TableProvider>,
    ) -> Option<Arc<dyn TableProvider>> {
        let new_uid = as_fletch_table(&table).map(|t| t.uid().to_string());
        let old = self.tables.write().insert(name.to_string(), table);
        if let Some(old) = &old {
            self.free_if_replaced(old, new_uid.as_deref());
        }
        old
    }

    /// Puts `table` under `name` if no table has it, in one step; otherwise frees
    /// `table`'s fragments and returns false.
    pub(crate) fn insert_new(&self, name: &str, table: Arc<dyn TableProvider>) -> bool {
        let mut tables = self.tables.write();
        if tables.contains_key(name) {
            drop(tables);
            self.free_if_replaced(&table, None);
            return false;
        }
        tables.insert(name.to_string(), table);
        true
    }

    fn free_if_replaced(&self, old: &Arc<dyn TableProvider>, new_uid: Option<&str>) {
        if let Some(old) = as_fletch_table(old)
            && Some(old.uid()) != new_uid
        {
            self.janitor
                .send(JanitorJob::DropTable(old.uid().to_string()));
        }
    }

    /// Every table, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<dyn TableProvider>)> {
        let mut tables: Vec<_> = self
            .tables
            .read()
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(t)))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.read().get(name).cloned()
    }
}

#[async_trait]
impl SchemaProvider for ClusterSchema {
    fn table_names(&self) -> Vec<String> {
        self.all().into_iter().map(|(n, _)| n).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.get(name))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if table.as_ref().downcast_ref::<MemTable>().is_some() {
            // DataFusion's own CREATE TABLE (a bare `SessionContext::sql`) and
            // `register_batch` make one: its rows would stay on the coordinator and be
            // copied into every plan that reads them.
            return plan_err!(
                "table '{name}' would live on the coordinator and travel inside every \
                 plan: on a Fletch session, create tables with fletch::sql (the shell and \
                 Flight SQL use it), which loads them into the executors' memory, or \
                 register a file-backed table"
            );
        }
        let mut tables = self.tables.write();
        if tables.contains_key(&name) {
            return exec_err!("The table {name} already exists");
        }
        Ok(tables.insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let in_memory = self
            .get(name)
            .is_some_and(|t| as_fletch_table(&t).is_some());
        if in_memory && THROUGH_FLETCH.try_with(|_| ()).is_err() {
            return plan_err!(
                "in-memory table '{name}' is dropped or replaced through fletch::sql (the \
                 shell and Flight SQL use it), which frees its fragments on every executor"
            );
        }
        let old = self.tables.write().remove(name);
        if let Some(old) = &old {
            self.free_if_replaced(old, None);
        }
        Ok(old)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().contains_key(name)
    }
}
