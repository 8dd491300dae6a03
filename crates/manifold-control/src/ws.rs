//! The WebSocket transport under the room protocol: the opening handshake (RFC 6455 §4.2),
//! the bound on sockets that have not joined yet, and the end of a socket, read to its end
//! so that the close frame reaches the client even after it sent something far too big.
//!
//! The handshake is done here rather than by axum's extractor so that the socket stays
//! ours after the WebSocket layer gives up on it: a frame over the size cap ends the
//! tungstenite stream, but the rest of that frame is still arriving, and closing over
//! unread bytes makes the kernel reset the connection and lose the 1009 close frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::ApiError;

/// A room-protocol socket over the upgraded HTTP connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Most bytes read and dropped at the end of a socket, and for how long.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Sockets that have not joined a room yet, bounded.
#[derive(Debug)]
pub struct Unjoined {
    open: AtomicUsize,
    limit: usize,
    /// Upgrades refused because the bound was reached.
    pub refused: AtomicU64,
}

impl Unjoined {
    /// At most `limit` unjoined sockets at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Unjoined {
            open: AtomicUsize::new(0),
            limit,
            refused: AtomicU64::new(0),
        })
    }

    /// Unjoined sockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for one more, if there is one.
    fn take(self: &Arc<Self>) -> Option<UnjoinedSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if taken {
            Some(UnjoinedSlot(self.clone()))
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One unjoined socket's place; given back when it joins or closes.
#[derive(Debug)]
pub struct UnjoinedSlot(Arc<Unjoined>);

impl Drop for UnjoinedSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answer a WebSocket opening handshake: the 101 response, and the future that yields the
/// socket once the client has it. `max_message` caps a message and a frame.
pub fn accept(
    mut req: Request,
    unjoined: Arc<Unjoined>,
    max_message: usize,
) -> Result<
    (
        Response,
        impl std::future::Future<Output = Option<(Socket, UnjoinedSlot)>>,
    ),
    ApiError,
> {
    let key = handshake_key(req.headers())?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;
    let slot = unjoined.take().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{} sockets are waiting to join a room, the limit",
            unjoined.limit
        ))
    })?;
    let accept = derive_accept_key(key.as_bytes());
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(format!("handshake response: {e}")))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let socket = async move {
        let upgraded = on_upgrade.await.ok()?;
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        Some((ws, slot))
    };
    Ok((response, socket))
}

/// The client's `Sec-WebSocket-Key`, once the request is checked to be a WebSocket
/// opening handshake of version 13.
fn handshake_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(ApiError::BadRequest(
            "/rtc speaks WebSocket: send Connection: upgrade and Upgrade: websocket".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(ApiError::BadRequest(
            "only WebSocket version 13 is supported".into(),
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| {
            ApiError::BadRequest("a Sec-WebSocket-Key of 24 characters is required".into())
        })?;
    Ok(key.to_owned())
}

/// Read and drop what the client still sends, for at most [`DRAIN_TIME`] and
/// [`DRAIN_BYTES`], so that closing the connection afterwards is a clean FIN.
pub async fn drain_raw(socket: &mut Socket) {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0usize;
    let io = socket.get_mut();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen < DRAIN_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
    tracing::debug!(bytes = seen, elapsed = ?started.elapsed(), "read the rest of a closed socket");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn handshake_needs_upgrade_version_and_key() {
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            handshake_key(&headers(&good)).unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        // RFC 6455's example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        for drop in 0..good.len() {
            let mut h: Vec<_> = good.to_vec();
            h.remove(drop);
            assert!(
                handshake_key(&headers(&h)).is_err(),
                "without {:?}",
                good[drop]
            );
        }
        let mut h = good.to_vec();
        h[2] = ("sec-websocket-version", "8");
        assert!(handshake_key(&headers(&h)).is_err());
    }

    #[test]
    fn unjoined_sockets_are_bounded() {
        let u = Unjoined::new(2);
        let a = u.take().unwrap();
        let _b = u.take().unwrap();
        assert!(u.take().is_none());
        assert_eq!(u.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(u.take().is_some());
    }
}
