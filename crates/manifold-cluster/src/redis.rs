//! The registry and the directory in Redis, shared by every node of a cluster: a node's
//! registration is a key that Redis itself expires, and every write is one Lua script, so
//! it is atomic. The keys (`manifold:…`) are listed in `docs/cluster.md`.
//!
//! One standalone Redis (or a primary with replicas), not Redis Cluster: the scripts reach
//! keys derived from stored data (a dead node's rooms), which Cluster forbids. The
//! connection manager reconnects by itself; every operation gives up after a timeout
//! ([`DEFAULT_TIMEOUT`]) with [`ClusterError::Unavailable`], so a dead Redis never hangs the
//! control plane. After a Redis restart (its data gone) a node's heartbeat fails with
//! [`ClusterError::Conflict`] and the control plane registers it again.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, RedisResult, Script};
use manifold_api::{ParticipantId, RoomName};
use serde::{Deserialize, Serialize};

use crate::directory::sort_forgotten;
use crate::{
    BoxFuture, ClusterError, MAX_LISTED_ROOMS, MAX_RECORD_BYTES, MemberRecord, NodeId, NodeInfo,
    NodeRegistry, RoomDirectory, RoomSummary, record_json, redact_url,
};

/// How long one operation may take, connecting included, before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// `manifold:node:{id}` (a node's registration) and `manifold:node:{id}:rooms`.
const NODE_PREFIX: &str = "manifold:node:";
/// `manifold:room:{room}:members`, `:order`, `:nodes`.
const ROOM_PREFIX: &str = "manifold:room:";
/// Ids of nodes that may be registered (pruned as their keys expire).
const NODES: &str = "manifold:nodes";
/// Names of rooms that may have members (pruned by `rooms` as they empty).
const ROOMS: &str = "manifold:rooms";
/// A counter giving each member joining a room its place in the room's order.
const JOIN_SEQ: &str = "manifold:join_seq";

/// Whether a node key holds this process's registration. Redis expires nothing while a
/// script runs, so what it reads stays true until the script ends.
const OWNED: &str = r"
local function owned(key, token)
  local v = redis.call('GET', key)
  if not v then return false end
  local ok, d = pcall(cjson.decode, v)
  return ok and type(d) == 'table' and d.token == token
end
";

/// KEYS: node key, NODES. ARGV: stored value, TTL in ms, node id.
const REGISTER: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
return 0
";

/// KEYS: node key, NODES. ARGV: token, stored value, TTL in ms, node id.
const HEARTBEAT: &str = r"
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
";

/// KEYS: node key, NODES. ARGV: token, node id.
const DEREGISTER: &str = r"
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// KEYS: NODES. ARGV: NODE_PREFIX. The stored values of live nodes; ids whose key has
/// expired leave the set.
const LIVE: &str = r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then out[#out + 1] = v else redis.call('SREM', KEYS[1], id) end
end
return out
";

/// For the directory's scripts. KEYS: a room's members hash, order zset, nodes hash.
/// ARGV[1] participant, ARGV[2] room, ARGV[3] NODE_PREFIX. A room's nodes hash counts the
/// members each node holds there; a node's rooms set names the rooms where it holds any.
const ROOM: &str = r"
local function node_of(record)
  local ok, d = pcall(cjson.decode, record)
  if ok and type(d) == 'table' and type(d.node) == 'string' then return d.node end
  return nil
end
local function leave(node)
  if redis.call('HINCRBY', KEYS[3], node, -1) <= 0 then
    redis.call('HDEL', KEYS[3], node)
    redis.call('SREM', ARGV[3] .. node .. ':rooms', ARGV[2])
  end
end
";

/// KEYS[4] JOIN_SEQ, KEYS[5] ROOMS. ARGV[4] the record, ARGV[5] its node.
const UPSERT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local was = nil
if old then
  was = node_of(old)
else
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[2])
if was ~= ARGV[5] then
  if was then leave(was) end
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('SADD', ARGV[3] .. ARGV[5] .. ':rooms', ARGV[2])
end
return 1
";

const REMOVE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local was = node_of(old)
if was then leave(was) end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[4], ARGV[2]) end
return 1
";

/// KEYS: the node's rooms set, ROOMS. ARGV: node id, ROOM_PREFIX. Returns room, record, room,
/// record... for every member forgotten.
const FORGET_NODE: &str = r"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local members = ARGV[2] .. room .. ':members'
  local order = ARGV[2] .. room .. ':order'
  local flat = redis.call('HGETALL', members)
  for i = 1, #flat, 2 do
    local ok, d = pcall(cjson.decode, flat[i + 1])
    if ok and type(d) == 'table' and d.node == ARGV[1] then
      redis.call('HDEL', members, flat[i])
      redis.call('ZREM', order, flat[i])
      out[#out + 1] = room
      out[#out + 1] = flat[i + 1]
    end
  end
  redis.call('HDEL', ARGV[2] .. room .. ':nodes', ARGV[1])
  if redis.call('HLEN', members) == 0 then redis.call('SREM', KEYS[2], room) end
end
redis.call('DEL', KEYS[1])
return out
";

/// KEYS: ROOMS. ARGV: ROOM_PREFIX, most rooms listed. For each room with members, by name:
/// its name, its member count, how many nodes hold them, those nodes. Rooms without members
/// leave the set.
const LIST_ROOMS: &str = r"
local out = {}
local listed = 0
local names = redis.call('SMEMBERS', KEYS[1])
table.sort(names)
for _, room in ipairs(names) do
  local count = redis.call('HLEN', ARGV[1] .. room .. ':members')
  if count == 0 then
    redis.call('SREM', KEYS[1], room)
  elseif listed < tonumber(ARGV[2]) then
    listed = listed + 1
    local nodes = redis.call('HKEYS', ARGV[1] .. room .. ':nodes')
    out[#out + 1] = room
    out[#out + 1] = tostring(count)
    out[#out + 1] = tostring(#nodes)
    for _, n in ipairs(nodes) do out[#out + 1] = n end
  end
end
return out
";

/// What a node key holds: the node's announcement and the token of the process that
/// registered it.
#[derive(Serialize, Deserialize)]
struct Registration {
    token: String,
    info: NodeInfo,
}

struct Scripts {
    register: Script,
    heartbeat: Script,
    deregister: Script,
    live: Script,
    upsert: Script,
    remove: Script,
    forget_node: Script,
    rooms: Script,
}

/// A cluster's registry and directory in one Redis.
pub struct RedisCluster {
    conn: ConnectionManager,
    /// This process's, in the registrations it makes.
    token: String,
    ttl: Duration,
    timeout: Duration,
    /// The server's URL without credentials, for errors.
    server: String,
    scripts: Scripts,
}

impl RedisCluster {
    /// Connect to the Redis at `url` (`redis://[:password@]host:port[/db]`), with
    /// registrations that last `ttl`, and check that it answers within `timeout`.
    pub async fn connect(
        url: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let server = redact_url(url);
        let client = Client::open(url)
            .map_err(|e| ClusterError::Malformed(format!("redis URL {server}: {e}")))?;
        // Few retries per connection attempt, so a refusal is reported as such within the
        // timeout; the next operation tries again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ClusterError::Unavailable(format!("redis at {server}: {e}")))?;
        let scripts = Scripts {
            register: Script::new(REGISTER),
            heartbeat: Script::new(&format!("{OWNED}{HEARTBEAT}")),
            deregister: Script::new(&format!("{OWNED}{DEREGISTER}")),
            live: Script::new(LIVE),
            upsert: Script::new(&format!("{ROOM}{UPSERT}")),
            remove: Script::new(&format!("{ROOM}{REMOVE}")),
            forget_node: Script::new(FORGET_NODE),
            rooms: Script::new(LIST_ROOMS),
        };
        let cluster = RedisCluster {
            conn,
            token: format!("{:032x}", rand::random::<u128>()),
            ttl,
            timeout,
            server,
            scripts,
        };
        let mut conn = cluster.conn.clone();
        cluster
            .run("PING", ::redis::cmd("PING").query_async::<()>(&mut conn))
            .await?;
        Ok(cluster)
    }

    /// Await a Redis operation for at most the timeout.
    async fn run<T>(
        &self,
        what: &str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(what, &e)),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "redis at {}: {what}: no answer within {:?}",
                self.server, self.timeout
            ))),
        }
    }

    fn failed(&self, what: &str, e: &RedisError) -> ClusterError {
        let stored_wrong = e.code() == Some("WRONGTYPE")
            || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType);
        if stored_wrong {
            ClusterError::Malformed(format!("redis {what}: {e}"))
        } else {
            ClusterError::Unavailable(format!("redis at {}: {what}: {e}", self.server))
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn registration(&self, node: NodeInfo) -> Result<Vec<u8>, ClusterError> {
        node.check()?;
        let stored = Registration {
            token: self.token.clone(),
            info: node,
        };
        serde_json::to_vec(&stored).map_err(|e| ClusterError::Malformed(format!("node info: {e}")))
    }
}

fn node_key(id: &NodeId) -> String {
    format!("{NODE_PREFIX}{id}")
}

fn room_key(room: &RoomName, what: &str) -> String {
    format!("{ROOM_PREFIX}{room}:{what}")
}

/// What a registration may add to its [`NodeInfo`]: the token and the JSON around it.
const REGISTRATION_OVERHEAD: usize = 128;

/// Parse a stored record, refusing one over `max` bytes.
fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    max: usize,
    bytes: &[u8],
) -> Result<T, ClusterError> {
    if bytes.len() > max {
        return Err(ClusterError::Malformed(format!(
            "stored {what} is {} bytes, over the {max} allowed",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ClusterError::Malformed(format!("stored {what}: {e}")))
}

/// The rooms script's reply: name, member count, node count, the nodes; again.
fn parse_rooms(flat: &[String]) -> Result<Vec<RoomSummary>, ClusterError> {
    let bad = |what: &str| ClusterError::Malformed(format!("rooms: {what}"));
    let mut rooms = Vec::new();
    let mut rest = flat.iter();
    while let Some(name) = rest.next() {
        let room = RoomName::parse(name).map_err(|_| bad("a stored room name"))?;
        let mut number = || {
            rest.next()
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad("a count"))
        };
        let (members, count) = (number()?, number()?);
        let nodes = rest
            .by_ref()
            .take(count)
            .map(|n| NodeId::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.len() != count {
            return Err(bad("a short reply"));
        }
        let mut nodes = nodes;
        nodes.sort();
        rooms.push(RoomSummary {
            room,
            nodes,
            members,
        });
    }
    Ok(rooms)
}

impl NodeRegistry for RedisCluster {
    fn heartbeat(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let id = node.id.clone();
            let value = self.registration(node)?;
            let mut conn = self.conn.clone();
            let mut call = self.scripts.heartbeat.key(node_key(&id));
            call.key(NODES)
                .arg(&self.token)
                .arg(value)
                .arg(self.ttl_ms())
                .arg(id.as_str());
            let refreshed: i64 = self.run("heartbeat", call.invoke_async(&mut conn)).await?;
            if refreshed == 1 {
                Ok(())
            } else {
                Err(ClusterError::Conflict(format!(
                    "node {id} is not registered by this process (its registration expired, \
                     or Redis lost it)"
                )))
            }
        })
    }

    fn register(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let id = node.id.clone();
            let value = self.registration(node)?;
            let mut conn = self.conn.clone();
            let mut call = self.scripts.register.key(node_key(&id));
            call.key(NODES)
                .arg(value)
                .arg(self.ttl_ms())
                .arg(id.as_str());
            let claimed: i64 = self.run("register", call.invoke_async(&mut conn)).await?;
            if claimed == 1 {
                Ok(())
            } else {
                Err(ClusterError::Conflict(format!(
                    "another live node is registered as {id}"
                )))
            }
        })
    }

    fn deregister(&self, node: NodeId) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.deregister.key(node_key(&node));
            call.key(NODES).arg(&self.token).arg(node.as_str());
            let _: i64 = self.run("deregister", call.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn live(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.live.key(NODES);
            call.arg(NODE_PREFIX);
            let values: Vec<Vec<u8>> = self.run("live", call.invoke_async(&mut conn)).await?;
            let mut live = values
                .iter()
                .map(|v| {
                    parse::<Registration>(
                        "node registration",
                        MAX_RECORD_BYTES + REGISTRATION_OVERHEAD,
                        v,
                    )
                    .map(|r| r.info)
                })
                .collect::<Result<Vec<_>, _>>()?;
            live.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(live)
        })
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl RoomDirectory for RedisCluster {
    fn upsert(
        &self,
        room: RoomName,
        member: MemberRecord,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let record = record_json("member record", &member)?;
            let mut conn = self.conn.clone();
            let mut call = self.scripts.upsert.key(room_key(&room, "members"));
            call.key(room_key(&room, "order"))
                .key(room_key(&room, "nodes"))
                .key(JOIN_SEQ)
                .key(ROOMS)
                .arg(member.participant.to_string())
                .arg(room.as_str())
                .arg(NODE_PREFIX)
                .arg(record)
                .arg(member.node.as_str());
            let _: i64 = self.run("upsert", call.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn remove(
        &self,
        room: RoomName,
        participant: ParticipantId,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.remove.key(room_key(&room, "members"));
            call.key(room_key(&room, "order"))
                .key(room_key(&room, "nodes"))
                .key(ROOMS)
                .arg(participant.to_string())
                .arg(room.as_str())
                .arg(NODE_PREFIX);
            let _: i64 = self.run("remove", call.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn members(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<MemberRecord>, ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut pipe = ::redis::pipe();
            pipe.atomic()
                .cmd("ZRANGE")
                .arg(room_key(&room, "order"))
                .arg(0)
                .arg(-1)
                .cmd("HGETALL")
                .arg(room_key(&room, "members"));
            let (order, mut records): (Vec<String>, HashMap<String, Vec<u8>>) =
                self.run("members", pipe.query_async(&mut conn)).await?;
            let mut members = Vec::with_capacity(records.len());
            for participant in &order {
                if let Some(r) = records.remove(participant) {
                    members.push(parse::<MemberRecord>(
                        "member record",
                        MAX_RECORD_BYTES,
                        &r,
                    )?);
                }
            }
            // Written together with the order, so none is left; were one, it is still a
            // member.
            let mut rest = records
                .values()
                .map(|r| parse::<MemberRecord>("member record", MAX_RECORD_BYTES, r))
                .collect::<Result<Vec<_>, _>>()?;
            rest.sort_by_key(|m| m.participant);
            members.extend(rest);
            Ok(members)
        })
    }

    fn nodes_of(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<NodeId>, ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = ::redis::cmd("HKEYS");
            cmd.arg(room_key(&room, "nodes"));
            let ids: Vec<String> = self.run("nodes_of", cmd.query_async(&mut conn)).await?;
            let mut nodes = ids
                .iter()
                .map(|id| NodeId::parse(id))
                .collect::<Result<Vec<_>, _>>()?;
            nodes.sort();
            Ok(nodes)
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.rooms.key(ROOMS);
            call.arg(ROOM_PREFIX).arg(MAX_LISTED_ROOMS);
            let flat: Vec<String> = self.run("rooms", call.invoke_async(&mut conn)).await?;
            parse_rooms(&flat)
        })
    }

    fn forget_node(
        &self,
        node: NodeId,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, MemberRecord)>, ClusterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self
                .scripts
                .forget_node
                .key(format!("{NODE_PREFIX}{node}:rooms"));
            call.key(ROOMS).arg(node.as_str()).arg(ROOM_PREFIX);
            let flat: Vec<Vec<u8>> = self
                .run("forget_node", call.invoke_async(&mut conn))
                .await?;
            let mut gone = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks(2) {
                let [room, record] = pair else {
                    return Err(ClusterError::Malformed(
                        "forget_node: an odd-sized reply".into(),
                    ));
                };
                let room = std::str::from_utf8(room)
                    .ok()
                    .and_then(|r| RoomName::parse(r).ok())
                    .ok_or_else(|| ClusterError::Malformed("stored room name".into()))?;
                gone.push((
                    room,
                    parse::<MemberRecord>("member record", MAX_RECORD_BYTES, record)?,
                ));
            }
            sort_forgotten(&mut gone);
            Ok(gone)
        })
    }
}
