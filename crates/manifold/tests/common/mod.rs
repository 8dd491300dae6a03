//! Running the real `manifold` binary for integration tests: start it on ephemeral ports,
//! find its address from its first line of output, kill it when the test ends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Server {
    /// Start `manifold serve` with `extra` arguments and `env`.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_with_file_limit(None, extra, env)
    }

    /// [`Server::start`], with the server's open-file limit (`ulimit -n`) set to
    /// `open_files`.
    pub fn start_with_file_limit(
        open_files: Option<u64>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let bin = env!("CARGO_BIN_EXE_manifold");
        let mut cmd = match open_files {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
        };
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--port-base",
            "0",
            "--workers",
            "2",
            "--log-level",
            "warn",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start manifold");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("manifold: listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("manifold did not report its address within 30 s");
            }
        };
        Server { child, base }
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Ask the server to stop, as an operator's SIGTERM does (it drains first).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// GET /stats as JSON.
    pub fn stats(&self, token: Option<&str>) -> serde_json::Value {
        let client = reqwest::blocking::Client::new();
        let mut req = client.get(self.url("/stats"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().expect("GET /stats").json().expect("stats JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The room protocol's WebSocket URL on `server`.
pub fn ws_url(server: &Server) -> String {
    format!("{}/rtc", server.base.replacen("http", "ws", 1))
}

/// A two-thread tokio runtime for a test's clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Poll `f` every 100 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
/// An HS256 token of `key` for `sub` in `room` (every room with `None`) with the grants
/// named in `grants` ("publish", "subscribe", "admin"), valid for ten minutes.
pub fn token(key: &str, sub: &str, room: Option<&str>, grants: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut g = serde_json::Map::new();
    for name in grants {
        g.insert((*name).into(), serde_json::Value::Bool(true));
    }
    let mut claims = serde_json::json!({"sub": sub, "grants": g, "iat": now, "exp": now + 600});
    if let Some(r) = room {
        claims["room"] = serde_json::json!(r);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// An offer from a str0m client configured by `configure`, with a host candidate and one
/// m-line per `(kind, direction)`.
pub fn str0m_offer(
    lines: &[(str0m::media::MediaKind, str0m::media::Direction)],
    configure: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig,
) -> String {
    let mut rtc = configure(str0m::Rtc::builder()).build(std::time::Instant::now());
    let c = str0m::Candidate::host("127.0.0.1:9999".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(c);
    let mut change = rtc.sdp_api();
    for (kind, direction) in lines {
        change.add_media(*kind, *direction, None, None, None);
    }
    change.apply().unwrap().0.to_sdp_string()
}

#[path = "../../../manifold-core/tests/common/capture.rs"]
pub mod capture;
pub mod room;
