//! How many statements each user may run at once on the endpoint: one user's flood of
//! queries is refused at the door instead of taking the cluster from everyone else.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tonic::Status;

/// Statements running per user, against one cap for every user.
#[derive(Debug)]
pub(crate) struct QuerySlots {
    cap: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// One running statement of a user; its slot frees when this drops.
#[derive(Debug)]
pub(crate) struct QuerySlot {
    user: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl QuerySlots {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            running: Arc::default(),
        }
    }

    /// A slot for one more statement of `user`; `ResourceExhausted` at the cap.
    pub(crate) fn acquire(&self, user: &str) -> Result<QuerySlot, Status> {
        let mut running = self.running.lock();
        let count = running.entry(user.to_string()).or_default();
        if *count >= self.cap {
            return Err(Status::resource_exhausted(format!(
                "user {user:?} already runs {} statements, the most one user may run at once \
                 (--max-queries-per-user): wait for one to finish",
                *count
            )));
        }
        *count += 1;
        Ok(QuerySlot {
            user: user.to_string(),
            running: Arc::clone(&self.running),
        })
    }
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let mut running = self.running.lock();
        if let Some(count) = running.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_runs_at_most_the_cap_and_slots_come_back() {
        let slots = QuerySlots::new(2);
        let first = slots.acquire("mallory").expect("first");
        let _second = slots.acquire("mallory").expect("second");
        let err = slots.acquire("mallory").expect_err("third");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("mallory"), "{err}");
        // Another user is not affected.
        let _alice = slots.acquire("alice").expect("alice");
        drop(first);
        slots.acquire("mallory").expect("a freed slot");
    }
}
