//! Where a new session goes. Policy: a participant stays on the node it reached, unless
//! that node is draining or holds as many sessions as it may (`limits.max_sessions`); then
//! it is sent to the live node with the fewest participants that is not draining (WHIP and
//! WHEP: `307 Temporary Redirect` to that node's `advertise_url` with the same path and
//! query, as RFC 9725 allows; the room protocol: a `redirect` message). With no other node
//! to go to, the request is refused as before (503). A room-protocol participant is also
//! told, in `joined` and `resumed`, the nodes it may join afresh if its own goes away.

use manifold_cluster::NodeInfo;

use crate::state::AppState;

/// At most this many alternatives in `joined` / `resumed`.
pub const MAX_ALTERNATIVES: usize = 8;

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
    nodes
        .into_iter()
        .filter(|n| n.id != state.cluster.node && !n.draining && !n.advertise_url.is_empty())
        .min_by_key(|n| n.participants)
        .map(|n| n.advertise_url.trim_end_matches('/').to_owned())
}

/// The base URLs of the other live nodes that take joins, as this node's last heartbeat
/// found them (no registry round trip per join), in the order [`elsewhere`] prefers them:
/// fewest participants, then least load, then by id, so every node lists them alike. At
/// most [`MAX_ALTERNATIVES`].
pub fn alternatives(state: &AppState) -> Vec<String> {
    let mut nodes: Vec<NodeInfo> = state
        .cluster
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|n| n.id != state.cluster.node && !n.draining && !n.advertise_url.is_empty())
        .cloned()
        .collect();
    nodes.sort_by(|a, b| {
        a.participants
            .cmp(&b.participants)
            .then(a.load.total_cmp(&b.load))
            .then_with(|| a.id.cmp(&b.id))
    });
    nodes
        .into_iter()
        .take(MAX_ALTERNATIVES)
        .map(|n| n.advertise_url.trim_end_matches('/').to_owned())
        .collect()
}
