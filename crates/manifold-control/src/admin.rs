//! The admin API: list the cluster's rooms and who is in them, kick a participant, close a
//! room (on whichever nodes they are: other nodes are asked on the bus). Every endpoint
//! needs a token with the admin grant (any request, in dev mode). A token limited to a room
//! acts on that room only: it may kick and close there, and may not list the rooms of the
//! whole server.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use manifold_api::command::Command;
use manifold_api::{LeaveReason, ParticipantId, RoomName};
use manifold_cluster::{NodeId, RoomSummary};
use serde::{Deserialize, Serialize};

use crate::admin_body::{Closed, Kicked, Node, NodeList, RoomEntry, RoomList, Session};
use crate::auth::Access;
use crate::error::{ApiError, ApiErrorBody};
use crate::sessions::{SessionQuery, bearer};
use crate::state::AppState;

pub(crate) fn admin(
    state: &AppState,
    headers: &HeaderMap,
    query: &SessionQuery,
) -> Result<Access, ApiError> {
    let access = state
        .auth
        .verify(bearer(headers).or(query.access_token.as_deref()))?;
    access.check_grant(|g| g.admin, "admin")?;
    Ok(access)
}

/// `GET /admin/rooms`: every room of the cluster. Per room: `participants`, this node's
/// sessions in it (any kind, with worker and tracks); `nodes`, the nodes holding its members
/// (this one included while it holds sessions there); `members`, its members on every node
/// as the directory counts them (WHEP players are not members). When the directory cannot
/// be read, this node's rooms alone, and `directory_error`.
#[utoipa::path(get, path = "/admin/rooms", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster's rooms", body = RoomList),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
    ))]
pub async fn rooms(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&state, &headers, &query)?.check_every_room()?;
    let mut rooms = local_rooms(&state);
    let cluster = &state.cluster;
    let (across, error) = match cluster.directory.rooms().await {
        Ok(list) => (list, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut across: BTreeMap<String, RoomSummary> = across
        .into_iter()
        .map(|r| (r.room.to_string(), r))
        .collect();
    let names: std::collections::BTreeSet<String> =
        rooms.keys().chain(across.keys()).cloned().collect();
    let list: Vec<RoomEntry> = names
        .into_iter()
        .filter_map(|room| {
            let participants = rooms.remove(&room).unwrap_or_default();
            let (mut nodes, members) = across
                .remove(&room)
                .map_or((Vec::new(), 0), |r| (r.nodes, r.members));
            if !participants.is_empty() && !nodes.contains(&cluster.node) {
                nodes.push(cluster.node.clone());
                nodes.sort();
            }
            // Every name here came from a RoomName.
            Some(RoomEntry {
                room: RoomName::parse(&room).ok()?,
                participants,
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                members,
            })
        })
        .collect();
    Ok(Json(RoomList {
        rooms: list,
        directory_error: error,
    })
    .into_response())
}

/// This node's sessions, by room.
pub(crate) fn local_rooms(state: &AppState) -> BTreeMap<String, Vec<Session>> {
    let mut rooms: BTreeMap<String, Vec<Session>> = BTreeMap::new();
    let sessions = state.sessions();
    let roster = state.roster();
    for (id, s) in sessions {
        let info = roster.get(id).map(|m| &m.info);
        rooms.entry(s.room.to_string()).or_default().push(Session {
            id,
            kind: s.kind,
            worker: s.worker,
            identity: info.map(|i| i.identity.clone()),
            name: info.map(|i| i.name.clone()),
            tracks: info.map(|i| i.tracks.clone()).unwrap_or_default(),
        });
    }
    rooms
}

/// `DELETE /admin/rooms/{room}/participants/{id}`: kick. A participant on another node (as
/// the directory says) is kicked there: the request is forwarded to its node on the bus.
#[utoipa::path(delete, path = "/admin/rooms/{room}/participants/{id}", tag = "admin",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "Room name"),
        ("id" = String, Path, description = "Participant id (`p` and 16 hex digits)"),
    ),
    responses(
        (status = 200, description = "Kicked (here, or forwarded to its node)", body = Kicked),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "No such participant in the room", body = ApiErrorBody),
        (status = 503, description = "The worker, directory or bus is unavailable", body = ApiErrorBody),
    ))]
pub async fn kick(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let not_found = || ApiError::NotFound(format!("no participant {id} in room {room}"));
    // No session lives in a room of an invalid name.
    let name = RoomName::parse(&room).map_err(|_| not_found())?;
    access.check_room(&name)?;
    let pid: ParticipantId = id.parse().map_err(|_| not_found())?;
    if kick_here(&state, &name, pid)? {
        return Ok(Json(Kicked { forwarded_to: None }).into_response());
    }
    let cluster = &state.cluster;
    let members = cluster
        .directory
        .members(name.clone())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let node = members
        .into_iter()
        .find(|m| m.participant == pid && m.node != cluster.node)
        .map(|m| m.node)
        .ok_or_else(not_found)?;
    forward(
        &state,
        &node,
        &AdminRequest::Kick {
            room: name,
            participant: pid,
        },
    )
    .await?;
    Ok(Json(Kicked {
        forwarded_to: Some(node.to_string()),
    })
    .into_response())
}

/// `DELETE /admin/rooms/{room}`: everyone leaves with reason `room_closed`, on this node
/// and (forwarded on the bus) on every other node holding members of the room.
#[utoipa::path(delete, path = "/admin/rooms/{room}", tag = "admin", security(("bearer" = [])),
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "Closed", body = Closed),
        (status = 400, description = "Not a room name", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "No such room on any node", body = ApiErrorBody),
        (status = 503, description = "A worker or the bus is unavailable", body = ApiErrorBody),
    ))]
pub async fn close_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let room = crate::error::room_name(&room)?;
    access.check_room(&room)?;
    let closed = close_here(&state, &room)?;
    let created = state.created_rooms.remove(&room);
    let cluster = &state.cluster;
    // Unreadable, the directory leaves the room closed here only (said in the logs).
    let others: Vec<NodeId> = match cluster.directory.nodes_of(room.clone()).await {
        Ok(nodes) => nodes.into_iter().filter(|n| *n != cluster.node).collect(),
        Err(e) => {
            tracing::warn!(%room, error = %e, "room closed on this node only");
            Vec::new()
        }
    };
    if closed == 0 && others.is_empty() && !created {
        return Err(ApiError::NotFound(format!("no room {room}")));
    }
    for node in &others {
        forward(
            &state,
            node,
            &AdminRequest::CloseRoom { room: room.clone() },
        )
        .await?;
    }
    Ok(Json(Closed {
        closed,
        forwarded_to: others.iter().map(|n| n.to_string()).collect(),
    })
    .into_response())
}

/// What an administrator on one node asks of another, on `manifold.node.{node}.admin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Kick `participant` out of `room`.
    Kick {
        room: RoomName,
        participant: ParticipantId,
    },
    /// Close `room`.
    CloseRoom { room: RoomName },
}

/// Largest [`AdminRequest`] read from the bus, as JSON.
pub const MAX_ADMIN_REQUEST_BYTES: usize = 1024;

/// The subject where `node` takes requests from other nodes' administrators.
pub fn admin_subject(node: &NodeId) -> String {
    format!("manifold.node.{node}.admin")
}

/// Take other nodes' administrators' requests until the process ends; subscribes again
/// (each heartbeat) while the bus refuses.
pub async fn serve_requests(state: AppState) {
    let cluster = state.cluster.clone();
    let bad = crate::federation::Throttle::default();
    loop {
        match cluster
            .bus
            .subscribe(admin_subject(&cluster.node), 64)
            .await
        {
            Ok(mut sub) => {
                while let Some(message) = sub.rx.recv().await {
                    let request = (message.payload.len() <= MAX_ADMIN_REQUEST_BYTES)
                        .then(|| serde_json::from_slice::<AdminRequest>(&message.payload).ok())
                        .flatten();
                    match request {
                        Some(r) => answer(&state, r),
                        None if bad.ready() => {
                            tracing::warn!("an admin request from the bus that is not one");
                        }
                        None => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot take other nodes' admin requests"),
        }
        tokio::time::sleep(cluster.heartbeat).await;
    }
}

fn answer(state: &AppState, request: AdminRequest) {
    let done = match &request {
        AdminRequest::Kick { room, participant } => kick_here(state, room, *participant).map(drop),
        AdminRequest::CloseRoom { room } => close_here(state, room).map(drop),
    };
    if let Err(e) = done {
        tracing::warn!(?request, error = %e, "an admin request from another node failed");
    }
}

async fn forward(state: &AppState, node: &NodeId, request: &AdminRequest) -> Result<(), ApiError> {
    let json = serde_json::to_vec(request)
        .map_err(|e| ApiError::Internal(format!("admin request: {e}")))?;
    state
        .cluster
        .bus
        .publish(admin_subject(node), json)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::info!(%node, ?request, "admin request forwarded");
    Ok(())
}

/// Kick `pid` if it is this node's session in `room`; whether it was.
fn kick_here(state: &AppState, room: &RoomName, pid: ParticipantId) -> Result<bool, ApiError> {
    let Some(entry) = state.session(pid).filter(|e| &e.room == room) else {
        return Ok(false);
    };
    state.tell(
        entry.worker,
        Command::Leave {
            participant: pid,
            reason: LeaveReason::Kicked,
        },
    )?;
    tracing::info!(participant = %pid, %room, "kicked by an administrator");
    Ok(true)
}

/// Close this node's sessions of `room`; how many there were.
fn close_here(state: &AppState, room: &RoomName) -> Result<usize, ApiError> {
    let sessions: Vec<_> = state
        .sessions()
        .into_iter()
        .filter(|(_, s)| &s.room == room)
        .collect();
    for (pid, s) in &sessions {
        state.tell(
            s.worker,
            Command::Leave {
                participant: *pid,
                reason: LeaveReason::RoomClosed,
            },
        )?;
    }
    if !sessions.is_empty() {
        tracing::info!(%room, sessions = sessions.len(), "room closed by an administrator");
    }
    Ok(sessions.len())
}

/// `GET /admin/nodes`: the cluster's live nodes (this one alone by default). Needs the admin
/// grant for the whole server.
#[utoipa::path(get, path = "/admin/nodes", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster's live nodes", body = NodeList),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
        (status = 503, description = "The node registry is unavailable", body = ApiErrorBody),
    ))]
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
            let nodes: Vec<Node> = nodes
                .into_iter()
                .map(|n| Node {
                    this: n.id == cluster.node,
                    id: n.id.to_string(),
                    advertise_url: n.advertise_url,
                    participants: n.participants,
                    load: n.load,
                    draining: n.draining,
                })
                .collect();
            (StatusCode::OK, Json(NodeList { nodes })).into_response()
        }
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}
