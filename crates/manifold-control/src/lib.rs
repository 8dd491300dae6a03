//! Manifold's control plane: the HTTP surface (WHIP, WHEP, stats, health, the embedded web
//! pages), access tokens, and the directory of rooms and sessions that routes each request
//! to the media worker owning its room.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_body;
pub mod admin_room;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod error;
pub mod federation;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod placement;
pub mod rooms;
pub mod roster;
pub mod rtc;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod turn;
mod web;
pub mod webhooks;
pub mod ws;

use std::future::Future;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

pub use auth::{Access, Auth, Claims};
pub use error::{ApiError, ApiErrorBody};
pub use state::{AppState, ChannelSink, ControlConfig, EventReceiver, event_channel};

/// The full HTTP application.
pub fn router(state: AppState) -> Router {
    use manifold_api::SessionKind::{Whep, Whip};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            HeaderName::from_static("accept-patch"),
        ]);
    Router::new()
        .route(
            "/whip/{room}",
            post(sessions::whip_post).options(sessions::options),
        )
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(|s, p, q, h| sessions::session_delete(Whip, s, p, q, h))
                .patch(|s, p, q, h, b| sessions::session_patch(Whip, s, p, q, h, b))
                .options(sessions::options),
        )
        .route(
            "/whep/{room}",
            post(sessions::whep_post).options(sessions::options),
        )
        .route(
            "/whep/{room}/{id}",
            post(sessions::whep_post_named)
                .delete(|s, p, q, h| sessions::session_delete(Whep, s, p, q, h))
                .patch(|s, p, q, h, b| sessions::session_patch(Whep, s, p, q, h, b))
                .options(sessions::options),
        )
        .route("/rtc", get(rtc::upgrade))
        .route("/dev/token", get(dev_token))
        .route("/admin/rooms", get(admin::rooms).post(admin_room::create))
        .route("/admin/nodes", get(admin::nodes))
        .route(
            "/admin/rooms/{room}",
            get(admin_room::room)
                .patch(admin_room::update_room)
                .delete(admin::close_room),
        )
        .route(
            "/admin/rooms/{room}/participants",
            get(admin_room::participants),
        )
        .route(
            "/admin/rooms/{room}/participants/{id}",
            axum::routing::delete(admin::kick).patch(admin_room::update_participant),
        )
        .route(
            "/admin/rooms/{room}/participants/{id}/tracks/{track}",
            axum::routing::patch(admin_room::mute),
        )
        .route("/admin/drain", post(admin_room::drain))
        .route(
            "/admin/log-level",
            get(admin_room::log_level).put(admin_room::set_log_level),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(web::serve)
        .layer(cors)
        .with_state(state)
}

/// Serve `router(state)` on `listener` until `shutdown` completes, within the listener
/// limits of the state's configuration, over TLS when `state.tls` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.listener.clone();
    let counters = state.listener_counters.clone();
    let expiry = tokio::spawn(rooms::run_expiry(state.clone()));
    let janitor = state.clone();
    let janitor = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            janitor.forget_idle_clients();
        }
    });
    let tls = state.tls.get().cloned();
    let result = listener::serve(listener, router(state), limits, counters, tls, shutdown).await;
    janitor.abort();
    expiry.abort();
    result
}

/// Query of `GET /dev/token`.
#[derive(Debug, serde::Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: Option<String>,
    name: Option<String>,
}

/// `GET /dev/token`: in dev mode only, a token for the demo app (signed with this
/// process's random key; publish and subscribe in one room, one hour).
async fn dev_token(
    State(state): State<AppState>,
    Query(q): Query<DevTokenQuery>,
) -> Result<Response, ApiError> {
    if !state.auth.is_dev() {
        return Err(ApiError::NotFound(
            "tokens are only handed out in dev mode; ask your administrator for one".into(),
        ));
    }
    let room = error::room_name(&q.room)?;
    let identity = match q.identity.as_deref() {
        Some(i) if !i.is_empty() => manifold_api::Identity::parse(i)
            .map_err(|e| ApiError::BadRequest(format!("identity {e}")))?,
        _ => manifold_api::Identity::parse(&format!("guest-{:08x}", rand::random::<u32>()))
            .expect("valid identity"),
    };
    let name = q.name.filter(|n| !n.is_empty() && n.chars().count() <= 128);
    let grants = manifold_api::Grants {
        publish: true,
        subscribe: true,
        admin: false,
    };
    let token = state
        .auth
        .mint(
            &identity,
            Some(&room),
            grants,
            name.as_deref(),
            std::time::Duration::from_secs(3600),
        )
        .map_err(ApiError::Internal)?;
    Ok(Json(serde_json::json!({ "token": token, "identity": identity })).into_response())
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Answer of `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    /// Takes new sessions.
    ready: bool,
    /// Why not (`draining`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// `GET /readyz`: whether this node takes new sessions (for a load balancer).
#[utoipa::path(get, path = "/readyz", tag = "server",
    responses(
        (status = 200, description = "Takes new sessions", body = Readiness),
        (status = 503, description = "Draining", body = Readiness),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                reason: Some("draining"),
            }),
        )
            .into_response()
    } else {
        Json(Readiness {
            ready: true,
            reason: None,
        })
        .into_response()
    }
}

/// `GET /stats`: the shards' counters summed, and the control plane's (sessions, cluster,
/// webhooks, HTTP, overload) beside them.
#[utoipa::path(get, path = "/stats", tag = "server", security(("bearer" = [])),
    responses(
        (status = 200, description = "The shards' counters summed (`ShardStats`), and more \
            fields beside them: workers, sessions, draining, negotiation_panics, cluster, \
            webhooks, http, overload", body = manifold_api::ShardStats),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "No admin grant, or a room-scoped token", body = ApiErrorBody),
        (status = 503, description = "A worker is unavailable", body = ApiErrorBody),
    ))]
async fn stats(
    State(state): State<AppState>,
    Query(query): Query<sessions::SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = state
        .auth
        .verify(sessions::bearer(&headers).or(query.access_token.as_deref()))?;
    access.check_grant(|g| g.admin, "admin")?;
    access.check_every_room()?;
    let total = state.stats().await?;
    let mut value =
        serde_json::to_value(&total).map_err(|e| ApiError::Internal(format!("stats: {e}")))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("workers".into(), state.workers.len().into());
        obj.insert("sessions".into(), state.session_count().into());
        obj.insert("draining".into(), state.is_draining().into());
        // Panics the WebRTC stack raised while negotiating on the control plane (a shard's
        // own contained panics are in `panics`).
        obj.insert("negotiation_panics".into(), state.factory.panics().into());
        let mut cluster = state.cluster.federation.stats();
        cluster["bus_dropped"] = state.cluster.bus.dropped().into();
        cluster["bridge"] = state.bridge.stats();
        obj.insert("cluster".into(), cluster);
        let mut overload = manifold_io::OverloadCounters::default();
        let mut ice_tcp = manifold_io::IceTcpCounters::default();
        for w in &state.workers {
            overload.merge(&w.overload());
            ice_tcp.merge(&w.ice_tcp_counters());
        }
        obj.insert(
            "ice_tcp".into(),
            serde_json::json!({
                "enabled": state.workers.iter().any(manifold_io::WorkerHandle::ice_tcp),
                "open": ice_tcp.open,
                "accepted": ice_tcp.accepted,
                "refused": ice_tcp.refused,
                "closed": ice_tcp.closed,
                "timed_out": ice_tcp.timed_out,
                "protocol_errors": ice_tcp.protocol_errors,
                "write_errors": ice_tcp.write_errors,
                "frames_in": ice_tcp.frames_in,
                "frames_out": ice_tcp.frames_out,
                "write_dropped": ice_tcp.write_dropped,
            }),
        );
        obj.insert(
            "webhooks".into(),
            serde_json::to_value(state.webhooks.snapshot())
                .map_err(|e| ApiError::Internal(format!("stats: {e}")))?,
        );
        obj.insert("http".into(), {
            let mut http = state.listener_counters.snapshot();
            http["sessions_rate_limited"] = state
                .session_starts_refused
                .load(std::sync::atomic::Ordering::Relaxed)
                .into();
            http["unjoined_sockets"] = state.unjoined.open().into();
            if let Some(tls) = state.tls.get() {
                http["tls"] = tls.snapshot();
            }
            http["unjoined_refused"] = state
                .unjoined
                .refused
                .load(std::sync::atomic::Ordering::Relaxed)
                .into();
            http
        });
        obj.insert(
            "overload".into(),
            serde_json::json!({
                "commands_rejected": overload.commands_rejected,
                "events_dropped": overload.events_dropped,
                "events_deferred": overload.events_deferred,
                "events_backlog": overload.events_backlog,
                "send_errors": overload.send_errors,
                "relay_dropped": overload.relay_dropped,
            }),
        );
    }
    Ok(Json(value).into_response())
}
