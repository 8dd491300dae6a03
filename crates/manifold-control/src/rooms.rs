//! Rooms an administrator created or described (`POST /admin/rooms`, `PATCH
//! /admin/rooms/{room}`): their options (most participants, how long they may stay empty)
//! and their metadata. A room nobody created needs no entry: it exists while sessions are
//! in it, with the server's limits.
//!
//! Bounds: at most `ControlConfig::max_rooms` entries; metadata at most
//! [`MAX_METADATA_BYTES`] serialized. An entry whose room holds no session on this node for
//! its `empty_timeout` is removed by [`expire`] (run every second by the server).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use manifold_api::RoomName;
pub use manifold_api::protocol::MAX_METADATA_BYTES;
use serde_json::Value;

use crate::error::ApiError;

/// Longest `empty_timeout` accepted, in seconds (a day).
pub const MAX_EMPTY_TIMEOUT_SECS: u64 = 86_400;
/// `empty_timeout` of a room created without one, in seconds.
pub const DEFAULT_EMPTY_TIMEOUT_SECS: u64 = 300;

/// What an administrator set for a room.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomOptions {
    /// Sessions the room may hold on this node (below the server's own limit); `None`: the
    /// server's limit.
    pub max_participants: Option<u32>,
    /// How long the room may hold no session before its entry is removed.
    pub empty_timeout: Duration,
    /// Application data, told to the room's participants when it changes.
    pub metadata: Value,
}

struct Entry {
    options: RoomOptions,
    /// Since when the room holds no session (`None`: it holds some).
    empty_since: Option<Instant>,
}

/// The created rooms of this node.
#[derive(Default)]
pub struct CreatedRooms {
    rooms: Mutex<HashMap<RoomName, Entry>>,
}

impl CreatedRooms {
    /// Create `room` with `options`; `BadRequest` if it exists, `LimitReached` past `max`.
    pub fn create(
        &self,
        room: RoomName,
        options: RoomOptions,
        max: usize,
        now: Instant,
    ) -> Result<(), ApiError> {
        check_metadata(&options.metadata)?;
        let mut rooms = self.lock();
        if rooms.contains_key(&room) {
            return Err(ApiError::Conflict(format!("room {room} exists already")));
        }
        if rooms.len() >= max {
            return Err(ApiError::LimitReached(format!(
                "{max} rooms are created already, the limit (server.max_rooms)"
            )));
        }
        rooms.insert(
            room,
            Entry {
                options,
                empty_since: Some(now),
            },
        );
        Ok(())
    }

    /// Set `room`'s metadata, creating its entry (default options) if it has none and
    /// `held` (sessions are in it); `NotFound` otherwise. The options as they are now.
    pub fn set_metadata(
        &self,
        room: &RoomName,
        metadata: Value,
        held: bool,
        max: usize,
    ) -> Result<RoomOptions, ApiError> {
        check_metadata(&metadata)?;
        let mut rooms = self.lock();
        let full = rooms.len() >= max;
        let entry = match rooms.get_mut(room) {
            Some(e) => e,
            None if !held => return Err(ApiError::NotFound(format!("no room {room}"))),
            None if full => {
                return Err(ApiError::LimitReached(format!(
                    "{max} rooms are created already, the limit (server.max_rooms)"
                )));
            }
            None => rooms.entry(room.clone()).or_insert(Entry {
                options: RoomOptions {
                    max_participants: None,
                    empty_timeout: Duration::from_secs(DEFAULT_EMPTY_TIMEOUT_SECS),
                    metadata: Value::Null,
                },
                empty_since: None,
            }),
        };
        entry.options.metadata = metadata;
        Ok(entry.options.clone())
    }

    /// `room`'s options, if it has an entry.
    pub fn get(&self, room: &RoomName) -> Option<RoomOptions> {
        self.lock().get(room).map(|e| e.options.clone())
    }

    /// Every entry.
    pub fn all(&self) -> Vec<(RoomName, RoomOptions)> {
        self.lock()
            .iter()
            .map(|(r, e)| (r.clone(), e.options.clone()))
            .collect()
    }

    /// Remove `room`'s entry; whether it had one.
    pub fn remove(&self, room: &RoomName) -> bool {
        self.lock().remove(room).is_some()
    }

    /// Remove the entries of rooms empty for their `empty_timeout` as of `now`; `held` says
    /// whether a room holds sessions. The rooms removed.
    pub fn expire(&self, now: Instant, held: impl Fn(&RoomName) -> bool) -> Vec<RoomName> {
        let mut gone = Vec::new();
        self.lock().retain(|room, e| {
            if held(room) {
                e.empty_since = None;
                return true;
            }
            let since = *e.empty_since.get_or_insert(now);
            let keep = now.saturating_duration_since(since) < e.options.empty_timeout;
            if !keep {
                gone.push(room.clone());
            }
            keep
        });
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Entry>> {
        // Every update is one insert, remove or field write: a panic leaves it consistent.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `metadata` within [`MAX_METADATA_BYTES`] serialized.
pub fn check_metadata(metadata: &Value) -> Result<(), ApiError> {
    let len = serde_json::to_string(metadata).map_or(usize::MAX, |s| s.len());
    if len > MAX_METADATA_BYTES {
        return Err(ApiError::BadRequest(format!(
            "metadata is {len} bytes serialized, over {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

/// Remove the expired entries of `state`'s created rooms every second, until aborted.
pub async fn run_expiry(state: crate::AppState) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Read before the entries are locked: `reserve` takes the two locks the other way.
        let held: std::collections::HashSet<RoomName> = state.held_rooms().into_iter().collect();
        for room in state
            .created_rooms
            .expire(Instant::now(), |r| held.contains(r))
        {
            tracing::info!(%room, "created room removed: empty for its empty_timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(timeout: u64) -> RoomOptions {
        RoomOptions {
            max_participants: Some(2),
            empty_timeout: Duration::from_secs(timeout),
            metadata: Value::Null,
        }
    }

    #[test]
    fn bounded_and_unique() {
        let rooms = CreatedRooms::default();
        let now = Instant::now();
        let a = RoomName::parse("a").unwrap();
        rooms.create(a.clone(), options(5), 1, now).unwrap();
        assert!(matches!(
            rooms.create(a, options(5), 2, now),
            Err(ApiError::Conflict(_))
        ));
        let b = RoomName::parse("b").unwrap();
        assert!(matches!(
            rooms.create(b, options(5), 1, now),
            Err(ApiError::LimitReached(_))
        ));
    }

    #[test]
    fn empty_rooms_expire_and_held_ones_stay() {
        let rooms = CreatedRooms::default();
        let t0 = Instant::now();
        let (a, b) = (RoomName::parse("a").unwrap(), RoomName::parse("b").unwrap());
        rooms.create(a.clone(), options(5), 10, t0).unwrap();
        rooms.create(b.clone(), options(5), 10, t0).unwrap();
        let held = |r: &RoomName| r.as_str() == "b";
        assert!(rooms.expire(t0 + Duration::from_secs(4), held).is_empty());
        assert_eq!(rooms.expire(t0 + Duration::from_secs(5), held), vec![a]);
        // b was held; empty from t=6 on, it expires 5 s later.
        assert!(
            rooms
                .expire(t0 + Duration::from_secs(6), |_| false)
                .is_empty()
        );
        assert!(
            rooms
                .expire(t0 + Duration::from_secs(10), |_| false)
                .is_empty()
        );
        assert_eq!(
            rooms.expire(t0 + Duration::from_secs(11), |_| false),
            vec![b]
        );
    }

    #[test]
    fn metadata_is_bounded() {
        let rooms = CreatedRooms::default();
        let a = RoomName::parse("a").unwrap();
        let big = Value::String("x".repeat(MAX_METADATA_BYTES));
        assert!(matches!(
            rooms.set_metadata(&a, big, true, 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            rooms.set_metadata(&a, Value::Null, false, 10),
            Err(ApiError::NotFound(_))
        ));
        assert!(rooms.set_metadata(&a, Value::Bool(true), true, 10).is_ok());
    }
}
