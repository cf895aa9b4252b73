//! The executor's memory pool: one limit for everything the executor holds — table
//! fragments, exchange buffers, and the operators of its tasks (hash tables, sorts),
//! which spill or fail cleanly when it is reached. The limit can change while the
//! executor runs (`SET fletch.executor_memory`); memory already held stays held.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{Result, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};

#[derive(Debug)]
pub(crate) struct ExecutorMemoryPool {
    /// Used in messages: which executor ran out.
    executor: String,
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl ExecutorMemoryPool {
    pub(crate) fn new(executor: String, limit: usize) -> Self {
        Self {
            executor,
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }
}

impl fmt::Display for ExecutorMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "executor {} ({} of {} in use)",
            self.executor,
            human_readable_size(self.used.load(Ordering::Relaxed)),
            human_readable_size(self.limit())
        )
    }
}

impl MemoryPool for ExecutorMemoryPool {
    fn name(&self) -> &str {
        "fletch_executor"
    }

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::AcqRel);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::AcqRel);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let wanted = used.checked_add(additional)?;
                (wanted <= limit).then_some(wanted)
            })
            .map_err(|used| {
                resources_datafusion_err!(
                    "{} needs {} more on executor {}, which has {} of its {} limit in use",
                    reservation.consumer().name(),
                    human_readable_size(additional),
                    self.executor,
                    human_readable_size(used),
                    human_readable_size(limit)
                )
            })?;
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit())
    }
}
