//! The `manifold` binary: `serve` runs the SFU, `token` mints access tokens, `loadgen`
//! loads a server with real WebRTC clients, `openapi` prints the HTTP API's description.
#![forbid(unsafe_code)]

mod admin_cli;
mod config;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use manifold_api::{Grants, Identity, RoomName};
use manifold_control::{AppState, Auth};
use manifold_core::RtcFactory;
use manifold_io::MediaWorkers;

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "manifold",
    version,
    about = "A WebRTC SFU: WHIP in, WHEP out, rooms for people."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint an access token with the configured key.
    Token(TokenArgs),
    /// Load a server (this one, any WHIP/WHEP server, or Janus) with real WebRTC clients.
    Loadgen(Box<manifold_loadgen::cli::Args>),
    /// Call the admin API: rooms, participants, kick, mute, close, drain, create-room,
    /// log-level.
    Admin(Box<admin_cli::AdminArgs>),
    /// Print the HTTP API's OpenAPI 3.1 document (the one `GET /openapi.json` serves).
    Openapi,
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
    /// HS256 signing key (overrides auth.key; prefer MANIFOLD_AUTH__KEY).
    #[arg(long, hide_env_values = true)]
    pub(crate) auth_key: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// HTTP listen address (http.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// IP the media sockets bind to (media.bind_ip).
    #[arg(long)]
    media_bind: Option<IpAddr>,
    /// IP announced to clients; repeat for several (media.announce_ips).
    #[arg(long = "announce-ip")]
    announce_ips: Vec<IpAddr>,
    /// First UDP port; worker i uses port-base + i; 0 = OS-chosen (media.port_base).
    #[arg(long)]
    port_base: Option<u16>,
    /// Media worker threads; 0 = one per core (media.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Log filter, e.g. `info` or `manifold_core=debug` (log.level; RUST_LOG wins).
    #[arg(long)]
    log_level: Option<String>,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Room the token is for; omit for every room (admin tokens).
    #[arg(long)]
    room: Option<String>,
    /// Identity of the bearer.
    #[arg(long)]
    identity: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Grant publishing.
    #[arg(long)]
    publish: bool,
    /// Grant subscribing.
    #[arg(long)]
    subscribe: bool,
    /// Grant admin (stats, admin API).
    #[arg(long)]
    admin: bool,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(args),
        Cmd::Token(args) => token(args),
        Cmd::Loadgen(args) => manifold_loadgen::cli::main(*args),
        Cmd::Admin(args) => admin_cli::main(*args),
        Cmd::Openapi => {
            print!("{}", manifold_control::openapi::json());
            ExitCode::SUCCESS
        }
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let overrides = Overrides {
        auth_key: args.config.auth_key.clone(),
        ..Default::default()
    };
    let result = (|| -> Result<String, String> {
        let config = Config::load(args.config.config.as_deref(), &overrides)?;
        let auth = Auth::new(config.auth.key.as_deref())?;
        if auth.is_dev() {
            return Err(
                "no auth key is configured (auth.key or MANIFOLD_AUTH__KEY); in dev mode \
                 tokens are optional"
                    .into(),
            );
        }
        let identity = Identity::parse(&args.identity).map_err(|e| format!("identity {e}"))?;
        let room = args
            .room
            .as_deref()
            .map(RoomName::parse)
            .transpose()
            .map_err(|e| format!("room {e}"))?;
        if !(args.publish || args.subscribe || args.admin) {
            return Err("grant at least one of --publish, --subscribe, --admin".into());
        }
        let grants = Grants {
            publish: args.publish,
            subscribe: args.subscribe,
            admin: args.admin,
        };
        auth.mint(
            &identity,
            room.as_ref(),
            grants,
            args.name.as_deref(),
            args.ttl,
        )
    })();
    match result {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manifold token: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        media_bind: args.media_bind,
        announce_ips: args.announce_ips,
        port_base: args.port_base,
        workers: args.workers,
        auth_key: args.config.auth_key,
        log_level: args.log_level,
    };
    let config = match Config::load(args.config.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("manifold: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Read now, so that a certificate or key that cannot be used stops the server before
    // anything starts (and `--check` finds it too).
    let tls = match config.http.tls_files().and_then(|files| {
        files
            .map(manifold_control::tls::Tls::load)
            .transpose()
            .map_err(|e| e.to_string())
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("manifold: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("configuration is valid:\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    let log_filter = init_logging(&config.log.level);
    match run(config, tls, log_filter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("manifold: {e}");
            ExitCode::FAILURE
        }
    }
}

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter behind a reload handle, for `PUT /admin/log-level`.
struct ReloadableFilter(FilterHandle);

impl manifold_control::state::LogFilter for ReloadableFilter {
    fn current(&self) -> String {
        self.0
            .with_current(|f| f.to_string())
            .unwrap_or_else(|e| format!("unreadable: {e}"))
    }

    fn set(&self, directives: &str) -> Result<(), String> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

fn init_logging(level: &str) -> ReloadableFilter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    ReloadableFilter(handle)
}

fn run(
    config: Config,
    tls: Option<manifold_control::tls::Tls>,
    log_filter: ReloadableFilter,
) -> Result<(), String> {
    let auth = Auth::new(config.auth.key.as_deref())?;
    if auth.is_dev() {
        tracing::warn!(
            "DEV MODE: no auth.key is configured, so anyone who can reach this server may \
             publish, subscribe and read stats without a token. Set MANIFOLD_AUTH__KEY \
             (32+ bytes) before exposing it."
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("manifold-control")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;

    let (sink, events) = manifold_control::event_channel(config.media.event_queue);
    let (bridge, bridge_frames) = manifold_control::bridge::channel();
    let workers = MediaWorkers::start_bridged(config.media_config(), sink, Some(bridge))
        .map_err(|e| format!("cannot start the media workers: {e}"))?;
    let factory = std::sync::Arc::new(
        RtcFactory::new(config.limits.max_body_bytes, std::time::Instant::now())
            .with_ice_tcp(config.media.ice_tcp),
    );
    let (max_connections, lowered) = config.connection_cap(open_file_limit());
    if lowered {
        tracing::warn!(
            max_connections,
            configured = config.http.max_connections,
            "http.max_connections lowered to fit the open-file limit (raise it with ulimit -n)"
        );
    }
    let node_id = manifold_cluster::NodeId::parse(&config.cluster.node_id)
        .map_err(|e| format!("cluster.node_id: {e}"))?;
    let cluster = runtime
        .block_on(manifold_control::cluster::ClusterHandle::connect(
            node_id,
            config.cluster.advertise_url.clone(),
            Duration::from_secs(config.cluster.heartbeat_secs),
            config.cluster.redis_url.as_deref(),
            config.cluster.nats_url.as_deref(),
        ))
        .map_err(|e| format!("cluster: {e}"))?;
    let state = AppState::new(
        config.control_config(max_connections),
        workers.handles().to_vec(),
        factory,
        auth,
        cluster,
    );
    let _ = state.log_filter.set(Box::new(log_filter));
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(tls) = tls {
        let _ = state.tls.set(tls);
    }

    let drain_timeout = Duration::from_secs(config.http.drain_timeout_secs);
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.http.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?;
        for w in workers.handles() {
            tracing::info!(worker = w.index(), bind = %w.local_addr(), candidates = ?w.candidates(), "media worker ready");
        }
        tracing::info!("listening on {scheme}://{addr}");
        // Tests and scripts read this line to find the port when listening on port 0.
        println!("manifold: listening on {scheme}://{addr}");
        if let Some(tls) = state.tls.get() {
            tokio::spawn(reload_tls_on_hangup(tls.clone()));
        }
        state.webhooks.start()?;
        tokio::spawn(state.clone().run_events(events));
        tokio::spawn(manifold_control::bridge::run(state.clone(), bridge_frames));
        let _ = state.cluster.advertise_url.set(format!("{scheme}://{addr}"));
        manifold_control::cluster::register(&state)
            .await
            .map_err(|e| format!("cluster: {e}"))?;
        let heartbeat = tokio::spawn(manifold_control::cluster::heartbeat(state.clone()));
        let federation = manifold_control::federation::start(&state);
        let drain_state = state.clone();
        let served = manifold_control::serve(listener, state.clone(), async move {
            shutdown_signal().await;
            drain(&drain_state, drain_timeout).await;
        })
        .await
        .map_err(|e| format!("http server: {e}"));
        // The id is free at once for a node started again.
        heartbeat.abort();
        // Stopped before the directory forgets this node, so that no late update of
        // theirs writes it back.
        for task in &federation {
            task.abort();
        }
        manifold_control::cluster::deregister(&state).await;
        served
    });
    tracing::info!("stopping media workers");
    workers.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The process's soft limit on open files, from `/proc/self/limits` (Linux), if readable.
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Stop taking sessions and give the existing ones `timeout` to end; a second signal cuts
/// it short.
async fn drain(state: &AppState, timeout: Duration) {
    state.start_drain();
    let sessions = state.session_count();
    if sessions == 0 {
        return;
    }
    tracing::info!(
        sessions,
        ?timeout,
        "draining: waiting for sessions to end (signal again to stop now)"
    );
    let deadline = Instant::now() + timeout;
    let wait = async {
        while state.session_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = wait => {}
        () = shutdown_signal() => tracing::info!("second signal: stopping now"),
    }
}

/// On every SIGHUP, read the certificate and key again; a pair that cannot be used is
/// logged and the one in use kept.
async fn reload_tls_on_hangup(tls: manifold_control::tls::Tls) {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: no certificate reload");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            let files = tls.files();
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    "SIGHUP: TLS certificate reloaded"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: TLS certificate NOT reloaded, still serving the previous one: {e}"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
