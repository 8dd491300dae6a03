//! The benchmark runner behind `bench/run.sh`: for each scenario and each server it starts
//! the server, runs `manifold loadgen` against it at a fixed load, samples the server
//! process's CPU time and RSS from /proc, and writes `<out>/<scenario>.json`, a Markdown
//! table and PNG charts comparing the servers side by side.
//!
//! It expects to run inside the network namespace `bench/run.sh` makes (Janus gathers no
//! candidates on loopback interfaces; the namespace's veth carries 127.0.0.2), and it
//! sends traffic nowhere but loopback addresses.
#![forbid(unsafe_code)]

mod chart;
mod cluster;
mod floor;
mod overload;
mod proc;
mod run;
mod scrape;
mod server;
mod simulcast;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use crate::run::{RunResult, Step, run_one};

/// Run the benchmark scenarios against Manifold and Janus.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// The `manifold` binary (server and loadgen).
    #[arg(long)]
    manifold: PathBuf,
    /// Scenarios to run: a, b, c, j, d, e, scrape, overload (j: joins per second; d:
    /// simulcast to capped downlinks; e: one room across two nodes over NATS; scrape: (a)'s
    /// loads with and without a `/metrics` scraper; overload: one worker past saturation,
    /// shedding on and off; those four Manifold only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "a,b,c,j,d,e,scrape,overload"
    )]
    scenarios: Vec<String>,
    /// Servers to compare: manifold, janus.
    #[arg(long, value_delimiter = ',', default_value = "manifold,janus")]
    servers: Vec<String>,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Scratch directory (server configs, logs, raw loadgen reports).
    #[arg(long, default_value = "target/bench-work")]
    work: PathBuf,
    /// Seconds of steady load per run (after every client joined).
    #[arg(long, default_value_t = 15)]
    steady: u64,
    /// A few seconds of scenario (a) at a tiny load, Manifold only, checked for sanity.
    #[arg(long)]
    smoke: bool,
    /// Largest N of scenarios (a) and (e).
    #[arg(long, default_value_t = 300)]
    max_subscribers: usize,
    /// The Janus binary.
    #[arg(long, default_value = "janus")]
    janus: String,
    /// Run the soak instead of the scenarios: scenario (b) with churn, sampled every 10 s.
    #[arg(long)]
    soak: bool,
    /// How long the soak runs after the ramp, in minutes.
    #[arg(long, default_value_t = 60)]
    soak_minutes: u64,
    /// Rooms of four in the soak (13: about 70 % of a 2-core machine, release build).
    #[arg(long, default_value_t = 13)]
    soak_rooms: usize,
    /// Scenario (d): seconds of steady load (after every client joined).
    #[arg(long, default_value_t = 60)]
    simulcast_seconds: u64,
    /// Scenario (d): downlink classes, as the loadgen's `--downlink-caps` takes them.
    #[arg(long, default_value = "300k,1m,3m,none")]
    simulcast_caps: String,
    /// Scenario (d): subscribers per class.
    #[arg(long, default_value_t = 4)]
    simulcast_per_class: usize,
    /// Manifold's media workers (the machine has two cores).
    #[arg(long, default_value_t = 2)]
    manifold_workers: usize,
    /// Manifold's `media.room_spread_after`: sessions of a room on its first worker before
    /// later ones go to the least loaded worker (relayed between workers).
    #[arg(long)]
    room_spread_after: Option<usize>,
    /// Scenario (c): listener counts, one run each, smallest first (stepping stops for a
    /// server past 1% loss or a saturated machine).
    #[arg(long, value_delimiter = ',', default_value = "250")]
    listeners: Vec<usize>,
    /// Scenario `scrape`: GETs of `/metrics` per second in its scraped runs.
    #[arg(long, default_value_t = 10.0)]
    scraper_hz: f64,
    /// Scenario (j): the ramps tried, joins per second (stepping stops past 1% loss or a
    /// saturated machine). Past what the node takes, the joins per second achieved is its
    /// ceiling.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    join_rates: Vec<usize>,
    /// Scenario (j): how many listeners join in each run.
    #[arg(long, default_value_t = 1000)]
    join_listeners: usize,
    /// Scenario `overload`: subscribers of its one publisher, one pair of runs each.
    #[arg(long, value_delimiter = ',', default_value = "200,300")]
    overload_loads: Vec<usize>,
}

struct ScenarioDef {
    id: &'static str,
    title: &'static str,
    x_label: &'static str,
    steps: Vec<Step>,
    /// Step up until loss passes 1% or the machine saturates.
    stepped: bool,
    /// The floor's datagrams: bytes each (as forwarded, before the SRTP tag) and per burst.
    floor_packet: (usize, usize),
}

/// Scenario (a)'s video as the floor forwards it: 1.5 Mbps at 30 fps is 6 packets of about
/// 1150 bytes per frame.
const VIDEO_FLOOR: (usize, usize) = (1180, 6);
/// Opus as the floor forwards it: one 120-byte packet per 20 ms.
const AUDIO_FLOOR: (usize, usize) = (120, 1);

/// Ramp rate of every run but scenario (j)'s: joins per second.
const RAMP: usize = 40;
/// Scenario (j): joins the loadgen keeps in flight at once.
const JOINS_IN_FLIGHT: usize = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.work).and(std::fs::create_dir_all(&args.out)) {
        eprintln!("manifold-bench: {e}");
        return ExitCode::FAILURE;
    }
    chart::load_font();
    if args.soak {
        return match soak::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("manifold-bench: soak: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let scenarios = scenarios(&args);
    let servers: Vec<String> = if args.smoke {
        vec!["manifold".into()]
    } else {
        args.servers.clone()
    };
    let mut all_ok = true;
    let mut summary = String::new();
    for sc in scenarios
        .iter()
        .filter(|s| args.smoke || args.scenarios.iter().any(|x| x == s.id))
    {
        let mut results = Vec::new();
        for server in &servers {
            for step in &sc.steps {
                eprintln!(
                    "== scenario {} ({}) · {server} · {}",
                    sc.id, sc.title, step.label
                );
                // The smoke scrapes too (twice a second), to check the endpoint under load.
                let scrape_hz = args.smoke.then_some(2.0);
                let r = run_one(&args, server, sc, step, scrape_hz);
                eprintln!(
                    "   {} pps forwarded, server CPU {:.1}% ({} µs/packet), loadgen CPU {:.1}%, loss {:.2}%, RSS {:.1} MB{}",
                    r.forwarded_pps.round(),
                    r.server_cpu_pct,
                    r.cpu_us_per_packet
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    r.loadgen_cpu_pct,
                    r.loss_pct,
                    r.rss_mb,
                    r.note
                        .as_deref()
                        .map_or(String::new(), |n| format!(" [{n}]"))
                );
                // Saturation: server and loadgen together use (nearly) both cores. The
                // machine-wide busy figure is not used: other work may share the machine.
                let saturated = r.server_cpu_pct + r.loadgen_cpu_pct > 185.0;
                let stop = sc.stepped && (r.loss_pct > 1.0 || saturated || !r.ok);
                results.push(r);
                if stop {
                    eprintln!("   (stepping stops here for {server})");
                    break;
                }
            }
        }
        add_floor(&args, sc, &mut results);
        let table = markdown(sc, &results);
        summary += &format!("### ({}) {}\n\n{table}\n", sc.id, sc.title);
        let json = serde_json::json!({
            "scenario": sc.id,
            "title": sc.title,
            "x_label": sc.x_label,
            "steady_seconds": args.steady,
            "runs": results,
        });
        all_ok &= write_results(&args.out, sc.id, &json, &table);
        let base = args.out.join(sc.id);
        match chart::draw(&base.with_extension("png"), sc.title, sc.x_label, &results) {
            Ok(()) => {}
            Err(e) => eprintln!("manifold-bench: no chart for {}: {e}", sc.id),
        }
        if args.smoke {
            for r in &results {
                if r.server.starts_with("floor") {
                    if !(r.ok && r.cpu_us_per_packet.is_some_and(|v| v > 0.0)) {
                        eprintln!("manifold-bench: the floor did not run: {r:#?}");
                        all_ok = false;
                    }
                    continue;
                }
                let sane = r.ok
                    && r.loss_pct < 1.0
                    && r.forwarded_pps > 0.0
                    && r.cpu_us_per_packet.is_some_and(|v| v > 0.0)
                    && r.rss_mb > 0.0
                    && r.worker_latency_p99_ms.is_some()
                    && r.scrape
                        .as_ref()
                        .is_some_and(|s| s.scrapes > 0 && s.failures == 0 && s.incomplete == 0);
                if !sane {
                    eprintln!("manifold-bench: smoke run is not sane: {r:#?}");
                    all_ok = false;
                }
            }
        }
        all_ok &= results
            .iter()
            .all(|r| r.note.as_deref() != Some("server did not start"));
    }
    if !args.smoke && args.scenarios.iter().any(|s| s == simulcast::ID) {
        if servers.iter().any(|s| s == "manifold") {
            all_ok &= run_simulcast(&args, &mut summary);
        } else {
            eprintln!("== scenario d runs against Manifold only (simulcast over WHIP)");
        }
    }
    if !args.smoke && args.scenarios.iter().any(|s| s == SCRAPE_ID) {
        if servers.iter().any(|s| s == "manifold") {
            all_ok &= run_scrape(&args, &scenarios, &mut summary);
        } else {
            eprintln!("== scenario scrape runs against Manifold only (its /metrics)");
        }
    }
    if !args.smoke && args.scenarios.iter().any(|s| s == overload::ID) {
        if servers.iter().any(|s| s == "manifold") {
            all_ok &= overload::run(&args, &mut summary);
        } else {
            eprintln!("== scenario overload runs against Manifold only (its shedding)");
        }
    }
    if !args.smoke && args.scenarios.iter().any(|s| s == cluster::ID) {
        if servers.iter().any(|s| s == "manifold") {
            all_ok &= run_cluster(&args, &mut summary);
        } else {
            eprintln!("== scenario e runs against Manifold only (its relay between nodes)");
        }
    }
    // The summary covers every scenario whose table is in the results folder, so running
    // one scenario again keeps the others' rows.
    if !args.smoke {
        let mut tables: Vec<PathBuf> = std::fs::read_dir(&args.out)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        tables.retain(|p| {
            p.extension().is_some_and(|e| e == "md")
                && p.file_stem().is_some_and(|s| s != "summary")
        });
        tables.sort();
        summary.clear();
        for t in tables {
            let id = t
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let title = scenarios
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.title)
                .or((id == simulcast::ID).then_some(simulcast::TITLE))
                .or((id == cluster::ID).then_some(cluster::TITLE))
                .or((id == "soak").then_some(soak::TITLE))
                .or((id == SCRAPE_ID).then_some(SCRAPE_TITLE))
                .unwrap_or("");
            let body = std::fs::read_to_string(&t).unwrap_or_default();
            summary += &format!("### ({id}) {title}\n\n{body}\n");
        }
    }
    if let Err(e) = std::fs::write(args.out.join("summary.md"), &summary) {
        eprintln!("manifold-bench: {e}");
    }
    println!("{summary}");
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Write `<out>/<id>.json` (pretty) and `<out>/<id>.md`; whether both were written.
fn write_results(out: &std::path::Path, id: &str, json: &impl Serialize, table: &str) -> bool {
    let base = out.join(id);
    let wrote = std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(json).unwrap_or_default(),
    )
    .and_then(|()| std::fs::write(base.with_extension("md"), table));
    match wrote {
        Ok(()) => true,
        Err(e) => {
            eprintln!("manifold-bench: cannot write results: {e}");
            false
        }
    }
}

/// Scenario (d): run it, write `d.json` and `d.md`; whether it ran.
fn run_simulcast(args: &Args, summary: &mut String) -> bool {
    let result = match simulcast::run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("   scenario d: {e}");
            return false;
        }
    };
    let table = simulcast::markdown(&result);
    eprintln!("{table}");
    *summary += &format!("### ({}) {}\n\n{table}\n", simulcast::ID, simulcast::TITLE);
    if !write_results(&args.out, simulcast::ID, &result, &table) {
        return false;
    }
    result["failed_joins"] == 0
}

/// The floor beside the servers: for every step a server ran, both floor variants at the
/// step's fan-out and packet size, and each server's CPU per packet as a multiple of them.
fn add_floor(args: &Args, sc: &ScenarioDef, results: &mut Vec<RunResult>) {
    let mut steps: Vec<&Step> = sc
        .steps
        .iter()
        .filter(|st| results.iter().any(|r| r.x == st.x))
        .collect();
    steps.dedup_by_key(|st| st.x);
    for st in steps {
        let mut floor_us = [None, None];
        for (i, send) in [floor::Send::PerPacket, floor::Send::Gso]
            .into_iter()
            .enumerate()
        {
            // About three seconds of output at the floor's pace; a moment for the smoke.
            let out = if args.smoke { 4_000 } else { 450_000 };
            let spec = floor::Spec {
                packet_bytes: sc.floor_packet.0,
                fanout: st.fanout.max(1),
                burst: sc.floor_packet.1,
                packets: (out / st.fanout.max(1)).max(if args.smoke { 500 } else { 2_000 }),
                send,
            };
            let mut r = RunResult::empty(send.label(), &st.label, st.x);
            match floor::measure(spec) {
                Ok(f) => {
                    eprintln!(
                        "== scenario {} · {} · {}: {:.2} µs/packet ({} packets, {} send calls)",
                        sc.id,
                        send.label(),
                        st.label,
                        f.cpu_us_per_packet,
                        f.forwarded,
                        f.send_calls
                    );
                    let wall_s = f.wall_s.max(1e-9);
                    r.ok = f.send_errors == 0 && f.forwarded > 0;
                    r.forwarded_pps = (f.forwarded as f64 / wall_s).round();
                    r.forwarded_mbps = round2(
                        f.forwarded as f64 * (spec.packet_bytes + floor::TAG) as f64 * 8.0
                            / 1e6
                            / wall_s,
                    );
                    r.server_cpu_pct = round2(100.0 * f.cpu_s / wall_s);
                    r.cpu_us_per_packet = Some(round2(f.cpu_us_per_packet));
                    r.note = Some(format!(
                        "{} send calls, {} errors",
                        f.send_calls, f.send_errors
                    ));
                    floor_us[i] = Some(f.cpu_us_per_packet).filter(|v| *v > 0.0);
                }
                Err(e) => r.note = Some(format!("floor did not run: {e}")),
            }
            results.push(r);
        }
        for r in results.iter_mut().filter(|r| r.x == st.x) {
            if let Some(us) = r
                .cpu_us_per_packet
                .filter(|_| !r.server.starts_with("floor"))
            {
                r.x_floor_sendmsg = floor_us[0].map(|f| round2(us / f));
                r.x_floor_gso = floor_us[1].map(|f| round2(us / f));
            }
        }
    }
}

/// Scenario `scrape`: (a)'s loads, each without and then with a `/metrics` scraper.
const SCRAPE_ID: &str = "scrape";
const SCRAPE_TITLE: &str = "1 publisher → N subscribers, with and without a /metrics scraper";
/// Its loads (of scenario (a)'s, up to `--max-subscribers`).
const SCRAPE_LOADS: [usize; 2] = [50, 150];

/// Scenario `scrape`: run it, write `scrape.json` and `scrape.md`; whether every run was ok.
fn run_scrape(args: &Args, scenarios: &[ScenarioDef], summary: &mut String) -> bool {
    let Some(a) = scenarios.iter().find(|s| s.id == "a") else {
        return false;
    };
    let sc = ScenarioDef {
        id: SCRAPE_ID,
        title: SCRAPE_TITLE,
        x_label: a.x_label,
        steps: a
            .steps
            .iter()
            .filter(|s| SCRAPE_LOADS.contains(&s.x))
            .cloned()
            .collect(),
        stepped: false,
        floor_packet: a.floor_packet,
    };
    let mut results = Vec::new();
    for step in &sc.steps {
        for hz in [None, Some(args.scraper_hz)] {
            eprintln!(
                "== scenario scrape · manifold · {} · scraper {}",
                step.label,
                hz.map_or("off".into(), |h| format!("{h}/s"))
            );
            let r = run_one(args, "manifold", &sc, step, hz);
            eprintln!(
                "   loss {:.2}%, latency p99 {} ms, worker latency p99 {} ms, scrapes {}",
                r.loss_pct,
                r.latency_p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
                r.worker_latency_p99_ms
                    .map_or("-".into(), |v| format!("{v:.2}")),
                r.scrape.as_ref().map_or(0, |s| s.scrapes),
            );
            results.push(r);
        }
    }
    let table = markdown_scrape(&results);
    eprintln!("{table}");
    *summary += &format!("### ({SCRAPE_ID}) {SCRAPE_TITLE}\n\n{table}\n");
    let json = serde_json::json!({
        "scenario": SCRAPE_ID,
        "title": SCRAPE_TITLE,
        "steady_seconds": args.steady,
        "scraper_hz": args.scraper_hz,
        "runs": results,
    });
    if !write_results(&args.out, SCRAPE_ID, &json, &table) {
        return false;
    }
    results
        .iter()
        .all(|r| r.ok && r.scrape.as_ref().is_none_or(|s| s.failures == 0))
}

/// The `scrape` table: each load's run without the scraper next to its run with it.
fn markdown_scrape(results: &[RunResult]) -> String {
    let opt = |v: Option<f64>, d: usize| v.map_or("–".to_owned(), |v| format!("{v:.d$}"));
    let mut t = String::from(
        "| load | scraper | fwd packets/s | server CPU % | loss % | latency p50 / p99 ms | worker latency p50 / p99 ms | scrapes | failed | scrape ms p50 / p99 / max | body KB | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let (scraper, scrapes, failed, timing, body) = match &r.scrape {
            Some(s) => (
                format!("{}/s", s.hz),
                s.scrapes.to_string(),
                s.failures.to_string(),
                format!(
                    "{} / {} / {}",
                    opt(s.duration_ms_p50, 1),
                    opt(s.duration_ms_p99, 1),
                    opt(s.duration_ms_max, 1)
                ),
                format!("{:.0}", s.body_kb_last),
            ),
            None => ("off".into(), "–".into(), "–".into(), "–".into(), "–".into()),
        };
        t += &format!(
            "| {} | {scraper} | {:.0} | {:.1} | {:.3} | {} / {} | {} / {} | {scrapes} | {failed} | {timing} | {body} | {} |\n",
            r.step,
            r.forwarded_pps,
            r.server_cpu_pct,
            r.loss_pct,
            opt(r.latency_p50_ms, 1),
            opt(r.latency_p99_ms, 1),
            opt(r.worker_latency_p50_ms, 2),
            opt(r.worker_latency_p99_ms, 2),
            r.note.as_deref().unwrap_or(""),
        );
    }
    t
}

/// Scenario (e): run it, write `e.json` and `e.md`; whether every run joined everyone.
fn run_cluster(args: &Args, summary: &mut String) -> bool {
    let result = match cluster::run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("   scenario e: {e}");
            return false;
        }
    };
    let table = cluster::markdown(&result);
    eprintln!("{table}");
    *summary += &format!("### ({}) {}\n\n{table}\n", cluster::ID, cluster::TITLE);
    if !write_results(&args.out, cluster::ID, &result, &table) {
        return false;
    }
    result["rows"]
        .as_array()
        .is_some_and(|rows| rows.iter().all(|r| r["ok"] == true))
}

/// The loadgen's arguments for `rooms` rooms of `pubs` publishers and `subs` subscribers.
fn common(rooms: usize, pubs: usize, subs: usize) -> Vec<String> {
    [
        "--rooms",
        &rooms.to_string(),
        "--publishers",
        &pubs.to_string(),
        "--subscribers",
        &subs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One publisher to `n` subscribers, joining at `ramp` per second.
fn one_to_n(x: usize, label: String, n: usize, audio_only: bool, ramp: usize) -> Step {
    Step {
        x,
        label,
        loadgen: if audio_only {
            [common(1, 1, n), vec!["--audio-only".into()]].concat()
        } else {
            common(1, 1, n)
        },
        joins: n + 1,
        fanout: n,
        ramp,
        server_env: Vec::new(),
    }
}

fn scenarios(args: &Args) -> Vec<ScenarioDef> {
    if args.smoke {
        return vec![ScenarioDef {
            id: "smoke",
            title: "smoke: 1 publisher → 2 subscribers",
            x_label: "subscribers",
            steps: vec![one_to_n(2, "N=2".into(), 2, false, RAMP)],
            stepped: false,
            floor_packet: VIDEO_FLOOR,
        }];
    }
    let a_steps = [10usize, 25, 50, 100, 150, 200, 250, 300, 400, 500]
        .into_iter()
        .filter(|&n| n <= args.max_subscribers)
        .map(|n| one_to_n(n, format!("N={n}"), n, false, RAMP))
        .collect();
    let b_rooms = 6;
    let mut listeners = args.listeners.clone();
    listeners.sort_unstable();
    listeners.dedup();
    let c_steps = listeners
        .into_iter()
        .filter(|&n| n > 0)
        .map(|n| one_to_n(n, format!("N={n}"), n, true, RAMP))
        .collect();
    vec![
        ScenarioDef {
            id: "a",
            title: "1 publisher (Opus + 1.5 Mbps VP8) → N subscribers",
            x_label: "subscribers",
            steps: a_steps,
            stepped: true,
            floor_packet: VIDEO_FLOOR,
        },
        ScenarioDef {
            id: "b",
            title: "rooms of four, everyone publishing audio + 800 kbps video",
            x_label: "rooms",
            steps: vec![Step {
                x: b_rooms,
                label: format!("{b_rooms} rooms × 4"),
                loadgen: [
                    common(b_rooms, 4, 12),
                    vec!["--video-bitrate".into(), "800k".into()],
                ]
                .concat(),
                joins: b_rooms * 16,
                // 12 subscribers per room spread over its 4 publishers.
                fanout: 3,
                ramp: RAMP,
                server_env: Vec::new(),
            }],
            stepped: false,
            // 800 kbps at 30 fps: 4 packets of about 850 bytes per frame.
            floor_packet: (870, 4),
        },
        ScenarioDef {
            id: "j",
            title: "joins per second: audio listeners joining at a given rate",
            x_label: "joins per second",
            steps: args
                .join_rates
                .iter()
                .map(|&rate| {
                    let n = args.join_listeners;
                    let mut step = one_to_n(rate, format!("{n} at {rate} joins/s"), n, true, rate);
                    // Joins in flight at once: browsers joining do not wait for each other,
                    // and the loadgen's default of 8 would cap the rate it offers.
                    step.loadgen
                        .extend(["--max-in-flight".to_owned(), JOINS_IN_FLIGHT.to_string()]);
                    step
                })
                .collect(),
            stepped: true,
            floor_packet: AUDIO_FLOOR,
        },
        ScenarioDef {
            id: "c",
            title: "audio only: 1 speaker → many listeners",
            x_label: "listeners",
            steps: c_steps,
            stepped: true,
            floor_packet: AUDIO_FLOOR,
        },
    ]
}

fn markdown(sc: &ScenarioDef, results: &[RunResult]) -> String {
    let opt = |v: Option<f64>, d: usize| v.map_or("–".to_owned(), |v| format!("{v:.d$}"));
    // Scenario (j) adds the joins per second achieved and join → first media.
    let joins = sc.id == "j";
    let mut t = String::from(
        "| load | server | CPU µs / fwd packet | × floor (sendmsg / GSO) | fwd packets/s | fwd Mbps | server CPU % | loadgen CPU % | RSS MB | RSS KB / participant | loss % | latency p50 / p99 ms | join p50 / p99 ms |",
    );
    t += if joins {
        " joins/s achieved | join → first media p50 / p99 ms | failed joins | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    } else {
        " failed joins | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    };
    let mut rows: Vec<&RunResult> = results.iter().collect();
    rows.sort_by(|a, b| a.x.cmp(&b.x).then(a.server.cmp(&b.server)));
    for r in rows {
        t += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.3} | {} / {} | {} / {} |{} {} | {} |\n",
            r.step,
            r.server,
            opt(r.cpu_us_per_packet, 2),
            match (r.x_floor_sendmsg, r.x_floor_gso) {
                (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                _ => "–".into(),
            },
            r.forwarded_pps,
            r.forwarded_mbps,
            r.server_cpu_pct,
            r.loadgen_cpu_pct,
            r.rss_mb,
            opt(r.rss_kb_per_participant, 0),
            r.loss_pct,
            opt(r.latency_p50_ms, 1),
            opt(r.latency_p99_ms, 1),
            opt(r.join_p50_ms, 0),
            opt(r.join_p99_ms, 0),
            if joins {
                format!(
                    " {} | {} / {} |",
                    opt(r.joins_per_s, 0),
                    opt(r.first_media_p50_ms, 0),
                    opt(r.first_media_p99_ms, 0)
                )
            } else {
                String::new()
            },
            r.failed_joins,
            r.note.as_deref().unwrap_or(""),
        );
    }
    t
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::Sample;
    use crate::run::fill;
    use crate::scrape::ScrapeStats;

    fn sample(unix_ms: u64, cpu_s: f64, rss_kb: u64, busy: f64, total: f64) -> Sample {
        Sample {
            unix_ms,
            cpu_s,
            rss_kb,
            machine_busy_s: busy,
            machine_total_s: total,
        }
    }

    #[test]
    fn figures_come_from_the_steady_window() {
        let report = serde_json::json!({
            "steady": {"seconds": 10.0, "from_unix_ms": 1_000, "until_unix_ms": 11_000,
                       "packets_received": 100_000, "bytes_received": 125_000_000},
            "aggregate": {"connected": 11, "failed": 0, "loss_pct": 0.1,
                          "latency_ms": {"p50": 1.0, "p99": 3.0},
                          "join_ms": {"p50": 20.0, "p99": 40.0}, "freezes": 0}
        });
        let samples = [
            sample(500, 0.0, 10_000, 0.0, 0.0),
            sample(1_000, 1.0, 20_000, 1.0, 2.0),
            sample(11_000, 3.0, 30_000, 11.0, 22.0), // 2 s of CPU over 10 s
            sample(12_000, 9.0, 90_000, 20.0, 24.0),
        ];
        let mut r = RunResult::empty("manifold", "N=10", 10);
        fill(&mut r, &report, &samples, Some(&samples[0]));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.forwarded_pps, 10_000.0);
        assert_eq!(r.forwarded_mbps, 100.0);
        assert_eq!(r.server_cpu_pct, 20.0);
        assert_eq!(r.machine_busy_pct, 50.0);
        // 0.2 CPU-seconds per second over 10 000 packets per second.
        assert_eq!(r.cpu_us_per_packet, Some(20.0));
        assert_eq!(r.rss_mb, round2(30_000.0 / 1024.0));
        assert_eq!(r.rss_kb_per_participant, Some(round2(20_000.0 / 11.0)));
        let md = markdown(
            &ScenarioDef {
                id: "a",
                title: "t",
                x_label: "x",
                steps: vec![],
                stepped: true,
                floor_packet: VIDEO_FLOOR,
            },
            &[r],
        );
        assert!(
            md.contains("| N=10 | manifold | 20.00 | – | 10000 |"),
            "{md}"
        );
    }

    #[test]
    fn the_scrape_table_sets_runs_side_by_side() {
        let mut off = RunResult::empty("manifold", "N=50", 50);
        off.worker_latency_p99_ms = Some(0.98);
        let mut on = off.clone();
        on.scrape = Some(ScrapeStats {
            hz: 10.0,
            scrapes: 200,
            failures: 0,
            incomplete: 0,
            body_kb_last: 41.4,
            duration_ms_p50: Some(1.2),
            duration_ms_p99: Some(3.4),
            duration_ms_max: Some(5.0),
        });
        let md = markdown_scrape(&[off, on]);
        let rows: Vec<&str> = md.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows[0].starts_with("| N=50 | off |"), "{md}");
        assert!(rows[0].contains("| – / 0.98 |"), "{md}");
        assert!(rows[1].starts_with("| N=50 | 10/s |"), "{md}");
        assert!(
            rows[1].contains("| 200 | 0 | 1.2 / 3.4 / 5.0 | 41 |"),
            "{md}"
        );
    }
}
