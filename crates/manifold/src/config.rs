//! Configuration: built-in defaults, then a TOML file (`--config`), then `MANIFOLD_*`
//! environment variables (`__` separates levels: `MANIFOLD_HTTP__LISTEN`), then command-line
//! flags. Each layer overrides the one before.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Sections a `MANIFOLD_` variable may address; other `MANIFOLD_*` variables (a test's
/// `MANIFOLD_URL`, say) are not configuration.
const SECTIONS: [&str; 9] = [
    "http", "media", "auth", "limits", "log", "cluster", "webhooks", "turn", "metrics",
];

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP surface.
    pub http: Http,
    /// Media workers.
    pub media: Media,
    /// Access tokens.
    pub auth: AuthSection,
    /// Limits.
    pub limits: Limits,
    /// Logging.
    pub log: Log,
    /// This node in a cluster (alone by default).
    pub cluster: ClusterSection,
    /// Signed HTTP callbacks about rooms, participants and tracks (off by default).
    pub webhooks: WebhooksSection,
    /// TURN servers handed to clients (none by default).
    pub turn: TurnSection,
    /// `GET /metrics`.
    pub metrics: MetricsSection,
}

/// `[metrics]` (docs/metrics.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Rooms listed with per-room series, the largest first (the cardinality bound).
    pub max_rooms: usize,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            max_rooms: manifold_control::metrics::DEFAULT_MAX_ROOMS,
        }
    }
}

/// `[turn]`: TURN servers sharing a secret with this server (coturn `use-auth-secret`);
/// each client gets a credential made from it (see docs/tls-turn.md).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSection {
    /// `turn:` / `turns:` URIs, e.g. `turn:turn.example.com:3478?transport=udp`. Empty: none.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`; required when `urls` is set. Never printed.
    pub static_auth_secret: Option<String>,
    /// How long a credential stays valid, in seconds.
    pub ttl_secs: u64,
}

impl Default for TurnSection {
    fn default() -> Self {
        TurnSection {
            urls: Vec::new(),
            static_auth_secret: None,
            ttl_secs: 24 * 60 * 60,
        }
    }
}

impl std::fmt::Debug for TurnSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TurnSection")
            .field("urls", &self.urls)
            .field(
                "static_auth_secret",
                &self.static_auth_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl TurnSection {
    /// Reject a section the server could not hand out.
    fn validate(&self) -> Result<(), String> {
        for u in &self.urls {
            if !(u.starts_with("turn:") || u.starts_with("turns:")) || u.len() > 512 {
                return Err(format!(
                    "turn.urls: {u:?} is not a turn: or turns: URI (at most 512 characters)"
                ));
            }
        }
        let secret = self.static_auth_secret.as_deref().unwrap_or("");
        if !self.urls.is_empty() && secret.is_empty() {
            return Err("turn.static_auth_secret is required when turn.urls is set".into());
        }
        if self.ttl_secs == 0 {
            return Err("turn.ttl_secs must be at least 1".into());
        }
        Ok(())
    }

    /// The control plane's view; `None` without URLs.
    fn control(&self) -> Option<manifold_control::turn::TurnConfig> {
        if self.urls.is_empty() {
            return None;
        }
        Some(manifold_control::turn::TurnConfig {
            urls: self.urls.clone(),
            secret: self.static_auth_secret.clone().unwrap_or_default(),
            ttl: Duration::from_secs(self.ttl_secs),
        })
    }
}

/// `[webhooks]` (docs/webhooks.md)
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Receivers (`http://`), each sent every message; empty turns webhooks off.
    pub urls: Vec<String>,
    /// Standard Webhooks signing secret: `whsec_` and the base64 of 24 to 64 random bytes.
    /// Required with `urls`.
    pub secret: Option<String>,
    /// Messages that may wait per URL; past it the newest is dropped and counted.
    pub queue: usize,
    /// Delivery lanes per URL: a room's messages go in order through one of them.
    pub lanes: usize,
    /// Tries per message, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each further one...
    pub backoff_base_ms: u64,
    /// ... up to this.
    pub backoff_max_ms: u64,
    /// One attempt's limit.
    pub request_timeout_ms: u64,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        let d = manifold_control::webhooks::WebhookConfig::default();
        WebhooksSection {
            urls: Vec::new(),
            secret: None,
            queue: d.queue,
            lanes: d.lanes,
            max_attempts: d.max_attempts,
            backoff_base_ms: d.backoff_base.as_millis() as u64,
            backoff_max_ms: d.backoff_max.as_millis() as u64,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
        }
    }
}

impl std::fmt::Debug for WebhooksSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, nor credentials the URLs may carry.
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|u| manifold_cluster::redact_url(u.split('?').next().unwrap_or("")))
            .collect();
        f.debug_struct("WebhooksSection")
            .field("urls", &urls)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("queue", &self.queue)
            .field("lanes", &self.lanes)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl WebhooksSection {
    /// The delivery settings, parsed and checked.
    pub fn webhook_config(
        &self,
    ) -> Result<
        manifold_control::webhooks::WebhookConfig,
        manifold_control::webhooks::WebhookConfigError,
    > {
        use manifold_control::webhooks::{WebhookConfig, parse_secret, parse_url};
        let config = WebhookConfig {
            urls: self
                .urls
                .iter()
                .map(|u| parse_url(u))
                .collect::<Result<_, _>>()?,
            secret: match &self.secret {
                Some(s) => parse_secret(s)?,
                None => Vec::new(),
            },
            queue: self.queue,
            lanes: self.lanes,
            max_attempts: self.max_attempts,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        };
        config.validate()?;
        Ok(config)
    }
}

/// `[cluster]`
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's name: 1 to 64 characters from `a-z 0-9 - _`, unique among live nodes.
    pub node_id: String,
    /// Where clients reach this node (default: `http://`, or `https://` with TLS, and the
    /// listen address).
    pub advertise_url: Option<String>,
    /// Seconds between registry heartbeats; a node silent for three is gone.
    pub heartbeat_secs: u64,
    /// The cluster's Redis (registry and directory); unset or empty: kept in this process.
    pub redis_url: Option<String>,
    /// The cluster's NATS (messages between nodes); unset or empty: within this process.
    pub nats_url: Option<String>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: "local".into(),
            advertise_url: None,
            heartbeat_secs: 2,
            redis_url: None,
            nats_url: None,
        }
    }
}

impl std::fmt::Debug for ClusterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The service URLs may carry passwords.
        let redact = |u: &Option<String>| u.as_deref().map(manifold_cluster::redact_url);
        f.debug_struct("ClusterSection")
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("redis_url", &redact(&self.redis_url))
            .field("nats_url", &redact(&self.nats_url))
            .finish()
    }
}

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// On shutdown, how long to wait for sessions to end before closing them.
    pub drain_timeout_secs: u64,
    /// How long a room participant whose WebSocket dropped may take to resume.
    pub reconnect_grace_secs: u64,
    /// Open connections (HTTP and WebSocket) in total; lowered at start to what the
    /// process's file-descriptor limit allows.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A connection carrying no request is closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS (docs/tls-turn.md).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; re-read with it on SIGHUP.
    pub tls_key: Option<PathBuf>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            drain_timeout_secs: 10,
            reconnect_grace_secs: 10,
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Http {
    /// The certificate and key to serve HTTPS with; `None` for plain HTTP. An empty path
    /// counts as unset (`MANIFOLD_HTTP__TLS_CERT=` turns TLS off).
    pub fn tls_files(&self) -> Result<Option<manifold_control::tls::TlsFiles>, String> {
        let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        match (set(&self.tls_cert), set(&self.tls_key)) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(manifold_control::tls::TlsFiles { cert, key })),
            _ => Err("http.tls_cert and http.tls_key must be set together".into()),
        }
    }
}

/// `[media]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// IP the media sockets bind to.
    pub bind_ip: IpAddr,
    /// IPs announced in ICE candidates (NAT 1:1 or public IPs); empty means `bind_ip`.
    pub announce_ips: Vec<IpAddr>,
    /// Worker i listens on UDP port `port_base + i`; 0 lets the OS choose.
    pub port_base: u16,
    /// Media worker threads; 0 means one per core.
    pub workers: usize,
    /// Shortest time between two keyframe requests to one source.
    pub keyframe_interval_ms: u64,
    /// A session must connect within this many seconds.
    pub connect_timeout_secs: u64,
    /// A disconnected session is removed after this many seconds.
    pub disconnect_grace_secs: u64,
    /// Commands queued per worker before callers are told it is overloaded.
    pub command_queue: usize,
    /// Events queued from the workers to the control plane; past it a worker holds them
    /// back (in order, none lost) and offers them again.
    pub event_queue: usize,
    /// A room's sessions stay on one worker until it holds this many of them; later ones
    /// go to the least loaded worker, and tracks are relayed between the room's workers.
    /// 0 spreads every room from its first session.
    pub room_spread_after: usize,
    /// Accept ICE over TCP (RFC 6544): worker i also listens on TCP port `port_base + i`
    /// and every session gets a passive TCP candidate. Off by default (docs/ice-tcp.md).
    pub ice_tcp: bool,
    /// ICE-TCP connections one worker holds at most.
    pub tcp_max_connections: usize,
    /// A worker whose backlog (the longest its oldest input may have waited) reaches this
    /// sheds video; 0 never does (docs/overload.md).
    pub shed_video_after_ms: u64,
    /// ... and past this, audio too; 0 never.
    pub shed_audio_after_ms: u64,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announce_ips: Vec::new(),
            port_base: 40000,
            workers: 0,
            keyframe_interval_ms: 500,
            connect_timeout_secs: 30,
            disconnect_grace_secs: 10,
            command_queue: 1024,
            event_queue: 4096,
            room_spread_after: 32,
            ice_tcp: false,
            tcp_max_connections: manifold_io::DEFAULT_TCP_MAX_CONNECTIONS,
            shed_video_after_ms: 250,
            shed_audio_after_ms: 600,
        }
    }
}

/// `[auth]`
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// HS256 signing key (at least 32 bytes). Unset: dev mode, tokens optional.
    pub key: Option<String>,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("AuthSection")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[limits]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rooms on this server.
    pub max_rooms: usize,
    /// Participants per room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Largest HTTP request body (SDP offers), in bytes.
    pub max_body_bytes: usize,
    /// Largest room-protocol WebSocket message, in bytes.
    pub max_ws_message_bytes: usize,
    /// A room-protocol WebSocket must join within this many seconds of opening.
    pub join_timeout_secs: u64,
    /// Room-protocol WebSockets open at once that have not joined yet.
    pub max_unjoined_sockets: usize,
    /// Room-protocol messages one socket may send per second (every type), sustained...
    pub ws_messages_per_sec: f64,
    /// ... and in a burst.
    pub ws_message_burst: f64,
    /// `update` messages (fanned out to the whole room) per second, sustained...
    pub ws_updates_per_sec: f64,
    /// ... and in a burst.
    pub ws_update_burst: f64,
    /// Bytes one socket's outgoing queue may hold before the client counts as too slow.
    pub max_outbox_bytes: usize,
    /// Messages one socket's outgoing queue may hold.
    pub max_outbox_messages: usize,
    /// Sessions (WHIP, WHEP, room) the server holds at once, joining or joined.
    pub max_sessions: usize,
    /// New sessions one client address (IPv6: one /64) may start per second, sustained...
    pub session_rate_per_ip: u32,
    /// ... and in a burst.
    pub session_burst_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 1000,
            max_participants_per_room: 100,
            max_tracks_per_participant: 8,
            max_body_bytes: 64 * 1024,
            max_ws_message_bytes: 64 * 1024,
            join_timeout_secs: 10,
            max_unjoined_sockets: 1024,
            ws_messages_per_sec: 20.0,
            ws_message_burst: 50.0,
            ws_updates_per_sec: 2.0,
            ws_update_burst: 5.0,
            max_outbox_bytes: 1 << 20,
            max_outbox_messages: 512,
            max_sessions: 4096,
            session_rate_per_ip: 10,
            session_burst_per_ip: 40,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter such as `info` or `manifold_core=debug,info`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// Command-line values that override everything else.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub media_bind: Option<IpAddr>,
    pub announce_ips: Vec<IpAddr>,
    pub port_base: Option<u16>,
    pub workers: Option<usize>,
    pub auth_key: Option<String>,
    pub log_level: Option<String>,
}

impl Config {
    /// Load the layers in order. A missing `--config` file is an error.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(
            Env::prefixed("MANIFOLD_")
                .filter(|k| {
                    let k = k.as_str().to_ascii_lowercase();
                    SECTIONS.iter().any(|s| k.starts_with(&format!("{s}__")))
                })
                .split("__"),
        );
        if let Some(v) = overrides.listen {
            fig = fig.merge(("http.listen", v));
        }
        if let Some(v) = overrides.media_bind {
            fig = fig.merge(("media.bind_ip", v));
        }
        if !overrides.announce_ips.is_empty() {
            fig = fig.merge(("media.announce_ips", &overrides.announce_ips));
        }
        if let Some(v) = overrides.port_base {
            fig = fig.merge(("media.port_base", v));
        }
        if let Some(v) = overrides.workers {
            fig = fig.merge(("media.workers", v));
        }
        if let Some(v) = &overrides.auth_key {
            fig = fig.merge(("auth.key", v));
        }
        if let Some(v) = &overrides.log_level {
            fig = fig.merge(("log.level", v));
        }
        let config: Config = fig.extract().map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Reject settings the server could not run with.
    pub fn validate(&self) -> Result<(), String> {
        manifold_cluster::NodeId::parse(&self.cluster.node_id)
            .map_err(|e| format!("cluster.node_id: {e}"))?;
        if self.cluster.heartbeat_secs == 0 {
            return Err("cluster.heartbeat_secs must be at least 1".into());
        }
        self.turn.validate()?;
        self.http.tls_files()?;
        if let Some(k) = &self.auth.key
            && k.len() < manifold_control::auth::MIN_KEY_BYTES
        {
            return Err(format!(
                "auth.key must be at least {} bytes",
                manifold_control::auth::MIN_KEY_BYTES
            ));
        }
        if self.media.bind_ip.is_unspecified() && self.media.announce_ips.is_empty() {
            return Err(format!(
                "media.bind_ip is {} (every interface): set media.announce_ips to the \
                 address(es) clients should use",
                self.media.bind_ip
            ));
        }
        if let Some(ip) = self
            .media
            .announce_ips
            .iter()
            .find(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "media.announce_ips contains {ip}, which no client can reach"
            ));
        }
        let workers = self.worker_count();
        if self.media.port_base != 0 && usize::from(self.media.port_base) + workers > 65536 {
            return Err(format!(
                "media.port_base {} leaves no room for {workers} workers",
                self.media.port_base
            ));
        }
        for (name, v) in [
            ("limits.max_rooms", self.limits.max_rooms),
            (
                "limits.max_participants_per_room",
                self.limits.max_participants_per_room,
            ),
            (
                "limits.max_tracks_per_participant",
                self.limits.max_tracks_per_participant,
            ),
            ("media.command_queue", self.media.command_queue),
            ("media.event_queue", self.media.event_queue),
            (
                "limits.join_timeout_secs",
                self.limits.join_timeout_secs as usize,
            ),
            (
                "limits.max_unjoined_sockets",
                self.limits.max_unjoined_sockets,
            ),
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs as usize,
            ),
            (
                "http.idle_timeout_secs",
                self.http.idle_timeout_secs as usize,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return Err("limits.max_body_bytes must be at least 1024".into());
        }
        for (name, v) in [
            (
                "limits.ws_messages_per_sec",
                self.limits.ws_messages_per_sec,
            ),
            ("limits.ws_message_burst", self.limits.ws_message_burst),
            ("limits.ws_updates_per_sec", self.limits.ws_updates_per_sec),
            ("limits.ws_update_burst", self.limits.ws_update_burst),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return Err(format!("{name} must be a number of at least 1"));
            }
        }
        if self.limits.max_outbox_bytes < self.limits.max_ws_message_bytes.max(64 * 1024) {
            return Err(
                "limits.max_outbox_bytes must be at least 64 KiB and at least max_ws_message_bytes"
                    .into(),
            );
        }
        if self.limits.max_ws_message_bytes < 1024 {
            return Err("limits.max_ws_message_bytes must be at least 1024".into());
        }
        self.webhooks.webhook_config().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The connection cap to run with: `http.max_connections`, lowered if the process may
    /// not open that many descriptors (`open_files`, its soft limit) with a reserve left for
    /// the media sockets, logs and the like, so that accepting never fails for want of
    /// one. Returns the cap and whether it was lowered.
    pub fn connection_cap(&self, open_files: Option<u64>) -> (usize, bool) {
        let wanted = self.http.max_connections;
        let Some(limit) = open_files else {
            return (wanted, false);
        };
        // The listener, the media sockets and their pollers, logs, blocking threads'
        // files, connections over the cap while evicted ones close; with ICE-TCP every
        // worker's listener and connections.
        let ice_tcp = if self.media.ice_tcp {
            1 + self.media.tcp_max_connections as u64
        } else {
            0
        };
        let reserve = 96
            + manifold_control::listener::EVICTION_SLACK as u64
            + (4 + ice_tcp) * self.worker_count() as u64;
        let fits = usize::try_from(limit.saturating_sub(reserve).max(16)).unwrap_or(usize::MAX);
        if fits < wanted {
            (fits, true)
        } else {
            (wanted, false)
        }
    }

    /// Media workers to start.
    pub fn worker_count(&self) -> usize {
        if self.media.workers > 0 {
            self.media.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Settings for the media workers.
    pub fn media_config(&self) -> manifold_io::MediaConfig {
        manifold_io::MediaConfig {
            workers: self.worker_count(),
            bind_ip: self.media.bind_ip,
            port_base: self.media.port_base,
            announce_ips: self.media.announce_ips.clone(),
            shard: manifold_core::ShardConfig {
                max_participants_per_room: self.limits.max_participants_per_room,
                max_tracks_per_participant: self.limits.max_tracks_per_participant,
                keyframe_request_interval: Duration::from_millis(self.media.keyframe_interval_ms),
                connect_timeout: Duration::from_secs(self.media.connect_timeout_secs),
                disconnect_grace: Duration::from_secs(self.media.disconnect_grace_secs),
                // Track ids of different nodes in one room must differ.
                track_id_salt: rand::random(),
                overload: manifold_core::OverloadConfig {
                    shed_video_after: millis_or_never(self.media.shed_video_after_ms),
                    shed_audio_after: millis_or_never(self.media.shed_audio_after_ms),
                    ..Default::default()
                },
                ..Default::default()
            },
            command_queue: self.media.command_queue,
            ice_tcp: self.media.ice_tcp,
            tcp_max_connections: self.media.tcp_max_connections,
        }
    }

    /// Settings for the HTTP surface. `max_connections` is the configured cap already
    /// fitted to the file-descriptor limit ([`Config::connection_cap`]).
    pub fn control_config(&self, max_connections: usize) -> manifold_control::ControlConfig {
        manifold_control::ControlConfig {
            listener: manifold_control::listener::ListenerLimits {
                max_connections,
                max_connections_per_ip: self.http.max_connections_per_ip,
                header_read_timeout: Duration::from_secs(self.http.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.http.idle_timeout_secs),
                ..Default::default()
            },
            max_unjoined_sockets: self.limits.max_unjoined_sockets,
            outbox: manifold_control::outbox::OutboxLimits {
                messages: self.limits.max_outbox_messages,
                bytes: self.limits.max_outbox_bytes,
            },
            ws_message_rate: self.limits.ws_messages_per_sec,
            ws_message_burst: self.limits.ws_message_burst,
            update_rate: self.limits.ws_updates_per_sec,
            update_burst: self.limits.ws_update_burst,
            max_sessions: self.limits.max_sessions,
            session_rate_per_ip: self.limits.session_rate_per_ip,
            session_burst_per_ip: self.limits.session_burst_per_ip,
            max_body_bytes: self.limits.max_body_bytes,
            max_rooms: self.limits.max_rooms,
            max_ws_message_bytes: self.limits.max_ws_message_bytes,
            reconnect_grace: Duration::from_secs(self.http.reconnect_grace_secs),
            join_timeout: Duration::from_secs(self.limits.join_timeout_secs),
            room_spread_after: self.media.room_spread_after,
            max_participants_per_room: self.limits.max_participants_per_room,
            // Checked by `validate`; an unchecked config gets no webhooks rather than a panic.
            webhooks: self.webhooks.webhook_config().unwrap_or_default(),
            turn: self.turn.control(),
            metrics_max_rooms: self.metrics.max_rooms,
            ..Default::default()
        }
    }
}

/// A configured number of milliseconds, 0 meaning never.
fn millis_or_never(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert!(c.media.bind_ip.is_loopback());
        assert!(c.auth.key.is_none());
    }

    #[test]
    fn metrics_room_bound_is_configurable() {
        assert_eq!(Config::default().control_config(16).metrics_max_rooms, 100);
        let dir = std::env::temp_dir().join(format!("manifold-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(&path, "[metrics]\nmax_rooms = 7\n").unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.control_config(16).metrics_max_rooms, 7);
        std::fs::write(&path, "[metrics]\nmax_room = 7\n").unwrap();
        assert!(Config::load(Some(&path), &Overrides::default()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("manifold-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            "[http]\nlisten = \"127.0.0.1:9000\"\n[media]\nworkers = 3\nport_base = 41000\n[limits]\nmax_rooms = 5"
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.media.workers, 3);
        assert_eq!(c.limits.max_rooms, 5);
        let o = Overrides {
            workers: Some(1),
            ..Default::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(c.media.workers, 1, "flags override the file");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_settings_are_reported() {
        let dir = std::env::temp_dir().join(format!("manifold-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[http]\nlisten_on = 1\n").unwrap();
        let e = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(e.contains("listen_on"), "{e}");
        assert!(Config::load(Some(&dir.join("missing.toml")), &Overrides::default()).is_err());
        let o = Overrides {
            media_bind: Some("0.0.0.0".parse().unwrap()),
            ..Default::default()
        };
        assert!(Config::load(None, &o).unwrap_err().contains("announce_ips"));
        let o = Overrides {
            auth_key: Some("short".into()),
            ..Default::default()
        };
        assert!(Config::load(None, &o).unwrap_err().contains("32 bytes"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn cluster_urls_never_print_their_passwords() {
        let mut c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!((&c.cluster.redis_url, &c.cluster.nats_url), (&None, &None));
        c.cluster.redis_url = Some("redis://:hunter2@10.1.2.3:6379".into());
        c.cluster.nats_url = Some("nats://ops:hunter2@10.1.2.4:4222".into());
        let printed = format!("{c:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis://***@10.1.2.3:6379"), "{printed}");
    }

    #[test]
    fn turn_section_is_checked_and_its_secret_never_printed() {
        let mut c = Config::default();
        c.turn.urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        assert!(c.validate().unwrap_err().contains("static_auth_secret"));
        c.turn.static_auth_secret = Some("hunter2".into());
        c.validate().unwrap();
        let printed = format!("{c:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let t = c.control_config(10).turn.expect("turn configured");
        assert_eq!(t.ttl, Duration::from_secs(86400));
        c.turn.urls = vec!["http://nope".into()];
        assert!(c.validate().unwrap_err().contains("turn.urls"));
        assert!(Config::default().control_config(10).turn.is_none());
    }

    #[test]
    fn webhook_settings_are_checked_and_the_secret_never_printed() {
        let dir = std::env::temp_dir().join(format!("manifold-config-wh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wh.toml");
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        std::fs::write(
            &path,
            format!(
                "[webhooks]\nurls = [\"http://127.0.0.1:9/in\"]\nsecret = \"{secret}\"\nqueue = 8\n"
            ),
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        let w = c.control_config(16).webhooks;
        assert_eq!((w.urls.len(), w.queue, w.secret.len()), (1, 8, 24));
        let printed = format!("{c:?} {w:?}");
        assert!(!printed.contains("MfKQ9r8G"), "{printed}");
        for (body, want) in [
            ("urls = [\"http://127.0.0.1:9/\"]\n", "secret is required"),
            (
                "urls = [\"http://127.0.0.1:9/\"]\nsecret = \"nope\"\n",
                "whsec_",
            ),
            (
                "urls = [\"gopher://h/\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
                "gopher",
            ),
            ("queue = 0\n", "queue"),
        ] {
            std::fs::write(&path, format!("[webhooks]\n{body}")).unwrap();
            let e = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let mut c = Config::default();
        assert_eq!(c.http.tls_files(), Ok(None));
        c.http.tls_cert = Some("/etc/manifold/cert.pem".into());
        assert!(c.validate().unwrap_err().contains("set together"));
        c.http.tls_key = Some("/etc/manifold/key.pem".into());
        assert!(c.validate().is_ok());
        c.http.tls_cert = Some("".into());
        assert!(c.validate().unwrap_err().contains("set together"));
    }

    #[test]
    fn the_connection_cap_fits_the_file_limit() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.connection_cap(None), (4096, false));
        assert_eq!(c.connection_cap(Some(1 << 20)), (4096, false));
        let (cap, lowered) = c.connection_cap(Some(512));
        assert!(lowered && cap < 512 - 64, "{cap}");
    }
}
