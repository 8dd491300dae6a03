//! Start-up errors surface from `MediaWorkers::start`, before any thread runs.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use common::{loopback, sink};
use manifold_io::{IoError, MediaConfig, MediaWorkers};

#[test]
fn an_unspecified_bind_ip_needs_announce_ips() {
    let (sink, _rx) = sink();
    let config = MediaConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..loopback(1)
    };
    match MediaWorkers::start(config, sink) {
        Err(IoError::Config(msg)) => assert!(msg.contains("announce_ips"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn an_unspecified_bind_ip_with_announce_ips_starts() {
    let (sink, _rx) = sink();
    let announced = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let config = MediaConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        announce_ips: vec![announced, IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..loopback(1)
    };
    let workers = MediaWorkers::start(config, sink).expect("workers start");
    let h = &workers.handles()[0];
    let port = h.local_addr().port();
    assert_eq!(
        h.candidates(),
        &[(announced, port).into(), (Ipv4Addr::LOCALHOST, port).into()]
    );
    workers.shutdown();
}

#[test]
fn a_port_in_use_is_a_bind_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (sink, _rx) = sink();
    let config = MediaConfig {
        port_base: port,
        ..loopback(1)
    };
    match MediaWorkers::start(config, sink) {
        Err(IoError::Bind { addr, .. }) => assert_eq!(addr.port(), port),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn a_port_in_use_by_a_later_worker_fails_the_whole_start() {
    // Find two consecutive free ports, then take the second.
    let (port, _taken) = (0..50)
        .find_map(|_| {
            let first = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = first.local_addr().ok()?.port();
            let second = UdpSocket::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            drop(first);
            Some((port, second))
        })
        .expect("two consecutive free ports");
    let (sink, _rx) = sink();
    let config = MediaConfig {
        port_base: port,
        ..loopback(2)
    };
    match MediaWorkers::start(config, sink) {
        Err(IoError::Bind { addr, .. }) => assert_eq!(addr.port(), port + 1),
        // Someone else took the first port in between: still a bind error, still no start.
        other => panic!("expected a bind error, got {other:?}"),
    }
}
