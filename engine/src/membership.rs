//! Cluster membership on the coordinator: which executors there are, their last
//! reported status, and whether they are alive, lost (missed heartbeats) or left
//! (said goodbye). Executors started with the coordinator (the embedded cluster) are
//! members without heartbeats and are never declared lost.

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
    members: Mutex<HashMap<String, Member>>,
}

impl Members {
    /// An executor the coordinator was started with.
    pub(crate) fn add_static(&self, url: &str) {
        let status = ExecutorStatus {
            url: url.to_string(),
            ..ExecutorStatus::default()
        };
        self.members.lock().insert(
            url.to_string(),
            Member {
                status,
                state: MemberState::Alive,
                last_heard: Instant::now(),
                sends_heartbeats: false,
                source: None,
            },
        );
    }

    /// Where the coordinator reads the status of an executor in its own process.
    pub(crate) fn set_source(&self, url: &str, source: StatusSource) {
        if let Some(m) = self.members.lock().get_mut(url) {
            m.source = Some(source);
        }
    }

    /// Records a registration or heartbeat; returns whether the executor was not alive
    /// before (new, lost or left), so placement must take it (back) in. An executor that
    /// left comes back only by registering again: a heartbeat sent while it was leaving
    /// is ignored.
    pub(crate) fn heard_from(&self, status: ExecutorStatus, registering: bool) -> bool {
        let mut members = self.members.lock();
        let url = status.url.clone();
        let left = members
            .get(&url)
            .is_some_and(|m| m.state == MemberState::Left);
        if left && !registering {
            return false;
        }
        let was_alive = members
            .get(&url)
            .is_some_and(|m| m.state == MemberState::Alive);
        members.insert(
            url,
            Member {
                status,
                state: MemberState::Alive,
                last_heard: Instant::now(),
                sends_heartbeats: true,
                source: None,
            },
        );
        !was_alive
    }

    pub(crate) fn mark(&self, url: &str, state: MemberState) {
        if let Some(m) = self.members.lock().get_mut(url) {
            m.state = state;
        }
    }

    /// A query found the executor unreachable. One that sends heartbeats is declared
    /// lost now (its next heartbeat brings it back); returns whether it was.
    pub(crate) fn suspect_lost(&self, url: &str) -> bool {
        match self.members.lock().get_mut(url) {
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
        for (url, m) in self.members.lock().iter_mut() {
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
}
