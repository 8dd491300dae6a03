//! The admin API's operations on one room and its participants on this node: describe a
//! room and list its participants, create a room with options, set room and participant
//! metadata, mute a participant's track; and on the node itself: drain, log level. Every
//! handler checks the admin grant (and a room-scoped token's room) first.
//!
//! These act on this node's sessions only; the cluster-wide operations (list every room,
//! kick, close) are in `admin.rs`.

use std::time::{Duration, Instant};

use crate::admin::{admin, local_rooms};
use crate::admin_body::{
    CreateRoom, Draining, LogLevel, MuteTrack, ParticipantList, ParticipantUpdated, RoomCreated,
    RoomDetail, RoomOptionsBody, UpdateParticipant, UpdateRoom,
};
use crate::error::{ApiError, ApiErrorBody, room_name};
use crate::rooms::{DEFAULT_EMPTY_TIMEOUT_SECS, MAX_EMPTY_TIMEOUT_SECS, RoomOptions};
use crate::sessions::SessionQuery;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use manifold_api::command::Command;
use manifold_api::protocol::ServerMessage;
use manifold_api::{ParticipantId, RoomName, TrackId};

/// Longest log filter accepted by `PUT /admin/log-level`, in bytes.
pub const MAX_LOG_FILTER_BYTES: usize = 1024;

/// A JSON body, or a 400 with the JSON error body saying why not.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("the body must be application/json".into())
        }
        other => ApiError::BadRequest(format!("body: {}", other.body_text())),
    })
}

/// `GET /admin/rooms/{room}`: this node's sessions of the room (with their tracks), its
/// options if it was created; 404 if it is neither held nor created here.
#[utoipa::path(get, path = "/admin/rooms/{room}", tag = "admin", security(("bearer" = [])),
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room on this node", body = RoomDetail),
        (status = 400, description = "Not a room name", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "Neither held nor created on this node", body = ApiErrorBody),
    ))]
pub async fn room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let name = room_name(&room)?;
    access.check_room(&name)?;
    let participants = local_rooms(&state).remove(name.as_str());
    let options = state.created_rooms.get(&name);
    if participants.is_none() && options.is_none() {
        return Err(ApiError::NotFound(format!("no room {name} on this node")));
    }
    Ok(Json(RoomDetail {
        room: name,
        participants: participants.unwrap_or_default(),
        options: options.as_ref().map(RoomOptionsBody::from),
    })
    .into_response())
}

/// `GET /admin/rooms/{room}/participants`: this node's sessions of the room.
#[utoipa::path(get, path = "/admin/rooms/{room}/participants", tag = "admin",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "This node's sessions of the room", body = ParticipantList),
        (status = 400, description = "Not a room name", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "Neither held nor created on this node", body = ApiErrorBody),
    ))]
pub async fn participants(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let name = room_name(&room)?;
    access.check_room(&name)?;
    let participants = local_rooms(&state).remove(name.as_str());
    if participants.is_none() && state.created_rooms.get(&name).is_none() {
        return Err(ApiError::NotFound(format!("no room {name} on this node")));
    }
    Ok(Json(ParticipantList {
        participants: participants.unwrap_or_default(),
    })
    .into_response())
}

/// `POST /admin/rooms`: create a room with options. 201; 409 if it exists; 429 past
/// `server.max_rooms` created rooms.
#[utoipa::path(post, path = "/admin/rooms", tag = "admin", security(("bearer" = [])),
    request_body = CreateRoom,
    responses(
        (status = 201, description = "Created", body = RoomCreated),
        (status = 400, description = "Malformed body, room name or option", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 409, description = "The room exists already", body = ApiErrorBody),
        (status = 415, description = "The body is not application/json", body = ApiErrorBody),
        (status = 429, description = "server.max_rooms rooms are created already", body = ApiErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    b: Result<Json<CreateRoom>, JsonRejection>,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let req = body(b)?;
    let name = room_name(&req.name)?;
    access.check_room(&name)?;
    if req.max_participants == Some(0) {
        return Err(ApiError::BadRequest(
            "max_participants must be 1 or more".into(),
        ));
    }
    let timeout = req.empty_timeout.unwrap_or(DEFAULT_EMPTY_TIMEOUT_SECS);
    if timeout > MAX_EMPTY_TIMEOUT_SECS {
        return Err(ApiError::BadRequest(format!(
            "empty_timeout is at most {MAX_EMPTY_TIMEOUT_SECS} seconds"
        )));
    }
    let options = RoomOptions {
        max_participants: req.max_participants,
        empty_timeout: Duration::from_secs(timeout),
        metadata: req.metadata,
    };
    let out = RoomOptionsBody::from(&options);
    state.created_rooms.create(
        name.clone(),
        options,
        state.config.max_rooms,
        Instant::now(),
    )?;
    tracing::info!(room = %name, "room created by an administrator");
    Ok((
        StatusCode::CREATED,
        Json(RoomCreated {
            room: name,
            options: out,
        }),
    )
        .into_response())
}

/// `PATCH /admin/rooms/{room}`: set the room's metadata; its participants on this node get
/// `room_updated`.
#[utoipa::path(patch, path = "/admin/rooms/{room}", tag = "admin", security(("bearer" = [])),
    params(("room" = String, Path, description = "Room name")),
    request_body = UpdateRoom,
    responses(
        (status = 200, description = "Set; the room's participants got `room_updated`", body = RoomCreated),
        (status = 400, description = "Malformed body or room name, metadata too large", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "Neither held nor created on this node", body = ApiErrorBody),
        (status = 415, description = "The body is not application/json", body = ApiErrorBody),
        (status = 429, description = "server.max_rooms rooms are created already", body = ApiErrorBody),
    ))]
pub async fn update_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    b: Result<Json<UpdateRoom>, JsonRejection>,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    let name = room_name(&room)?;
    access.check_room(&name)?;
    let req = body(b)?;
    let options = state.created_rooms.set_metadata(
        &name,
        req.metadata,
        state.holds_room(&name),
        state.config.max_rooms,
    )?;
    state.roster().broadcast(
        &name,
        None,
        &ServerMessage::RoomUpdated {
            room: name.to_string(),
            metadata: options.metadata.clone(),
        },
    );
    Ok(Json(RoomCreated {
        room: name,
        options: RoomOptionsBody::from(&options),
    })
    .into_response())
}

/// This node's room participant `id` of `room` (a room-protocol member or WHIP publisher).
fn member(
    state: &AppState,
    room: &str,
    id: &str,
) -> Result<(RoomName, ParticipantId, u16), ApiError> {
    let not_found = || ApiError::NotFound(format!("no participant {id} in room {room}"));
    let name = RoomName::parse(room).map_err(|_| not_found())?;
    let pid: ParticipantId = id.parse().map_err(|_| not_found())?;
    let worker = state
        .roster()
        .get(pid)
        .filter(|m| m.room == name)
        .map(|m| m.worker)
        .ok_or_else(not_found)?;
    Ok((name, pid, worker))
}

/// `PATCH /admin/rooms/{room}/participants/{id}`: set a participant's name or metadata;
/// the room gets `participant_updated`.
#[utoipa::path(patch, path = "/admin/rooms/{room}/participants/{id}", tag = "admin",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "Room name"),
        ("id" = String, Path, description = "Participant id (`p` and 16 hex digits)"),
    ),
    request_body = UpdateParticipant,
    responses(
        (status = 200, description = "Set; the room got `participant_updated`", body = ParticipantUpdated),
        (status = 400, description = "Malformed body, name or metadata too large", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "No such participant of the room on this node", body = ApiErrorBody),
        (status = 415, description = "The body is not application/json", body = ApiErrorBody),
    ))]
pub async fn update_participant(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    b: Result<Json<UpdateParticipant>, JsonRejection>,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    if let Ok(name) = RoomName::parse(&room) {
        access.check_room(&name)?;
    }
    let req = body(b)?;
    let (_, pid, _) = member(&state, &room, &id)?;
    if let Some(m) = &req.metadata {
        crate::rooms::check_metadata(m)?;
    }
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > manifold_api::protocol::MAX_NAME_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "name is over {} characters",
            manifold_api::protocol::MAX_NAME_CHARS
        )));
    }
    state.update_member(pid, req.name, req.metadata);
    let updated = state
        .roster()
        .get(pid)
        .map(|m| ParticipantUpdated {
            id: pid,
            name: m.info.name.clone(),
            metadata: m.info.metadata.clone(),
        })
        .ok_or_else(|| ApiError::NotFound(format!("participant {id} left")))?;
    Ok(Json(updated).into_response())
}

/// `PATCH /admin/rooms/{room}/participants/{id}/tracks/{track}`: mute or unmute a
/// participant's track on the server: its shard stops (or resumes) forwarding it, then the
/// room gets `track_muted`.
#[utoipa::path(patch, path = "/admin/rooms/{room}/participants/{id}/tracks/{track}",
    tag = "admin", security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "Room name"),
        ("id" = String, Path, description = "Participant id (`p` and 16 hex digits)"),
        ("track" = String, Path, description = "Track id (`t` and 16 hex digits)"),
    ),
    request_body = MuteTrack,
    responses(
        (status = 200, description = "Done; the room got `track_muted`", body = MuteTrack),
        (status = 400, description = "Malformed body", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or another room's token", body = ApiErrorBody),
        (status = 404, description = "No such participant or track on this node", body = ApiErrorBody),
        (status = 415, description = "The body is not application/json", body = ApiErrorBody),
        (status = 503, description = "The worker is unavailable", body = ApiErrorBody),
    ))]
pub async fn mute(
    State(state): State<AppState>,
    Path((room, id, track)): Path<(String, String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    b: Result<Json<MuteTrack>, JsonRejection>,
) -> Result<Response, ApiError> {
    let access = admin(&state, &headers, &query)?;
    if let Ok(name) = RoomName::parse(&room) {
        access.check_room(&name)?;
    }
    let req = body(b)?;
    let (name, pid, worker) = member(&state, &room, &id)?;
    let no_track = || ApiError::NotFound(format!("participant {id} publishes no track {track}"));
    let tid: TrackId = track.parse().map_err(|_| no_track())?;
    if state.roster().owner_of(&name, tid) != Some(pid) {
        return Err(no_track());
    }
    state
        .request(worker, |request| Command::SetMuted {
            request,
            participant: pid,
            track: tid,
            muted: req.muted,
        })
        .await?;
    state.set_muted(pid, tid, req.muted);
    tracing::info!(participant = %pid, room = %name, track = %tid, muted = req.muted, "track muted by an administrator");
    Ok(Json(MuteTrack { muted: req.muted }).into_response())
}

/// `POST /admin/drain`: this node takes no new session from now on (as on SIGTERM, without
/// stopping): `/readyz` answers 503, joins go to other nodes. Needs a server-wide token.
#[utoipa::path(post, path = "/admin/drain", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Draining", body = Draining),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
    ))]
pub async fn drain(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&state, &headers, &query)?.check_every_room()?;
    state.start_drain();
    tracing::info!("draining: asked by an administrator");
    Ok(Json(Draining {
        draining: true,
        sessions: state.session_count(),
    })
    .into_response())
}

/// `GET /admin/log-level`: the log filter now.
#[utoipa::path(get, path = "/admin/log-level", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The log filter now", body = LogLevel),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
        (status = 503, description = "This process cannot change its log filter", body = ApiErrorBody),
    ))]
pub async fn log_level(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&state, &headers, &query)?.check_every_room()?;
    let f = log_filter(&state)?;
    Ok(Json(LogLevel {
        filter: f.current(),
    })
    .into_response())
}

/// `PUT /admin/log-level`: replace the log filter at run time.
#[utoipa::path(put, path = "/admin/log-level", tag = "admin", security(("bearer" = [])),
    request_body = LogLevel,
    responses(
        (status = 200, description = "The log filter now", body = LogLevel),
        (status = 400, description = "Malformed body or filter", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
        (status = 415, description = "The body is not application/json", body = ApiErrorBody),
        (status = 503, description = "This process cannot change its log filter", body = ApiErrorBody),
    ))]
pub async fn set_log_level(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    b: Result<Json<LogLevel>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&state, &headers, &query)?.check_every_room()?;
    let req = body(b)?;
    if req.filter.len() > MAX_LOG_FILTER_BYTES {
        return Err(ApiError::BadRequest(format!(
            "filter is over {MAX_LOG_FILTER_BYTES} bytes"
        )));
    }
    let f = log_filter(&state)?;
    f.set(&req.filter)
        .map_err(|e| ApiError::BadRequest(format!("filter: {e}")))?;
    tracing::info!(filter = %req.filter, "log filter changed by an administrator");
    Ok(Json(LogLevel {
        filter: f.current(),
    })
    .into_response())
}

fn log_filter(state: &AppState) -> Result<&dyn crate::state::LogFilter, ApiError> {
    state
        .log_filter
        .get()
        .map(|b| b.as_ref())
        .ok_or_else(|| ApiError::Unavailable("this process cannot change its log filter".into()))
}
