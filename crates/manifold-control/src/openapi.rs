//! The OpenAPI 3.1 document of the HTTP surface, served at `GET /openapi.json` and kept in
//! `docs/openapi.json`: the admin API from its handlers' annotations and body types
//! (`admin.rs`, `admin_room.rs`, `admin_body.rs`), `/stats`, `/healthz`, `/readyz` from
//! theirs (`lib.rs`), and `/metrics` and the WHIP/WHEP endpoints, whose bodies are text
//! rather than JSON, described here. It holds no secret: it is the same for every server.
//!
//! Not in it: the WebSocket room protocol (`/rtc`, `docs/protocol.md`), `/dev/token` (dev
//! mode only) and the embedded web pages.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};

use crate::error::ApiErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Manifold",
        description = "A WebRTC SFU's HTTP API: the admin API (every call needs a bearer JWT \
            with the `admin` grant; a token limited to a room acts on that room only), stats and \
            health, and WHIP/WHEP. A token may also be given as the `access_token` query \
            parameter. Errors are JSON: `{\"error\": code, \"message\": text}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::admin::rooms,
        crate::admin_room::create,
        crate::admin::nodes,
        crate::admin_room::room,
        crate::admin_room::update_room,
        crate::admin::close_room,
        crate::admin_room::participants,
        crate::admin_room::update_participant,
        crate::admin::kick,
        crate::admin_room::mute,
        crate::admin_room::drain,
        crate::admin_room::log_level,
        crate::admin_room::set_log_level,
        crate::stats,
        crate::healthz,
        crate::readyz,
    ),
    modifiers(&Surface),
    tags(
        (name = "admin", description = "Rooms, participants and the node (`docs/admin.md`)"),
        (name = "server", description = "Stats and health"),
        (name = "whip-whep", description = "WebRTC ingest and playback (RFC 9725, WHEP draft)"),
    )
)]
struct Doc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(Doc::openapi)
}

/// The document as pretty JSON with a final newline (the form of `docs/openapi.json`).
pub fn json() -> String {
    let mut s = document()
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    s.push('\n');
    s
}

/// `GET /openapi.json`: public, like the code it describes.
pub async fn serve() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(json).as_str();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds what the annotations cannot say: the bearer scheme and the SDP endpoints.
struct Surface;

impl utoipa::Modify for Surface {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT from `manifold token` (`--admin` for the admin API and \
                         /stats; `--publish` for WHIP, `--subscribe` for WHEP). In dev mode \
                         (no auth.key) no token is needed.",
                    ))
                    .build(),
            ),
        );
        doc.paths
            .add_path_operation("/metrics", vec![HttpMethod::Get], metrics());
        for (kind, grant) in [("whip", "publish"), ("whep", "subscribe")] {
            let post = sdp_offer(kind, grant);
            doc.paths
                .add_path_operation(format!("/{kind}/{{room}}"), vec![HttpMethod::Post], post);
            let session = if kind == "whip" { "session" } else { "id" };
            let path = format!("/{kind}/{{room}}/{{{session}}}");
            if kind == "whep" {
                doc.paths
                    .add_path_operation(&path, vec![HttpMethod::Post], sdp_offer_named());
            }
            doc.paths
                .add_path_operation(&path, vec![HttpMethod::Patch], trickle(kind, session));
            doc.paths
                .add_path_operation(&path, vec![HttpMethod::Delete], end(kind, session));
        }
    }
}

fn error(status: &str, description: &str) -> (String, utoipa::openapi::Response) {
    (
        status.to_owned(),
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(
                        <ApiErrorBody as utoipa::ToSchema>::name(),
                    )))
                    .build(),
            )
            .build(),
    )
}

/// A text body (SDP, an SDP fragment).
fn text_body() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn path_param(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn with_errors(mut op: OperationBuilder, errors: &[(&str, &str)]) -> Operation {
    for (status, description) in errors {
        let (s, r) = error(status, description);
        op = op.response(s, r);
    }
    op.security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .build()
}

fn sdp_answer() -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description("The SDP answer; `Location` is the session's URL, `ETag` its version")
        .content("application/sdp", text_body())
        .header(
            "Location",
            utoipa::openapi::header::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .build(),
        )
        .header(
            "ETag",
            utoipa::openapi::header::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .build(),
        )
        .build()
}

const OFFER_ERRORS: &[(&str, &str)] = &[
    (
        "307",
        "This node takes no new session (draining or full); `Location` names one that does",
    ),
    (
        "400",
        "Not a room name, or an SDP offer that cannot be answered",
    ),
    ("401", "No valid token"),
    (
        "403",
        "The token does not grant this room or this kind of session",
    ),
    ("413", "The offer is over the size limit"),
    ("415", "The body is not application/sdp"),
    ("429", "A room or server limit is reached"),
    ("503", "The server is at capacity, overloaded or draining"),
];

fn sdp_offer(kind: &str, grant: &str) -> Operation {
    let what = if kind == "whip" {
        "Publish into the room (WHIP)"
    } else {
        "Play the room's current publisher (WHEP)"
    };
    let op = OperationBuilder::new()
        .tag("whip-whep")
        .operation_id(Some(format!("{kind}_offer")))
        .summary(Some(what))
        .description(Some(format!(
            "An SDP offer in, an SDP answer out. Needs the `{grant}` grant."
        )))
        .parameter(path_param("room", "Room name"))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/sdp", text_body())
                .required(Some(Required::True))
                .build(),
        ))
        .response("201", sdp_answer());
    with_errors(op, OFFER_ERRORS)
}

fn sdp_offer_named() -> Operation {
    let op = OperationBuilder::new()
        .tag("whip-whep")
        .operation_id(Some("whep_offer_named".to_owned()))
        .summary(Some("Play one publisher of the room (WHEP)"))
        .description(Some(
            "As `POST /whep/{room}`, following the publisher of this identity. Needs the \
             `subscribe` grant.",
        ))
        .parameter(path_param("room", "Room name"))
        .parameter(path_param("id", "The publisher's identity"))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/sdp", text_body())
                .required(Some(Required::True))
                .build(),
        ))
        .response("201", sdp_answer());
    with_errors(op, OFFER_ERRORS)
}

fn trickle(kind: &str, session: &str) -> Operation {
    let op = OperationBuilder::new()
        .tag("whip-whep")
        .operation_id(Some(format!("{kind}_patch")))
        .summary(Some("Trickle ICE candidates, or restart ICE"))
        .parameter(path_param("room", "Room name"))
        .parameter(path_param(session, "Session id from `Location`"))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/trickle-ice-sdpfrag", text_body())
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "204",
            ResponseBuilder::new()
                .description("Candidates taken")
                .build(),
        )
        .response(
            "200",
            ResponseBuilder::new()
                .description("ICE restarted: the server's new credentials and candidates")
                .content("application/trickle-ice-sdpfrag", text_body())
                .build(),
        );
    with_errors(
        op,
        &[
            ("400", "Not a fragment"),
            ("401", "No valid token"),
            ("403", "Not this session's token"),
            ("404", "No such session"),
            ("412", "`If-Match` differs from the session's ETag"),
            ("413", "The fragment is over the size limit"),
            ("415", "The body is not application/trickle-ice-sdpfrag"),
            ("503", "The worker is unavailable"),
        ],
    )
}

fn metrics() -> Operation {
    let op = OperationBuilder::new()
        .tag("server")
        .operation_id(Some("metrics".to_owned()))
        .summary(Some("Prometheus metrics (text exposition format)"))
        .description(Some(
            "Needs the `admin` grant for every room (a bearer header, or `?access_token=`).",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The metrics")
                .content("text/plain", text_body())
                .build(),
        );
    with_errors(
        op,
        &[
            ("401", "No valid token"),
            ("403", "No admin grant, or a room-scoped token"),
            ("500", "The metrics could not be encoded"),
            ("503", "A worker is unavailable"),
        ],
    )
}

fn end(kind: &str, session: &str) -> Operation {
    let op = OperationBuilder::new()
        .tag("whip-whep")
        .operation_id(Some(format!("{kind}_delete")))
        .summary(Some("End the session"))
        .parameter(path_param("room", "Room name"))
        .parameter(path_param(session, "Session id from `Location`"))
        .response("200", ResponseBuilder::new().description("Ended").build());
    with_errors(
        op,
        &[
            ("401", "No valid token"),
            ("403", "Not this session's token"),
            ("404", "No such session"),
            ("503", "The worker is unavailable"),
        ],
    )
}
