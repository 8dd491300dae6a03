//! What negotiating a session can go wrong with, and the one piece of SDP the control plane
//! parses itself: the trickle-ICE fragment of a WHIP/WHEP PATCH (RFC 8840). Plain data and
//! string parsing, no WebRTC stack.

use std::fmt;

/// Why an offer could not be answered. Every variant is the client's fault and maps to a
/// 4xx answer; the message is safe to show to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiateError {
    /// The offer is larger than the limit.
    TooLarge {
        /// Offer size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The offer could not be parsed as SDP.
    Malformed(String),
    /// The offer parsed but WebRTC rejected it (no fingerprint, no ICE credentials, ...).
    Rejected(String),
    /// Nothing in the offer can be used for this kind of session.
    NoUsableMedia(String),
    /// The WebRTC stack panicked on this input: a bug, contained to this request and
    /// counted (the negotiator's `panics()`). Not the client's fault as far as it can tell.
    Panicked,
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiateError::TooLarge { size, limit } => {
                write!(f, "SDP offer is {size} bytes, the limit is {limit}")
            }
            NegotiateError::Malformed(m) => write!(f, "malformed SDP: {m}"),
            NegotiateError::Rejected(m) => write!(f, "unacceptable SDP offer: {m}"),
            NegotiateError::NoUsableMedia(m) => f.write_str(m),
            NegotiateError::Panicked => f.write_str(
                "the server failed to negotiate this session (an internal error, counted)",
            ),
        }
    }
}

impl std::error::Error for NegotiateError {}

/// Parsed body of a trickle-ICE / ICE-restart PATCH (`application/trickle-ice-sdpfrag`,
/// RFC 8840): the client's ICE credentials, if it sent them, and its candidates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFragment {
    /// `a=ice-ufrag`, when present.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, when present.
    pub pwd: Option<String>,
    /// Candidate lines, without the `a=` prefix.
    pub candidates: Vec<String>,
    /// The client signalled `a=end-of-candidates`.
    pub end_of_candidates: bool,
}

/// Most candidates accepted in one fragment.
pub const MAX_FRAGMENT_CANDIDATES: usize = 64;

impl SdpFragment {
    /// Parse a fragment. Unknown lines (`a=mid`, `m=`, ...) are ignored, as RFC 8840 allows.
    pub fn parse(body: &str, max_bytes: usize) -> Result<Self, NegotiateError> {
        if body.len() > max_bytes {
            return Err(NegotiateError::TooLarge {
                size: body.len(),
                limit: max_bytes,
            });
        }
        let mut frag = SdpFragment::default();
        for line in body.lines() {
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ufrag = Some(check_ice_token(v, 4, 256, "ice-ufrag")?);
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.pwd = Some(check_ice_token(v, 22, 256, "ice-pwd")?);
            } else if let Some(v) = line.strip_prefix("a=") {
                if v.starts_with("candidate:") {
                    if frag.candidates.len() == MAX_FRAGMENT_CANDIDATES {
                        return Err(NegotiateError::Rejected(format!(
                            "more than {MAX_FRAGMENT_CANDIDATES} candidates"
                        )));
                    }
                    frag.candidates.push(v.to_owned());
                } else if v == "end-of-candidates" {
                    frag.end_of_candidates = true;
                }
            }
        }
        if frag.ufrag.is_some() != frag.pwd.is_some() {
            return Err(NegotiateError::Malformed(
                "a=ice-ufrag and a=ice-pwd must come together".into(),
            ));
        }
        Ok(frag)
    }
}

fn check_ice_token(v: &str, min: usize, max: usize, what: &str) -> Result<String, NegotiateError> {
    // RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/".
    let ok = (min..=max).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(NegotiateError::Malformed(format!(
            "a={what} must be {min} to {max} ice-chars"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_parses_candidates_and_credentials() {
        let body = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 RTP/AVP 0\r\n\
                    a=mid:0\r\na=candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host\r\n\
                    a=end-of-candidates\r\n";
        let f = SdpFragment::parse(body, 4096).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
    }

    #[test]
    fn fragment_rejects_bad_input() {
        assert!(matches!(
            SdpFragment::parse(&"x".repeat(5000), 4096),
            Err(NegotiateError::TooLarge { .. })
        ));
        assert!(matches!(
            SdpFragment::parse("a=ice-ufrag:abcd\r\n", 4096),
            Err(NegotiateError::Malformed(_))
        ));
        assert!(matches!(
            SdpFragment::parse(
                "a=ice-ufrag:a b\r\na=ice-pwd:0123456789012345678901\r\n",
                4096
            ),
            Err(NegotiateError::Malformed(_))
        ));
        let many: String = (0..65)
            .map(|i| {
                format!(
                    "a=candidate:{i} 1 udp 1 127.0.0.1 {} typ host\r\n",
                    5000 + i
                )
            })
            .collect();
        assert!(matches!(
            SdpFragment::parse(&many, 1 << 20),
            Err(NegotiateError::Rejected(_))
        ));
        // Garbage is not an error: nothing in it is a fragment line.
        assert_eq!(
            SdpFragment::parse("\u{0}\u{1}garbage", 4096).unwrap(),
            SdpFragment::default()
        );
    }
}
