//! Where a new session goes. Policy: a participant stays on the node it reached, unless
//! that node is draining or holds as many sessions as it may (`limits.max_sessions`); then
//! it is sent to the live node with the fewest participants that is not draining (WHIP and
//! WHEP: `307 Temporary Redirect` to that node's `advertise_url` with the same path and
//! query, as RFC 9725 allows; the room protocol: a `redirect` message). With no other node
//! to go to, the request is refused as before (503). A room-protocol participant is also
//! told, in `joined` and `resumed`, the nodes it may join afresh if its own goes away.

use std::sync::Mutex;
use std::time::Instant;

use manifold_cluster::NodeInfo;

use crate::state::AppState;

/// At most this many alternatives in `joined` / `resumed`.
pub const MAX_ALTERNATIVES: usize = 8;

/// The busiest media worker's share of its time spent working (0 to 1) between two
/// readings: what a node announces as its `load` with every heartbeat.
#[derive(Default)]
pub struct LoadMeter {
    last: Mutex<Option<(Instant, Vec<u64>)>>,
}

impl LoadMeter {
    /// The load since the previous reading (0 at the first).
    pub fn read(&self, busy_ns: &[u64]) -> f32 {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let load = match last.as_ref() {
            Some((at, before)) => {
                let wall = now.saturating_duration_since(*at).as_nanos() as f64;
                busy_ns
                    .iter()
                    .zip(before)
                    .map(|(b, a)| b.saturating_sub(*a) as f64 / wall.max(1.0))
                    .fold(0.0f64, f64::max)
                    .min(1.0) as f32
            }
            None => 0.0,
        };
        *last = Some((now, busy_ns.to_vec()));
        load
    }
}

/// This node's load now ([`LoadMeter`] over its workers).
pub fn load(state: &AppState) -> f32 {
    let busy: Vec<u64> = state.workers.iter().map(|w| w.busy_ns()).collect();
    state.load.read(&busy)
}

/// The base URL of another node that takes new sessions, if this one should not.
pub async fn elsewhere(state: &AppState) -> Option<String> {
    let full = state.session_count() >= state.config.max_sessions;
    if !state.is_draining() && !full {
        return None;
    }
    let nodes = match state.cluster.registry.live().await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "no node list to redirect to");
            return None;
        }
    };
    takers(state, nodes).into_iter().next()
}

/// The base URLs of the other live nodes that take joins, as this node's last heartbeat
/// found them (no registry round trip per join), best first as [`elsewhere`] chooses; at
/// most [`MAX_ALTERNATIVES`].
pub fn alternatives(state: &AppState) -> Vec<String> {
    let peers = state
        .cluster
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut urls = takers(state, peers);
    urls.truncate(MAX_ALTERNATIVES);
    urls
}

/// The base URLs of the nodes of `nodes` other than this one that take new sessions (not
/// draining, with an address), best first: fewest participants, then least load, then by
/// id, so every node ranks them alike.
fn takers(state: &AppState, mut nodes: Vec<NodeInfo>) -> Vec<String> {
    nodes.retain(|n| n.id != state.cluster.node && !n.draining && !n.advertise_url.is_empty());
    nodes.sort_by(|a, b| {
        a.participants
            .cmp(&b.participants)
            .then(a.load.total_cmp(&b.load))
            .then_with(|| a.id.cmp(&b.id))
    });
    nodes
        .into_iter()
        .map(|n| n.advertise_url.trim_end_matches('/').to_owned())
        .collect()
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn load_is_the_busiest_workers_share_of_the_interval() {
        let m = LoadMeter::default();
        assert_eq!(
            m.read(&[0, 0]),
            0.0,
            "nothing to compare the first reading with"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Worker 1 was busy 10 ms of at least 20: at most one half.
        let load = m.read(&[1_000_000, 10_000_000]);
        assert!(load > 0.0 && load <= 0.5, "{load}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        // More busy time than wall time (a counter that jumped) is capped at 1.
        assert_eq!(m.read(&[u64::MAX / 2, 10_000_000]), 1.0);
    }
}
