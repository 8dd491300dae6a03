//! Where a new session goes. Policy: a participant stays on the node it reached, unless
//! that node is draining or holds as many sessions as it may (`limits.max_sessions`); then
//! it is sent to the live node with the fewest participants that is not draining (WHIP and
//! WHEP: `307 Temporary Redirect` to that node's `advertise_url` with the same path and
//! query, as RFC 9725 allows; the room protocol: a `redirect` message). With no other node
//! to go to, the request is refused as before (503).

use crate::state::AppState;

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
