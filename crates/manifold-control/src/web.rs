//! The browser pages of `web/`, embedded in the binary at build time and served from the
//! URL root.

use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "../../web/"]
struct Assets;

/// Serve an embedded file for `GET`/`HEAD`; anything else is a 404 in JSON.
pub async fn serve(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::NotFound(format!("no resource {} {}", method, uri.path()))
            .into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    match Assets::get(&path) {
        Some(file) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            file.data,
        )
            .into_response(),
        None => ApiError::NotFound(format!("no resource {}", uri.path())).into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_embedded_with_their_types() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::get("whip.html").is_some());
        assert!(Assets::get("whep.html").is_some());
        assert_eq!(
            content_type("sdk/whip-whep.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
