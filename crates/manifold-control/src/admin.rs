//! The admin API: list rooms and who is in them, kick a participant, close a room. Every
//! endpoint needs a token with the admin grant (any request, in dev mode). A token limited
//! to a room acts on that room only: it may kick and close there, and may not list the
//! rooms of the whole server.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use manifold_api::command::Command;
use manifold_api::{LeaveReason, ParticipantId, RoomName, SessionKind};
use serde_json::{Value, json};

use crate::auth::Access;
use crate::error::ApiError;
use crate::sessions::{SessionQuery, bearer};
use crate::state::AppState;

fn admin(state: &AppState, headers: &HeaderMap, query: &SessionQuery) -> Result<Access, ApiError> {
    let access = state
        .auth
        .verify(bearer(headers).or(query.access_token.as_deref()))?;
    access.check_grant(|g| g.admin, "admin")?;
    Ok(access)
}

fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep => "whep",
        SessionKind::Room => "room",
    }
}

/// `GET /admin/rooms`: every room with its sessions.
pub async fn rooms(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&state, &headers, &query)?.check_every_room()?;
    let mut rooms: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let sessions = state.sessions();
    let roster = state.roster();
    for (id, s) in sessions {
        let info = roster.get(id).map(|m| &m.info);
        rooms.entry(s.room.to_string()).or_default().push(json!({
            "id": id,
            "kind": kind_name(s.kind),
            "worker": s.worker,
            "identity": info.map(|i| i.identity.as_str()),
            "name": info.map(|i| i.name.as_str()),
            "tracks": info.map(|i| i.tracks.clone()).unwrap_or_default(),
        }));
    }
    drop(roster);
    let list: Vec<Value> = rooms
        .into_iter()
        .map(|(room, participants)| json!({"room": room, "participants": participants}))
        .collect();
    Ok(Json(json!({ "rooms": list })).into_response())
}

/// `DELETE /admin/rooms/{room}/participants/{id}`: kick.
pub async fn kick(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let not_found = || ApiError::NotFound(format!("no participant {id} in room {room}"));
    // No session lives in a room of an invalid name.
    access.check_room(&RoomName::parse(&room).map_err(|_| not_found())?)?;
    let pid: ParticipantId = id.parse().map_err(|_| not_found())?;
    let entry = state.session(pid).ok_or_else(not_found)?;
    if entry.room.as_str() != room {
        return Err(not_found());
    }
    state.tell(
        entry.worker,
        Command::Leave {
            participant: pid,
            reason: LeaveReason::Kicked,
        },
    )?;
    tracing::info!(participant = %pid, %room, "kicked by an administrator");
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /admin/rooms/{room}`: everyone leaves with reason `room_closed`.
pub async fn close_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let room =
        RoomName::parse(&room).map_err(|e| ApiError::BadRequest(format!("room name {e}")))?;
    access.check_room(&room)?;
    let sessions: Vec<_> = state
        .sessions()
        .into_iter()
        .filter(|(_, s)| s.room == room)
        .collect();
    if sessions.is_empty() {
        return Err(ApiError::NotFound(format!("no room {room}")));
    }
    for (pid, s) in &sessions {
        state.tell(
            s.worker,
            Command::Leave {
                participant: *pid,
                reason: LeaveReason::RoomClosed,
            },
        )?;
    }
    tracing::info!(%room, sessions = sessions.len(), "room closed by an administrator");
    Ok(Json(json!({ "closed": sessions.len() })).into_response())
}

/// `GET /admin/nodes`: the cluster's live nodes (this one alone by default). Needs the admin
/// grant for the whole server.
pub async fn nodes(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Response {
    let access = match admin(&state, &headers, &query) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if access.room.is_some() {
        return ApiError::Forbidden("a room-scoped admin token cannot list the nodes".into())
            .into_response();
    }
    let cluster = &state.cluster;
    match cluster.registry.live().await {
        Ok(nodes) => {
            let nodes: Vec<Value> = nodes
                .into_iter()
                .map(|n| {
                    json!({
                        "id": n.id.as_str(),
                        "advertise_url": n.advertise_url,
                        "participants": n.participants,
                        "load": n.load,
                        "draining": n.draining,
                        "self": n.id == cluster.node,
                    })
                })
                .collect();
            (StatusCode::OK, Json(json!({ "nodes": nodes }))).into_response()
        }
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}
