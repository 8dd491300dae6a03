//! The soak (`bench/run.sh --soak`): scenario (b), rooms of four, with churn, against
//! Manifold for a long time, sampling every 10 s what a leak would show — the server's
//! resident memory and open descriptors, participants and sessions (`/stats`), loss over
//! the last interval (the load generator's running totals) — then judging whether memory
//! and descriptors stayed flat after warm-up. Writes `<out>/soak.json` (every sample),
//! `<out>/soak.md` (summary and verdict) and `<out>/soak.png` (a panel per figure).
//!
//! Flat means: the least-squares line through the samples after warm-up rises, over the
//! whole post-warm-up window, by no more than the allowance (RSS: 5 % of the RSS at warm-up
//! end, at least 8 MB; descriptors: 2 % of the count at warm-up end, at least 5). The same
//! rule for every length, so a two-minute run is judged as strictly as an hour, over the
//! time it had. Also: participants back to what the load implies (churn only swaps
//! clients), and loss under 1 %.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::Args;
use crate::proc::{clock_ticks, cpu_ticks, machine_ticks, rss_kb, status_field};
use crate::server::start_server;

/// Its title in the summary of results.
pub const TITLE: &str = "soak: rooms of four with churn, memory and descriptors over time";

/// Seconds between samples.
const EVERY: Duration = Duration::from_secs(10);
/// Joins per second while the load ramps up.
const RAMP: usize = 20;

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Server resident memory, MB.
    pub rss_mb: f64,
    /// Server open file descriptors.
    pub fds: u64,
    /// Server threads (media workers, control runtime, its blocking pool).
    pub threads: u64,
    /// Participants and sessions the server reports.
    pub participants: u64,
    /// Sessions in the control plane's directory.
    pub sessions: u64,
    /// Loss over the last interval, % (gaps in what subscribers received).
    pub loss_pct: f64,
    /// Server CPU over the last interval, % of one core.
    pub server_cpu_pct: f64,
    /// The whole machine busy over the last interval, %.
    pub machine_busy_pct: f64,
}

/// The verdict on one figure.
#[derive(Clone, Debug, Serialize)]
pub struct Flatness {
    /// At warm-up end (median of the first post-warm-up samples).
    pub at_warmup: f64,
    /// At the end (median of the last samples).
    pub at_end: f64,
    /// Maximum after warm-up.
    pub max: f64,
    /// Least-squares slope after warm-up, per hour.
    pub slope_per_hour: f64,
    /// What the slope adds up to over the post-warm-up window.
    pub growth: f64,
    /// The most growth allowed.
    pub allowed: f64,
    /// Within the allowance?
    pub flat: bool,
}

/// Run the soak; `Ok(true)` when the verdict is a pass.
pub fn run(args: &Args) -> Result<bool, String> {
    let minutes = args.soak_minutes.max(1);
    let rooms = args.soak_rooms.max(1);
    let (publishers, subscribers) = (4, 12);
    let clients = rooms * (publishers + subscribers);
    // 10 % of the clients per minute leave and rejoin (the load generator churns
    // subscribers: each cycle is one leave and one join).
    let churn_per_s = clients as f64 * 0.10 / 60.0;
    let ramp_s = clients.div_ceil(RAMP) as u64 + 5;
    let total_s = ramp_s + minutes * 60;
    // Warm-up: the first 5 minutes of an hour, a quarter of shorter runs; at least the ramp.
    let warmup_s = ((minutes * 60) as f64 * if minutes >= 20 { 5.0 / 60.0 } else { 0.25 })
        .max(30.0)
        + ramp_s as f64;
    eprintln!(
        "== soak: {rooms} rooms of four ({clients} clients), churn {:.2}/s, {minutes} min (warm-up {:.0} s)",
        churn_per_s, warmup_s
    );
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let server = start_server(args, "manifold", "soak", &[])?;
    let pid = server.child.id();
    let progress = args.work.join("soak.progress.jsonl");
    let _ = std::fs::remove_file(&progress);
    let report = args.work.join("soak.loadgen.json");
    let mut loadgen = Command::new(&args.manifold)
        .arg("loadgen")
        .args(&server.loadgen_args)
        .args([
            "--rooms",
            &rooms.to_string(),
            "--publishers",
            &publishers.to_string(),
            "--subscribers",
            &subscribers.to_string(),
            "--video-bitrate",
            "800k",
            "--duration",
            &format!("{total_s}s"),
            "--ramp",
            &RAMP.to_string(),
            "--churn",
            &format!("{churn_per_s:.4}"),
            "--threads",
            "2",
            "--quiet",
            "--max-failure-ratio",
            "1",
            "--bind-ip",
            "127.0.0.2",
        ])
        .arg("--progress-json")
        .arg(&progress)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(args.work.join("soak.loadgen.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .map_err(|e| format!("loadgen did not run: {e}"))?;

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut prev = Probe::read(pid, &progress);
    let mut next = started + EVERY;
    while started.elapsed() < Duration::from_secs(total_s) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += EVERY;
        if let Ok(Some(_)) = loadgen.try_wait() {
            break;
        }
        let Some(now) = Probe::read(pid, &progress) else {
            return Err("the server is gone".into());
        };
        let s = now.sample(prev.as_ref(), started.elapsed().as_secs_f64());
        eprintln!(
            "   {:>6.0} s  RSS {:>7.1} MB  fds {:>4}  threads {:>3}  participants {:>4}  sessions {:>4}  loss {:>5.2} %  server {:>5.1} %  machine {:>5.1} %",
            s.t_s,
            s.rss_mb,
            s.fds,
            s.threads,
            s.participants,
            s.sessions,
            s.loss_pct,
            s.server_cpu_pct,
            s.machine_busy_pct
        );
        samples.push(s);
        prev = Some(now);
    }
    let _ = loadgen.wait();
    drop(server);

    let after: Vec<&SoakSample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
    if after.len() < 3 {
        return Err(format!(
            "too few samples after warm-up ({}): the run was cut short",
            after.len()
        ));
    }
    let rss = flatness(&after, |s| s.rss_mb, |w| (w * 0.05).max(8.0));
    let fds = flatness(&after, |s| s.fds as f64, |w| (w * 0.02).max(5.0));
    // Threads come and go with the blocking pool (negotiation): shown, not judged.
    let threads = flatness(&after, |s| s.threads as f64, |w| w);
    let participants_end = median(after.iter().rev().take(3).map(|s| s.participants as f64));
    // Churn swaps clients one at a time: a few may be between leaving and rejoining.
    let participants_ok =
        (participants_end - clients as f64).abs() <= (clients as f64 * 0.05).max(2.0);
    let report: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let loss_overall = report
        .pointer("/aggregate/loss_pct")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let churned = report
        .pointer("/scenario/churn_cycles")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let failed_joins = report
        .pointer("/aggregate/failed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let loss_ok = loss_overall < 1.0;
    let pass = rss.flat && fds.flat && participants_ok && loss_ok;
    let cpu_after = mean(after.iter().map(|s| s.machine_busy_pct));

    let summary = serde_json::json!({
        "minutes": minutes,
        "rooms": rooms,
        "clients": clients,
        "churn_per_s": churn_per_s,
        "warmup_s": warmup_s,
        "rss_mb": rss,
        "fds": fds,
        "threads": threads,
        "participants_end": participants_end,
        "participants_expected": clients,
        "loss_pct": loss_overall,
        "churn_cycles": churned,
        "failed_joins": failed_joins,
        "machine_busy_pct": cpu_after,
        "pass": pass,
        "samples": samples,
    });
    let base = args.out.join("soak");
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let md = markdown(
        minutes,
        rooms,
        clients,
        churn_per_s,
        warmup_s,
        &rss,
        &fds,
        &threads,
        participants_end,
        loss_overall,
        cpu_after,
        pass,
    );
    std::fs::write(base.with_extension("md"), &md).map_err(|e| e.to_string())?;
    if let Err(e) = chart(&base.with_extension("png"), &samples, warmup_s) {
        eprintln!("manifold-bench: no soak chart: {e}");
    }
    println!("{md}");
    if !pass {
        let mut why = Vec::new();
        if !rss.flat {
            why.push(format!(
                "RSS grew {:.1} MB after warm-up (allowed {:.1})",
                rss.growth, rss.allowed
            ));
        }
        if !fds.flat {
            why.push(format!(
                "descriptors grew {:.1} (allowed {:.1})",
                fds.growth, fds.allowed
            ));
        }
        if !participants_ok {
            why.push(format!(
                "{participants_end} participants at the end, {clients} expected"
            ));
        }
        if !loss_ok {
            why.push(format!("loss {loss_overall:.2} %"));
        }
        eprintln!("manifold-bench: the soak failed: {}", why.join("; "));
    }
    Ok(pass)
}

/// What one look at the server and the load generator found.
struct Probe {
    cpu_s: f64,
    machine_busy_s: f64,
    machine_total_s: f64,
    rss_kb: u64,
    fds: u64,
    threads: u64,
    participants: u64,
    sessions: u64,
    packets_received: u64,
    gaps: u64,
}

impl Probe {
    fn read(pid: u32, progress: &Path) -> Option<Probe> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let tick = clock_ticks();
        let (u, s) = cpu_ticks(&stat)?;
        let (busy, total) = machine_ticks(&machine)?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        let stats = get_json("127.0.0.1:8080", "/stats").unwrap_or(Value::Null);
        let last = std::fs::read_to_string(progress)
            .ok()
            .and_then(|t| {
                t.lines()
                    .last()
                    .and_then(|l| serde_json::from_str::<Value>(l).ok())
            })
            .unwrap_or(Value::Null);
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        Some(Probe {
            cpu_s: (u + s) as f64 / tick,
            machine_busy_s: busy as f64 / tick,
            machine_total_s: total as f64 / tick,
            rss_kb: rss_kb(&status)?,
            fds,
            threads: status_field(&status, "Threads:").unwrap_or(0),
            participants: n(&stats, "participants"),
            sessions: n(&stats, "sessions"),
            packets_received: n(&last, "packets_received"),
            gaps: n(&last, "gaps"),
        })
    }

    fn sample(&self, prev: Option<&Probe>, t_s: f64) -> SoakSample {
        let (cpu, busy, total, pkts, gaps) = match prev {
            Some(p) => (
                self.cpu_s - p.cpu_s,
                self.machine_busy_s - p.machine_busy_s,
                self.machine_total_s - p.machine_total_s,
                self.packets_received.saturating_sub(p.packets_received),
                self.gaps.saturating_sub(p.gaps),
            ),
            None => (0.0, 0.0, 0.0, 0, 0),
        };
        SoakSample {
            t_s: (t_s * 10.0).round() / 10.0,
            rss_mb: round2(self.rss_kb as f64 / 1024.0),
            fds: self.fds,
            threads: self.threads,
            participants: self.participants,
            sessions: self.sessions,
            loss_pct: round2(100.0 * gaps as f64 / (pkts + gaps).max(1) as f64),
            server_cpu_pct: round2(100.0 * cpu / EVERY.as_secs_f64()),
            machine_busy_pct: if total > 0.0 {
                round2(100.0 * busy / total)
            } else {
                0.0
            },
        }
    }
}

/// GET `path` on `addr` and parse the JSON body (HTTP/1.0, one small response).
fn get_json(addr: &str, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Judge one figure over the post-warm-up samples.
fn flatness(
    after: &[&SoakSample],
    f: fn(&SoakSample) -> f64,
    allowance: fn(f64) -> f64,
) -> Flatness {
    let xs: Vec<f64> = after.iter().map(|s| s.t_s).collect();
    let ys: Vec<f64> = after.iter().map(|s| f(s)).collect();
    let slope = slope(&xs, &ys);
    let window = xs.last().copied().unwrap_or(0.0) - xs.first().copied().unwrap_or(0.0);
    let at_warmup = median(ys.iter().take(3).copied());
    let at_end = median(ys.iter().rev().take(3).copied());
    let growth = slope * window;
    let allowed = allowance(at_warmup);
    Flatness {
        at_warmup: round2(at_warmup),
        at_end: round2(at_end),
        max: round2(ys.iter().copied().fold(f64::MIN, f64::max)),
        slope_per_hour: round2(slope * 3600.0),
        growth: round2(growth),
        allowed: round2(allowed),
        flat: growth <= allowed,
    }
}

/// Least-squares slope of `ys` over `xs` (units of y per unit of x).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    round2(v.iter().sum::<f64>() / v.len().max(1) as f64)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    minutes: u64,
    rooms: usize,
    clients: usize,
    churn_per_s: f64,
    warmup_s: f64,
    rss: &Flatness,
    fds: &Flatness,
    threads: &Flatness,
    participants_end: f64,
    loss: f64,
    machine_busy: f64,
    pass: bool,
) -> String {
    let row = |name: &str, f: &Flatness, unit: &str| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:+.2} {unit}/h | {:+.1} | {:.1} | {} |\n",
            f.at_warmup,
            f.at_end,
            f.max,
            f.slope_per_hour,
            f.growth,
            f.allowed,
            if f.flat { "flat" } else { "GROWS" }
        )
    };
    let mut t = format!(
        "Soak: {minutes} min of scenario (b), {rooms} rooms of four ({clients} clients), churn \
         {churn_per_s:.2} subscriber leave-and-rejoin cycles/s (10 % of clients per minute), \
         warm-up {warmup_s:.0} s, machine busy {machine_busy:.1} % after warm-up.\n\n\
         | figure | at warm-up | at end | max | slope | growth after warm-up | allowed | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n"
    );
    t += &row("RSS MB", rss, "MB");
    t += &row("open descriptors", fds, "fds");
    t += &format!(
        "| threads (not judged) | {:.0} | {:.0} | {:.0} | {:+.2} /h | {:+.1} | — | — |\n",
        threads.at_warmup, threads.at_end, threads.max, threads.slope_per_hour, threads.growth
    );
    t += &format!(
        "\nParticipants at the end: {participants_end:.0} of {clients}. Loss over the run: {loss:.3} %. \
         Verdict: **{}**.\n",
        if pass { "pass" } else { "FAIL" }
    );
    t
}

fn chart(path: &Path, samples: &[SoakSample], warmup_s: f64) -> Result<(), String> {
    type Pick = fn(&SoakSample) -> f64;
    let panels: [(&str, Pick); 4] = [
        ("server RSS MB", |s| s.rss_mb),
        ("server open descriptors", |s| s.fds as f64),
        ("participants", |s| s.participants as f64),
        ("loss % (last 10 s)", |s| s.loss_pct),
    ];
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((2, 2));
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0) / 60.0;
    for ((title, pick), area) in panels.iter().zip(areas.iter()) {
        let ys: Vec<f64> = samples.iter().map(pick).collect();
        let y_max = ys.iter().copied().fold(0.0, f64::max).max(1.0) * 1.15;
        let mut c = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(|e| e.to_string())?;
        let w = warmup_s / 60.0;
        c.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (w, y_max)],
            RGBColor(235, 235, 235).filled(),
        )))
        .map_err(|e| e.to_string())?;
        c.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s / 60.0, pick(s))),
            RGBColor(31, 119, 180).stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: f64, rss_mb: f64, fds: u64) -> SoakSample {
        SoakSample {
            t_s,
            rss_mb,
            fds,
            threads: 8,
            participants: 16,
            sessions: 16,
            loss_pct: 0.0,
            server_cpu_pct: 10.0,
            machine_busy_pct: 50.0,
        }
    }

    #[test]
    fn a_flat_run_passes_and_a_leak_fails() {
        let flat: Vec<SoakSample> = (0..60)
            .map(|i| s(i as f64 * 10.0, 100.0 + (i % 3) as f64, 40 + (i % 2)))
            .collect();
        let refs: Vec<&SoakSample> = flat.iter().collect();
        assert!(flatness(&refs, |s| s.rss_mb, |w| (w * 0.05).max(8.0)).flat);
        assert!(flatness(&refs, |s| s.fds as f64, |w| (w * 0.02).max(5.0)).flat);
        // 0.5 MB per sample over 10 minutes: 30 MB, over the 8 MB allowance.
        let leak: Vec<SoakSample> = (0..60)
            .map(|i| s(i as f64 * 10.0, 100.0 + 0.5 * i as f64, 40 + i / 5))
            .collect();
        let refs: Vec<&SoakSample> = leak.iter().collect();
        let r = flatness(&refs, |s| s.rss_mb, |w| (w * 0.05).max(8.0));
        assert!(!r.flat && (r.growth - 29.5).abs() < 0.5, "{r:?}");
        assert!(!flatness(&refs, |s| s.fds as f64, |w| (w * 0.02).max(5.0)).flat);
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[1.0], &[1.0]), 0.0);
    }
}
