//! The coordinator's background clean-ups as jobs ([`JanitorJob`]): releasing a query's
//! state on every executor, freeing a dropped table or a failed load, and restoring
//! the replicas a lost executor held. [`Janitor`] is the handle that parts which must
//! leave a clean-up behind (the catalog, a load, a query run) hold; the coordinator
//! runs the jobs, so none of those parts needs the coordinator itself.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::progress::QueryProgress;

pub(crate) enum JanitorJob {
    Release(String),
    Sync(oneshot::Sender<()>),
    DropTable(String),
    /// Free one load's pieces; `done` hears when they are gone.
    DropLoad {
        table_uid: String,
        load: u64,
        done: Option<oneshot::Sender<()>>,
    },
    /// Restore the replica count of every fragment the executor at this URL held.
    Rereplicate(String),
}

/// Sends jobs to the coordinator's janitor.
#[derive(Debug, Clone)]
pub(crate) struct Janitor {
    jobs: mpsc::UnboundedSender<JanitorJob>,
}

impl Janitor {
    /// A janitor and the queue its jobs arrive on, for the coordinator to run.
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<JanitorJob>) {
        let (jobs, pending) = mpsc::unbounded_channel();
        (Self { jobs }, pending)
    }

    /// The janitor lives as long as the coordinator; once both are gone, so are the
    /// executors' reasons to keep anything, so a job nobody runs is no loss.
    pub(crate) fn send(&self, job: JanitorJob) {
        let _ = self.jobs.send(job);
    }

    /// Returns once every job sent before this call has run.
    pub(crate) async fn sync(&self) {
        let (done, finished) = oneshot::channel();
        if self.jobs.send(JanitorJob::Sync(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Frees one load's pieces on every executor and returns when they are gone.
    pub(crate) async fn drop_load_now(&self, table_uid: String, load: u64) {
        let (done, finished) = oneshot::channel();
        let job = JanitorJob::DropLoad {
            table_uid,
            load,
            done: Some(done),
        };
        if self.jobs.send(job).is_ok() {
            let _ = finished.await;
        }
    }

    /// A guard that frees the load's pieces unless disarmed.
    pub(crate) fn load_guard(&self, table_uid: String, load: u64) -> LoadGuard {
        LoadGuard {
            janitor: self.clone(),
            table_uid,
            load,
            armed: true,
        }
    }
}

/// Drops a load's pieces everywhere unless disarmed: when its query is dropped before
/// the load committed or failed, the janitor does it.
pub(crate) struct LoadGuard {
    janitor: Janitor,
    table_uid: String,
    load: u64,
    armed: bool,
}

impl LoadGuard {
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Drops the load's pieces on every executor and returns when they are gone.
    pub(crate) async fn drop_now(mut self) {
        self.armed = false;
        let table_uid = std::mem::take(&mut self.table_uid);
        self.janitor.drop_load_now(table_uid, self.load).await;
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.armed {
            self.janitor.send(JanitorJob::DropLoad {
                table_uid: std::mem::take(&mut self.table_uid),
                load: self.load,
                done: None,
            });
        }
    }
}

/// Queries running now, by id, with how far each is.
pub(crate) type LiveQueries = Arc<Mutex<HashMap<String, Arc<QueryProgress>>>>;

/// Keeps a query among the live ones while it lives, and sends its release to the
/// janitor if dropped before it ended.
pub(crate) struct ReleaseGuard {
    query_id: String,
    janitor: Option<Janitor>,
    live: LiveQueries,
}

impl ReleaseGuard {
    pub(crate) fn new(
        query_id: String,
        progress: Arc<QueryProgress>,
        janitor: Janitor,
        live: LiveQueries,
    ) -> Self {
        live.lock().insert(query_id.clone(), progress);
        Self {
            query_id,
            janitor: Some(janitor),
            live,
        }
    }

    /// The query was released another way.
    pub(crate) fn disarm(&mut self) {
        self.janitor = None;
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        self.live.lock().remove(&self.query_id);
        if let Some(janitor) = self.janitor.take() {
            janitor.send(JanitorJob::Release(std::mem::take(&mut self.query_id)));
        }
    }
}
