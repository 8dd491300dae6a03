//! Real servers for the integration tests: a `redis-server` or `nats-server` process of the
//! test's own on a free 127.0.0.1 port, ready when returned, killed on drop. A missing
//! binary fails the test saying which Debian package to install (`scripts/test.sh`
//! installs both).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Redis,
    Nats,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        }
    }

    fn args(self, port: u16) -> Vec<String> {
        let port = port.to_string();
        match self {
            // Nothing on disk: a restart starts empty, as a lost Redis would.
            Kind::Redis => [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ]
            .map(String::from)
            .to_vec(),
            Kind::Nats => ["--addr", "127.0.0.1", "--port", &port]
                .map(String::from)
                .to_vec(),
        }
    }

    /// Whether the server on `port` answers as it should.
    fn answers(self, port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let (probe, want): (&[u8], &[u8]) = match self {
            Kind::Redis => (b"PING\r\n", b"+PONG"),
            // The server speaks first.
            Kind::Nats => (b"", b"INFO"),
        };
        if s.write_all(probe).is_err() {
            return false;
        }
        let mut buf = [0u8; 5];
        let mut got = 0;
        while got < want.len() {
            match s.read(&mut buf[got..want.len()]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
        }
        &buf[..want.len()] == want
    }
}

/// A server process of this test's.
pub struct Server {
    kind: Kind,
    binary: PathBuf,
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// A `redis-server` on a free port, answering.
    pub fn redis() -> Self {
        Self::start(Kind::Redis)
    }

    /// A `nats-server` on a free port, answering.
    pub fn nats() -> Self {
        Self::start(Kind::Nats)
    }

    fn start(kind: Kind) -> Self {
        let binary = find(kind.binary());
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Server {
                kind,
                binary: binary.clone(),
                child: None,
                port,
            };
            if server.start_again_within(Duration::from_secs(10)) {
                return server;
            }
        }
        panic!(
            "{} did not start on a free port in five tries",
            kind.binary()
        );
    }

    /// Its URL.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Kill it (as a crash would: no shutdown of its own).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn start_again(&mut self) {
        assert!(
            self.start_again_within(Duration::from_secs(20)),
            "{} did not start again on port {}",
            self.kind.binary(),
            self.port
        );
    }

    fn start_again_within(&mut self, limit: Duration) -> bool {
        self.kill();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let child = Command::new(&self.binary)
                .args(self.kind.args(self.port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => panic!("cannot run {}: {e}", self.binary.display()),
            };
            // Up to 5 s to answer; one that exits (its port taken) is started again.
            let ready_by = Instant::now() + Duration::from_secs(5);
            while Instant::now() < ready_by {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if self.kind.answers(self.port) {
                    self.child = Some(child);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// `name` on the PATH or where Debian puts it (`nats-server` is in /usr/sbin).
fn find(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "{name} is not installed: these tests need a real server. Install the Debian package \
         `{name}` (apt-get install {name}); scripts/test.sh installs it."
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
