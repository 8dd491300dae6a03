//! Turning a client's SDP offer into a ready `Rtc` and an answer, before the session ever
//! reaches a shard.
//!
//! Building an `Rtc` and answering an offer costs about a millisecond of CPU, so the control
//! plane calls this off the media threads and hands the finished session to a shard. The
//! functions here are pure: no sockets, and the caller supplies the time.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use manifold_api::command::{NegotiatedSession, Negotiator};
pub use manifold_api::negotiation::{MAX_FRAGMENT_CANDIDATES, NegotiateError, SdpFragment};
use manifold_api::protocol::MidInfo;

pub use crate::sdp_check::{MAX_PAYLOAD_TYPES, MAX_SIMULCAST_LAYERS, check_sdp};
use manifold_api::{MediaKind, SessionKind};
use str0m::bwe::Bitrate;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, Mid};
use str0m::net::TcpType;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

/// Longest SDP offer accepted, in bytes, unless the caller sets its own limit lower.
pub const DEFAULT_MAX_SDP_BYTES: usize = 64 * 1024;

/// Most m-lines accepted in one offer: a WHIP or WHEP session needs two or three.
pub const MAX_MEDIA_LINES: usize = 16;

/// Where every subscriber's downlink estimate starts, kbit/s: a medium layer and audio fit;
/// the estimator probes up from there.
pub const INITIAL_ESTIMATE_KBPS: u64 = 800;

/// How often every session reports its streams' statistics to the shard.
pub const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// One negotiated m-line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Its mid.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
}

/// A session ready to be handed to a shard.
pub struct Negotiated {
    /// The WebRTC state machine, with the offer applied.
    pub rtc: Rtc,
    /// The local ICE ufrag: the key a shard indexes the session by until its address is known.
    pub ufrag: String,
    /// The SDP for the client: the answer to its offer (WHIP, WHEP), or the server's first
    /// offer (room sessions). Moved out into the [`NegotiatedSession`] made from this.
    pub sdp: String,
    /// The m-lines that carry media for this session's purpose: received media for WHIP,
    /// sent media for WHEP; none yet for a room session.
    pub media: Vec<NegotiatedMedia>,
    /// For a room session: the first offer, awaiting the client's answer.
    pub pending: Option<SdpPendingOffer>,
    /// For a room session: the data channel's m-line.
    pub data_mid: Option<Mid>,
}

impl Negotiated {
    /// What each m-line of a room session's first offer is for.
    pub fn offer_mids(&self) -> Vec<MidInfo> {
        self.data_mid
            .iter()
            .map(|mid| MidInfo {
                mid: mid.to_string(),
                kind: "application".into(),
                cid: None,
                track: None,
                participant: None,
            })
            .collect()
    }
}

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiated")
            .field("ufrag", &self.ufrag)
            .field("media", &self.media)
            .finish_non_exhaustive()
    }
}

/// The SDP and the first offer's m-lines travel outside; the shard takes them back with the
/// state ([`NegotiatedSession::into_parts`]).
impl From<Negotiated> for NegotiatedSession {
    fn from(mut n: Negotiated) -> Self {
        let sdp = std::mem::take(&mut n.sdp);
        let mids = n.offer_mids();
        NegotiatedSession::new(sdp, mids, n)
    }
}

/// Builds `Rtc` instances that share one crypto provider and one DTLS certificate, so that
/// a new session costs no key generation.
#[derive(Clone)]
pub struct RtcFactory {
    crypto: Arc<CryptoProvider>,
    /// For sessions whose offer has no data channel: the same crypto, but DTLS frees its
    /// OpenSSL state once the handshake is done (`manifold_dtls::media_only_crypto_provider`,
    /// about 90 KB per session). The same as `crypto` for a factory given its provider.
    media_only: Arc<CryptoProvider>,
    cert: DtlsCert,
    max_sdp_bytes: usize,
    /// Announce a passive ICE-TCP candidate beside each UDP one (same address and port).
    ice_tcp: bool,
    /// Panics caught while negotiating, shared by every clone.
    panics: Arc<AtomicU64>,
}

impl RtcFactory {
    /// A factory with a freshly generated certificate. `now` is when its certificate is
    /// tried (see [`RtcFactory::with_certificate`]).
    pub fn new(max_sdp_bytes: usize, now: Instant) -> Self {
        // str0m's crypto with OpenSSL for DTLS: peers with RSA certificates handshake too.
        let crypto = Arc::new(manifold_dtls::crypto_provider());
        // Certificates come from the aws-lc-rs provider, which always generates them; a
        // build without it does not compile, so this cannot fail at run time.
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("the compiled-in crypto provider generates DTLS certificates");
        let mut factory = Self::with_certificate(crypto, cert, max_sdp_bytes, now)
            .expect("a freshly generated certificate is usable");
        factory.media_only = Arc::new(manifold_dtls::media_only_crypto_provider());
        factory
    }

    /// A factory with a given provider and certificate. The certificate is tried once here:
    /// one the provider's DTLS stack cannot use (any RSA key for str0m's own dimpl; a key
    /// that does not match the certificate) is refused now rather than failing every
    /// session later. `now` is the time the trial `Rtc` is built at.
    pub fn with_certificate(
        crypto: Arc<CryptoProvider>,
        cert: DtlsCert,
        max_sdp_bytes: usize,
        now: Instant,
    ) -> Result<Self, String> {
        let factory = RtcFactory {
            media_only: crypto.clone(),
            crypto,
            cert,
            max_sdp_bytes,
            ice_tcp: false,
            panics: Arc::new(AtomicU64::new(0)),
        };
        let probe = factory.clone();
        std::panic::catch_unwind(move || {
            probe.rtc_config(IceCreds::new(), &probe.crypto).build(now);
        })
        .map_err(|_| "the DTLS stack cannot use this certificate and key".to_owned())?;
        Ok(factory)
    }

    /// Whether every session also gets a passive ICE-TCP host candidate (RFC 6544) for each
    /// UDP one, at the same address and port: the media workers must then listen on TCP
    /// at their UDP ports (`manifold_io::MediaConfig::ice_tcp`). Off by default.
    pub fn with_ice_tcp(mut self, on: bool) -> Self {
        self.ice_tcp = on;
        self
    }

    /// The configuration every server-side `Rtc` starts from: ICE-lite, RTP mode, the
    /// codecs an SFU can forward untouched.
    fn rtc_config(&self, creds: IceCreds, crypto: &Arc<CryptoProvider>) -> RtcConfig {
        Rtc::builder()
            .set_crypto_provider(crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .clear_codecs()
            // Opus with RED (RFC 2198, `red/48000/2`) where the client offers it.
            .enable_opus(true, true)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            // Send-side bandwidth estimation (TWCC) towards every subscriber: what the
            // allocator shares out. It starts where a medium layer fits and probes up.
            .enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
            // Receiver reports' loss, per sending stream: the allocator's second opinion
            // when a queue is full and delay stops growing (`quality.rs`).
            .set_stats_interval(Some(STATS_INTERVAL))
    }

    /// Panics the WebRTC stack raised while negotiating, caught and answered as
    /// [`NegotiateError::Panicked`], since this factory was made.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Answer `offer` for a session of `kind`, advertising `candidates` (the owning shard's
    /// announced addresses) as host candidates. The offer is checked first
    /// ([`check_sdp`]); a panic inside the WebRTC stack is caught and counted. Never inlined,
    /// so that `scripts/instructions.sh` can count a join's instructions in it.
    #[inline(never)]
    pub fn accept(
        &self,
        kind: SessionKind,
        offer: &str,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        if offer.len() > self.max_sdp_bytes {
            return Err(NegotiateError::TooLarge {
                size: offer.len(),
                limit: self.max_sdp_bytes,
            });
        }
        check_sdp(offer)?;
        self.accept_without_checks(kind, offer, candidates, now)
    }

    /// [`RtcFactory::accept`] without the payload-type pre-check: what the containment of
    /// panics is tested with. Not for serving.
    #[doc(hidden)]
    pub fn accept_without_checks(
        &self,
        kind: SessionKind,
        offer: &str,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        let mids = offered_mids(offer)?;
        self.contained(|| self.accept_checked(kind, offer, &mids, candidates, now))
    }

    /// Run `f`, turning a panic into [`NegotiateError::Panicked`] and counting it. An `Rtc`
    /// being built holds no locks and is dropped with the panic, so nothing is poisoned.
    fn contained<T>(
        &self,
        f: impl FnOnce() -> Result<T, NegotiateError>,
    ) -> Result<T, NegotiateError> {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
            self.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("the WebRTC stack panicked while negotiating; request refused");
            Err(NegotiateError::Panicked)
        })
    }

    fn accept_checked(
        &self,
        kind: SessionKind,
        offer: &str,
        mids: &[Mid],
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        let parsed = SdpOffer::from_sdp_string(offer)
            .map_err(|e| NegotiateError::Malformed(describe_parse_error(&e.to_string())))?;

        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        // WHIP and WHEP do not renegotiate: an offer without a data channel never gets one,
        // so its DTLS state is not needed after the handshake. A room session may add one.
        let media_only = matches!(kind, SessionKind::Whip | SessionKind::Whep);
        let crypto = if media_only && !has_m_line(offer, "application") {
            &self.media_only
        } else {
            &self.crypto
        };
        let mut config = self.rtc_config(creds, crypto);
        if kind == SessionKind::Whep && !has_m_line(offer, "video") {
            // An audio-only player: nothing is allocated to it, so it needs no bandwidth
            // estimate. Without transport-cc str0m neither pads it nor keeps a history of
            // what it sent (1,000 records, about 90 KB per session).
            config = without_transport_cc(config);
        }
        let mut rtc = config.build(now);
        for c in host_candidates(candidates, self.ice_tcp)? {
            rtc.add_local_candidate(c);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| NegotiateError::Rejected(e.to_string()))?;

        let media = usable_media(&rtc, kind, mids);
        if media.is_empty() {
            let what = match kind {
                SessionKind::Whip => {
                    "the offer has no sendonly/sendrecv audio or video m-line \
                    with a codec this server forwards (opus, VP8, H264, VP9, AV1)"
                }
                SessionKind::Whep | SessionKind::Room => {
                    "the offer has no recvonly/sendrecv audio or video m-line \
                    with a codec this server forwards (opus, VP8, H264, VP9, AV1)"
                }
            };
            return Err(NegotiateError::NoUsableMedia(what.into()));
        }

        Ok(Negotiated {
            rtc,
            ufrag,
            sdp: answer.to_sdp_string(),
            media,
            pending: None,
            data_mid: None,
        })
    }

    /// Start a room session: an `Rtc` whose first offer carries only a data channel, so the
    /// connection comes up before anything is published. The client answers it later.
    pub fn offer(
        &self,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        self.contained(|| self.offer_unchecked(candidates, now))
    }

    fn offer_unchecked(
        &self,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<Negotiated, NegotiateError> {
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = self.rtc_config(creds, &self.crypto).build(now);
        for c in host_candidates(candidates, self.ice_tcp)? {
            rtc.add_local_candidate(c);
        }
        let mut change = rtc.sdp_api();
        change.add_channel("manifold".into());
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| NegotiateError::Rejected("nothing to offer".into()))?;
        let sdp = offer.to_sdp_string();
        let data_mid = offered_mids(&sdp)?.first().copied();
        Ok(Negotiated {
            rtc,
            ufrag,
            sdp,
            media: Vec::new(),
            pending: Some(pending),
            data_mid,
        })
    }
}

/// Whether an SDP has an `m=<kind>` line (`application`: a data channel).
fn has_m_line(sdp: &str, kind: &str) -> bool {
    sdp.lines().any(|l| {
        l.strip_prefix("m=")
            .is_some_and(|rest| rest.starts_with(kind))
    })
}

/// `config` with neither send-side bandwidth estimation nor the transport-cc extension.
fn without_transport_cc(mut config: RtcConfig) -> RtcConfig {
    let mut exts = ExtensionMap::empty();
    for (id, ext) in config.extension_map().iter() {
        if *ext != Extension::TransportSequenceNumber {
            exts.set(id, ext.clone());
        }
    }
    config.set_extension_map(exts).enable_bwe(None)
}

/// The `a=mid:` values of an offer, in order. str0m does not list the media of a session,
/// so the offer tells us which mids to look up afterwards.
fn offered_mids(offer: &str) -> Result<Vec<Mid>, NegotiateError> {
    let mut mids = Vec::new();
    for line in offer.lines() {
        let Some(mid) = line.trim_end().strip_prefix("a=mid:") else {
            continue;
        };
        if mids.len() == MAX_MEDIA_LINES {
            return Err(NegotiateError::Rejected(format!(
                "more than {MAX_MEDIA_LINES} m-lines"
            )));
        }
        // str0m's Mid holds at most 16 bytes; longer values are not valid offers for us.
        if mid.is_empty() || mid.len() > 16 {
            return Err(NegotiateError::Malformed(format!(
                "a=mid must be 1 to 16 bytes, got {}",
                mid.len()
            )));
        }
        mids.push(Mid::from(mid));
    }
    Ok(mids)
}

/// str0m's parse errors span several lines and include a pointer value; clients get the
/// readable part on one line.
fn describe_parse_error(text: &str) -> String {
    let parts: Vec<&str> = text
        .lines()
        .map(|l| l.trim().trim_start_matches("SDP parse:").trim())
        .filter(|l| !l.is_empty() && !l.contains("PointerOffset"))
        .collect();
    if parts.is_empty() {
        "unreadable SDP".into()
    } else {
        parts.join("; ")
    }
}

fn usable_media(rtc: &Rtc, kind: SessionKind, mids: &[Mid]) -> Vec<NegotiatedMedia> {
    mids.iter()
        .filter_map(|&mid| {
            let media = rtc.media(mid)?;
            let direction = media.direction();
            let wanted = match kind {
                SessionKind::Whip => matches!(direction, Direction::RecvOnly | Direction::SendRecv),
                SessionKind::Whep | SessionKind::Room => {
                    matches!(direction, Direction::SendOnly | Direction::SendRecv)
                }
            };
            if !wanted || media.disabled() || media.remote_pts().is_empty() {
                return None;
            }
            let kind = match media.kind() {
                str0m::media::MediaKind::Audio => MediaKind::Audio,
                str0m::media::MediaKind::Video => MediaKind::Video,
            };
            Some(NegotiatedMedia { mid, kind })
        })
        .collect()
}

impl Negotiator for RtcFactory {
    fn accept(
        &self,
        kind: SessionKind,
        offer: &str,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<NegotiatedSession, NegotiateError> {
        RtcFactory::accept(self, kind, offer, candidates, now).map(Into::into)
    }

    fn offer(
        &self,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<NegotiatedSession, NegotiateError> {
        RtcFactory::offer(self, candidates, now).map(Into::into)
    }

    fn panics(&self) -> u64 {
        RtcFactory::panics(self)
    }
}

/// The host candidates of a session served at `addrs` (the owning worker's announced
/// addresses): one UDP candidate each, and with `ice_tcp` a passive TCP one at the same
/// address and port (RFC 6544 §4.5; its priority, from str0m, is below every UDP host
/// candidate's, so a client that can use UDP does).
fn host_candidates(addrs: &[SocketAddr], ice_tcp: bool) -> Result<Vec<Candidate>, NegotiateError> {
    let mut out = Vec::with_capacity(addrs.len() * if ice_tcp { 2 } else { 1 });
    let refused = |addr: &SocketAddr, e: str0m::error::IceError| {
        NegotiateError::Rejected(format!("local candidate {addr}: {e}"))
    };
    for addr in addrs {
        out.push(Candidate::host(*addr, "udp").map_err(|e| refused(addr, e))?);
    }
    if ice_tcp {
        for addr in addrs {
            let tcp = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| refused(addr, e))?;
            out.push(tcp);
        }
    }
    Ok(out)
}

/// The SDP `a=candidate` values (without `a=`) of the host candidates at `addrs` (with
/// `ice_tcp`, the passive TCP ones too), as str0m writes them into answers: for fragments
/// the server sends itself (an ICE restart's PATCH answer).
pub fn host_candidate_lines(addrs: &[SocketAddr], ice_tcp: bool) -> Vec<String> {
    host_candidates(addrs, ice_tcp)
        .unwrap_or_default()
        .iter()
        .map(Candidate::to_sdp_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mids_are_listed_and_bounded() {
        let sdp = "v=0\r\na=mid:0\r\nm=video\r\na=mid:video1\r\n";
        assert_eq!(
            offered_mids(sdp).unwrap(),
            vec![Mid::from("0"), Mid::from("video1")]
        );
        let many: String = (0..20).map(|i| format!("a=mid:{i}\r\n")).collect();
        assert!(matches!(
            offered_mids(&many),
            Err(NegotiateError::Rejected(_))
        ));
        assert!(matches!(
            offered_mids("a=mid:\r\n"),
            Err(NegotiateError::Malformed(_))
        ));
        assert!(matches!(
            offered_mids(&format!("a=mid:{}\r\n", "x".repeat(17))),
            Err(NegotiateError::Malformed(_))
        ));
    }

    #[test]
    fn ice_tcp_adds_a_passive_candidate_below_udp() {
        let addr: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert_eq!(host_candidate_lines(&[addr], false).len(), 1);
        let both = host_candidates(&[addr], true).unwrap();
        assert_eq!(both.len(), 2);
        let (udp, tcp) = (&both[0], &both[1]);
        assert_eq!(tcp.addr(), addr);
        assert_eq!(tcp.tcptype(), Some(TcpType::Passive));
        assert!(tcp.prio() < udp.prio(), "UDP is preferred");
        let lines = host_candidate_lines(&[addr], true);
        assert!(lines[1].contains(" tcp ") && lines[1].ends_with(" typ host tcptype passive"));
    }

    #[test]
    fn parse_errors_read_well() {
        let msg = describe_parse_error(
            "SDP parse: Parse error at PointerOffset(0x7f35)\nUnexpected `g`\nExpected `v`\nsdp line\n",
        );
        assert_eq!(msg, "Unexpected `g`; Expected `v`; sdp line");
        assert_eq!(describe_parse_error(""), "unreadable SDP");
    }
}
