//! What the media workers are configured with, and its validation into a plan of sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use manifold_core::ShardConfig;

use crate::IoError;

/// Default capacity of each worker's command channel.
pub const DEFAULT_COMMAND_QUEUE: usize = 1024;

/// Default for [`MediaConfig::tcp_max_connections`].
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 256;

/// Most ICE-TCP connections one worker may be configured to hold: each holds a 4 KiB read
/// buffer and up to 64 KiB queued for writing, and a file descriptor.
pub const MAX_TCP_CONNECTIONS: usize = 16_384;

/// Most media workers one node runs: a room's workers are a 64-bit set whose top bit is the
/// bridge to other nodes (relays between
/// workers, `manifold_core`'s `relay.rs`).
pub const MAX_WORKERS: usize = manifold_core::BRIDGE as usize;

/// How many media workers to run and where their sockets listen.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Number of workers; 0 means one per core (`std::thread::available_parallelism`).
    pub workers: usize,
    /// The local address every worker socket binds to, e.g. `127.0.0.1`.
    pub bind_ip: IpAddr,
    /// Worker `i` binds `port_base + i`; 0 lets the operating system choose ephemeral
    /// ports.
    pub port_base: u16,
    /// The addresses advertised in ICE candidates (with each worker's port). Empty means
    /// `[bind_ip]`, which is then an error if `bind_ip` is unspecified (`0.0.0.0`, `::`).
    pub announce_ips: Vec<IpAddr>,
    /// Limits and timings of each worker's shard.
    pub shard: ShardConfig,
    /// Capacity of each worker's bounded command channel (at least 1).
    pub command_queue: usize,
    /// Accept ICE over TCP (RFC 6544, passive candidates, RFC 4571 framing): every worker
    /// also listens on TCP at its UDP socket's port. The `RtcFactory` must announce the
    /// candidates (`with_ice_tcp`). Off by default.
    pub ice_tcp: bool,
    /// ICE-TCP connections one worker holds at most (1 to [`MAX_TCP_CONNECTIONS`]); past
    /// it new ones are closed at once and counted as refused.
    pub tcp_max_connections: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: 0,
            announce_ips: Vec::new(),
            shard: ShardConfig::default(),
            command_queue: DEFAULT_COMMAND_QUEUE,
            ice_tcp: false,
            tcp_max_connections: DEFAULT_TCP_MAX_CONNECTIONS,
        }
    }
}

/// A validated configuration: the address each worker binds and the IPs it announces.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub binds: Vec<SocketAddr>,
    pub announce_ips: Vec<IpAddr>,
}

impl MediaConfig {
    pub(crate) fn plan(&self) -> Result<Plan, IoError> {
        if self.command_queue == 0 {
            return Err(IoError::Config(
                "command_queue must be at least 1: a rendezvous channel would reject every \
                 command while the worker is busy"
                    .into(),
            ));
        }
        if self.ice_tcp && !(1..=MAX_TCP_CONNECTIONS).contains(&self.tcp_max_connections) {
            return Err(IoError::Config(format!(
                "tcp_max_connections must be 1 to {MAX_TCP_CONNECTIONS}, got {}",
                self.tcp_max_connections
            )));
        }
        let workers = match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        // A room's workers are a 64-bit set (relays between workers).
        if workers > MAX_WORKERS {
            return Err(IoError::Config(format!(
                "{workers} workers requested, at most {MAX_WORKERS} are supported"
            )));
        }
        let announce_ips = if self.announce_ips.is_empty() {
            if self.bind_ip.is_unspecified() {
                return Err(IoError::Config(format!(
                    "bind_ip {} is unspecified: set announce_ips to the address(es) clients \
                     can reach",
                    self.bind_ip
                )));
            }
            vec![self.bind_ip]
        } else {
            self.announce_ips.clone()
        };
        if let Some(ip) = announce_ips.iter().find(|ip| ip.is_unspecified()) {
            return Err(IoError::Config(format!(
                "announce ip {ip} is unspecified: clients cannot reach it"
            )));
        }
        let binds = (0..workers)
            .map(|i| {
                let port = match self.port_base {
                    0 => Some(0),
                    base => u16::try_from(i)
                        .ok()
                        .and_then(|i| base.checked_add(i))
                        .filter(|p| *p != 0),
                };
                port.map(|p| SocketAddr::new(self.bind_ip, p))
                    .ok_or_else(|| {
                        IoError::Config(format!(
                            "port_base {} + {workers} workers runs past port 65535",
                            self.port_base
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            binds,
            announce_ips,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn config(workers: usize) -> MediaConfig {
        MediaConfig {
            workers,
            ..MediaConfig::default()
        }
    }

    #[test]
    fn defaults_announce_the_bind_ip() {
        let plan = config(2).plan().unwrap();
        assert_eq!(plan.announce_ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(plan.binds.len(), 2);
        assert!(plan.binds.iter().all(|a| a.port() == 0));
    }

    #[test]
    fn zero_workers_means_one_per_core() {
        assert!(!config(0).plan().unwrap().binds.is_empty());
    }

    #[test]
    fn consecutive_ports_from_the_base() {
        let c = MediaConfig {
            port_base: 40000,
            ..config(3)
        };
        let ports: Vec<u16> = c.plan().unwrap().binds.iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![40000, 40001, 40002]);
    }

    #[test]
    fn ports_past_65535_are_rejected() {
        let c = MediaConfig {
            port_base: 65535,
            ..config(2)
        };
        assert!(matches!(c.plan(), Err(IoError::Config(_))));
    }

    #[test]
    fn unspecified_addresses_need_announce_ips() {
        for ip in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            let c = MediaConfig {
                bind_ip: ip,
                ..config(1)
            };
            assert!(matches!(c.plan(), Err(IoError::Config(_))), "{ip}");
            let announced = MediaConfig {
                announce_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
                ..c.clone()
            };
            assert_eq!(
                announced.plan().unwrap().announce_ips,
                vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]
            );
            let unspecified_announce = MediaConfig {
                announce_ips: vec![ip],
                ..c
            };
            assert!(matches!(
                unspecified_announce.plan(),
                Err(IoError::Config(_))
            ));
        }
    }

    #[test]
    fn ice_tcp_connection_caps_are_bounded() {
        for bad in [0, MAX_TCP_CONNECTIONS + 1] {
            let c = MediaConfig {
                ice_tcp: true,
                tcp_max_connections: bad,
                ..config(1)
            };
            assert!(matches!(c.plan(), Err(IoError::Config(_))), "{bad}");
        }
        let c = MediaConfig {
            ice_tcp: true,
            ..config(1)
        };
        assert!(c.plan().is_ok());
    }

    #[test]
    fn an_empty_command_queue_is_rejected() {
        let c = MediaConfig {
            command_queue: 0,
            ..config(1)
        };
        assert!(matches!(c.plan(), Err(IoError::Config(_))));
    }
}
