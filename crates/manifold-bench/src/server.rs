//! Starting and stopping the servers under test: `manifold serve` with the benchmark's
//! limits lifted, or `janus` with a configuration written for the run (VideoRoom and the HTTP
//! transport only, warnings-level logging, host candidates on 127.0.0.x).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Args;

/// A running server under test.
pub struct Server {
    pub child: Child,
    /// The loadgen's arguments that point it at this server.
    pub loadgen_args: Vec<String>,
    pub log: PathBuf,
    /// Where its Prometheus `/metrics` answers (Manifold's HTTP address; none for Janus).
    pub metrics_addr: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first (both servers shut down cleanly on it), then make sure.
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

pub fn start_server(
    args: &Args,
    server: &str,
    tag: &str,
    env: &[(String, String)],
) -> Result<Server, String> {
    let log = args.work.join(format!("{tag}.server.log"));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    match server {
        "manifold" => {
            let node = ManifoldNode {
                env: env.to_vec(),
                ..ManifoldNode::single()
            };
            start_manifold(args, &node, log, log_file)
        }
        "janus" => {
            let conf = janus_config(&args.work)?;
            let child = Command::new(&args.janus)
                .arg("-F")
                .arg(&conf)
                .arg("-C")
                .arg(conf.join("janus.jcfg"))
                .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
                .stderr(log_file)
                .spawn()
                .map_err(|e| format!("cannot start janus: {e}"))?;
            let server = Server {
                child,
                loadgen_args: vec![
                    "--target".into(),
                    "janus".into(),
                    "--janus-url".into(),
                    "http://127.0.0.1:8088/janus".into(),
                ],
                log,
                metrics_addr: None,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if http_ok("127.0.0.1:8088", "/janus/info") {
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(format!(
                "janus did not start (see {})",
                server.log.display()
            ))
        }
        other => Err(format!("unknown server {other}")),
    }
}

/// `media.room_spread_after` of the benchmark's servers unless `--room-spread-after` says.
pub const DEFAULT_ROOM_SPREAD_AFTER: usize = 32;

/// Where one `manifold serve` listens, and what it gets besides the benchmark's settings.
pub struct ManifoldNode {
    /// HTTP address, `127.0.0.1:PORT`.
    pub listen: String,
    /// First UDP port (worker i uses `port_base + i`).
    pub port_base: u16,
    /// More environment (a cluster node's id and bus, for instance).
    pub env: Vec<(String, String)>,
}

impl ManifoldNode {
    /// The one server of scenarios a–d.
    pub fn single() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            port_base: 40000,
            env: Vec::new(),
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// `manifold serve` at `node`, its stderr to `log`, returned once it says it listens.
pub fn start_manifold_node(args: &Args, node: &ManifoldNode, tag: &str) -> Result<Server, String> {
    let log = args.work.join(format!("{tag}.server.log"));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    start_manifold(args, node, log, log_file)
}

fn start_manifold(
    args: &Args,
    node: &ManifoldNode,
    log: PathBuf,
    log_file: std::fs::File,
) -> Result<Server, String> {
    let workers = args.manifold_workers.to_string();
    let spread = args
        .room_spread_after
        .unwrap_or(DEFAULT_ROOM_SPREAD_AFTER)
        .to_string();
    let mut child = Command::new(&args.manifold)
        .args([
            "serve",
            "--listen",
            &node.listen,
            "--media-bind",
            "127.0.0.1",
            "--announce-ip",
            "127.0.0.1",
            "--port-base",
            &node.port_base.to_string(),
            "--workers",
            &workers,
            "--log-level",
            "warn",
        ])
        .env_remove("RUST_LOG")
        .env("MANIFOLD_MEDIA__ROOM_SPREAD_AFTER", &spread)
        // The default room limit (100 participants) would refuse scenario (a)'s
        // larger steps; Janus has no such limit on subscribers.
        .env("MANIFOLD_LIMITS__MAX_PARTICIPANTS_PER_ROOM", "100000")
        // Every client of the load generator comes from one address: the per-address
        // session rate and the session cap are for real deployments, not this.
        .env("MANIFOLD_LIMITS__SESSION_RATE_PER_IP", "100000")
        .env("MANIFOLD_LIMITS__SESSION_BURST_PER_IP", "100000")
        .env("MANIFOLD_LIMITS__MAX_SESSIONS", "100000")
        .envs(node.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start manifold: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("manifold: listening on ") {
                let _ = tx.send(());
            }
        }
    });
    let server = Server {
        child,
        loadgen_args: vec![
            "--target".into(),
            "whip-whep".into(),
            "--server".into(),
            node.url(),
        ],
        log,
        metrics_addr: Some(node.listen.clone()),
    };
    rx.recv_timeout(Duration::from_secs(20))
        .map_err(|_| format!("manifold did not start (see {})", server.log.display()))?;
    Ok(server)
}

/// Janus configuration for the benchmark: the VideoRoom plugin and the HTTP transport
/// only, warnings-level logging (as Manifold's), host candidates on 127.0.0.x only.
fn janus_config(work: &Path) -> Result<PathBuf, String> {
    let dir = work.join("janus-conf");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lib = [
        "/usr/lib/x86_64-linux-gnu/janus",
        "/usr/lib/aarch64-linux-gnu/janus",
        "/usr/lib/janus",
    ]
    .into_iter()
    .find(|p| Path::new(p).join("plugins").exists())
    .ok_or("no Janus plugins folder (is the janus package installed?)")?;
    let disable_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let disable_transports = ["mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    let main = format!(
        r#"general: {{
	configs_folder = "{conf}"
	plugins_folder = "{lib}/plugins"
	transports_folder = "{lib}/transports"
	events_folder = "{lib}/events"
	loggers_folder = "{lib}/loggers"
	interface = "127.0.0.2"
	debug_level = 3
	admin_secret = "janusoverlord"
}}
certificates: {{
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "127.0.0."
}}
plugins: {{
	disable = "{disable_plugins}"
}}
transports: {{
	disable = "{disable_transports}"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
}}
"#,
        conf = dir.display()
    );
    let http = r#"general: {
	json = "compact"
	base_path = "/janus"
	http = true
	port = 8088
	https = false
}
admin: {
	admin_http = false
}
cors: {
}
"#;
    let videoroom = "general: {\n}\n";
    for (name, text) in [
        ("janus.jcfg", main.as_str()),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.videoroom.jcfg", videoroom),
    ] {
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// A GET that answers 200, over a bare TCP socket (no HTTP client needed for one probe).
fn http_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("a literal socket address"),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    s.read(&mut buf).is_ok_and(|n| {
        buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
    })
}

/// The body of a GET that answers 200, over a bare TCP socket (HTTP/1.0: the server closes
/// the connection after the response, so the body is everything after the headers).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_owned())
}
