//! Built-in TLS against the real binary: HTTPS and WSS trusting a test CA, the plain-HTTP
//! client on the TLS port, certificates swapped on SIGHUP (and a bad new pair refused),
//! and files that stop the server at start. Certificates are made here with rcgen.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{Server, rt, wait_until};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate the CA issued, as PEM files and DER.
struct Issued {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Manifold test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.as_ref().der().clone()
    }

    /// A certificate for `localhost` and 127.0.0.1.
    fn issue(&self) -> Issued {
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: pem("CERTIFICATE", cert.der()),
            key_pem: pem("PRIVATE KEY", &key.serialize_der()),
            cert_der: cert.der().clone(),
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("manifold-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `issued` as `cert.pem` and `key.pem` in `dir`.
fn install(dir: &Path, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

fn start_tls(cert: &Path, key: &Path) -> Server {
    Server::start(
        &[],
        &[
            ("MANIFOLD_HTTP__TLS_CERT", cert.to_str().unwrap()),
            ("MANIFOLD_HTTP__TLS_KEY", key.to_str().unwrap()),
        ],
    )
}

fn port(server: &Server) -> u16 {
    let rest = server
        .base
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("not an https base: {}", server.base));
    rest.parse().unwrap()
}

fn connector(ca: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What one HTTPS request returned.
struct Fetched {
    status: u16,
    body: String,
    server_cert: CertificateDer<'static>,
}

/// GET `path` over HTTPS trusting only `ca`; the handshake's error if it fails.
async fn https_get(port: u16, path: &str, ca: &CertificateDer<'static>) -> Result<Fetched, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(ca)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server closes after the response (connection: close); rustls reports a close
    // without close_notify as an error, after the bytes it carried.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(Fetched {
        status,
        body,
        server_cert,
    })
}

/// `/stats` over HTTPS (dev mode: no token needed).
async fn stats(port: u16, ca: &CertificateDer<'static>) -> serde_json::Value {
    let f = https_get(port, "/stats", ca).await.unwrap();
    assert_eq!(f.status, 200, "{}", f.body);
    // Bodies of unknown length come chunked: the JSON is the line between chunk sizes.
    let json = f
        .body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {:?}", f.body));
    serde_json::from_str(json).unwrap()
}

#[test]
fn https_and_wss_work_for_a_client_trusting_the_ca_and_plain_http_is_told() {
    let ca = TestCa::new();
    let issued = ca.issue();
    let dir = temp_dir("serve");
    let (cert, key) = install(&dir, &issued);
    let server = start_tls(&cert, &key);
    let port = port(&server);
    let rt = rt();
    rt.block_on(async {
        let got = https_get(port, "/healthz", &ca.der()).await.unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.server_cert, issued.cert_der);

        // The room protocol's WebSocket, upgraded over TLS.
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = connector(&ca.der())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (ws, response) = tokio_tungstenite::client_async("wss://localhost/rtc", tls)
            .await
            .expect("wss upgrade");
        assert_eq!(response.status(), 101);
        drop(ws);

        // A client that does not trust the CA refuses the server (and the server counts
        // a failed handshake).
        let stranger = TestCa::new();
        let e = https_get(port, "/healthz", &stranger.der())
            .await
            .err()
            .expect("a client not trusting the CA must fail");
        assert!(e.contains("certificate"), "{e}");
    });

    // Plain HTTP on the TLS port: a plain-text 400 that says what to do.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("this port speaks HTTPS"), "{answer}");

    let s = rt.block_on(stats(port, &ca.der()));
    assert_eq!(s["http"]["tls_plain_http"], 1, "{s}");
    // The stranger's refusal reaches the server as an alert, maybe after the stats above.
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.block_on(stats(port, &ca.der()))["http"]["tls_handshake_failed"] == 1
        }),
        "the refused handshake was not counted"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sighup_swaps_the_certificate_and_a_bad_new_pair_keeps_the_old_one() {
    let ca = TestCa::new();
    let first = ca.issue();
    let dir = temp_dir("reload");
    let (cert, key) = install(&dir, &first);
    let server = start_tls(&cert, &key);
    let port = port(&server);
    let pid = server.pid().to_string();
    let hangup = || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };
    let rt = rt();
    let served = |rt: &tokio::runtime::Runtime| {
        rt.block_on(https_get(port, "/healthz", &ca.der()))
            .unwrap()
            .server_cert
    };
    assert_eq!(served(&rt), first.cert_der);

    let second = ca.issue();
    install(&dir, &second);
    hangup();
    assert!(
        wait_until(Duration::from_secs(10), || served(&rt) == second.cert_der),
        "the certificate did not change after SIGHUP"
    );

    // A key that does not match the new certificate: refused, the second pair serves on.
    let third = ca.issue();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    hangup();
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.block_on(stats(port, &ca.der()))["http"]["tls"]["reload_failures"] == 1
        }),
        "the bad pair was not refused"
    );
    assert_eq!(served(&rt), second.cert_der);
    let s = rt.block_on(stats(port, &ca.der()));
    assert_eq!(s["http"]["tls"]["reloads"], 1, "{s}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Run `manifold serve` with `env` until it exits on its own; its exit code and stderr.
fn refused_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manifold"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--port-base", "0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "the server started"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_certificate_or_key_files_stop_the_server_at_start() {
    let ca = TestCa::new();
    let issued = ca.issue();
    let dir = temp_dir("start");
    let (cert, key) = install(&dir, &issued);
    let cert = cert.to_str().unwrap();
    let key = key.to_str().unwrap();
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    // A directory where the key should be: opens, but cannot be read.
    let unreadable = dir.to_str().unwrap();
    let other = ca.issue();
    let wrong_key = dir.join("other-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "this is not a key\n").unwrap();
    for (cert_path, key_path, want) in [
        (missing, key, format!("cannot read http.tls_cert {missing}")),
        (
            cert,
            unreadable,
            format!("cannot read http.tls_key {unreadable}"),
        ),
        (
            cert,
            not_pem.to_str().unwrap(),
            "holds no PRIVATE KEY section".to_owned(),
        ),
        (
            cert,
            wrong_key.to_str().unwrap(),
            "is not the private key of the certificate".to_owned(),
        ),
        (cert, "", "must be set together".to_owned()),
    ] {
        let (code, stderr) = refused_start(&[
            ("MANIFOLD_HTTP__TLS_CERT", cert_path),
            ("MANIFOLD_HTTP__TLS_KEY", key_path),
        ]);
        assert_eq!(code, Some(2), "{cert_path} {key_path}: {stderr}");
        assert!(stderr.contains(&want), "want {want:?} in {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
