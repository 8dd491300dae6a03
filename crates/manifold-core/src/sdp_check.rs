//! Checks on an SDP (an offer, or a room client's answer) before the WebRTC stack sees it,
//! for what it would take badly or what this server cannot honour: payload types mapped
//! twice, and simulcast descriptions whose `a=rid` and `a=simulcast` lines do not agree.
//! Each refusal is a `NegotiateError` the client reads as `bad_sdp`.

use crate::negotiate::NegotiateError;

/// Checks `sdp` for payload-type conflicts and inconsistent simulcast (see the module).
pub fn check_sdp(sdp: &str) -> Result<(), NegotiateError> {
    check_payload_types(sdp)?;
    check_simulcast(sdp)
}

/// Most distinct payload types one SDP may map: Chromium offers about 50 across audio and
/// video; 128 exist.
pub const MAX_PAYLOAD_TYPES: usize = 96;

/// Every `a=rtpmap`/`a=fmtp` names a payload type 0-127, and one payload type means one
/// codec configuration throughout the session (RFC 8843 §9.1: bundled m-lines share one
/// payload-type space). str0m asserts on a payload type mapped to two codecs ("Pt locked
/// multiple times"); here it is a clear `bad_sdp`.
fn check_payload_types(sdp: &str) -> Result<(), NegotiateError> {
    // pt → its rtpmap and fmtp as first seen, with the m-line each was seen in.
    let mut seen: Vec<Option<PtUse<'_>>> = vec![None; 128];
    let mut distinct = 0usize;
    let mut section = 0u16;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            section = section.saturating_add(1);
            continue;
        }
        let (what, rest) = if let Some(r) = line.strip_prefix("a=rtpmap:") {
            ("rtpmap", r)
        } else if let Some(r) = line.strip_prefix("a=fmtp:") {
            ("fmtp", r)
        } else {
            continue;
        };
        let (pt, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let pt: usize = match pt.parse() {
            Ok(n) if n < 128 => n,
            _ => {
                return Err(NegotiateError::Malformed(format!(
                    "a={what} names payload type {:?}; payload types are 0 to 127",
                    truncated(pt)
                )));
            }
        };
        let value = value.trim();
        let entry = &mut seen[pt];
        let uses = entry.get_or_insert_with(|| {
            distinct += 1;
            PtUse::default()
        });
        let slot = match what {
            "rtpmap" => &mut uses.rtpmap,
            _ => &mut uses.fmtp,
        };
        match slot {
            None => *slot = Some((section, value)),
            Some((_, v)) if v.eq_ignore_ascii_case(value) => {}
            Some((first, v)) => {
                return Err(NegotiateError::Rejected(format!(
                    "payload type {pt} is mapped twice (a={what}:{pt} {:?} in m-line {first}, \
                     {:?} in m-line {section}); one payload type must mean one codec \
                     throughout the session",
                    truncated(v),
                    truncated(value),
                )));
            }
        }
        if distinct > MAX_PAYLOAD_TYPES {
            return Err(NegotiateError::Rejected(format!(
                "more than {MAX_PAYLOAD_TYPES} payload types"
            )));
        }
    }
    Ok(())
}

/// What an SDP said about one payload type: its rtpmap and fmtp values and the m-line each
/// came from.
#[derive(Clone, Copy, Default)]
struct PtUse<'a> {
    rtpmap: Option<(u16, &'a str)>,
    fmtp: Option<(u16, &'a str)>,
}

/// At most 64 characters of client input, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Most simulcast layers one m-line may send (RFC 8853 allows more; three is what browsers
/// send and what the layer allocator chooses among).
pub const MAX_SIMULCAST_LAYERS: usize = 3;

/// Longest RID accepted (RFC 8851 sets none; browsers use one to three characters). The
/// WebRTC stack keeps eight and reads `-` as `_`, so RIDs that differ only beyond that
/// would name one layer: duplicates are judged on that form.
const MAX_RID_LEN: usize = 8;

/// Most `a=rid` lines in one m-line.
const MAX_RIDS_PER_SECTION: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RidDir {
    Send,
    Recv,
}

impl RidDir {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "send" => Some(RidDir::Send),
            "recv" => Some(RidDir::Recv),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RidDir::Send => "send",
            RidDir::Recv => "recv",
        }
    }
}

/// The simulcast lines of one m-line.
#[derive(Default)]
struct SimulcastSection<'a> {
    rids: Vec<(&'a str, RidDir)>,
    /// `a=simulcast`: per direction, the RIDs it names.
    simulcast: Option<Vec<(RidDir, Vec<&'a str>)>>,
}

impl<'a> SimulcastSection<'a> {
    fn rid(&mut self, value: &'a str, m: usize) -> Result<(), NegotiateError> {
        let mut parts = value.split_ascii_whitespace();
        let id = parts.next().unwrap_or("");
        check_rid(id, m)?;
        let dir = parts.next().and_then(RidDir::parse).ok_or_else(|| {
            NegotiateError::Malformed(format!(
                "a=rid:{} in m-line {m} has no direction (send or recv)",
                truncated(id)
            ))
        })?;
        let same = |r: &str| {
            r.len() == id.len()
                && r.bytes()
                    .zip(id.bytes())
                    .all(|(a, b)| rid_byte(a) == rid_byte(b))
        };
        if self.rids.iter().any(|(r, _)| same(r)) {
            return Err(NegotiateError::Rejected(format!(
                "rid {id:?} appears twice in m-line {m}"
            )));
        }
        if self.rids.len() == MAX_RIDS_PER_SECTION {
            return Err(NegotiateError::Rejected(format!(
                "more than {MAX_RIDS_PER_SECTION} a=rid lines in m-line {m}"
            )));
        }
        self.rids.push((id, dir));
        Ok(())
    }

    fn simulcast(&mut self, value: &'a str, m: usize) -> Result<(), NegotiateError> {
        if self.simulcast.is_some() {
            return Err(NegotiateError::Rejected(format!(
                "more than one a=simulcast line in m-line {m}"
            )));
        }
        let mut dirs: Vec<(RidDir, Vec<&'a str>)> = Vec::new();
        let mut tokens = value.split_ascii_whitespace();
        while let Some(d) = tokens.next() {
            let dir = RidDir::parse(d).ok_or_else(|| {
                NegotiateError::Malformed(format!(
                    "a=simulcast in m-line {m}: expected send or recv, found {:?}",
                    truncated(d)
                ))
            })?;
            if dirs.iter().any(|(x, _)| *x == dir) {
                return Err(NegotiateError::Malformed(format!(
                    "a=simulcast in m-line {m} lists {} twice",
                    dir.as_str()
                )));
            }
            let list = tokens.next().ok_or_else(|| {
                NegotiateError::Malformed(format!(
                    "a=simulcast in m-line {m}: {} with no streams",
                    dir.as_str()
                ))
            })?;
            // Streams are `;`-separated, each a `,`-separated list of alternative RIDs, each
            // possibly paused (`~`).
            let streams: Vec<&str> = list.split(';').collect();
            if streams.len() > MAX_SIMULCAST_LAYERS {
                return Err(NegotiateError::Rejected(format!(
                    "m-line {m} offers {} simulcast layers; at most {MAX_SIMULCAST_LAYERS} are \
                     accepted",
                    streams.len()
                )));
            }
            let mut named = Vec::new();
            for alt in streams.iter().flat_map(|s| s.split(',')) {
                let id = alt.strip_prefix('~').unwrap_or(alt);
                check_rid(id, m)?;
                if named.contains(&id) {
                    return Err(NegotiateError::Rejected(format!(
                        "a=simulcast in m-line {m} names rid {id:?} twice"
                    )));
                }
                named.push(id);
            }
            dirs.push((dir, named));
        }
        if dirs.is_empty() {
            return Err(NegotiateError::Malformed(format!(
                "a=simulcast in m-line {m} is empty"
            )));
        }
        self.simulcast = Some(dirs);
        Ok(())
    }

    /// At the end of the m-line: every RID `a=simulcast` names has its `a=rid` line in that
    /// direction, and every `a=rid` of a direction it describes is named.
    fn finish(&self, m: usize) -> Result<(), NegotiateError> {
        let Some(dirs) = &self.simulcast else {
            // RIDs without simulcast only restrict one stream (RFC 8851); nothing to match.
            return Ok(());
        };
        for (dir, named) in dirs {
            for id in named {
                match self.rids.iter().find(|(r, _)| r == id) {
                    Some((_, d)) if d == dir => {}
                    Some((_, d)) => {
                        return Err(NegotiateError::Rejected(format!(
                            "m-line {m}: a=simulcast {} names rid {id:?}, whose a=rid line \
                             says {}",
                            dir.as_str(),
                            d.as_str()
                        )));
                    }
                    None => {
                        return Err(NegotiateError::Rejected(format!(
                            "m-line {m}: a=simulcast names rid {id:?}, which has no a=rid line"
                        )));
                    }
                }
            }
            if let Some((id, _)) = self
                .rids
                .iter()
                .find(|(r, d)| d == dir && !named.contains(r))
            {
                return Err(NegotiateError::Rejected(format!(
                    "m-line {m}: a=rid:{id} {} is not in a=simulcast",
                    dir.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// A RID byte as the WebRTC stack keeps it.
fn rid_byte(b: u8) -> u8 {
    if b == b'-' { b'_' } else { b }
}

fn check_rid(id: &str, m: usize) -> Result<(), NegotiateError> {
    // RFC 8851 rid-id: 1*(ALPHA / DIGIT / "-" / "_").
    let ok = (1..=MAX_RID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NegotiateError::Malformed(format!(
            "m-line {m}: rid {:?} is not 1 to {MAX_RID_LEN} letters, digits, - or _",
            truncated(id)
        )))
    }
}

/// Simulcast descriptions must agree with themselves, per m-line (RFC 8851, RFC 8853): RIDs
/// well-formed and unique, `a=simulcast` naming only RIDs described in its direction and
/// all of them, at most [`MAX_SIMULCAST_LAYERS`] layers.
fn check_simulcast(sdp: &str) -> Result<(), NegotiateError> {
    let mut section = SimulcastSection::default();
    let mut m = 0usize;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            section.finish(m)?;
            section = SimulcastSection::default();
            m += 1;
        } else if let Some(v) = line.strip_prefix("a=rid:") {
            section.rid(v, m)?;
        } else if let Some(v) = line.strip_prefix("a=simulcast:") {
            section.simulcast(v, m)?;
        }
    }
    section.finish(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(lines: &str) -> String {
        format!(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n{lines}"
        )
    }

    const CHROMIUM: &str = "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n\
                            a=simulcast:send q;h;f\r\n";

    #[test]
    fn browser_simulcast_passes() {
        check_sdp(&video(CHROMIUM)).unwrap();
        // Firefox's order and paused layers, alternatives, and a WHEP-style receive side.
        check_sdp(&video(
            "a=simulcast:send ~h;l\r\na=rid:h send\r\na=rid:l send pt=96;max-width=640\r\n",
        ))
        .unwrap();
        check_sdp(&video(
            "a=rid:a recv\r\na=rid:b recv\r\na=simulcast:recv a,b\r\n",
        ))
        .unwrap();
        // RIDs without simulcast restrict one stream: allowed.
        check_sdp(&video("a=rid:x send max-fps=30\r\n")).unwrap();
        // No simulcast at all.
        check_sdp(&video("")).unwrap();
    }

    #[test]
    fn inconsistent_simulcast_is_refused() {
        let bad = [
            // a RID named but not described
            "a=rid:q send\r\na=rid:h send\r\na=simulcast:send q;h;f\r\n",
            // a RID described but not named
            "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h\r\n",
            // four layers
            "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\n\
             a=simulcast:send a;b;c;d\r\n",
            // duplicate RIDs, also as the WebRTC stack reads them
            "a=rid:q send\r\na=rid:q send\r\na=simulcast:send q\r\n",
            "a=rid:a-b send\r\na=rid:a_b send\r\na=simulcast:send a-b;a_b\r\n",
            // longer than the stack keeps
            "a=rid:abcdefghi send\r\na=simulcast:send abcdefghi\r\n",
            "a=rid:q send\r\na=rid:h send\r\na=simulcast:send q;q\r\n",
            // directions disagree
            "a=rid:q recv\r\na=simulcast:send q\r\n",
            // two simulcast lines, an empty one, a bad direction, no direction
            "a=rid:q send\r\na=simulcast:send q\r\na=simulcast:send q\r\n",
            "a=simulcast:\r\n",
            "a=rid:q send\r\na=simulcast:sideways q\r\n",
            "a=rid:q\r\na=simulcast:send q\r\n",
            "a=rid:q send\r\na=simulcast:send\r\n",
            // malformed RIDs
            "a=rid:q! send\r\na=simulcast:send q!\r\n",
            "a=rid:0123456789abcdefg send\r\n",
            "a=simulcast:send ~\r\n",
        ];
        for lines in bad {
            let err = check_sdp(&video(lines)).expect_err(lines);
            assert!(
                matches!(
                    err,
                    NegotiateError::Malformed(_) | NegotiateError::Rejected(_)
                ),
                "{lines}: {err:?}"
            );
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn simulcast_is_checked_per_m_line() {
        // The audio section's RIDs do not satisfy the video section's simulcast.
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rid:q send\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=simulcast:send q\r\n";
        assert!(check_sdp(sdp).is_err());
        // Session-level lines before any m-line are judged on their own too.
        assert!(check_sdp("v=0\r\na=simulcast:send q\r\nm=video 9 X 96\r\n").is_err());
    }

    #[test]
    fn too_many_rid_lines_are_refused() {
        let many: String = (0..9).map(|i| format!("a=rid:r{i} send\r\n")).collect();
        assert!(matches!(
            check_sdp(&video(&many)),
            Err(NegotiateError::Rejected(_))
        ));
    }
}
