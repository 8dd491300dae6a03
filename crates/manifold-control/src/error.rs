//! Errors of the HTTP surface: each maps to a status code and a JSON body
//! `{"error": "<code>", "message": "<text>"}` that a client can show as it is.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use manifold_api::CommandError;
use manifold_api::negotiation::NegotiateError;
use serde::Serialize;

/// An error answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 400: the SDP offer cannot be answered.
    #[error("{0}")]
    BadSdp(String),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource exists already.
    #[error("{0}")]
    Conflict(String),
    /// 412: the If-Match header does not match the session's ETag.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the body is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: a per-room or per-participant limit is reached.
    #[error("{0}")]
    LimitReached(String),
    /// 503: the server is at capacity, overloaded or draining.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an internal failure.
    #[error("{0}")]
    Internal(String),
    /// 307: this node takes no new session now (draining, or full); another node does, at
    /// this URL (`Location`).
    #[error("this node takes no new sessions now; try {0}")]
    Redirect(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// Machine-readable code: `bad_request`, `bad_sdp`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `precondition_failed`, `too_large`,
    /// `unsupported_media_type`, `limit_reached`, `unavailable`, `internal` or `redirect`.
    #[schema(example = "not_found")]
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// A room name from a request path or body; 400 saying why it is not one.
pub fn room_name(room: &str) -> Result<manifold_api::RoomName, ApiError> {
    manifold_api::RoomName::parse(room).map_err(|e| ApiError::BadRequest(format!("room name {e}")))
}

impl ApiError {
    /// HTTP status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BadSdp(_) => (StatusCode::BAD_REQUEST, "bad_sdp"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::LimitReached(_) => (StatusCode::TOO_MANY_REQUESTS, "limit_reached"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Redirect(_) => (StatusCode::TEMPORARY_REDIRECT, "redirect"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (
            status,
            Json(ApiErrorBody {
                error: code.to_owned(),
                message: self.to_string(),
            }),
        )
            .into_response();
        if let ApiError::Redirect(url) = &self
            && let Ok(v) = axum::http::HeaderValue::from_str(url)
        {
            response
                .headers_mut()
                .insert(axum::http::header::LOCATION, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<NegotiateError> for ApiError {
    fn from(e: NegotiateError) -> Self {
        match e {
            NegotiateError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            NegotiateError::Panicked => ApiError::Internal(e.to_string()),
            _ => ApiError::BadSdp(e.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::LimitReached(m) => ApiError::LimitReached(m),
            CommandError::UnknownParticipant => {
                ApiError::NotFound("no such session (it may have ended)".into())
            }
            CommandError::Rejected(m) => ApiError::BadRequest(m),
            CommandError::Forbidden(m) => ApiError::Forbidden(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
