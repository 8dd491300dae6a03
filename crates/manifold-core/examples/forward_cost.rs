//! The core's forwarding path, measured in instructions: one publisher → N WHEP players on
//! one `Shard` in virtual time (the test harness: real str0m clients, an in-memory network,
//! no sockets), run for a fixed span of media. `scripts/instructions.sh` runs it under
//! callgrind with collection on inside `Shard::handle_input` and `Shard::poll_output` only,
//! twice with different spans, and divides the difference in instructions by the difference
//! in forwarded packets: the shard's instructions per forwarded packet, set-up excluded,
//! a figure that does not move with machine noise.
//!
//! With `--silent` the publisher sends nothing: what is left is set-up, so the same script
//! divides the difference in instructions between two audiences by the difference in
//! players, the server's instructions per join (signaling's `RtcFactory::accept`, the
//! shard's command, ICE, the DTLS handshake).
//!
//! ```text
//! forward_cost --subscribers 20 [--audio-only] [--silent] [--seconds 2] [--warmup 1]
//! ```
//!
//! Prints one JSON line: `{"subscribers", "audio_only", "seconds", "forwarded", "received"}`
//! (packets the shard forwarded and received during the measured span).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, MediaConfig, config};
use manifold_api::Source;

struct Args {
    subscribers: usize,
    audio_only: bool,
    silent: bool,
    seconds: f64,
    warmup: f64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        subscribers: 10,
        audio_only: false,
        silent: false,
        seconds: 2.0,
        warmup: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--subscribers" => a.subscribers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--warmup" => a.warmup = value()?.parse().map_err(|e| format!("{e}"))?,
            "--audio-only" => a.audio_only = true,
            "--silent" => a.silent = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("forward_cost: {e}");
            std::process::exit(2);
        }
    };
    // The bench's video: about 1.4 Mbps of VP8 in 1150-byte packets (5 per frame at 30 fps),
    // a keyframe every 2 s; Opus every 20 ms.
    let media = MediaConfig {
        audio: !args.silent,
        video: !args.audio_only && !args.silent,
        packets_per_frame: 5,
        packets_per_keyframe: 10,
        video_payload: 1150,
        audio_payload: 100,
        keyframe_interval: Some(Duration::from_secs(2)),
        ..MediaConfig::default()
    };
    let mut cfg = config();
    cfg.max_participants_per_room = cfg.max_participants_per_room.max(args.subscribers + 1);
    let mut h = Harness::new(cfg, 7);
    let video = media.video;
    let mut publisher = ClientSpec::publisher("publisher", "room").media(media);
    publisher.video = video;
    let publisher = h.add(publisher);
    let mut all = vec![publisher];
    for i in 0..args.subscribers {
        let mut s = ClientSpec::subscriber(&format!("player{i}"), "room", Source::RoomCurrent);
        s.video = video;
        all.push(h.add(s));
    }
    h.connect(&all, Duration::from_secs(20));
    h.run_for(Duration::from_secs_f64(args.warmup));
    let before = h.stats();
    h.run_for(Duration::from_secs_f64(args.seconds));
    let after = h.stats();
    println!(
        "{{\"subscribers\":{},\"audio_only\":{},\"seconds\":{},\"forwarded\":{},\"received\":{}}}",
        args.subscribers,
        args.audio_only,
        args.seconds,
        after.rtp_out - before.rtp_out,
        after.rtp_in - before.rtp_in,
    );
}
