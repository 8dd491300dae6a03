//! `manifold loadgen`: the command line over [`crate::run`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};

use crate::downlink::parse_caps;
use crate::janus::Janus;
use crate::room::RoomTarget;
use crate::run::{Scenario, run};
use crate::target::{Target, WhipWhep, is_loopback_url};

/// Which server API to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// WHIP to publish, WHEP to subscribe (Manifold, or any WHIP/WHEP server).
    WhipWhep,
    /// The Janus VideoRoom plugin over the Janus HTTP API.
    Janus,
    /// Manifold's WebSocket room protocol at `<server>/rtc`.
    Room,
}

/// Run many real WebRTC clients against a server and report what they measured.
///
/// Each room gets `--publishers` publishers; its `--subscribers` subscribers are spread
/// round-robin over them, each receiving one publisher's audio (and video). Exit status:
/// 0 when failures stay within `--max-failure-ratio` (and loss within `--max-loss-pct`),
/// 1 when not, 2 on bad arguments.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Server API.
    #[arg(long, value_enum, default_value = "whip-whep")]
    pub target: TargetKind,
    /// Base URL of a Manifold server; sets the default WHIP and WHEP templates.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// WHIP endpoint template; `{room}` and `{publisher}` are replaced.
    /// Default: `<server>/whip/{room}?identity={publisher}`.
    #[arg(long)]
    pub whip_url: Option<String>,
    /// WHEP endpoint template; `{room}` and `{publisher}` are replaced.
    /// Default: `<server>/whep/{room}/{publisher}`.
    #[arg(long)]
    pub whep_url: Option<String>,
    /// Bearer token for WHIP/WHEP.
    #[arg(long, env = "MANIFOLD_LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Prefix of room names.
    #[arg(long, default_value = "lg")]
    pub room_prefix: String,
    /// Janus HTTP API base.
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    pub janus_url: String,
    /// Publisher bitrate cap of the Janus rooms created (REMB), bits per second.
    #[arg(long, default_value_t = 3_000_000)]
    pub janus_bitrate: u64,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers per room (spread over its publishers).
    #[arg(long, default_value_t = 4)]
    pub subscribers: usize,
    /// Publish audio only.
    #[arg(long)]
    pub audio_only: bool,
    /// Video bitrate: `1500000`, `1500k` or `1.5M`.
    #[arg(long, default_value = "1.5M", value_parser = parse_bitrate)]
    pub video_bitrate: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Periodic keyframes, e.g. `2s` (besides those asked for by PLI/FIR).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keyframe_interval: Option<Duration>,
    /// Publish video as three simulcast layers over WHIP: RIDs `q`, `h`, `f` (320x180,
    /// 640x360, 1280x720) at a tenth, a third and all of `--video-bitrate`, each answering
    /// its own keyframe requests. WHIP/WHEP target only.
    #[arg(long)]
    pub simulcast: bool,
    /// Cap subscribers' downlinks: comma-separated rates (`300k`, `1m`, `2.5M`, bits per
    /// second) or `none`, spread round-robin over each room's subscribers (subscriber `j`
    /// gets item `j mod n`), e.g. `300k,1m,3m,none`. A token bucket with a tail-drop queue
    /// in front of each subscriber's WebRTC stack.
    #[arg(long)]
    pub downlink_caps: Option<String>,
    /// Queue of a capped downlink, as time at its rate, e.g. `200ms` (past it, datagrams
    /// are dropped).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub downlink_queue: Duration,
    /// Opus packet size in bytes (about 32 kbps at 80).
    #[arg(long, default_value_t = 80)]
    pub audio_bytes: usize,
    /// Length of the whole run, ramp-up included.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Joins started per second.
    #[arg(long, default_value_t = 20.0)]
    pub ramp: f64,
    /// Subscriber leave-and-rejoin cycles per second once everyone has joined.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Engine threads driving the clients.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// Local address of the clients (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Write the JSON report here (`-` for standard output).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Fail (exit 1) when more than this fraction of joins fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_failure_ratio: f64,
    /// Fail (exit 1) when loss passes this percentage.
    #[arg(long)]
    pub max_loss_pct: Option<f64>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Append the running totals (connected, packets, gaps) as one JSON line per second
    /// to this file.
    #[arg(long)]
    pub progress_json: Option<PathBuf>,
    /// Log filter for the loadgen's own diagnostics (RUST_LOG wins), e.g. `debug`.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

/// Parse `1500000`, `1500k`, `1.5M`.
pub fn parse_bitrate(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a bitrate: {s:?} (try 1500000, 1500k or 1.5M)"))?;
    let bps = v * mult;
    if !(1_000.0..=100e6).contains(&bps) {
        return Err(format!("bitrate {bps} out of range (1 kbps to 100 Mbps)"));
    }
    Ok(bps as u32)
}

/// Check arguments, build the target and the scenario.
pub fn prepare(args: &Args) -> Result<(Scenario, Target), String> {
    if !args.bind_ip.is_loopback() {
        return Err(format!(
            "--bind-ip {} is not a loopback address; the loadgen only loads local servers",
            args.bind_ip
        ));
    }
    if args.rooms == 0 || args.publishers == 0 {
        return Err("--rooms and --publishers must be at least 1".into());
    }
    if args.fps == 0 || args.fps > 120 {
        return Err("--fps must be 1 to 120".into());
    }
    if args.ramp <= 0.0 || args.churn < 0.0 {
        return Err("--ramp must be positive and --churn not negative".into());
    }
    if args.simulcast && (args.audio_only || args.target != TargetKind::WhipWhep) {
        return Err(
            "--simulcast publishes video over WHIP: it needs --target whip-whep and video".into(),
        );
    }
    if args.downlink_queue < Duration::from_millis(1)
        || args.downlink_queue > Duration::from_secs(10)
    {
        return Err("--downlink-queue must be 1ms to 10s".into());
    }
    let downlink_caps = match &args.downlink_caps {
        Some(list) => parse_caps(list, args.downlink_queue)?,
        None => Vec::new(),
    };
    let target = match args.target {
        TargetKind::WhipWhep => {
            let base = args.server.trim_end_matches('/');
            let whip = args
                .whip_url
                .clone()
                .unwrap_or_else(|| format!("{base}/whip/{{room}}?identity={{publisher}}"));
            let whep = args
                .whep_url
                .clone()
                .unwrap_or_else(|| format!("{base}/whep/{{room}}/{{publisher}}"));
            for u in [&whip, &whep] {
                if !is_loopback_url(u) {
                    return Err(format!("{u} is not a loopback URL"));
                }
            }
            Target::WhipWhep(WhipWhep::new(
                whip,
                whep,
                args.token.clone(),
                args.room_prefix.clone(),
            ))
        }
        TargetKind::Room => {
            if !is_loopback_url(&args.server) {
                return Err(format!("{} is not a loopback URL", args.server));
            }
            Target::Room(RoomTarget::new(
                &args.server,
                args.token.clone(),
                args.room_prefix.clone(),
            ))
        }
        TargetKind::Janus => {
            if !is_loopback_url(&args.janus_url) {
                return Err(format!("{} is not a loopback URL", args.janus_url));
            }
            Target::Janus(Janus::new(args.janus_url.clone(), args.janus_bitrate))
        }
    };
    let scenario = Scenario {
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        video: !args.audio_only,
        video_bitrate_bps: args.video_bitrate,
        fps: args.fps,
        keyframe_interval_s: args.keyframe_interval.map_or(0.0, |d| d.as_secs_f64()),
        audio_bytes: args.audio_bytes,
        duration: args.duration,
        ramp_per_s: args.ramp,
        churn_per_s: args.churn,
        threads: args.threads.max(1),
        max_in_flight: args.max_in_flight.max(1),
        bind_ip: args.bind_ip,
        progress: !args.quiet,
        progress_json: args.progress_json.clone(),
        simulcast: args.simulcast,
        downlink_caps,
    };
    Ok((scenario, target))
}

/// Run the command.
pub fn main(args: Args) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let (scenario, target) = match prepare(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("manifold loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run(scenario, target) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("manifold loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = match serde_json::to_string_pretty(&report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("manifold loadgen: report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = report.summary();
    match args.report.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            eprintln!("{summary}");
            println!("{json}");
        }
        Some(p) => {
            if let Err(e) = std::fs::write(p, json) {
                eprintln!("manifold loadgen: cannot write {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
            println!("{summary}");
        }
        None => println!("{summary}"),
    }
    let ratio = report.failure_ratio();
    let mut ok = true;
    if ratio > args.max_failure_ratio {
        eprintln!(
            "manifold loadgen: {:.1}% of joins failed (threshold {:.1}%)",
            100.0 * ratio,
            100.0 * args.max_failure_ratio
        );
        ok = false;
    }
    if let Some(max) = args.max_loss_pct
        && report.aggregate.loss_pct > max
    {
        eprintln!(
            "manifold loadgen: loss {:.2}% passes {max}%",
            report.aggregate.loss_pct
        );
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    fn parse(v: &[&str]) -> Args {
        Wrap::try_parse_from(std::iter::once("loadgen").chain(v.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn bitrates_parse() {
        assert_eq!(parse_bitrate("1500000"), Ok(1_500_000));
        assert_eq!(parse_bitrate("1500k"), Ok(1_500_000));
        assert_eq!(parse_bitrate("1.5M"), Ok(1_500_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("1T").is_err());
        assert!(parse_bitrate("0").is_err());
    }

    #[test]
    fn defaults_target_manifold_on_loopback() {
        let (sc, target) = prepare(&parse(&[])).unwrap();
        assert_eq!(target.name(), "whip-whep");
        assert_eq!((sc.rooms, sc.publishers, sc.subscribers), (1, 1, 4));
        assert!(sc.video);
        assert_eq!(sc.video_bitrate_bps, 1_500_000);
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        assert!(prepare(&parse(&["--server", "http://192.168.1.5:8080"])).is_err());
        assert!(prepare(&parse(&["--bind-ip", "10.0.0.1"])).is_err());
        assert!(
            prepare(&parse(&[
                "--target",
                "janus",
                "--janus-url",
                "http://example.com/janus"
            ]))
            .is_err()
        );
        assert!(prepare(&parse(&["--target", "janus"])).is_ok());
        let (_, room) = prepare(&parse(&["--target", "room"])).unwrap();
        assert_eq!(room.name(), "room");
        assert!(prepare(&parse(&["--target", "room", "--server", "http://10.1.1.1"])).is_err());
    }

    #[test]
    fn simulcast_and_downlink_caps() {
        let (sc, _) = prepare(&parse(&[
            "--simulcast",
            "--subscribers",
            "8",
            "--downlink-caps",
            "300k,1m,none",
            "--downlink-queue",
            "150ms",
        ]))
        .unwrap();
        assert!(sc.simulcast);
        assert_eq!(sc.downlink_caps.len(), 3);
        let first = sc.downlink_caps[0].unwrap();
        assert_eq!(
            (first.rate_bps, first.queue),
            (300_000, Duration::from_millis(150))
        );
        assert_eq!(sc.downlink_caps[2], None);
        let (plain, _) = prepare(&parse(&[])).unwrap();
        assert!(!plain.simulcast && plain.downlink_caps.is_empty());
        // Simulcast is offered over WHIP, and needs video.
        assert!(prepare(&parse(&["--simulcast", "--target", "room"])).is_err());
        assert!(prepare(&parse(&["--simulcast", "--target", "janus"])).is_err());
        assert!(prepare(&parse(&["--simulcast", "--audio-only"])).is_err());
        assert!(prepare(&parse(&["--downlink-caps", "300k,slow"])).is_err());
        assert!(prepare(&parse(&["--downlink-caps", "1m", "--downlink-queue", "0s"])).is_err());
    }

    #[test]
    fn nonsense_scenarios_are_refused() {
        assert!(prepare(&parse(&["--rooms", "0"])).is_err());
        assert!(prepare(&parse(&["--fps", "0"])).is_err());
        assert!(prepare(&parse(&["--ramp", "0"])).is_err());
    }
}
