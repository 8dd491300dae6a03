//! SDP edits that make an offer hostile, shared by the core's tests and the real-server
//! security tests (which include this file by path).

/// Rewrites the offer's Opus payload type to the video section's first payload type, so one
/// payload type means Opus in the audio m-line and a video codec in the other.
pub fn opus_on_video_pt(offer: String) -> String {
    let video_pt = offer
        .lines()
        .skip_while(|l| !l.starts_with("m=video"))
        .find_map(|l| l.strip_prefix("a=rtpmap:"))
        .and_then(|r| r.split(' ').next())
        .expect("a video rtpmap")
        .to_owned();
    let opus_pt = offer
        .lines()
        .find_map(|l| {
            let r = l.strip_prefix("a=rtpmap:")?;
            r.to_ascii_lowercase()
                .contains("opus")
                .then(|| r.split(' ').next().unwrap().to_owned())
        })
        .expect("an opus rtpmap");
    let mut out = String::new();
    let mut in_audio = false;
    for line in offer.lines() {
        if line.starts_with("m=") {
            in_audio = line.starts_with("m=audio");
        }
        let line = if in_audio {
            line.replace(&format!(":{opus_pt} "), &format!(":{video_pt} "))
                .replace(&format!(" {opus_pt}"), &format!(" {video_pt}"))
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

/// Adds a simulcast description to the offer's video m-line whose `a=simulcast` names a RID
/// (`h`) that no `a=rid` line describes.
pub fn simulcast_naming_a_missing_rid(offer: String) -> String {
    let mut out = String::new();
    let mut in_video = false;
    for line in offer.lines() {
        if line.starts_with("m=") {
            if in_video {
                out.push_str("a=rid:q send\r\na=simulcast:send q;h\r\n");
            }
            in_video = line.starts_with("m=video");
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_video {
        out.push_str("a=rid:q send\r\na=simulcast:send q;h\r\n");
    }
    out
}
