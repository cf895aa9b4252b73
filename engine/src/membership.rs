//! Cluster membership on the coordinator, the one table of who is in the cluster:
//! which executors there are, their last reported status, and whether they are alive,
//! lost (missed heartbeats, or broke a query's connections) or left (said goodbye).
//! Work is placed on [`Members::placeable`], a view derived from it. Executors started
//! with the coordinator (the embedded cluster) are members without heartbeats and are
//! never declared lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fletch_transport::protocol::ExecutorStatus;
use parking_lot::Mutex;

/// How membership is judged.
#[derive(Debug, Clone, Copy)]
pub struct MembershipOptions {
    /// How often executors send heartbeats.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which an executor is declared lost.
    pub lost_after: u32,
}

impl Default for MembershipOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            lost_after: 3,
        }
    }
}

impl MembershipOptions {
    pub fn silence_before_lost(&self) -> Duration {
        self.heartbeat_interval * self.lost_after.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Lost,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Lost => "lost",
            Self::Left => "left",
        }
    }
}

/// Reads the current status of an executor in the coordinator's own process.
pub type StatusSource = Box<dyn Fn() -> ExecutorStatus + Send + Sync>;

struct Member {
    status: ExecutorStatus,
    state: MemberState,
    last_heard: Instant,
    sends_heartbeats: bool,
    /// For executors in this process: their live status, read when listed.
    source: Option<StatusSource>,
    /// When it last became alive, in joins counted by this table: placement takes
    /// executors in this order.
    joined: u64,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("status", &self.status)
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Members {
    members: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_url: HashMap<String, Member>,
    joins: u64,
}

impl Table {
    fn next_join(&mut self) -> u64 {
        self.joins += 1;
        self.joins
    }
}

impl Members {
    /// An executor the coordinator was started with.
    pub(crate) fn add_static(&self, url: &str) {
        let status = ExecutorStatus {
            url: url.to_string(),
            ..ExecutorStatus::default()
        };
        let mut table = self.members.lock();
        let joined = table.next_join();
        table.by_url.insert(
            url.to_string(),
            Member {
                status,
                state: MemberState::Alive,
                last_heard: Instant::now(),
                sends_heartbeats: false,
                source: None,
                joined,
            },
        );
    }

    /// Where the coordinator reads the status of an executor in its own process.
    pub(crate) fn set_source(&self, url: &str, source: StatusSource) {
        if let Some(m) = self.members.lock().by_url.get_mut(url) {
            m.source = Some(source);
        }
    }

    /// Records a registration or heartbeat; returns whether the executor was not alive
    /// before (new, lost or left), so placement must take it (back) in. An executor that
    /// left comes back only by registering again: a heartbeat sent while it was leaving
    /// is ignored.
    pub(crate) fn heard_from(&self, status: ExecutorStatus, registering: bool) -> bool {
        let mut table = self.members.lock();
        let url = status.url.clone();
        let before = table.by_url.get(&url).map(|m| (m.state, m.joined));
        if before.is_some_and(|(state, _)| state == MemberState::Left) && !registering {
            return false;
        }
        let (was_alive, joined) = match before {
            Some((MemberState::Alive, joined)) => (true, joined),
            _ => (false, table.next_join()),
        };
        table.by_url.insert(
            url,
            Member {
                status,
                state: MemberState::Alive,
                last_heard: Instant::now(),
                sends_heartbeats: true,
                source: None,
                joined,
            },
        );
        !was_alive
    }

    /// Sets the state of the member at `url`; returns whether it was alive before.
    pub(crate) fn mark(&self, url: &str, state: MemberState) -> bool {
        match self.members.lock().by_url.get_mut(url) {
            Some(m) => std::mem::replace(&mut m.state, state) == MemberState::Alive,
            None => false,
        }
    }

    /// A query found the executor unreachable. One that sends heartbeats is declared
    /// lost now (its next heartbeat brings it back); returns whether it was.
    pub(crate) fn suspect_lost(&self, url: &str) -> bool {
        match self.members.lock().by_url.get_mut(url) {
            Some(m) if m.sends_heartbeats && m.state == MemberState::Alive => {
                m.state = MemberState::Lost;
                true
            }
            _ => false,
        }
    }

    /// Executors whose heartbeats stopped for longer than `silence`; they are now lost.
    pub(crate) fn declare_lost(&self, silence: Duration) -> Vec<String> {
        let mut lost = Vec::new();
        for (url, m) in self.members.lock().by_url.iter_mut() {
            if m.sends_heartbeats
                && m.state == MemberState::Alive
                && m.last_heard.elapsed() > silence
            {
                m.state = MemberState::Lost;
                lost.push(url.clone());
            }
        }
        lost
    }

    /// Every member with its state and time since it was last heard from, by URL.
    pub(crate) fn list(&self) -> Vec<ExecutorStatus> {
        let mut list: Vec<ExecutorStatus> = self
            .members
            .lock()
            .by_url
            .values()
            .map(|m| match &m.source {
                Some(source) => ExecutorStatus {
                    state: m.state.as_str().to_string(),
                    ..source()
                },
                None => ExecutorStatus {
                    state: m.state.as_str().to_string(),
                    since_heartbeat_ms: m.last_heard.elapsed().as_millis() as u64,
                    ..m.status.clone()
                },
            })
            .collect();
        list.sort_by(|a, b| a.url.cmp(&b.url));
        list
    }

    /// The executors work may be placed on: alive members, in the order they (re)joined.
    pub(crate) fn placeable(&self) -> Vec<String> {
        let table = self.members.lock();
        let mut alive: Vec<(u64, &String)> = table
            .by_url
            .iter()
            .filter(|(_, m)| m.state == MemberState::Alive)
            .map(|(url, m)| (m.joined, url))
            .collect();
        alive.sort();
        alive.into_iter().map(|(_, url)| url.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(url: &str) -> ExecutorStatus {
        ExecutorStatus {
            url: url.to_string(),
            slots: 2,
            ..ExecutorStatus::default()
        }
    }

    #[test]
    fn placement_sees_alive_members_in_the_order_they_joined() {
        let members = Members::default();
        members.add_static("s");
        assert!(members.heard_from(status("b"), true), "b joins");
        assert!(members.heard_from(status("a"), true), "a joins");
        assert!(
            !members.heard_from(status("b"), false),
            "a heartbeat of a member"
        );
        assert_eq!(members.placeable(), ["s", "b", "a"]);

        assert!(members.suspect_lost("b"), "b broke a query's connections");
        assert!(
            !members.suspect_lost("s"),
            "static members are never declared lost"
        );
        assert_eq!(members.placeable(), ["s", "a"]);
        assert!(
            members.heard_from(status("b"), false),
            "b's heartbeat brings it back"
        );
        assert_eq!(members.placeable(), ["s", "a", "b"], "as the newest member");

        assert!(members.mark("a", MemberState::Left), "a was alive");
        assert!(
            !members.heard_from(status("a"), false),
            "no return by heartbeat"
        );
        assert_eq!(members.placeable(), ["s", "b"]);
        assert!(members.heard_from(status("a"), true), "registering again");
        assert_eq!(members.placeable(), ["s", "b", "a"]);
        let states: Vec<String> = members.list().into_iter().map(|s| s.state).collect();
        assert_eq!(states, ["alive", "alive", "alive"]);
    }

    #[test]
    fn silent_members_are_declared_lost_once() {
        let members = Members::default();
        members.heard_from(status("a"), true);
        members.add_static("s");
        assert!(members.declare_lost(Duration::from_secs(3600)).is_empty());
        // Silence of any length at all: a heartbeat is never heard at the same instant.
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(members.declare_lost(Duration::ZERO), ["a"]);
        assert!(members.declare_lost(Duration::ZERO).is_empty(), "lost once");
        assert_eq!(members.placeable(), ["s"]);
    }
}
