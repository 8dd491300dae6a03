//! Scenario (d): one simulcast publisher (three VP8 layers over WHIP) and subscribers in
//! mixed downlink classes (capped in the load generator by a token bucket with a tail-drop
//! queue), against Manifold with its bandwidth estimation and layer allocator on. Per class
//! it records what the loadgen measured (received bitrate against the cap, loss, freezes
//! and layer switches per minute, the layer mostly received); for the server, its CPU per
//! forwarded packet over the steady window. Writes `<out>/d.json` and `<out>/d.md`.
//!
//! Manifold only: the loadgen offers simulcast over WHIP, which the Janus VideoRoom does not
//! take.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::proc::{Sample, Sampler};
use crate::run::window_cpu_pct;
use crate::server::start_server;
use crate::{Args, RAMP, round2};

/// Its id in `--scenarios` and the results folder.
pub const ID: &str = "d";

/// Its title.
pub const TITLE: &str = "simulcast: 1 publisher (3 layers) → subscribers on capped downlinks";

/// The server side of the run, over the steady window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerFigures {
    /// Length of the window, seconds.
    pub steady_s: f64,
    /// Server CPU, % of one core.
    pub cpu_pct: f64,
    /// Distinct media packets subscribers received per second (past their caps).
    pub delivered_pps: f64,
    /// RTP datagrams the server sent to subscribers per second (retransmissions and
    /// padding included), as they reached the subscribers' sockets, before the caps.
    pub sent_rtp_pps: f64,
    /// Server CPU per delivered media packet, µs (the figure of scenarios a–c).
    pub cpu_us_per_delivered_packet: Option<f64>,
    /// Server CPU per RTP datagram it sent, µs.
    pub cpu_us_per_sent_rtp: Option<f64>,
    /// Peak RSS in the window, MB.
    pub rss_mb: f64,
}

/// Run the scenario; the JSON written (also on failure, with a note).
pub fn run(args: &Args) -> Result<Value, String> {
    let per_class = args.simulcast_per_class.max(1);
    let caps: Vec<&str> = args.simulcast_caps.split(',').map(str::trim).collect();
    let subscribers = per_class * caps.len();
    let duration = (subscribers + 1).div_ceil(RAMP) as u64 + 4 + args.simulcast_seconds;
    eprintln!(
        "== scenario {ID} ({TITLE}) · manifold · {subscribers} subscribers ({}), {} s steady",
        caps.join(" / "),
        args.simulcast_seconds
    );
    let server = start_server(args, "manifold", "d-manifold", &[])?;
    let sampler = Sampler::start(server.child.id(), Duration::from_millis(250));
    std::thread::sleep(Duration::from_millis(500));
    let report_path = args.work.join("d-manifold.loadgen.json");
    let progress_log = args.work.join("d-manifold.loadgen.log");
    let mut child = Command::new(&args.manifold)
        .arg("loadgen")
        .args(&server.loadgen_args)
        .args(["--rooms", "1", "--publishers", "1"])
        .args(["--subscribers", &subscribers.to_string()])
        .args(["--simulcast", "--video-bitrate", "1.5M"])
        .args(["--downlink-caps", &args.simulcast_caps])
        .args(["--duration", &format!("{duration}s")])
        .args(["--ramp", &RAMP.to_string(), "--threads", "2"])
        .args(["--max-failure-ratio", "1", "--bind-ip", "127.0.0.2"])
        .arg("--report")
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&progress_log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .map_err(|e| format!("loadgen did not run: {e}"))?;
    let loadgen_sampler = Sampler::start(child.id(), Duration::from_millis(250));
    let _ = child.wait();
    let loadgen_samples = loadgen_sampler.stop();
    let samples = sampler.stop();
    drop(server);
    let report: Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| format!("no loadgen report at {}", report_path.display()))?;
    let server = figures(&report, &samples);
    let layers: Vec<Value> = report["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["role"] == "publisher")
        .flat_map(|c| c["layers"].as_array().cloned().unwrap_or_default())
        .collect();
    let failed = report.pointer("/aggregate/failed").and_then(Value::as_u64);
    Ok(json!({
        "scenario": ID,
        "title": TITLE,
        "server": "manifold",
        "caps": caps,
        "subscribers_per_class": per_class,
        "steady_seconds": args.simulcast_seconds,
        "failed_joins": failed,
        "failures": report.pointer("/aggregate/failures"),
        "numbering_breaks": report.pointer("/aggregate/numbering_breaks"),
        "server_figures": server,
        "loadgen_cpu_pct": window_cpu_pct(&report, &loadgen_samples),
        "publisher_layers": layers,
        "classes": report["classes"],
    }))
}

/// The server's figures over the report's steady window.
pub fn figures(report: &Value, samples: &[Sample]) -> ServerFigures {
    let u = |p: &str| report.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let steady_s = report
        .pointer("/steady/seconds")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let (from, until) = (u("/steady/from_unix_ms"), u("/steady/until_unix_ms"));
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.unix_ms >= from && s.unix_ms <= until)
        .collect();
    let mut f = ServerFigures {
        steady_s,
        ..ServerFigures::default()
    };
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return f;
    };
    let secs = (last.unix_ms - first.unix_ms) as f64 / 1000.0;
    if secs < 1.0 || steady_s <= 0.0 {
        return f;
    }
    let cpu_per_s = (last.cpu_s - first.cpu_s) / secs;
    f.cpu_pct = round2(100.0 * cpu_per_s);
    f.delivered_pps = (u("/steady/packets_received") as f64 / steady_s).round();
    f.sent_rtp_pps = (u("/steady/rtp_in") as f64 / steady_s).round();
    let per = |pps: f64| (pps > 0.0).then(|| round2(cpu_per_s * 1e6 / pps));
    f.cpu_us_per_delivered_packet = per(f.delivered_pps);
    f.cpu_us_per_sent_rtp = per(f.sent_rtp_pps);
    let peak = window.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    f.rss_mb = round2(peak as f64 / 1024.0);
    f
}

/// The Markdown of a result [`run`] wrote: a row per class, then the server's figures.
pub fn markdown(result: &Value) -> String {
    let num = |v: &Value, d: usize| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.d$}"));
    let mut t = String::from(
        "| downlink | subscribers | received kbps (min–max) | of it media kbps | of the cap | dropped at the cap | video loss % | video latency p50 / p95 ms | fps | freezes / min | frozen % | layer switches / min | layer mostly received | ending on |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for c in result["classes"].as_array().into_iter().flatten() {
        let pct = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.0}%"));
        let mostly = c["layer_mostly"].as_str().map_or("–".to_owned(), |l| {
            format!("{l} ({})", pct(&c["layer_share_pct"][l]))
        });
        let ending: Vec<String> = c["ending_layers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(layer, n)| format!("{layer} ×{n}"))
            .collect();
        t += &format!(
            "| {} | {} | {} ({}–{}) | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {mostly} | {} |\n",
            c["class"].as_str().unwrap_or("?"),
            c["subscribers"],
            num(&c["received_kbps"], 0),
            num(&c["received_kbps_min"], 0),
            num(&c["received_kbps_max"], 0),
            num(&c["media_kbps"], 0),
            pct(&c["utilisation_pct"]),
            c["link_drop_pct"]
                .as_f64()
                .map_or("–".to_owned(), |x| format!("{x:.1}%")),
            num(&c["video_loss_pct"], 2),
            num(&c["video_latency_ms"]["p50"], 1),
            num(&c["video_latency_ms"]["p95"], 1),
            num(&c["fps"], 1),
            num(&c["freezes_per_min"], 2),
            num(&c["frozen_pct"], 1),
            num(&c["layer_switches_per_min"], 2),
            ending.join(", "),
        );
    }
    let s = &result["server_figures"];
    t += &format!(
        "\nServer (Manifold, allocator on), {} s steady: {}% CPU; {} µs per delivered media packet ({} packets/s); {} µs per RTP datagram sent to subscribers ({}/s, retransmissions and padding included, counted before the caps); RSS {} MB. Loadgen CPU {}%. Failed joins: {}. VP8 numbering breaks seen by subscribers: {}.\n",
        num(&s["steady_s"], 1),
        num(&s["cpu_pct"], 1),
        num(&s["cpu_us_per_delivered_packet"], 2),
        num(&s["delivered_pps"], 0),
        num(&s["cpu_us_per_sent_rtp"], 2),
        num(&s["sent_rtp_pps"], 0),
        num(&s["rss_mb"], 1),
        num(&result["loadgen_cpu_pct"], 1),
        result["failed_joins"],
        result["numbering_breaks"],
    );
    let layers: Vec<String> = result["publisher_layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} ({}, {} kbit/s): {} keyframes, {} requested",
                l["rid"].as_str().unwrap_or("?"),
                l["size"].as_str().unwrap_or("?"),
                l["bitrate_bps"].as_u64().unwrap_or(0) / 1000,
                l["keyframes"],
                l["keyframe_requests"],
            )
        })
        .collect();
    if !layers.is_empty() {
        t += &format!("Publisher layers: {}.\n", layers.join("; "));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(unix_ms: u64, cpu_s: f64, rss_kb: u64) -> Sample {
        Sample {
            unix_ms,
            cpu_s,
            rss_kb,
            machine_busy_s: 0.0,
            machine_total_s: 0.0,
        }
    }

    #[test]
    fn server_figures_come_from_the_steady_window() {
        let report = json!({"steady": {"seconds": 10.0, "from_unix_ms": 1_000,
            "until_unix_ms": 11_000, "packets_received": 20_000, "rtp_in": 25_000}});
        let samples = [
            sample(500, 0.0, 1),
            sample(1_000, 1.0, 20_480),
            sample(11_000, 2.0, 40_960), // 1 CPU-second over 10 s
            sample(12_000, 9.0, 90_000),
        ];
        let f = figures(&report, &samples);
        assert_eq!(f.cpu_pct, 10.0);
        assert_eq!((f.delivered_pps, f.sent_rtp_pps), (2000.0, 2500.0));
        // 0.1 CPU-second per second over 2000 and 2500 packets per second.
        assert_eq!(f.cpu_us_per_delivered_packet, Some(50.0));
        assert_eq!(f.cpu_us_per_sent_rtp, Some(40.0));
        assert_eq!(f.rss_mb, 40.0);
        assert_eq!(figures(&report, &[]).cpu_us_per_delivered_packet, None);
    }

    #[test]
    fn the_table_has_a_row_per_class() {
        let result = json!({
            "classes": [
                {"class": "300k", "subscribers": 4, "received_kbps": 251.4,
                 "received_kbps_min": 240.0, "received_kbps_max": 262.0, "media_kbps": 190.2,
                 "utilisation_pct": 83.8, "link_drop_pct": 1.3, "video_loss_pct": 0.1,
                 "video_latency_ms": {"p50": 40.25, "p95": 180.0},
                 "fps": 29.5, "freezes_per_min": 0.5, "frozen_pct": 1.2,
                 "layer_switches_per_min": 1.0, "layer_mostly": "320x180",
                 "layer_share_pct": {"320x180": 97.0, "640x360": 3.0},
                 "ending_layers": {"320x180": 4}},
                {"class": "uncapped", "subscribers": 4, "received_kbps": 1900.0,
                 "received_kbps_min": 1800.0, "received_kbps_max": 2000.0, "media_kbps": 1600,
                 "utilisation_pct": null, "link_drop_pct": null, "video_loss_pct": 0.0,
                 "fps": 30.0, "freezes_per_min": 0.0, "frozen_pct": 0.0,
                 "layer_switches_per_min": 0.25, "layer_mostly": "1280x720",
                 "layer_share_pct": {"1280x720": 90.0}, "ending_layers": {"1280x720": 4}}
            ],
            "server_figures": {"steady_s": 60.0, "cpu_pct": 20.0,
                "cpu_us_per_delivered_packet": 30.0, "delivered_pps": 6000.0,
                "cpu_us_per_sent_rtp": 25.0, "sent_rtp_pps": 7000.0, "rss_mb": 50.0},
            "loadgen_cpu_pct": 40.0, "failed_joins": 0, "numbering_breaks": 0,
            "publisher_layers": [{"rid": "q", "size": "320x180", "bitrate_bps": 150000,
                                  "keyframes": 5, "keyframe_requests": 4}]
        });
        let md = markdown(&result);
        assert!(
            md.contains("| 300k | 4 | 251 (240–262) | 190 | 84% | 1.3% | 0.10 | 40.2 / 180.0 | 29.5 | 0.50 | 1.2 | 1.00 | 320x180 (97%) | 320x180 ×4 |"),
            "{md}"
        );
        assert!(
            md.contains("| uncapped | 4 | 1900 (1800–2000) | 1600 | – | – |"),
            "{md}"
        );
        assert!(
            md.contains("30.00 µs per delivered media packet (6000 packets/s)"),
            "{md}"
        );
        assert!(
            md.contains("q (320x180, 150 kbit/s): 5 keyframes, 4 requested"),
            "{md}"
        );
    }
}
