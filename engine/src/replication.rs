//! Re-replication: when an executor leaves or is lost, every in-memory table fragment
//! it held is copied from a surviving holder (or, for an executor leaving cleanly, from
//! the leaving executor itself when no other holder has it) onto an executor that does
//! not hold it yet, and the table records the new holder. A fragment with no surviving holder is
//! lost (queries over it fail naming table and fragment); one with no executor left to
//! copy onto keeps fewer replicas until a later loss finds one.

use std::time::Duration;

use fletch_transport::ExecutorClient;
use fletch_transport::protocol::PieceId;

use crate::catalog::{ClusterSchema, as_fletch_table};

/// How long copying one piece may take: a frozen source or target fails the copy
/// (the fragment keeps fewer replicas) instead of holding up every later one.
const COPY_TIMEOUT: Duration = Duration::from_secs(300);

/// Restores the replicas `lost` held, copying onto the least loaded of `executors`
/// (the cluster's live executors) that do not hold the fragment. `leaving` is `lost`
/// itself when it still serves (it leaves cleanly): the source of last resort.
pub(crate) async fn rereplicate(
    tables: &ClusterSchema,
    executors: &[ExecutorClient],
    lost: &str,
    leaving: Option<&ExecutorClient>,
) {
    let mut assigned = vec![0usize; executors.len()];
    for (name, provider) in tables.all() {
        let Some(table) = as_fletch_table(&provider) else {
            continue;
        };
        let loads = table.fragment_loads();
        for (fragment, holders) in table.holders().into_iter().enumerate() {
            if !holders.iter().any(|h| h == lost) {
                continue;
            }
            let Some(source) = executors
                .iter()
                .find(|e| e.url() != lost && holders.iter().any(|h| h == e.url()))
                .or(leaving)
            else {
                tracing::error!(
                    table = %name,
                    fragment,
                    "fragment lost with executor {lost}: no other holder is alive"
                );
                continue;
            };
            let Some(target) = (0..executors.len())
                .filter(|&i| !holders.iter().any(|h| h == executors[i].url()))
                .min_by_key(|&i| assigned[i])
            else {
                tracing::warn!(
                    table = %name,
                    fragment,
                    "no executor to copy the fragment onto: it keeps fewer replicas"
                );
                continue;
            };
            let pieces = loads.get(fragment).cloned().unwrap_or_default();
            let mut copied = true;
            for load in pieces {
                let piece = PieceId {
                    table: name.clone(),
                    table_uid: table.uid().to_string(),
                    load,
                    fragment: fragment as u64,
                };
                let copy = executors[target].copy_piece(&piece, source.url());
                let failure = match tokio::time::timeout(COPY_TIMEOUT, copy).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!(
                        "no answer from {} in {COPY_TIMEOUT:?}",
                        executors[target].url()
                    )),
                };
                if let Some(failure) = failure {
                    tracing::warn!(table = %name, fragment, load, "re-replicating: {failure}");
                    copied = false;
                    break;
                }
            }
            if copied {
                assigned[target] += 1;
                table.replace_holder(fragment, lost, executors[target].url());
                tracing::info!(
                    table = %name,
                    fragment,
                    from = %source.url(),
                    to = %executors[target].url(),
                    "fragment re-replicated"
                );
            }
        }
    }
}
