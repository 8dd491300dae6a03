//! This node's place in the cluster: its id and address, the registry, directory and bus it
//! uses (in memory when it runs alone, the default; Redis and NATS when `cluster.redis_url`
//! and `cluster.nats_url` are set), and the heartbeat that keeps it listed. `/admin/nodes`
//! shows the registry.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use manifold_cluster::memory::MemoryCluster;
use manifold_cluster::nats::{NatsBus, NatsOptions};
use manifold_cluster::redis::{self, RedisCluster};
use manifold_cluster::{
    Bus, ClusterError, NodeId, NodeInfo, NodeRegistry, RoomDirectory, redact_url,
};

use crate::state::AppState;

/// What the control plane holds of the cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    /// This node's id.
    pub node: NodeId,
    /// Where clients reach this node: configured, or set once the listener is bound.
    pub advertise_url: Arc<OnceLock<String>>,
    /// Live nodes.
    pub registry: Arc<dyn NodeRegistry>,
    /// Rooms across nodes.
    pub directory: Arc<dyn RoomDirectory>,
    /// Messages between nodes.
    pub bus: Arc<dyn Bus>,
    /// How often this node refreshes its registration (well inside the registry's TTL).
    pub heartbeat: Duration,
    /// This node's side of rooms across nodes (`federation.rs`).
    pub federation: Arc<crate::federation::Federation>,
    /// The other live nodes as the last heartbeat found them: what `joined` offers as
    /// alternatives (`placement.rs`) without a registry round trip per join.
    pub peers: Arc<Mutex<Vec<NodeInfo>>>,
}

impl ClusterHandle {
    /// A node alone: everything in memory.
    pub fn alone(node: NodeId, advertise_url: Option<String>, heartbeat: Duration) -> Self {
        let memory = MemoryCluster::new(heartbeat * 3);
        let url = Arc::new(OnceLock::new());
        if let Some(u) = advertise_url {
            let _ = url.set(u);
        }
        ClusterHandle {
            node,
            advertise_url: url,
            registry: Arc::new(memory.clone()),
            directory: Arc::new(memory.clone()),
            bus: Arc::new(memory),
            heartbeat,
            federation: crate::federation::new(),
            peers: Arc::default(),
        }
    }

    /// A node of a cluster: the registry and directory in the Redis at `redis_url`, the bus
    /// on the NATS at `nats_url`; either unset (or empty) is kept in this process, so with
    /// neither the node is [alone](Self::alone). Fails when a server does not answer.
    pub async fn connect(
        node: NodeId,
        advertise_url: Option<String>,
        heartbeat: Duration,
        redis_url: Option<&str>,
        nats_url: Option<&str>,
    ) -> Result<Self, ClusterError> {
        let mut handle = Self::alone(node, advertise_url, heartbeat);
        let redis_url = redis_url.filter(|u| !u.is_empty());
        let nats_url = nats_url.filter(|u| !u.is_empty());
        if let Some(url) = redis_url {
            let ttl = handle.registry.ttl();
            let redis = Arc::new(RedisCluster::connect(url, ttl, redis::DEFAULT_TIMEOUT).await?);
            tracing::info!(server = %redact_url(url), "cluster registry and directory in Redis");
            handle.registry = redis.clone();
            handle.directory = redis;
        }
        if let Some(url) = nats_url {
            handle.bus = Arc::new(NatsBus::connect(url, NatsOptions::default()).await?);
            tracing::info!(server = %redact_url(url), "cluster bus on NATS");
        }
        if redis_url.is_some() != nats_url.is_some() {
            tracing::warn!(
                "only one of cluster.redis_url and cluster.nats_url is set: the other stays \
                 within this node"
            );
        }
        Ok(handle)
    }

    /// What this node announces now.
    pub fn info(&self, state: &AppState) -> NodeInfo {
        NodeInfo {
            id: self.node.clone(),
            advertise_url: self.advertise_url.get().cloned().unwrap_or_default(),
            participants: u32::try_from(state.session_count()).unwrap_or(u32::MAX),
            load: crate::placement::load(state),
            draining: state.is_draining(),
        }
    }
}

/// Register this node, failing when a live node holds its id already.
pub async fn register(state: &AppState) -> Result<(), ClusterError> {
    let cluster = &state.cluster;
    cluster.registry.register(cluster.info(state)).await
}

/// Leave the registry at once (graceful shutdown; stop [`heartbeat`] first, or it registers
/// again), and the directory: members still listed on this node are forgotten (the other
/// nodes tell their rooms at their next look at the live nodes).
pub async fn deregister(state: &AppState) {
    let cluster = &state.cluster;
    if let Err(e) = cluster.registry.deregister(cluster.node.clone()).await {
        tracing::warn!(node = %cluster.node, error = %e, "cannot deregister");
    }
    if let Err(e) = cluster.directory.forget_node(cluster.node.clone()).await {
        tracing::warn!(node = %cluster.node, error = %e, "cannot leave the room directory");
    }
}

/// Keep this node registered until the process ends; a lapsed registration (a stall longer
/// than the TTL, the registry restarted) is made again.
pub async fn heartbeat(state: AppState) {
    let cluster = state.cluster.clone();
    let mut tick = tokio::time::interval(cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let info = cluster.info(&state);
        match cluster.registry.heartbeat(info.clone()).await {
            Ok(()) => {}
            Err(ClusterError::Conflict(_)) => match cluster.registry.register(info).await {
                // Other nodes may have forgotten this one's members meanwhile, or the
                // directory lost them: they are written and announced again.
                Ok(()) => state.republish_members(),
                Err(e) => tracing::warn!(node = %cluster.node, error = %e, "cannot register again"),
            },
            Err(e) => tracing::warn!(node = %cluster.node, error = %e, "heartbeat failed"),
        }
        refresh_peers(&cluster).await;
    }
}

/// Read the live nodes other than this one into [`ClusterHandle::peers`]; on failure the
/// last list stays (a client tries each alternative in turn, a dead one costs it little).
async fn refresh_peers(cluster: &ClusterHandle) {
    match cluster.registry.live().await {
        Ok(nodes) => {
            let peers: Vec<NodeInfo> = nodes.into_iter().filter(|n| n.id != cluster.node).collect();
            *cluster.peers.lock().unwrap_or_else(|e| e.into_inner()) = peers;
        }
        Err(e) => tracing::debug!(error = %e, "cannot list the other nodes"),
    }
}
