//! Scenario `overload`: one media worker driven past saturation, once with Manifold's
//! shedding policy (the default: video first, then audio, oldest first) and once with it
//! off, at each load of `--overload-loads`. One worker, so that the server has one core and
//! the load generator the other: what saturates is the server. Per run it reports audio
//! and video apart (loss by the publisher's packet indices, latency, frames shown) beside
//! what the server shed, so the table shows whether past saturation the server degrades
//! (audio on time, video paused) or falls off a latency cliff (everything late, then lost).

use crate::{Args, RunResult, ScenarioDef, one_to_n, run_one, write_results};

pub const ID: &str = "overload";
const TITLE: &str = "one worker past saturation: 1 publisher (Opus + 1.5 Mbps VP8) → N subscribers, shedding on and off";

/// Each run's name, the id its files are tagged with, and the server's settings:
/// shedding as configured by default, and off.
type Mode = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);
const MODES: [Mode; 2] = [
    ("on", "overload-on", &[]),
    (
        "off",
        "overload-off",
        &[
            ("MANIFOLD_MEDIA__SHED_VIDEO_AFTER_MS", "0"),
            ("MANIFOLD_MEDIA__SHED_AUDIO_AFTER_MS", "0"),
        ],
    ),
];

/// Run it, write `overload.json` and `overload.md`; whether every run joined everyone.
pub fn run(args: &Args, summary: &mut String) -> bool {
    let mut one_worker = args.clone();
    one_worker.manifold_workers = 1;
    let mut results: Vec<(String, RunResult)> = Vec::new();
    for &n in &args.overload_loads {
        for (mode, tag, env) in MODES {
            let mut step = one_to_n(n, format!("N={n}"), n, false, crate::RAMP);
            step.server_env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let sc = ScenarioDef {
                id: tag,
                title: TITLE,
                x_label: "subscribers",
                steps: Vec::new(),
                stepped: false,
                floor_packet: crate::VIDEO_FLOOR,
            };
            eprintln!("== scenario overload · manifold, 1 worker · N={n} · shedding {mode}");
            let mut r = run_one(&one_worker, "manifold", &sc, &step, None);
            r.server = format!("manifold (shedding {mode})");
            eprintln!(
                "   audio loss {} %, p99 {} ms; video loss {} %, p99 {} ms; shed video {} audio {}",
                opt(r.audio_loss_pct, 2),
                opt(r.audio_latency_p99_ms, 1),
                opt(r.video_loss_pct, 2),
                opt(r.video_latency_p99_ms, 1),
                r.shed_video.unwrap_or(0),
                r.shed_audio.unwrap_or(0),
            );
            results.push((mode.to_string(), r));
        }
    }
    let table = markdown(&results);
    eprintln!("{table}");
    *summary += &format!("### ({ID}) {TITLE}\n\n{table}\n");
    let runs: Vec<&RunResult> = results.iter().map(|(_, r)| r).collect();
    let json = serde_json::json!({
        "scenario": ID,
        "title": TITLE,
        "steady_seconds": args.steady,
        "workers": 1,
        "runs": runs,
    });
    if !write_results(&args.out, ID, &json, &table) {
        return false;
    }
    results.iter().all(|(_, r)| r.ok)
}

fn opt(v: Option<f64>, d: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.d$}"))
}

/// Each load's run with shedding next to its run without.
fn markdown(results: &[(String, RunResult)]) -> String {
    let mut t = String::from(
        "| load | shedding | fwd packets/s | server CPU % | audio loss % | audio latency p99 ms | video loss % | video latency p99 ms | video fps | video frozen % | shed video / audio packets | episodes | spikes waited out | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (mode, r) in results {
        t += &format!(
            "| {} | {mode} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |\n",
            r.step,
            r.forwarded_pps,
            r.server_cpu_pct,
            opt(r.audio_loss_pct, 2),
            opt(r.audio_latency_p99_ms, 1),
            opt(r.video_loss_pct, 2),
            opt(r.video_latency_p99_ms, 1),
            opt(r.video_fps, 1),
            opt(r.video_frozen_pct, 1),
            r.shed_video.unwrap_or(0),
            r.shed_audio.unwrap_or(0),
            r.overload_episodes.unwrap_or(0),
            r.overload_spikes.unwrap_or(0),
            r.note.as_deref().unwrap_or(""),
        );
    }
    t
}
