//! One run: a server started for one step of a scenario, the loadgen against it, the
//! server's /proc samples and `/metrics`, and what they add up to ([`RunResult`]).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::proc::{Sample, Sampler};
use crate::scrape::{self, BATCH_LATENCY, Buckets, ScrapeStats, Scraper};
use crate::server::{self, http_get, start_server};
use crate::{Args, ScenarioDef, round2};

/// One load point of a scenario.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// What the x axis shows (subscribers, rooms...).
    pub(crate) x: usize,
    pub(crate) label: String,
    pub(crate) loadgen: Vec<String>,
    /// Joins in the step (for the ramp's share of the duration).
    pub(crate) joins: usize,
    /// Subscribers each published packet goes to (the floor's fan-out).
    pub(crate) fanout: usize,
    /// Joins per second of the ramp.
    pub(crate) ramp: usize,
    /// More environment for the server (Manifold only).
    pub(crate) server_env: Vec<(String, String)>,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunResult {
    pub(crate) server: String,
    pub(crate) step: String,
    pub(crate) x: usize,
    pub(crate) ok: bool,
    pub(crate) note: Option<String>,
    pub(crate) participants: u64,
    pub(crate) failed_joins: u64,
    pub(crate) steady_s: f64,
    pub(crate) forwarded_pps: f64,
    pub(crate) forwarded_mbps: f64,
    pub(crate) server_cpu_pct: f64,
    pub(crate) loadgen_cpu_pct: f64,
    pub(crate) machine_busy_pct: f64,
    pub(crate) cpu_us_per_packet: Option<f64>,
    pub(crate) rss_mb: f64,
    pub(crate) rss_idle_mb: f64,
    pub(crate) rss_kb_per_participant: Option<f64>,
    pub(crate) loss_pct: f64,
    pub(crate) latency_p50_ms: Option<f64>,
    pub(crate) latency_p99_ms: Option<f64>,
    pub(crate) join_p50_ms: Option<f64>,
    pub(crate) join_p99_ms: Option<f64>,
    /// Subscriber joins per second the loadgen saw completed (offer to first media), and
    /// join → first media.
    pub(crate) joins_per_s: Option<f64>,
    pub(crate) first_media_p50_ms: Option<f64>,
    pub(crate) first_media_p99_ms: Option<f64>,
    pub(crate) freezes: u64,
    /// Manifold's own forwarding latency over the run (ramp included), from its
    /// `manifold_worker_batch_latency_seconds` histogram read before and after.
    pub(crate) worker_latency_p50_ms: Option<f64>,
    pub(crate) worker_latency_p99_ms: Option<f64>,
    /// CPU per forwarded packet as a multiple of the floor's in the same step (per-packet
    /// `sendmsg`, and GSO).
    pub(crate) x_floor_sendmsg: Option<f64>,
    pub(crate) x_floor_gso: Option<f64>,
    /// What a `/metrics` scraper saw, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scrape: Option<ScrapeStats>,
    /// Per kind, over every subscriber (the loadgen's classes): loss by the publisher's
    /// packet indices (what the server shed counts), latency, video frames shown.
    pub(crate) audio_loss_pct: Option<f64>,
    pub(crate) video_loss_pct: Option<f64>,
    pub(crate) audio_latency_p99_ms: Option<f64>,
    pub(crate) video_latency_p99_ms: Option<f64>,
    pub(crate) video_fps: Option<f64>,
    pub(crate) video_frozen_pct: Option<f64>,
    /// Manifold's shedding over the run (`/metrics`): packets shed, episodes.
    pub(crate) shed_video: Option<u64>,
    pub(crate) shed_audio: Option<u64>,
    pub(crate) overload_episodes: Option<u64>,
    pub(crate) overload_spikes: Option<u64>,
}

impl RunResult {
    /// A run that measured nothing yet (and is not `ok`).
    pub(crate) fn empty(server: &str, step: &str, x: usize) -> Self {
        Self {
            server: server.into(),
            step: step.into(),
            x,
            ok: false,
            note: None,
            participants: 0,
            failed_joins: 0,
            steady_s: 0.0,
            forwarded_pps: 0.0,
            forwarded_mbps: 0.0,
            server_cpu_pct: 0.0,
            loadgen_cpu_pct: 0.0,
            machine_busy_pct: 0.0,
            cpu_us_per_packet: None,
            rss_mb: 0.0,
            rss_idle_mb: 0.0,
            rss_kb_per_participant: None,
            loss_pct: 0.0,
            latency_p50_ms: None,
            latency_p99_ms: None,
            join_p50_ms: None,
            join_p99_ms: None,
            joins_per_s: None,
            first_media_p50_ms: None,
            first_media_p99_ms: None,
            freezes: 0,
            worker_latency_p50_ms: None,
            worker_latency_p99_ms: None,
            x_floor_sendmsg: None,
            x_floor_gso: None,
            scrape: None,
            audio_loss_pct: None,
            video_loss_pct: None,
            audio_latency_p99_ms: None,
            video_latency_p99_ms: None,
            video_fps: None,
            video_frozen_pct: None,
            shed_video: None,
            shed_audio: None,
            overload_episodes: None,
            overload_spikes: None,
        }
    }
}

pub(crate) fn run_one(
    args: &Args,
    server_name: &str,
    sc: &ScenarioDef,
    step: &Step,
    scrape_hz: Option<f64>,
) -> RunResult {
    let tag = match scrape_hz {
        Some(hz) => format!("{}-{server_name}-{}-scraped{hz}", sc.id, step.x),
        None => format!("{}-{server_name}-{}", sc.id, step.x),
    };
    let mut result = RunResult::empty(server_name, &step.label, step.x);
    let server = match start_server(args, server_name, &tag, &step.server_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("   {e}");
            result.note = Some("server did not start".into());
            return result;
        }
    };
    let sampler = Sampler::start(server.child.id(), Duration::from_millis(250));
    std::thread::sleep(Duration::from_millis(500));
    let idle = sampler.latest();
    let latency_before = metrics_body(&server).map(|b| Buckets::parse(&b, BATCH_LATENCY));

    let steady = if args.smoke { 4 } else { args.steady };
    // Ramp, connection set-up, one second of grace, then the steady part.
    let duration = step.joins.div_ceil(step.ramp) as u64 + 4 + steady;
    let report_path = args.work.join(format!("{tag}.loadgen.json"));
    let progress_log = args.work.join(format!("{tag}.loadgen.log"));
    let child = Command::new(&args.manifold)
        .arg("loadgen")
        .args(&server.loadgen_args)
        .args(&step.loadgen)
        .args([
            "--duration",
            &format!("{duration}s"),
            "--ramp",
            &step.ramp.to_string(),
            "--threads",
            "2",
            "--report",
        ])
        .arg(&report_path)
        .args(["--max-failure-ratio", "1"])
        // Janus pairs no candidates with a client on lo's 127.0.0.1; 127.0.0.2 (on v0 in
        // the namespace) works for both servers.
        .args(["--bind-ip", "127.0.0.2"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&progress_log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            result.note = Some(format!("loadgen did not run: {e}"));
            return result;
        }
    };
    let scraper = scrape_hz
        .zip(server.metrics_addr.clone())
        .map(|(hz, addr)| Scraper::start(addr, hz));
    // The loadgen's own CPU tells when the two cores the server shares with it saturate.
    let loadgen_sampler = Sampler::start(child.id(), Duration::from_millis(250));
    let _ = child.wait();
    let loadgen_samples = loadgen_sampler.stop();
    let samples = sampler.stop();
    result.scrape = scraper.map(Scraper::stop);
    // One scrape after the run: its latency histogram and its shedding counters.
    let after = metrics_body(&server);
    let latency_after = after.as_deref().map(|b| Buckets::parse(b, BATCH_LATENCY));
    if let (Some(before), Some(after)) = (&latency_before, &latency_after) {
        let run = after.since(before);
        result.worker_latency_p50_ms = run.quantile(0.50).map(|s| round2(s * 1e3));
        result.worker_latency_p99_ms = run.quantile(0.99).map(|s| round2(s * 1e3));
    }
    if let Some(body) = &after {
        let drops = |reason: &str| {
            scrape::counter_sum(
                body,
                "manifold_worker_drops_total",
                &format!("reason=\"{reason}\""),
            )
        };
        result.shed_video = drops("shed_video");
        result.shed_audio = drops("shed_audio");
        result.overload_episodes =
            scrape::counter_sum(body, "manifold_worker_overload_episodes_total", "");
        result.overload_spikes =
            scrape::counter_sum(body, "manifold_worker_overload_spikes_total", "");
    }
    drop(server);
    let report: Value = match std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        Some(v) => v,
        None => {
            result.note = Some("no loadgen report".into());
            return result;
        }
    };
    fill(&mut result, &report, &samples, idle.as_ref());
    result.loadgen_cpu_pct = window_cpu_pct(&report, &loadgen_samples).unwrap_or(0.0);
    result
}

/// The server's `/metrics` body now (Manifold only: Janus has none).
pub(crate) fn metrics_body(server: &server::Server) -> Option<String> {
    http_get(server.metrics_addr.as_deref()?, "/metrics")
}

/// CPU % of a sampled process over the report's steady window.
pub(crate) fn window_cpu_pct(report: &Value, samples: &[Sample]) -> Option<f64> {
    let from = report.pointer("/steady/from_unix_ms")?.as_u64()?;
    let until = report.pointer("/steady/until_unix_ms")?.as_u64()?;
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.unix_ms >= from && s.unix_ms <= until)
        .collect();
    let (first, last) = (window.first()?, window.last()?);
    let secs = (last.unix_ms - first.unix_ms) as f64 / 1000.0;
    (secs >= 1.0).then(|| round2(100.0 * (last.cpu_s - first.cpu_s) / secs))
}

/// Compute a run's figures from the loadgen report and the /proc samples.
pub(crate) fn fill(r: &mut RunResult, report: &Value, samples: &[Sample], idle: Option<&Sample>) {
    let f = |p: &str| report.pointer(p).and_then(Value::as_f64);
    let u = |p: &str| report.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    r.participants = u("/aggregate/connected");
    r.failed_joins = u("/aggregate/failed");
    r.loss_pct = f("/aggregate/loss_pct").unwrap_or(0.0);
    r.latency_p50_ms = f("/aggregate/latency_ms/p50");
    r.latency_p99_ms = f("/aggregate/latency_ms/p99");
    r.join_p50_ms = f("/aggregate/join_ms/p50");
    r.join_p99_ms = f("/aggregate/join_ms/p99");
    r.joins_per_s = f("/aggregate/joins_per_s").map(f64::round);
    r.first_media_p50_ms = f("/aggregate/first_media_ms/p50");
    r.first_media_p99_ms = f("/aggregate/first_media_ms/p99");
    r.freezes = u("/aggregate/freezes");
    // Without downlink caps every subscriber is in one class.
    r.audio_loss_pct = f("/classes/0/audio_loss_pct");
    r.video_loss_pct = f("/classes/0/video_loss_pct");
    r.audio_latency_p99_ms = f("/classes/0/audio_latency_ms/p99");
    r.video_latency_p99_ms = f("/classes/0/video_latency_ms/p99");
    r.video_fps = f("/classes/0/fps");
    r.video_frozen_pct = f("/classes/0/frozen_pct");
    r.steady_s = f("/steady/seconds").unwrap_or(0.0);
    let from = u("/steady/from_unix_ms");
    let until = u("/steady/until_unix_ms");
    if r.steady_s <= 0.0 {
        r.note = Some("no steady window".into());
        return;
    }
    r.forwarded_pps = u("/steady/packets_received") as f64 / r.steady_s;
    r.forwarded_mbps = u("/steady/bytes_received") as f64 * 8.0 / 1e6 / r.steady_s;
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.unix_ms >= from && s.unix_ms <= until)
        .collect();
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        r.note = Some("no CPU samples in the steady window".into());
        return;
    };
    let secs = (last.unix_ms - first.unix_ms) as f64 / 1000.0;
    if secs < 1.0 {
        r.note = Some("steady window too short".into());
        return;
    }
    let cpu_s = last.cpu_s - first.cpu_s;
    r.server_cpu_pct = 100.0 * cpu_s / secs;
    let busy = last.machine_busy_s - first.machine_busy_s;
    let total = last.machine_total_s - first.machine_total_s;
    r.machine_busy_pct = if total > 0.0 {
        100.0 * busy / total
    } else {
        0.0
    };
    if r.forwarded_pps > 0.0 {
        r.cpu_us_per_packet = Some(round2(cpu_s / secs * 1e6 / r.forwarded_pps));
    }
    let peak = window.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    r.rss_mb = round2(peak as f64 / 1024.0);
    let idle_kb = idle.map_or(0, |s| s.rss_kb);
    r.rss_idle_mb = round2(idle_kb as f64 / 1024.0);
    if r.participants > 0 {
        r.rss_kb_per_participant = Some(round2(
            peak.saturating_sub(idle_kb) as f64 / r.participants as f64,
        ));
    }
    r.ok = r.failed_joins == 0 && r.participants > 0;
    if r.failed_joins > 0 {
        r.note = Some(format!("{} failed joins", r.failed_joins));
    }
    r.server_cpu_pct = round2(r.server_cpu_pct);
    r.machine_busy_pct = round2(r.machine_busy_pct);
    r.forwarded_pps = r.forwarded_pps.round();
    r.forwarded_mbps = round2(r.forwarded_mbps);
}
