//! WHIP (RFC 9725) and WHEP: create a session from an SDP offer, end it with DELETE, trickle
//! candidates or restart ICE with PATCH.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::OriginalUri;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use manifold_api::command::{Command, NewSession};
use manifold_api::negotiation::SdpFragment;
use manifold_api::{
    Identity, LeaveReason, ParticipantId, ReplyValue, RoomName, SessionKind, Source,
};
use serde::Deserialize;

use crate::auth::Access;
use crate::error::ApiError;
use crate::listener::ClientAddr;
use crate::state::{AppState, SessionEntry};

const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";

/// Query parameters accepted on session creation.
#[derive(Debug, Default, Deserialize)]
pub struct SessionQuery {
    /// Token, for clients that cannot set headers.
    pub access_token: Option<String>,
    /// Identity to use in dev mode (tokens carry it otherwise).
    pub identity: Option<String>,
}

/// `POST /whip/{room}`
pub async fn whip_post(
    State(state): State<AppState>,
    from: ClientAddr,
    uri: OriginalUri,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(
        state,
        from,
        &uri,
        SessionKind::Whip,
        room,
        None,
        query,
        headers,
        body,
    )
    .await
}

/// `POST /whep/{room}`: play the room's current publisher.
pub async fn whep_post(
    State(state): State<AppState>,
    from: ClientAddr,
    uri: OriginalUri,
    Path(room): Path<String>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(
        state,
        from,
        &uri,
        SessionKind::Whep,
        room,
        Some(Source::RoomCurrent),
        query,
        headers,
        body,
    )
    .await
}

/// `POST /whep/{room}/{participant}`: play a named publisher (its identity, which for a
/// tokenless dev-mode publisher is its participant id).
pub async fn whep_post_named(
    State(state): State<AppState>,
    from: ClientAddr,
    uri: OriginalUri,
    Path((room, participant)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = Identity::parse(&participant)
        .map_err(|e| ApiError::BadRequest(format!("participant {e}")))?;
    create(
        state,
        from,
        &uri,
        SessionKind::Whep,
        room,
        Some(Source::Identity(who)),
        query,
        headers,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn create(
    state: AppState,
    from: ClientAddr,
    uri: &OriginalUri,
    kind: SessionKind,
    room: String,
    source: Option<Source>,
    query: SessionQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let room = crate::error::room_name(&room)?;
    require_content_type(&headers, SDP)?;
    let access = authorize(&state, &headers, query.access_token.as_deref(), &room, kind)?;
    if let Some(url) = crate::placement::elsewhere(&state).await {
        let path = uri.0.path_and_query().map_or("", |p| p.as_str());
        return Err(ApiError::Redirect(format!("{url}{path}")));
    }
    state.admit_session(from)?;
    let offer = read_body(&headers, body, state.config.max_body_bytes).await?;
    let offer = String::from_utf8(offer.to_vec())
        .map_err(|_| ApiError::BadSdp("the SDP offer is not UTF-8".into()))?;

    let id = ParticipantId(rand::random());
    let identity = match (&access.identity, query.identity.as_deref()) {
        (Some(i), _) => i.clone(),
        (None, Some(requested)) => {
            Identity::parse(requested).map_err(|e| ApiError::BadRequest(format!("identity {e}")))?
        }
        (None, None) => {
            Identity::parse(&id.to_string()).expect("participant ids are valid identities")
        }
    };
    // RFC 9725 §4.6: the TURN servers, with this session's credential, as `Link` headers.
    let links = state
        .config
        .turn
        .as_ref()
        .map(|t| t.link_headers(identity.as_str(), crate::turn::now_unix()))
        .unwrap_or_default();
    let etag = new_etag();
    // The Location names the session by a secret of its own: the participant id is seen by
    // everyone in the room, and must not be enough to end or restart someone's session.
    let resource = new_resource_id();
    let worker = state.reserve(id, |worker| SessionEntry {
        room: room.clone(),
        worker,
        kind,
        etag: etag.clone(),
        remote_ufrag: ice_ufrag(&offer),
        owner: access.identity.clone(),
        resource: resource.clone(),
    })?;
    let result = join(
        &state,
        worker,
        Joining {
            id,
            identity,
            room: room.clone(),
            kind,
            source,
            grants: access.grants,
        },
        offer,
    )
    .await;
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            state.forget(id);
            return Err(e);
        }
    };
    let location = format!("/{}/{}/{}", path_prefix(kind), room, resource);
    tracing::info!(participant = %id, %room, kind = ?kind, worker, "session created");
    state.histograms.joined(kind, started.elapsed());
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_owned()),
            (header::LOCATION, location),
            (header::ETAG, format!("\"{etag}\"")),
            (
                header::HeaderName::from_static("accept-patch"),
                SDP_FRAG.to_owned(),
            ),
        ],
        answer,
    )
        .into_response();
    for link in links {
        // Configured URLs and parsed identities are printable; a value that is not is left
        // out rather than failing the session.
        if let Ok(value) = header::HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, value);
        }
    }
    Ok(response)
}

/// Who is joining, and as what.
struct Joining {
    id: ParticipantId,
    identity: Identity,
    room: RoomName,
    kind: SessionKind,
    source: Option<Source>,
    grants: manifold_api::Grants,
}

async fn join(
    state: &AppState,
    worker: u16,
    who: Joining,
    offer: String,
) -> Result<String, ApiError> {
    let Joining {
        id,
        identity,
        room,
        kind,
        source,
        grants,
    } = who;
    let factory = state.factory.clone();
    let candidates = state
        .workers
        .get(usize::from(worker))
        .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?
        .candidates()
        .to_vec();
    // Building an Rtc costs about a millisecond of CPU: keep it off the async workers.
    let negotiated = tokio::task::spawn_blocking(move || {
        factory.accept(kind, &offer, &candidates, Instant::now())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("negotiation task failed: {e}")))??;
    let answer = negotiated.sdp.clone();
    let session = Box::new(NewSession {
        id,
        identity,
        room,
        kind,
        source,
        auto_subscribe: false,
        grants,
        negotiated,
    });
    match state
        .request(worker, |request| Command::Join { request, session })
        .await?
    {
        ReplyValue::Done => Ok(answer),
        other => Err(ApiError::Internal(format!(
            "unexpected reply to join: {other:?}"
        ))),
    }
}

/// `DELETE` on a session's `Location` (`kind` from its path).
pub async fn session_delete(
    kind: SessionKind,
    State(state): State<AppState>,
    Path((room, session)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, entry) = find_session(&state, kind, &room, &session, &headers, &query)?;
    state.tell(
        entry.worker,
        Command::Leave {
            participant: id,
            reason: LeaveReason::Requested,
        },
    )?;
    // Forget it now so a second DELETE is a 404; the worker's ParticipantLeft follows.
    state.forget(id);
    Ok(StatusCode::OK.into_response())
}

/// `PATCH` on a session's `Location` (`kind` from its path): trickle ICE or ICE restart.
pub async fn session_patch(
    kind: SessionKind,
    State(state): State<AppState>,
    Path((room, session)): Path<(String, String)>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, entry) = find_session(&state, kind, &room, &session, &headers, &query)?;
    require_content_type(&headers, SDP_FRAG)?;
    if let Some(tag) = headers.get(header::IF_MATCH) {
        let tag = tag.to_str().unwrap_or("").trim();
        if tag != "*" && tag.trim_matches('"') != entry.etag {
            return Err(ApiError::PreconditionFailed(
                "If-Match does not match the session's current ETag".into(),
            ));
        }
    }
    let body = read_body(&headers, body, state.config.max_body_bytes).await?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the fragment is not UTF-8".into()))?;
    let mut fragment = SdpFragment::parse(body, state.config.max_body_bytes)?;
    // The same credentials as before mean plain trickle; new ones mean an ICE restart.
    let restart_ufrag = fragment.ufrag.clone();
    if fragment.ufrag.is_some() && fragment.ufrag == entry.remote_ufrag {
        fragment.ufrag = None;
        fragment.pwd = None;
    }
    let reply = state
        .request(entry.worker, |request| Command::Trickle {
            request,
            participant: id,
            fragment,
        })
        .await?;
    match reply {
        ReplyValue::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        ReplyValue::IceRestarted { ufrag, pwd } => {
            let etag = new_etag();
            state.update_session(id, |s| {
                s.etag = etag.clone();
                s.remote_ufrag = restart_ufrag;
            });
            let mut frag = format!("a=ice-lite\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
            if let Some(w) = state.workers.get(usize::from(entry.worker)) {
                for line in w.candidate_lines() {
                    frag.push_str(&format!("a={line}\r\n"));
                }
            }
            frag.push_str("a=end-of-candidates\r\n");
            Ok((
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, SDP_FRAG.to_owned()),
                    (header::ETAG, format!("\"{etag}\"")),
                ],
                frag,
            )
                .into_response())
        }
        other => Err(ApiError::Internal(format!(
            "unexpected reply to patch: {other:?}"
        ))),
    }
}

/// `OPTIONS` on the WHIP/WHEP endpoints (CORS preflights are answered by the CORS layer).
pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    r
}

/// The WHIP/WHEP session at `/{kind}/{room}/{resource}`, if the request's token may touch
/// it: a valid token for the room (401/403), with the grant of the session's kind, whose
/// identity is the one that created the session, unless it is an admin's (403). A session
/// created without a token (dev mode) is held by whoever has its secret URL. An unknown
/// resource, or one of another kind or room, is a 404.
fn find_session(
    state: &AppState,
    kind: SessionKind,
    room: &str,
    resource: &str,
    headers: &HeaderMap,
    query: &SessionQuery,
) -> Result<(ParticipantId, SessionEntry), ApiError> {
    let access = state
        .auth
        .verify(bearer(headers).or(query.access_token.as_deref()))?;
    let not_found = || {
        ApiError::NotFound(format!(
            "no {} session at this URL in room {}",
            path_prefix(kind),
            truncated(room)
        ))
    };
    let (id, entry) = state.session_by_resource(resource).ok_or_else(not_found)?;
    if entry.room.as_str() != room || entry.kind != kind {
        return Err(not_found());
    }
    access.check_room(&entry.room)?;
    check_kind_grant(&access, kind)?;
    if let Some(owner) = &entry.owner
        && !access.grants.admin
        && access.identity.as_ref() != Some(owner)
    {
        return Err(ApiError::Forbidden(
            "this session belongs to another identity".into(),
        ));
    }
    Ok((id, entry))
}

/// At most 64 characters of a path segment, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn check_kind_grant(access: &Access, kind: SessionKind) -> Result<(), ApiError> {
    match kind {
        SessionKind::Whip => access.check_grant(|g| g.publish, "publish"),
        SessionKind::Whep => access.check_grant(|g| g.subscribe, "subscribe"),
        SessionKind::Room => {
            if access.grants.may_publish() || access.grants.may_subscribe() {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "the token grants neither publish nor subscribe".into(),
                ))
            }
        }
    }
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    room: &RoomName,
    kind: SessionKind,
) -> Result<Access, ApiError> {
    let access = state.auth.verify(bearer(headers).or(query_token))?;
    access.check_room(room)?;
    check_kind_grant(&access, kind)?;
    Ok(access)
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn require_content_type(headers: &HeaderMap, wanted: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(wanted) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type {wanted}, got {:?}",
            if got.is_empty() { "nothing" } else { got }
        )))
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::TooLarge(format!("the request body is over the {limit}-byte limit"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        // Read (and drop) a moderately oversized body before answering: a client still
        // writing it when the connection closes gets a reset instead of the 413.
        if n <= DRAIN_BYTES {
            discard(body).await;
        }
        return Err(too_large());
    }
    // Without (or despite) a Content-Length, reading stops at the limit.
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// The largest oversized body read to the end so that its sender sees the 413.
const DRAIN_BYTES: u64 = 4 << 20;
/// How long that reading may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Read and drop up to [`DRAIN_BYTES`] of `body`, for at most [`DRAIN_TIME`]; nothing is
/// kept.
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

fn new_etag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A session's secret resource id: 128 random bits from the operating system's generator
/// (rand's thread RNG is a CSPRNG seeded from it), in hex.
fn new_resource_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn path_prefix(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep | SessionKind::Room => "whep",
    }
}
