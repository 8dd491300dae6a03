//! Connection floods against the real server at a low open-file limit (512): idle
//! connections, slowloris clients trickling their headers, unjoined WebSockets. Throughout,
//! `/healthz` and a legitimate WHIP join from another address keep answering, the server
//! never runs out of descriptors, and every flood is cut back by its bound.
//!
//! The floods come from other loopback addresses (127.0.0.2-4) so that the per-address cap
//! applies to them and not to the legitimate client on 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Server;
use futures_util::StreamExt;
use manifold_loadgen::{MediaSpec, join};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .ok()?
        .ok()
}

/// Whether the server has closed `s` (EOF or reset), reading what it sent meanwhile.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `/healthz` and a WHIP publish from 127.0.0.1 both succeed.
async fn legitimate_client_is_served(server: &Server, http: &reqwest::Client) {
    let r = http
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/healthz answers during the flood");
    let status = r.status().as_u16();
    assert_eq!(
        status,
        200,
        "/healthz: {}",
        r.text().await.unwrap_or_default()
    );
    let joined = join(
        http,
        &server.url("/whip/legit"),
        None,
        LOCAL,
        Some(MediaSpec {
            audio: true,
            video: false,
        }),
    )
    .await
    .expect("a legitimate publisher joins during the flood");
    let r = http.delete(&joined.resource).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn addr(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address")
}

async fn stats(server: &Server) -> Value {
    reqwest::get(server.url("/stats"))
        .await
        .expect("/stats answers")
        .json()
        .await
        .expect("stats JSON")
}

#[test]
fn idle_and_slowloris_floods_leave_the_server_answering() {
    let server = Server::start_with_file_limit(
        Some(512),
        &[],
        &[("MANIFOLD_HTTP__HEADER_READ_TIMEOUT_SECS", "5")],
    );
    let target = addr(&server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let http = reqwest::Client::new();
        let started = Instant::now();
        // 300 idle connections from one address (its share is 256) and 250 slowloris
        // clients from another, sending a header byte every 300 ms: more than the
        // connections (about 390) the open-file limit leaves room for.
        let mut idle = Vec::new();
        for _ in 0..300 {
            if let Some(s) = connect_from(Ipv4Addr::new(127, 0, 0, 2), target).await {
                idle.push(s);
            }
        }
        let mut slow = Vec::new();
        for _ in 0..250 {
            if let Some(mut s) = connect_from(Ipv4Addr::new(127, 0, 0, 3), target).await {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                slow.push(s);
            }
        }
        // At the cap, the server evicts the oldest connection carrying no request to make
        // room for a newcomer.
        legitimate_client_is_served(&server, &http).await;
        let at_cap = stats(&server).await;
        let mut refused = 0;
        for s in &mut idle {
            if closed_by_server(s).await {
                refused += 1;
            }
        }
        assert!(
            refused >= 300 - 256,
            "{refused} of 300 idle connections refused or evicted"
        );
        // The header-read timeout ends what never completes a request, idle or trickling.
        let mut open: Vec<TcpStream> = slow.into_iter().chain(idle).collect();
        while !open.is_empty() && started.elapsed() < Duration::from_secs(40) {
            let mut still = Vec::new();
            for mut s in open {
                let gone = s.write_all(b"X").await.is_err() || closed_by_server(&mut s).await;
                if !gone {
                    still.push(s);
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            open.is_empty(),
            "{} flood connections outlived the header-read timeout",
            open.len()
        );
        legitimate_client_is_served(&server, &http).await;
        at_cap
    });
    let http = &s["http"];
    assert_eq!(http["accept_errors"], 0, "never out of descriptors: {s}");
    assert!(http["refused_per_ip"].as_u64().unwrap() > 0, "{s}");
    assert!(
        http["evicted"].as_u64().unwrap() > 0,
        "the total cap was reached and idle connections made room: {s}"
    );
}

#[test]
fn unjoined_websockets_are_bounded_and_timed_out_despite_pings() {
    let server = Server::start_with_file_limit(
        Some(512),
        &[],
        &[
            ("MANIFOLD_LIMITS__MAX_UNJOINED_SOCKETS", "50"),
            ("MANIFOLD_LIMITS__JOIN_TIMEOUT_SECS", "2"),
        ],
    );
    let url = format!("{}/rtc", server.base.replacen("http", "ws", 1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sockets = Vec::new();
        let mut refused = 0;
        for _ in 0..80 {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((ws, _)) => sockets.push(ws),
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    assert_eq!(r.status().as_u16(), 503);
                    refused += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(sockets.len(), 50, "the bound holds");
        assert_eq!(refused, 30);
        let s = stats(&server).await;
        assert_eq!(s["http"]["unjoined_sockets"], 50, "{s}");
        // Ping them all; they are closed on the join deadline anyway.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut open = sockets.len();
        while open > 0 && Instant::now() < deadline {
            open = 0;
            for ws in &mut sockets {
                use futures_util::SinkExt;
                let ping = tokio_tungstenite::tungstenite::Message::Text(
                    r#"{"v":1,"type":"ping","ts":1}"#.into(),
                );
                if ws.send(ping).await.is_err() {
                    continue;
                }
                let ended = loop {
                    match tokio::time::timeout(Duration::from_millis(5), ws.next()).await {
                        Err(_) => break false,
                        Ok(None) | Ok(Some(Err(_))) => break true,
                        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => {
                            break true;
                        }
                        Ok(Some(Ok(_))) => {}
                    }
                };
                if !ended {
                    open += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(open, 0, "unjoined sockets outlived their join deadline");
        // The places are free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats(&server).await["http"]["unjoined_sockets"] != 0 {
            assert!(Instant::now() < deadline, "unjoined places are given back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("a new socket is accepted");
        drop(ws);
    });
}
