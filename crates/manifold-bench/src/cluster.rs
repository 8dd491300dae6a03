//! Scenario (e): one room across two nodes. A `nats-server`, node A and node B (two
//! `manifold serve` on that bus), one publisher (Opus + 1.5 Mbps VP8) on node A and N WHEP
//! subscribers on node B: every packet the publisher sends crosses NATS once, and B fans it
//! out. The same N against one node (scenario (a)'s shape) runs just before, so the two are
//! compared within one run of a noisy machine. Per run: what the loadgen measured, CPU and
//! RSS of every process over the steady window, and the relay's own cost, (A + NATS) CPU
//! per relayed packet (node A's `relay_out` over the window: what its shard handed to the
//! bridge). Writes `<out>/e.json` and `<out>/e.md`.
//!
//! Manifold only: the relay between nodes is Manifold's.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::proc::{Sample, Sampler};
use crate::run::window_cpu_pct;
use crate::server::{
    DEFAULT_ROOM_SPREAD_AFTER, ManifoldNode, http_get, start_manifold_node, start_server,
};
use crate::{Args, RAMP, round2};

/// Its id in `--scenarios` and the results folder.
pub const ID: &str = "e";

/// Its title.
pub const TITLE: &str =
    "one room across two nodes: 1 publisher on node A → N subscribers on node B, over NATS";

/// Subscribers of each step (bounded by `--max-subscribers`).
const STEPS: [usize; 4] = [10, 50, 100, 150];

/// How long the servers run before the load, to measure them idle.
const IDLE: Duration = Duration::from_secs(3);

/// Node A's and node B's HTTP addresses and first UDP ports (the single node of the
/// comparison is `ManifoldNode::single`, 8080 and 40000).
const NODE_A: (&str, u16) = ("127.0.0.1:8081", 41000);
const NODE_B: (&str, u16) = ("127.0.0.1:8082", 42000);

/// One process over the steady window.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct ProcFigures {
    /// `node`, `node A`, `node B` or `nats`.
    pub name: String,
    /// CPU, % of one core.
    pub cpu_pct: Option<f64>,
    /// Its CPU per packet the subscribers received, µs.
    pub cpu_us_per_forwarded: Option<f64>,
    /// Peak RSS in the window, MB.
    pub rss_mb: f64,
    /// CPU before the load (the nodes up and on the bus, no client yet), % of one core.
    pub idle_cpu_pct: Option<f64>,
}

/// One run: N subscribers against one node, or across two.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct Row {
    pub subscribers: usize,
    /// `1 node` or `2 nodes`.
    pub setup: String,
    pub ok: bool,
    pub note: Option<String>,
    pub participants: u64,
    pub failed_joins: u64,
    pub steady_s: f64,
    /// Media packets the subscribers received per second.
    pub forwarded_pps: f64,
    pub loss_pct: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub loadgen_cpu_pct: Option<f64>,
    /// The servers' processes: the node; or node A, node B, nats.
    pub processes: Vec<ProcFigures>,
    /// All of them together per forwarded packet, µs.
    pub cpu_us_per_forwarded: Option<f64>,
    /// Packets node A relayed to the bridge per second (its `relay_out`); without
    /// `/stats`, the publisher's packets per second.
    pub relayed_pps: Option<f64>,
    /// Packets node B's workers took from the bridge per second (its `relay_in`: once per
    /// worker holding the room).
    pub b_relay_in_pps: Option<f64>,
    /// (node A + NATS) CPU per relayed packet, µs.
    pub relay_us_per_relayed: Option<f64>,
    /// Frames the bus dropped on node A and B (`cluster.bus_dropped`) by the end.
    pub bus_dropped: Option<u64>,
}

/// Run the scenario; the JSON written.
pub fn run(args: &Args) -> Result<Value, String> {
    let nats = find_binary("nats-server").ok_or(
        "no nats-server on the PATH or in /usr/sbin (Debian package nats-server)".to_owned(),
    )?;
    let mut rows = Vec::new();
    for n in STEPS.into_iter().filter(|&n| n <= args.max_subscribers) {
        eprintln!("== scenario {ID} ({TITLE}) · N={n} · 1 node");
        let single = run_single(args, n);
        eprintln!("   {}", single.line());
        rows.push(single);
        eprintln!("== scenario {ID} ({TITLE}) · N={n} · 2 nodes");
        let pair = run_pair(args, &nats, n);
        eprintln!("   {}", pair.line());
        let cpu: f64 = pair.processes.iter().filter_map(|p| p.cpu_pct).sum();
        let saturated = cpu + pair.loadgen_cpu_pct.unwrap_or(0.0) > 185.0;
        let stop = !pair.ok || pair.loss_pct > 1.0 || saturated;
        rows.push(pair);
        if stop {
            eprintln!("   (stepping stops here)");
            break;
        }
    }
    Ok(json!({
        "scenario": ID,
        "title": TITLE,
        "steady_seconds": args.steady,
        "room_spread_after": args.room_spread_after.unwrap_or(DEFAULT_ROOM_SPREAD_AFTER),
        "rows": rows,
    }))
}

/// Scenario (a)'s shape at N: one node, no cluster.
fn run_single(args: &Args, n: usize) -> Row {
    let tag = format!("e-single-{n}");
    let mut row = Row::empty(n, "1 node");
    let server = match start_server(args, "manifold", &tag, &[]) {
        Ok(s) => s,
        Err(e) => {
            row.note = Some(e);
            return row;
        }
    };
    let sampler = Sampler::start(server.child.id(), Duration::from_millis(250));
    std::thread::sleep(IDLE);
    let idle_until = now_ms();
    let target = server.loadgen_args.clone();
    let run = run_loadgen(args, &tag, &target, n);
    let samples = sampler.stop();
    drop(server);
    match run {
        Ok((report, loadgen)) => figures(
            &report,
            &[("node", &samples)],
            &[],
            &[],
            &loadgen,
            idle_until,
        ),
        Err(e) => {
            row.note = Some(e);
            row
        }
    }
}

/// N subscribers on node B of a publisher on node A.
fn run_pair(args: &Args, nats_bin: &PathBuf, n: usize) -> Row {
    let tag = format!("e-pair-{n}");
    let mut row = Row::empty(n, "2 nodes");
    let nats = match Nats::start(nats_bin, &args.work.join(format!("{tag}.nats.log"))) {
        Ok(b) => b,
        Err(e) => {
            row.note = Some(e);
            return row;
        }
    };
    let node = |(listen, port_base): (&str, u16), id: &str| ManifoldNode {
        listen: listen.into(),
        port_base,
        env: [
            ("MANIFOLD_CLUSTER__NODE_ID", id),
            ("MANIFOLD_CLUSTER__NATS_URL", &nats.url()),
            ("MANIFOLD_CLUSTER__HEARTBEAT_SECS", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
    };
    let (node_a, node_b) = (node(NODE_A, "bench-a"), node(NODE_B, "bench-b"));
    let started = start_manifold_node(args, &node_a, &format!("{tag}-a"))
        .and_then(|a| start_manifold_node(args, &node_b, &format!("{tag}-b")).map(|b| (a, b)));
    let (a, b) = match started {
        Ok(ab) => ab,
        Err(e) => {
            row.note = Some(e);
            return row;
        }
    };
    let every = Duration::from_millis(250);
    let samplers = [a.child.id(), b.child.id(), nats.child.id()].map(|p| Sampler::start(p, every));
    let polls = [NODE_A.0, NODE_B.0].map(|addr| StatsPoller::start(addr, Duration::from_secs(1)));
    // More than a heartbeat: both nodes are on the bus before the first join.
    std::thread::sleep(IDLE);
    let idle_until = now_ms();
    let target: Vec<String> = [
        "--target".to_owned(),
        "whip-whep".to_owned(),
        "--whip-url".to_owned(),
        format!("{}/whip/{{room}}?identity={{publisher}}", node_a.url()),
        "--whep-url".to_owned(),
        format!("{}/whep/{{room}}/{{publisher}}", node_b.url()),
    ]
    .to_vec();
    let run = run_loadgen(args, &tag, &target, n);
    let [sa, sb, sn] = samplers.map(Sampler::stop);
    let [pa, pb] = polls.map(StatsPoller::stop);
    // The last /stats of each node, for reading a run afterwards.
    for (node, snaps) in [("a", &pa), ("b", &pb)] {
        if let Some(last) = snaps.last() {
            let path = args.work.join(format!("{tag}-{node}.stats.json"));
            let _ = std::fs::write(
                path,
                serde_json::to_string_pretty(&last.stats).unwrap_or_default(),
            );
        }
    }
    drop((a, b));
    drop(nats);
    match run {
        Ok((report, loadgen)) => figures(
            &report,
            &[("node A", &sa), ("node B", &sb), ("nats", &sn)],
            &pa,
            &pb,
            &loadgen,
            idle_until,
        ),
        Err(e) => {
            row.note = Some(e);
            row
        }
    }
}

/// The loadgen at 1 publisher → `n` subscribers against `target`: its report and the
/// samples of its own process.
fn run_loadgen(
    args: &Args,
    tag: &str,
    target: &[String],
    n: usize,
) -> Result<(Value, Vec<Sample>), String> {
    // Ramp, connection set-up, one second of grace, then the steady part.
    let duration = (n + 1).div_ceil(RAMP) as u64 + 4 + args.steady;
    let report_path = args.work.join(format!("{tag}.loadgen.json"));
    let progress_log = args.work.join(format!("{tag}.loadgen.log"));
    let mut child = Command::new(&args.manifold)
        .arg("loadgen")
        .args(target)
        .args(["--rooms", "1", "--publishers", "1"])
        .args(["--subscribers", &n.to_string()])
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
    let sampler = Sampler::start(child.id(), Duration::from_millis(250));
    let _ = child.wait();
    let samples = sampler.stop();
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| format!("no loadgen report at {}", report_path.display()))?;
    Ok((report, samples))
}

/// A run's row from the loadgen's report, each server process's samples (`node`, or node A,
/// node B, nats in that order), node A's and B's `/stats` over time, the loadgen's
/// samples, and when the load started (Unix ms: the servers were idle before).
pub fn figures(
    report: &Value,
    processes: &[(&str, &[Sample])],
    a_stats: &[Snapshot],
    b_stats: &[Snapshot],
    loadgen: &[Sample],
    idle_until: u64,
) -> Row {
    let f = |p: &str| report.pointer(p).and_then(Value::as_f64);
    let u = |p: &str| report.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let setup = if processes.len() > 1 {
        "2 nodes"
    } else {
        "1 node"
    };
    let mut r = Row::empty(0, setup);
    r.participants = u("/aggregate/connected");
    r.subscribers = u("/aggregate/subscribers") as usize;
    r.failed_joins = u("/aggregate/failed");
    r.loss_pct = f("/aggregate/loss_pct").unwrap_or(0.0);
    r.latency_p50_ms = f("/aggregate/latency_ms/p50");
    r.latency_p99_ms = f("/aggregate/latency_ms/p99");
    r.steady_s = f("/steady/seconds").unwrap_or(0.0);
    r.loadgen_cpu_pct = window_cpu_pct(report, loadgen);
    if r.steady_s <= 0.0 {
        r.note = Some("no steady window".into());
        return r;
    }
    r.forwarded_pps = (u("/steady/packets_received") as f64 / r.steady_s).round();
    let (from, until) = (u("/steady/from_unix_ms"), u("/steady/until_unix_ms"));
    let per = |cpu_pct: f64, pps: f64| (pps > 0.0).then(|| round2(cpu_pct * 1e4 / pps));
    for (name, samples) in processes {
        let cpu_pct = window_cpu_pct(report, samples);
        let peak = samples
            .iter()
            .filter(|s| s.unix_ms >= from && s.unix_ms <= until)
            .map(|s| s.rss_kb)
            .max()
            .unwrap_or(0);
        r.processes.push(ProcFigures {
            name: (*name).to_owned(),
            cpu_pct,
            cpu_us_per_forwarded: cpu_pct.and_then(|c| per(c, r.forwarded_pps)),
            rss_mb: round2(peak as f64 / 1024.0),
            idle_cpu_pct: cpu_pct_between(samples, 0, idle_until),
        });
    }
    let cpus: Option<Vec<f64>> = r.processes.iter().map(|p| p.cpu_pct).collect();
    if let Some(cpus) = &cpus {
        r.cpu_us_per_forwarded = per(cpus.iter().sum(), r.forwarded_pps);
    }
    if processes.len() > 1 {
        let published = u("/steady/packets_sent") as f64 / r.steady_s;
        r.relayed_pps = counter_rate(a_stats, from, until, "/relay_out")
            .or((published > 0.0).then_some(published))
            .map(f64::round);
        r.b_relay_in_pps = counter_rate(b_stats, from, until, "/relay_in").map(f64::round);
        let cpu = |name: &str| r.processes.iter().find(|p| p.name == name)?.cpu_pct;
        if let (Some(a), Some(nats), Some(relayed)) = (cpu("node A"), cpu("nats"), r.relayed_pps) {
            r.relay_us_per_relayed = per(a + nats, relayed);
        }
        let dropped = |s: &[Snapshot]| {
            s.last()?
                .stats
                .pointer("/cluster/bus_dropped")
                .and_then(Value::as_u64)
        };
        r.bus_dropped = match (dropped(a_stats), dropped(b_stats)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
    r.ok = r.failed_joins == 0 && r.participants > 0 && cpus.is_some();
    if r.failed_joins > 0 {
        r.note = Some(format!("{} failed joins", r.failed_joins));
    } else if cpus.is_none() {
        r.note = Some("no CPU samples in the steady window".into());
    }
    r
}

/// CPU % of a sampled process between the first and the last sample inside `[from,
/// until]` (Unix ms); none when they are less than a second apart.
fn cpu_pct_between(samples: &[Sample], from: u64, until: u64) -> Option<f64> {
    let mut inside = samples
        .iter()
        .filter(|s| s.unix_ms >= from && s.unix_ms <= until);
    let first = inside.next()?;
    let last = inside.next_back()?;
    let secs = (last.unix_ms - first.unix_ms) as f64 / 1000.0;
    (secs >= 1.0).then(|| round2(100.0 * (last.cpu_s - first.cpu_s) / secs))
}

/// A counter of `/stats` (at `pointer`) per second between the first and the last snapshot
/// taken inside `[from, until]` (Unix ms); none when they are less than a second apart or
/// the counter is missing.
pub fn counter_rate(snaps: &[Snapshot], from: u64, until: u64, pointer: &str) -> Option<f64> {
    let inside: Vec<(u64, u64)> = snaps
        .iter()
        .filter(|s| s.unix_ms >= from && s.unix_ms <= until)
        .filter_map(|s| Some((s.unix_ms, s.stats.pointer(pointer)?.as_u64()?)))
        .collect();
    let (&(t0, v0), &(t1, v1)) = (inside.first()?, inside.last()?);
    let secs = (t1 - t0) as f64 / 1000.0;
    (secs >= 1.0).then(|| v1.saturating_sub(v0) as f64 / secs)
}

/// The Markdown of a result [`run`] wrote: a row per run, then per N how two nodes compare
/// with one.
pub fn markdown(result: &Value) -> String {
    let rows: Vec<Row> = result["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value(r.clone()).ok())
        .collect();
    let opt = |v: Option<f64>, d: usize| v.map_or("–".to_owned(), |v| format!("{v:.d$}"));
    let mut t = String::from(
        "| N | setup | fwd packets/s | loss % | latency p50 / p99 ms | CPU µs / fwd packet: node A (or the node) | node B | NATS | all | relayed packets/s | relay µs / relayed packet (A + NATS) | CPU % A / B / NATS | idle CPU % A / B / NATS | RSS MB A / B / NATS | loadgen CPU % | bus dropped | note |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---|\n",
    );
    for r in &rows {
        let p = |i: usize| r.processes.get(i);
        let us = |i: usize| opt(p(i).and_then(|p| p.cpu_us_per_forwarded), 2);
        let joined = |f: &dyn Fn(&ProcFigures) -> String| {
            r.processes.iter().map(f).collect::<Vec<_>>().join(" / ")
        };
        t += &format!(
            "| {} | {} | {:.0} | {:.3} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.subscribers,
            r.setup,
            r.forwarded_pps,
            r.loss_pct,
            opt(r.latency_p50_ms, 1),
            opt(r.latency_p99_ms, 1),
            us(0),
            us(1),
            us(2),
            opt(r.cpu_us_per_forwarded, 2),
            opt(r.relayed_pps, 0),
            opt(r.relay_us_per_relayed, 1),
            joined(&|p| opt(p.cpu_pct, 1)),
            joined(&|p| opt(p.idle_cpu_pct, 1)),
            joined(&|p| format!("{:.1}", p.rss_mb)),
            opt(r.loadgen_cpu_pct, 1),
            r.bus_dropped.map_or("–".to_owned(), |d| d.to_string()),
            r.note.as_deref().unwrap_or(""),
        );
    }
    let mut lines = Vec::new();
    for pair in rows.iter().filter(|r| r.setup == "2 nodes") {
        let Some(single) = rows
            .iter()
            .find(|r| r.setup == "1 node" && r.subscribers == pair.subscribers)
        else {
            continue;
        };
        let (Some(two), Some(one)) = (pair.cpu_us_per_forwarded, single.cpu_us_per_forwarded)
        else {
            continue;
        };
        if one <= 0.0 {
            continue;
        }
        let b = pair
            .processes
            .get(1)
            .and_then(|p| p.cpu_us_per_forwarded)
            .map_or(String::new(), |b| format!("; node B alone {:.2}×", b / one));
        lines.push(format!(
            "- N={}: two nodes and NATS {:.2}× one node's CPU per forwarded packet ({two:.2} against {one:.2} µs, {:+.2} µs){b}",
            pair.subscribers,
            two / one,
            two - one,
        ));
    }
    if !lines.is_empty() {
        t += "\n";
        t += &lines.join("\n");
        t += "\n";
    }
    t
}

impl Row {
    fn empty(subscribers: usize, setup: &str) -> Self {
        Self {
            subscribers,
            setup: setup.into(),
            ok: false,
            note: None,
            participants: 0,
            failed_joins: 0,
            steady_s: 0.0,
            forwarded_pps: 0.0,
            loss_pct: 0.0,
            latency_p50_ms: None,
            latency_p99_ms: None,
            loadgen_cpu_pct: None,
            processes: Vec::new(),
            cpu_us_per_forwarded: None,
            relayed_pps: None,
            b_relay_in_pps: None,
            relay_us_per_relayed: None,
            bus_dropped: None,
        }
    }

    /// One line of progress.
    fn line(&self) -> String {
        let procs: Vec<String> = self
            .processes
            .iter()
            .map(|p| {
                format!(
                    "{} {}% ({} µs/packet)",
                    p.name,
                    p.cpu_pct.map_or("-".into(), |v| format!("{v:.1}")),
                    p.cpu_us_per_forwarded
                        .map_or("-".into(), |v| format!("{v:.2}"))
                )
            })
            .collect();
        format!(
            "{} pps forwarded, loss {:.2}%, {}; relayed {} pps at {} µs (A + NATS){}",
            self.forwarded_pps,
            self.loss_pct,
            procs.join(", "),
            self.relayed_pps.map_or("-".into(), |v| v.to_string()),
            self.relay_us_per_relayed
                .map_or("-".into(), |v| format!("{v:.1}")),
            self.note
                .as_deref()
                .map_or(String::new(), |n| format!(" [{n}]"))
        )
    }
}

/// One `/stats` answer and when it came.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub unix_ms: u64,
    pub stats: Value,
}

/// A thread asking a node for `/stats` until stopped.
struct StatsPoller {
    stop: Arc<AtomicBool>,
    snaps: Arc<Mutex<Vec<Snapshot>>>,
    join: JoinHandle<()>,
}

impl StatsPoller {
    fn start(addr: &'static str, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let snaps = Arc::new(Mutex::new(Vec::new()));
        let join = {
            let (stop, snaps) = (stop.clone(), snaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let stats =
                        http_get(addr, "/stats").and_then(|b| serde_json::from_str(&b).ok());
                    if let Some(stats) = stats {
                        snaps.lock().expect("not poisoned").push(Snapshot {
                            unix_ms: now_ms(),
                            stats,
                        });
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Self { stop, snaps, join }
    }

    fn stop(self) -> Vec<Snapshot> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join.join();
        std::mem::take(&mut *self.snaps.lock().expect("not poisoned"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `nats-server` of the run's own, on a free port of 127.0.0.1; stopped on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(binary: &PathBuf, log: &std::path::Path) -> Result<Self, String> {
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
            let mut nats = Nats { child, port };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(nats.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if nats_answers(port) {
                    return Ok(nats);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = nats.child.kill();
            let _ = nats.child.wait();
        }
        Err("nats-server did not start on a free port in three tries".into())
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a NATS server on `port` says hello (it speaks first: `INFO {...}`).
fn nats_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
}

/// `name` on the PATH or where Debian puts it (`nats-server` is in /usr/sbin).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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

    fn snap(unix_ms: u64, stats: Value) -> Snapshot {
        Snapshot { unix_ms, stats }
    }

    #[test]
    fn a_counter_rate_is_taken_inside_the_window() {
        let snaps = [
            snap(500, json!({"relay_in": 0})),
            snap(1_000, json!({"relay_in": 100})),
            snap(2_000, json!({"other": 1})), // no counter: skipped
            snap(5_000, json!({"relay_in": 2_100})), // 2000 over 4 s
            snap(6_000, json!({"relay_in": 9_999})),
        ];
        assert_eq!(counter_rate(&snaps, 1_000, 5_500, "/relay_in"), Some(500.0));
        // One snapshot in the window, or less than a second between them: no rate.
        assert_eq!(counter_rate(&snaps, 4_000, 5_500, "/relay_in"), None);
        assert_eq!(counter_rate(&snaps, 1_000, 5_500, "/nope"), None);
        // A counter that went backwards (a restart) counts as nothing, not as a wrap.
        let reset = [snap(0, json!({"x": 10})), snap(2_000, json!({"x": 4}))];
        assert_eq!(counter_rate(&reset, 0, 2_000, "/x"), Some(0.0));
    }

    fn report() -> Value {
        json!({
            "steady": {"seconds": 10.0, "from_unix_ms": 1_000, "until_unix_ms": 11_000,
                       "packets_received": 100_000, "packets_sent": 2_000},
            "aggregate": {"connected": 11, "subscribers": 10, "failed": 0, "loss_pct": 0.1,
                          "latency_ms": {"p50": 1.0, "p99": 3.0}}
        })
    }

    #[test]
    fn two_nodes_are_measured_process_by_process() {
        // 10 000 packets/s forwarded: A 20 %, B 30 %, NATS 10 % of a core.
        // Before the load (until 1 000 ms), A used 5 % of a core.
        let a = [
            sample(0, 0.95, 99_999),
            sample(1_000, 1.0, 10_240),
            sample(11_000, 3.0, 20_480),
        ];
        let b = [sample(1_000, 0.0, 1_024), sample(11_000, 3.0, 2_048)];
        let n = [sample(1_000, 5.0, 512), sample(11_000, 6.0, 512)];
        // A relayed 250 packets/s; B's two workers took 500/s.
        let sa = [
            snap(
                1_000,
                json!({"relay_out": 0, "cluster": {"bus_dropped": 0}}),
            ),
            snap(
                11_000,
                json!({"relay_out": 2_500, "cluster": {"bus_dropped": 2}}),
            ),
        ];
        let sb = [
            snap(2_000, json!({"relay_in": 0, "cluster": {"bus_dropped": 1}})),
            snap(
                10_000,
                json!({"relay_in": 4_000, "cluster": {"bus_dropped": 1}}),
            ),
        ];
        let lg = [sample(1_000, 0.0, 1), sample(11_000, 5.0, 1)];
        let r = figures(
            &report(),
            &[("node A", &a), ("node B", &b), ("nats", &n)],
            &sa,
            &sb,
            &lg,
            1_000,
        );
        assert!(r.ok, "{r:?}");
        assert_eq!((r.subscribers, r.setup.as_str()), (10, "2 nodes"));
        assert_eq!(r.forwarded_pps, 10_000.0);
        assert_eq!(r.loadgen_cpu_pct, Some(50.0));
        let us: Vec<Option<f64>> = r.processes.iter().map(|p| p.cpu_us_per_forwarded).collect();
        assert_eq!(us, [Some(20.0), Some(30.0), Some(10.0)]);
        assert_eq!(r.processes[0].rss_mb, 20.0, "the peak inside the window");
        let idle: Vec<Option<f64>> = r.processes.iter().map(|p| p.idle_cpu_pct).collect();
        assert_eq!(
            idle,
            [Some(5.0), None, None],
            "one sample before the load: none"
        );
        assert_eq!(r.cpu_us_per_forwarded, Some(60.0));
        assert_eq!(
            (r.relayed_pps, r.b_relay_in_pps),
            (Some(250.0), Some(500.0))
        );
        // (20 % + 10 %) of a core over 250 packets/s.
        assert_eq!(r.relay_us_per_relayed, Some(1200.0));
        assert_eq!(r.bus_dropped, Some(3));

        // Without /stats, the publisher's packets stand for the relayed ones.
        let r = figures(
            &report(),
            &[("node A", &a), ("node B", &b), ("nats", &n)],
            &[],
            &[],
            &lg,
            1_000,
        );
        assert_eq!(r.relayed_pps, Some(200.0));
        assert_eq!(r.relay_us_per_relayed, Some(1500.0));
        assert_eq!(r.bus_dropped, None);
    }

    #[test]
    fn the_table_compares_two_nodes_with_one() {
        let node = [sample(1_000, 0.0, 1_024), sample(11_000, 4.0, 1_024)];
        let single = figures(&report(), &[("node", &node)], &[], &[], &[], 1_000);
        assert_eq!(single.setup, "1 node");
        assert_eq!(single.cpu_us_per_forwarded, Some(40.0));
        assert_eq!(
            (single.relayed_pps, single.relay_us_per_relayed),
            (None, None)
        );
        // Before the load (until 1 000 ms), A used 5 % of a core.
        let a = [
            sample(0, 0.95, 99_999),
            sample(1_000, 1.0, 10_240),
            sample(11_000, 3.0, 20_480),
        ];
        let b = [sample(1_000, 0.0, 1_024), sample(11_000, 3.0, 2_048)];
        let n = [sample(1_000, 5.0, 512), sample(11_000, 6.0, 512)];
        let pair = figures(
            &report(),
            &[("node A", &a), ("node B", &b), ("nats", &n)],
            &[],
            &[],
            &[],
            1_000,
        );
        let md = markdown(&json!({"rows": [single, pair]}));
        assert!(
            md.contains("| 10 | 1 node | 10000 | 0.100 | 1.0 / 3.0 | 40.00 | – | – | 40.00 | – | – | 40.0 | – | 1.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 10 | 2 nodes | 10000 | 0.100 | 1.0 / 3.0 | 20.00 | 30.00 | 10.00 | 60.00 | 200 | 1500.0 | 20.0 / 30.0 / 10.0 | 5.0 / – / – | 20.0 / 2.0 / 0.5 |"),
            "{md}"
        );
        assert!(
            md.contains("- N=10: two nodes and NATS 1.50× one node's CPU per forwarded packet (60.00 against 40.00 µs, +20.00 µs); node B alone 0.75×"),
            "{md}"
        );
    }
}
