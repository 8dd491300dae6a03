//! Signaling for generated clients: build a str0m `Rtc` with a real UDP socket, offer over
//! WHIP or WHEP, apply the answer, and end the session with DELETE.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::{Candidate, Rtc};

/// Largest answer accepted from a server.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why a client could not join. The variant names are the failure reasons the reports count.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The HTTP request failed (connection refused, timeout...).
    #[error("http: {0}")]
    Http(String),
    /// The server answered with an error status.
    #[error("status {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The answer was not usable SDP.
    #[error("sdp: {0}")]
    Sdp(String),
    /// A local socket problem.
    #[error("io: {0}")]
    Io(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// A signaling API (Janus, say) refused the request with an error code of its own.
    #[error("api error {code}: {reason}")]
    Api {
        /// The API's error code.
        code: i64,
        /// Its explanation.
        reason: String,
    },
    /// The server answered something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl SignalError {
    /// A short reason for reports: `http`, `status_503`, `sdp`, `io`.
    pub fn reason(&self) -> String {
        match self {
            SignalError::Http(_) => "http".into(),
            SignalError::Status { status, .. } => format!("status_{status}"),
            SignalError::Sdp(_) => "sdp".into(),
            SignalError::Io(_) => "io".into(),
            SignalError::Timeout => "timeout".into(),
            SignalError::Api { code, .. } => format!("api_{code}"),
            SignalError::Protocol(_) => "protocol".into(),
        }
    }
}

/// What a client publishes or receives.
#[derive(Clone, Copy, Debug)]
pub struct MediaSpec {
    /// Opus.
    pub audio: bool,
    /// VP8.
    pub video: bool,
}

/// What an offer's m-lines are for.
#[derive(Clone, Copy, Debug)]
pub enum Offer {
    /// Sendonly m-lines (WHIP, a Janus publisher).
    Send(MediaSpec),
    /// Recvonly m-lines (WHEP): a listener of an audio-only scenario offers audio only, as
    /// a Janus subscriber of an audio-only feed is offered only audio.
    Receive(MediaSpec),
}

/// A negotiated client, ready for the media engine.
pub struct Joined {
    /// The WebRTC session, answer applied.
    pub rtc: Rtc,
    /// Its socket (bound, blocking mode untouched).
    pub socket: UdpSocket,
    /// Absolute URL of the session resource (for DELETE).
    pub resource: String,
    /// Negotiated m-lines and their kinds.
    pub media: Vec<(Mid, MediaKind)>,
    /// When the offer was sent.
    pub started: Instant,
    /// The server's host candidates from the answer.
    pub server_candidates: Vec<SocketAddr>,
    /// The answer as received.
    pub answer: String,
}

/// A client's `Rtc` and socket with an offer made, waiting for the answer.
pub struct Offering {
    rtc: Rtc,
    socket: UdpSocket,
    pending: SdpPendingOffer,
    media: Vec<(Mid, MediaKind)>,
    started: Instant,
    /// The offer to send.
    pub offer: String,
}

impl Offering {
    /// Bind a socket on `bind_ip` and make an offer of `media`.
    pub fn new(bind_ip: IpAddr, media: Offer) -> Result<Offering, SignalError> {
        Offering::with_layers(bind_ip, media, &[])
    }

    /// As [`Offering::new`], a publisher's video m-line offering `layers` as simulcast send
    /// layers (`a=rid:<rid> send`, `a=simulcast:send q;h;f`, lowest first); none: one stream.
    pub fn with_layers(
        bind_ip: IpAddr,
        offer: Offer,
        layers: &[&str],
    ) -> Result<Offering, SignalError> {
        let started = Instant::now();
        let (mut rtc, socket) = new_rtc(bind_ip)?;
        let mut change = rtc.sdp_api();
        let mut media = Vec::new();
        let (spec, dir) = match offer {
            Offer::Send(spec) => (spec, Direction::SendOnly),
            Offer::Receive(spec) => (spec, Direction::RecvOnly),
        };
        if spec.audio {
            media.push((
                change.add_media(MediaKind::Audio, dir, None, None, None),
                MediaKind::Audio,
            ));
        }
        if spec.video {
            // Simulcast layers are offered by publishers only.
            let simulcast = (dir == Direction::SendOnly && !layers.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in layers {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            media.push((
                change.add_media(MediaKind::Video, dir, None, None, simulcast),
                MediaKind::Video,
            ));
        }
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| SignalError::Sdp("nothing to offer".into()))?;
        Ok(Offering {
            rtc,
            socket,
            pending,
            media,
            started,
            offer: offer.to_sdp_string(),
        })
    }

    /// Apply the server's answer; `resource` names the session for the signaling that
    /// made it (a URL for WHIP/WHEP).
    pub fn accept(mut self, answer: &str, resource: String) -> Result<Joined, SignalError> {
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SignalError::Sdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, parsed)
            .map_err(|e| SignalError::Sdp(e.to_string()))?;
        Ok(Joined {
            rtc: self.rtc,
            socket: self.socket,
            resource,
            media: self.media,
            started: self.started,
            server_candidates: host_candidates(answer),
            answer: answer.to_owned(),
        })
    }

    /// When the offer was made.
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Answer a server's offer (servers such as Janus offer to their subscribers): returns the
/// client and the answer to send back. `started` is when the client began to join.
pub fn answer_offer(
    bind_ip: IpAddr,
    offer: &str,
    started: Instant,
    resource: String,
) -> Result<(Joined, String), SignalError> {
    let (mut rtc, socket) = new_rtc(bind_ip)?;
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| SignalError::Sdp(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| SignalError::Sdp(e.to_string()))?
        .to_sdp_string();
    Ok((
        Joined {
            rtc,
            socket,
            resource,
            // Learned from the `MediaAdded` events the client drains first.
            media: Vec::new(),
            started,
            server_candidates: host_candidates(offer),
            answer: answer.clone(),
        },
        answer,
    ))
}

/// The crypto every generated client shares: OpenSSL for DTLS (as browsers use BoringSSL),
/// and one certificate for the process, as a page reuses one `RTCCertificate` across its
/// peer connections. Per client, str0m's default provider would generate a certificate and
/// self-test its key exchanges: most of a client's set-up, and on a machine shared with the
/// server, a join rate the loadgen rather than the server limits.
fn client_crypto() -> &'static (Arc<CryptoProvider>, DtlsCert) {
    static CRYPTO: OnceLock<(Arc<CryptoProvider>, DtlsCert)> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        let crypto = Arc::new(manifold_dtls::crypto_provider());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("the compiled-in crypto provider generates DTLS certificates");
        (crypto, cert)
    })
}

pub(crate) fn new_rtc(bind_ip: IpAddr) -> Result<(Rtc, UdpSocket), SignalError> {
    let socket =
        UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(|e| SignalError::Io(e.to_string()))?;
    let local = socket
        .local_addr()
        .map_err(|e| SignalError::Io(e.to_string()))?;
    let (crypto, cert) = client_crypto();
    let mut rtc = Rtc::builder()
        .set_crypto_provider(crypto.clone())
        .set_dtls_cert(cert.clone())
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| SignalError::Io(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    Ok((rtc, socket))
}

/// Create a session: `url` is the full WHIP or WHEP endpoint; `publish` selects sendonly
/// (WHIP) media, `None` recvonly audio+video (WHEP).
pub async fn join(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    bind_ip: IpAddr,
    publish: Option<MediaSpec>,
) -> Result<Joined, SignalError> {
    let offer = match publish {
        Some(spec) => Offer::Send(spec),
        None => Offer::Receive(MediaSpec {
            audio: true,
            video: true,
        }),
    };
    join_with(http, url, token, bind_ip, offer).await
}

/// [`join`] with the offer's media given: sendonly (WHIP) or recvonly (WHEP).
pub async fn join_with(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    bind_ip: IpAddr,
    offer: Offer,
) -> Result<Joined, SignalError> {
    post_offer(http, url, token, Offering::new(bind_ip, offer)?).await
}

/// Send `offering` to a WHIP or WHEP endpoint (`url`) and apply the answer.
pub async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    offering: Offering,
) -> Result<Joined, SignalError> {
    let mut req = http
        .post(url)
        .header("content-type", "application/sdp")
        .body(offering.offer.clone());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SignalError::Http(e.to_string()))?;
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .bytes()
        .await
        .map_err(|e| SignalError::Http(e.to_string()))?;
    if status.as_u16() != 201 {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(SignalError::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    if body.len() > MAX_ANSWER_BYTES {
        return Err(SignalError::Sdp("answer too large".into()));
    }
    let location = location.ok_or_else(|| SignalError::Sdp("201 without Location".into()))?;
    let resource = resolve(url, &location);
    let text =
        std::str::from_utf8(&body).map_err(|_| SignalError::Sdp("answer is not UTF-8".into()))?;
    offering.accept(text, resource)
}

/// End a session.
pub async fn leave(
    http: &reqwest::Client,
    resource: &str,
    token: Option<&str>,
) -> Result<(), SignalError> {
    let mut req = http.delete(resource);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SignalError::Http(e.to_string()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(SignalError::Status {
            status: resp.status().as_u16(),
            body: resp.text().await.unwrap_or_default(),
        })
    }
}

/// The UDP host candidates of an SDP: `a=candidate:<f> <c> udp <prio> <ip> <port> typ host`.
pub fn host_candidates(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            let udp = f.get(2)?.eq_ignore_ascii_case("udp");
            let host = f.get(6) == Some(&"typ") && f.get(7) == Some(&"host");
            let ip: std::net::IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            (udp && host).then_some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// Resolve a Location (absolute, or a path) against the endpoint URL.
pub(crate) fn resolve(endpoint: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    // scheme://host:port is everything before the third '/'.
    let origin_end = endpoint
        .match_indices('/')
        .nth(2)
        .map_or(endpoint.len(), |(i, _)| i);
    format!("{}{}", &endpoint[..origin_end], location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_are_found() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 tcp 1 127.0.0.1 9 typ host\r\na=candidate:bad\r\n";
        assert_eq!(
            host_candidates(sdp),
            vec!["127.0.0.1:40000".parse().unwrap()]
        );
    }

    #[test]
    fn locations_resolve_against_the_endpoint() {
        assert_eq!(
            resolve("http://127.0.0.1:8080/whip/r", "/whip/r/p1"),
            "http://127.0.0.1:8080/whip/r/p1"
        );
        assert_eq!(resolve("http://a/whip/r", "http://b/x"), "http://b/x");
        assert_eq!(resolve("http://h:1", "/x"), "http://h:1/x");
    }
}
