//! One load run: join publishers then subscribers at the ramp rate, keep them running
//! (churning subscribers if asked), print progress, stop at the duration, and report.
//!
//! Every wait is bounded by the run's end, so a run stops by itself whatever the server
//! does; only the clean-up after it (DELETEs, Janus detaches) takes a few seconds more,
//! and that is bounded too.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::sleep;

use crate::classes;
use crate::client::{Client, MediaShape, SubscriberSetup};
use crate::downlink::DownlinkCap;
use crate::engine::Engine;
use crate::hist::Histogram;
use crate::report::{Counters, Report, Steady, aggregate};
use crate::signal::MediaSpec;
use crate::simulcast;
use crate::snapshot::ClientReport;
use crate::target::{PublisherRef, Session, Target};

/// Time given to packets in flight (and their retransmissions) after publishers stop.
const SETTLE: Duration = Duration::from_millis(600);

/// Longest the clean-up after a run may take.
const CLEANUP: Duration = Duration::from_secs(8);

/// Longest to wait for clients to connect before the steady window starts anyway.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room, spread round-robin over the room's publishers; each receives
    /// one publisher's audio and video.
    pub subscribers: usize,
    /// Publish video besides audio.
    pub video: bool,
    /// Video bitrate, bits per second.
    pub video_bitrate_bps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// Periodic keyframe interval, seconds (0: only on request).
    pub keyframe_interval_s: f64,
    /// Opus packet size, bytes.
    pub audio_bytes: usize,
    /// Whole run, ramp included.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Joins started per second.
    pub ramp_per_s: f64,
    /// Subscriber leave-and-rejoin cycles per second once everyone joined (0: none).
    pub churn_per_s: f64,
    /// Engine threads.
    pub threads: usize,
    /// Joins in flight at once.
    pub max_in_flight: usize,
    /// Local address of the clients' sockets.
    pub bind_ip: IpAddr,
    /// Print a progress line every second.
    #[serde(skip)]
    pub progress: bool,
    /// Append the running totals as a JSON line here every second (for soak sampling).
    #[serde(skip)]
    pub progress_json: Option<std::path::PathBuf>,
    /// Publishers send their video as three simulcast layers (WHIP only); the video bitrate
    /// is the top layer's.
    pub simulcast: bool,
    /// Downlink caps of subscribers, spread round-robin: subscriber `j` of a room gets
    /// `downlink_caps[j % len]` (`None`: uncapped). Empty: every subscriber uncapped.
    pub downlink_caps: Vec<Option<DownlinkCap>>,
}

impl Default for Scenario {
    /// One room, one publisher (audio + 1.5 Mbit/s VP8 at 30 fps), four uncapped
    /// subscribers, for 30 s, on 127.0.0.1.
    fn default() -> Self {
        Scenario {
            rooms: 1,
            publishers: 1,
            subscribers: 4,
            video: true,
            video_bitrate_bps: 1_500_000,
            fps: 30,
            keyframe_interval_s: 0.0,
            audio_bytes: 80,
            duration: Duration::from_secs(30),
            ramp_per_s: 20.0,
            churn_per_s: 0.0,
            threads: 2,
            max_in_flight: 8,
            bind_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            progress: false,
            progress_json: None,
            simulcast: false,
            downlink_caps: Vec::new(),
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Scenario {
    fn shape(&self) -> MediaShape {
        MediaShape {
            video_bitrate_bps: self.video_bitrate_bps,
            fps: self.fps,
            keyframe_interval: (self.keyframe_interval_s > 0.0)
                .then(|| Duration::from_secs_f64(self.keyframe_interval_s)),
            audio_bytes: self.audio_bytes,
            simulcast: self.simulcast && self.video,
        }
    }

    /// How subscriber `index` of a room receives.
    fn setup(&self, index: usize) -> SubscriberSetup {
        let downlink = match self.downlink_caps.len() {
            0 => None,
            n => self.downlink_caps[index % n],
        };
        SubscriberSetup {
            downlink,
            simulcast: self.simulcast && self.video,
        }
    }

    /// The RIDs publishers offer (none without simulcast).
    fn layers(&self) -> Vec<&'static str> {
        if self.simulcast && self.video {
            simulcast::rids().collect()
        } else {
            Vec::new()
        }
    }

    fn spec(&self) -> MediaSpec {
        MediaSpec {
            audio: true,
            video: self.video,
        }
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// Per room, the publishers that joined.
    publishers: Vec<Vec<PublisherRef>>,
    /// Live subscribers: label, the publisher they watch, how they receive.
    subscribers: Vec<(String, PublisherRef, SubscriberSetup)>,
    join_failures: Vec<String>,
    /// Final reports of clients that left early (churn).
    finished: Vec<ClientReport>,
    attempts: u64,
    churns: u64,
}

struct Ctx {
    scenario: Scenario,
    target: Target,
    engine: Engine,
    state: Mutex<State>,
    permits: Semaphore,
    /// Set when the run ends: joins still in flight then are dropped, not added.
    stopping: AtomicBool,
}

/// Run `scenario` against `target`; blocks until the run and its clean-up are over.
pub fn run(scenario: Scenario, target: Target) -> std::io::Result<Report> {
    // Signaling (HTTP, and building each client's `Rtc` and offer) runs on as many threads
    // as the engine: on one, the loadgen's own set-up would cap the join rate it can offer.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(scenario.threads.max(1))
        .enable_all()
        .build()?;
    let engine = Engine::start(scenario.threads)?;
    let ctx = Arc::new(Ctx {
        permits: Semaphore::new(scenario.max_in_flight.max(1)),
        scenario,
        target,
        engine,
        state: Mutex::new(State::default()),
        stopping: AtomicBool::new(false),
    });
    Ok(runtime.block_on(drive(ctx)))
}

async fn drive(ctx: Arc<Ctx>) -> Report {
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let end = tokio::time::Instant::now() + ctx.scenario.duration;
    let sc = ctx.scenario.clone();

    let progress = (sc.progress || sc.progress_json.is_some())
        .then(|| tokio::spawn(progress_loop(ctx.clone(), started)));
    let mut steady_from: Option<(u64, Counters)> = None;

    let main = async {
        if let Err(e) = ctx.target.prepare(sc.rooms, sc.publishers).await {
            eprintln!("loadgen: the target is not ready: {e}");
            let mut st = ctx.state.lock().expect("not poisoned");
            st.join_failures.push(format!("prepare_{}", e.reason()));
            return;
        }
        ctx.state.lock().expect("not poisoned").publishers = vec![Vec::new(); sc.rooms];

        // Publishers first: subscribers need something to subscribe to.
        let mut joins = JoinSet::new();
        let mut pace = Pace::new(sc.ramp_per_s);
        for r in 0..sc.rooms {
            for i in 0..sc.publishers {
                joins.spawn(join_publisher(ctx.clone(), r, i));
                pace.next().await;
            }
        }
        joins.join_all().await;
        wait_connected(&ctx, Duration::from_secs(10)).await;

        let mut joins = JoinSet::new();
        let mut pace = Pace::new(sc.ramp_per_s);
        for r in 0..sc.rooms {
            for j in 0..sc.subscribers {
                joins.spawn(join_subscriber(ctx.clone(), r, j, format!("r{r}-s{j}")));
                pace.next().await;
            }
        }
        joins.join_all().await;
        wait_connected(&ctx, CONNECT_WAIT).await;
        sleep(Duration::from_secs(1)).await;
        steady_from = Some((unix_ms(), counters(&ctx)));

        if sc.churn_per_s > 0.0 {
            churn_loop(ctx.clone()).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = main => tokio::time::sleep_until(end).await,
        () = tokio::time::sleep_until(end) => {}
    }

    // Stop: no more media, let what is in flight land, count, tear down.
    let paused = {
        // Under the state lock, so no join adds a client after this.
        let _st = ctx.state.lock().expect("not poisoned");
        ctx.stopping.store(true, Ordering::Relaxed);
        ctx.engine.pause_publishers()
    };
    let until_ms = unix_ms();
    let until = {
        let st = ctx.state.lock().expect("not poisoned");
        Counters::of(paused.iter().chain(&st.finished))
    };
    if let Some(p) = progress {
        p.abort();
    }
    sleep(SETTLE).await;
    let mut clients = ctx.engine.stop();
    let _ = tokio::time::timeout(CLEANUP, cleanup(ctx.clone())).await;

    let st = ctx.state.lock().expect("not poisoned");
    clients.extend(st.finished.iter().cloned());
    clients.sort_by(|a, b| a.label.cmp(&b.label));
    let steady = match steady_from {
        Some((from_ms, from)) if until_ms > from_ms => {
            let d = until.since(&from);
            Steady {
                from_unix_ms: from_ms,
                until_unix_ms: until_ms,
                seconds: (until_ms - from_ms) as f64 / 1000.0,
                packets_received: d.packets_received,
                bytes_received: d.bytes_received,
                packets_sent: d.packets_sent,
                bytes_sent: d.bytes_sent,
                rtp_in: d.rtp_in,
            }
        }
        _ => Steady::default(),
    };
    let mut aggregate = aggregate(&clients, &st.join_failures);
    aggregate.attempts = aggregate.attempts.max(st.attempts);
    let mut scenario = serde_json::to_value(&sc).unwrap_or_default();
    scenario["target"] = ctx.target.name().into();
    scenario["churn_cycles"] = st.churns.into();
    // Without caps every subscriber is in one class: still the figures per kind (audio and
    // video loss, latency, frames) that the aggregate mixes.
    let classes = classes::classes(&clients);
    Report {
        target: ctx.target.name().into(),
        scenario,
        started_unix_ms,
        elapsed_s: started.elapsed().as_secs_f64(),
        steady,
        aggregate,
        classes,
        clients,
    }
}

async fn join_publisher(ctx: Arc<Ctx>, room: usize, index: usize) {
    let Ok(_permit) = ctx.permits.acquire().await else {
        return;
    };
    let sc = &ctx.scenario;
    let label = format!("r{room}-p{index}");
    ctx.state.lock().expect("not poisoned").attempts += 1;
    let result = ctx
        .target
        .publish(room, index, sc.spec(), &sc.layers(), sc.bind_ip)
        .await
        .and_then(|(joined, session, publisher)| {
            let client = Client::publisher(label.clone(), joined, sc.shape())
                .map_err(|e| crate::SignalError::Io(e.to_string()))?;
            Ok((client, session, publisher))
        });
    let mut st = ctx.state.lock().expect("not poisoned");
    if ctx.stopping.load(Ordering::Relaxed) {
        // Too late: the run is over. The server ends the session when it times out.
        st.attempts = st.attempts.saturating_sub(1);
        return;
    }
    match result {
        Ok((client, session, publisher)) => {
            ctx.engine.add(client);
            st.sessions.insert(label, session);
            st.publishers[room].push(publisher);
        }
        Err(e) => {
            tracing::debug!(%label, error = %e, "publisher join failed");
            st.join_failures.push(e.reason());
        }
    }
}

async fn join_subscriber(ctx: Arc<Ctx>, room: usize, index: usize, label: String) {
    let Ok(_permit) = ctx.permits.acquire().await else {
        return;
    };
    let publisher = {
        let mut st = ctx.state.lock().expect("not poisoned");
        st.attempts += 1;
        let mut pubs = st.publishers[room].clone();
        pubs.sort_by_key(|p| p.index);
        if pubs.is_empty() {
            st.join_failures.push("no_publisher".into());
            return;
        }
        pubs[index % pubs.len()].clone()
    };
    let setup = ctx.scenario.setup(index);
    subscribe_as(&ctx, publisher, label, setup).await;
}

/// Leave and rejoin one random subscriber at the churn rate, forever (the caller stops it).
async fn churn_loop(ctx: Arc<Ctx>) {
    let mut pace = Pace::new(ctx.scenario.churn_per_s);
    loop {
        pace.next().await;
        let picked = {
            let mut st = ctx.state.lock().expect("not poisoned");
            if st.subscribers.is_empty() {
                continue;
            }
            let i = rand::random_range(0..st.subscribers.len());
            let (label, publisher, setup) = st.subscribers.swap_remove(i);
            st.churns += 1;
            let session = st.sessions.remove(&label);
            (label, publisher, setup, session)
        };
        let (label, publisher, setup, session) = picked;
        if let Some(report) = ctx.engine.remove(&label) {
            ctx.state
                .lock()
                .expect("not poisoned")
                .finished
                .push(report);
        }
        if let Some(s) = session
            && let Err(e) = ctx.target.leave(&s).await
        {
            tracing::debug!(%label, error = %e, "leave failed");
        }
        // r0-s3 → r0-s3.1 → r0-s3.2 ...
        let (base, n) = match label.rsplit_once('.') {
            Some((b, n)) => (b.to_owned(), n.parse::<u64>().unwrap_or(0) + 1),
            None => (label.clone(), 1),
        };
        tokio::spawn(rejoin(ctx.clone(), publisher, format!("{base}.{n}"), setup));
    }
}

/// Join `label` as a new subscriber of `publisher` (the one it watched before leaving),
/// on the same kind of link.
async fn rejoin(ctx: Arc<Ctx>, publisher: PublisherRef, label: String, setup: SubscriberSetup) {
    let Ok(_permit) = ctx.permits.acquire().await else {
        return;
    };
    ctx.state.lock().expect("not poisoned").attempts += 1;
    subscribe_as(&ctx, publisher, label, setup).await;
}

/// Subscribe `label` to `publisher` (an attempt already counted) and hand the client to the
/// media engine, or count the failure by reason.
async fn subscribe_as(ctx: &Ctx, publisher: PublisherRef, label: String, setup: SubscriberSetup) {
    let result = ctx
        .target
        .subscribe(&publisher, ctx.scenario.spec(), ctx.scenario.bind_ip)
        .await
        .and_then(|(joined, session)| {
            let client = Client::subscriber_with(label.clone(), joined, setup)
                .map_err(|e| crate::SignalError::Io(e.to_string()))?;
            Ok((client, session))
        });
    let mut st = ctx.state.lock().expect("not poisoned");
    if ctx.stopping.load(Ordering::Relaxed) {
        // Too late: the run is over. The server ends the session when it times out.
        st.attempts = st.attempts.saturating_sub(1);
        return;
    }
    match result {
        Ok((client, session)) => {
            ctx.engine.add(client);
            st.sessions.insert(label.clone(), session);
            st.subscribers.push((label, publisher, setup));
        }
        Err(e) => {
            tracing::debug!(%label, error = %e, "subscriber join failed");
            st.join_failures.push(e.reason());
        }
    }
}

/// Wait until every client is connected or failed, at most `limit`.
async fn wait_connected(ctx: &Ctx, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let reports = ctx.engine.snapshot();
        if reports.iter().all(|r| r.connected || r.failure.is_some()) {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn counters(ctx: &Ctx) -> Counters {
    let live = ctx.engine.snapshot();
    let st = ctx.state.lock().expect("not poisoned");
    Counters::of(live.iter().chain(&st.finished))
}

async fn progress_loop(ctx: Arc<Ctx>, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut json_out = ctx.scenario.progress_json.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("loadgen: cannot write {}: {e}", p.display()))
            .ok()
    });
    let mut last = Counters::default();
    let mut last_t = Instant::now();
    loop {
        sleep(Duration::from_secs(1)).await;
        let live = ctx.engine.snapshot();
        let (c, failed_joins, attempts) = {
            let st = ctx.state.lock().expect("not poisoned");
            (
                Counters::of(live.iter().chain(&st.finished)),
                st.join_failures.len(),
                st.attempts,
            )
        };
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64().max(0.001);
        let d = c.since(&last);
        last = c;
        last_t = now;
        let connected = live
            .iter()
            .filter(|r| r.connected && r.failure.is_none())
            .count();
        let failed = failed_joins + live.iter().filter(|r| r.failure.is_some()).count();
        let mut lat = Histogram::new();
        for r in live.iter().filter(|r| r.role == "subscriber") {
            lat.merge(&r.audio.latency);
            lat.merge(&r.video.latency);
        }
        let ms = |q| {
            lat.quantile(q)
                .map_or("-".into(), |v| format!("{:.1}", v as f64 / 1000.0))
        };
        let loss = 100.0 * c.gaps as f64 / (c.packets_received + c.gaps).max(1) as f64;
        let line = format!(
            "[{:>5.1}s] connected {connected}/{attempts} failed {failed} | in {:.1} Mbps out {:.1} Mbps | loss {loss:.2}% | latency p50 {} p99 {} ms",
            started.elapsed().as_secs_f64(),
            d.bytes_received as f64 * 8.0 / 1e6 / dt,
            d.bytes_sent as f64 * 8.0 / 1e6 / dt,
            ms(0.5),
            ms(0.99),
        );
        if let Some(f) = json_out.as_mut() {
            let row = serde_json::json!({
                "unix_ms": unix_ms(),
                "connected": connected,
                "attempts": attempts,
                "failed": failed,
                "packets_received": c.packets_received,
                "gaps": c.gaps,
                "bytes_received": c.bytes_received,
            });
            let _ = writeln!(f, "{row}");
        }
        if !ctx.scenario.progress {
            continue;
        }
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }
}

async fn cleanup(ctx: Arc<Ctx>) {
    let sessions: Vec<Session> = ctx
        .state
        .lock()
        .expect("not poisoned")
        .sessions
        .drain()
        .map(|(_, s)| s)
        .collect();
    let mut set = JoinSet::new();
    for s in sessions {
        let ctx = ctx.clone();
        set.spawn(async move {
            let Ok(_permit) = ctx.permits.acquire().await else {
                return;
            };
            let _ = ctx.target.leave(&s).await;
        });
    }
    set.join_all().await;
    ctx.target.finish().await;
    if std::io::stderr().is_terminal() && ctx.scenario.progress {
        eprintln!();
    }
}

/// Join starts at `per_s` a second, on a schedule from the first: a timer's rounding (a
/// millisecond) does not add up, so 2,000 a second is 2,000 a second, two per tick.
struct Pace {
    from: tokio::time::Instant,
    every: Duration,
    n: u32,
}

impl Pace {
    fn new(per_s: f64) -> Pace {
        let every = if per_s > 0.0 {
            Duration::from_secs_f64(1.0 / per_s)
        } else {
            Duration::ZERO
        };
        Pace {
            from: tokio::time::Instant::now(),
            every,
            n: 0,
        }
    }

    /// Wait for the next start.
    async fn next(&mut self) {
        self.n += 1;
        tokio::time::sleep_until(self.from + self.every * self.n).await;
    }
}

/// Now, milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2,000 starts a second take a second: the timer's millisecond does not add up per
    /// start, as it did when each start slept its own 0.5 ms (rounded up to 1 ms: two
    /// seconds). Virtual time, so no clock is asserted on.
    #[tokio::test(start_paused = true)]
    async fn a_fast_ramp_keeps_its_rate() {
        let t0 = tokio::time::Instant::now();
        let mut pace = Pace::new(2000.0);
        for _ in 0..2000 {
            pace.next().await;
        }
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(1010), "{took:?}");
    }
}
