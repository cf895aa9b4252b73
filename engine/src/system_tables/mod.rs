//! The `fletch` system schema: `fletch.tables` (every table of the cluster, with the
//! size and layout of in-memory ones), `fletch.fragments` (each fragment of each
//! in-memory table: rows, bytes, holders), `fletch.executors` (each executor:
//! state, slots, memory, running tasks, last heartbeat), and the query history,
//! `fletch.queries` and `fletch.tasks` ([`history`]). Each is a snapshot taken when a
//! query is planned.

mod history;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;

use fletch_transport::protocol::ExecutorStatus;

use crate::catalog::{ClusterSchema, as_fletch_table};
use crate::coordinator::Coordinator;

const TABLES: &str = "tables";
const FRAGMENTS: &str = "fragments";
const EXECUTORS: &str = "executors";

#[derive(Debug)]
pub struct SystemSchema {
    coordinator: Arc<Coordinator>,
    cluster: Arc<ClusterSchema>,
}

/// Field metadata naming a column's unit, so a shell can print `bytes` as sizes.
pub const UNIT_KEY: &str = "fletch.unit";

/// A column of byte counts.
fn bytes_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::UInt64, nullable).with_metadata(
        [(UNIT_KEY.to_string(), "bytes".to_string())]
            .into_iter()
            .collect(),
    )
}

impl SystemSchema {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        let cluster = Arc::clone(coordinator.tables());
        Self {
            coordinator,
            cluster,
        }
    }

    fn executors(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("url", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("slots", DataType::UInt64, false),
            bytes_field("memory_used", false),
            bytes_field("memory_limit", false),
            Field::new("running_tasks", DataType::UInt64, false),
            Field::new("since_heartbeat_ms", DataType::UInt64, false),
        ]));
        let executors = self.coordinator.executors();
        let text = |f: fn(&ExecutorStatus) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(executors.iter().map(f)))
        };
        let number = |f: fn(&ExecutorStatus) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(executors.iter().map(f)))
        };
        let columns = vec![
            text(|e| &e.url),
            text(|e| &e.state),
            number(|e| e.slots),
            number(|e| e.memory_used),
            number(|e| e.memory_limit),
            number(|e| e.running_tasks),
            number(|e| e.since_heartbeat_ms),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn tables(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("rows", DataType::UInt64, true),
            bytes_field("bytes", true),
            Field::new("fragments", DataType::UInt64, true),
            Field::new("replicas", DataType::UInt64, true),
            Field::new("partitioned_by", DataType::Utf8, true),
        ]));
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        let (mut rows, mut bytes, mut fragments, mut replicas, mut by) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (name, table) in self.cluster.all() {
            names.push(name);
            match as_fletch_table(&table) {
                Some(t) => {
                    let sizes = t.fragment_sizes();
                    let layout = t.layout();
                    kinds.push(if t.source().is_some() {
                        "cached"
                    } else {
                        "in memory"
                    });
                    rows.push(Some(sizes.iter().map(|s| s.0 as u64).sum::<u64>()));
                    bytes.push(Some(sizes.iter().map(|s| s.1 as u64).sum::<u64>()));
                    fragments.push(Some(layout.fragments as u64));
                    replicas.push(Some(layout.replicas as u64));
                    by.push(Some(if layout.hash_keys.is_empty() {
                        "round robin".to_string()
                    } else {
                        format!("hash({})", layout.hash_keys.join(", "))
                    }));
                }
                None => {
                    kinds.push(match table.table_type() {
                        TableType::View => "view",
                        TableType::Temporary => "temporary",
                        TableType::Base => "external",
                    });
                    rows.push(None);
                    bytes.push(None);
                    fragments.push(None);
                    replicas.push(None);
                    by.push(None);
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(kinds)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(UInt64Array::from(fragments)),
            Arc::new(UInt64Array::from(replicas)),
            Arc::new(StringArray::from(by)),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn fragments(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("fragment", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            bytes_field("bytes", false),
            Field::new("executors", DataType::Utf8, false),
        ]));
        let (mut names, mut ids, mut rows, mut bytes, mut holders) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (name, table) in self.cluster.all() {
            let Some(t) = as_fletch_table(&table) else {
                continue;
            };
            let fragment_holders = t.holders();
            let sizes = t.fragment_sizes();
            for (f, ((r, b), h)) in sizes.into_iter().zip(&fragment_holders).enumerate() {
                names.push(name.clone());
                ids.push(f as u64);
                rows.push(r as u64);
                bytes.push(b as u64);
                holders.push(h.join(", "));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(ids)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(StringArray::from(holders)),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

fn as_table(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
    let schema: SchemaRef = batch.schema();
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        vec![
            EXECUTORS.to_string(),
            FRAGMENTS.to_string(),
            history::QUERIES.to_string(),
            TABLES.to_string(),
            history::TASKS.to_string(),
        ]
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        match name {
            TABLES => Ok(Some(as_table(self.tables()?)?)),
            FRAGMENTS => Ok(Some(as_table(self.fragments()?)?)),
            EXECUTORS => Ok(Some(as_table(self.executors()?)?)),
            history::QUERIES => Ok(Some(as_table(history::queries(
                self.coordinator.query_log(),
            )?)?)),
            history::TASKS => Ok(Some(as_table(history::tasks(
                self.coordinator.query_log(),
            )?)?)),
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        [
            TABLES,
            FRAGMENTS,
            EXECUTORS,
            history::QUERIES,
            history::TASKS,
        ]
        .contains(&name)
    }
}
