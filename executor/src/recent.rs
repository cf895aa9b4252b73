//! [`RecentSet`]: the last N keys seen, so an executor can refuse late work for
//! something already released or dropped without remembering everything forever.

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct RecentSet<K> {
    capacity: usize,
    members: HashSet<K>,
    order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash> RecentSet<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            members: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn insert(&mut self, key: K) {
        if self.members.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.members.remove(&old);
            }
        }
    }

    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.members.contains(key)
    }
}
