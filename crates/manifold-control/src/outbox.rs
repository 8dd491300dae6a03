//! One room-protocol socket's queue of outgoing messages, between whoever has something to
//! tell the client (the roster's broadcasts, replies) and the socket's writer task.
//!
//! It is bounded in messages and in bytes, so a client that reads slowly can make the server
//! hold only so much for it. Messages that only carry the latest state of something (a
//! participant's name and metadata, a track's mute) replace an older one for the same thing
//! still waiting in the queue: a member flooding updates costs a slow reader one queued
//! message, not a disconnect. A queue that overflows anyway ends its own socket only.
//!
//! Each message is serialized once, however many sockets it goes to: the queue holds the
//! shared text.

use std::collections::VecDeque;
use std::sync::Mutex;

use manifold_api::protocol::{CloseReason, ServerMessage};
use manifold_api::{ParticipantId, TrackId};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How much one socket's queue may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages queued.
    pub messages: usize,
    /// Bytes of queued message text.
    pub bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            messages: 512,
            bytes: 1 << 20,
        }
    }
}

/// The queue is over its limits: the socket is too slow to keep up and is closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// What the writer sends next.
#[derive(Debug)]
pub enum Item {
    /// A message.
    Text(Utf8Bytes),
    /// A last message, then the close frame with this code and reason.
    Close(u16, Utf8Bytes, String),
}

/// What a state message is about: a newer one for the same thing replaces the older.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `participant_updated`.
    Participant(ParticipantId),
    /// `track_muted`.
    Muted(TrackId),
}

impl Key {
    /// The coalescing key of `msg`, if it carries only the latest state of something.
    pub fn of(msg: &ServerMessage) -> Option<Key> {
        match msg {
            ServerMessage::ParticipantUpdated { participant } => {
                Some(Key::Participant(participant.id))
            }
            ServerMessage::TrackMuted { track, .. } => Some(Key::Muted(*track)),
            _ => None,
        }
    }
}

struct Entry {
    key: Option<Key>,
    item: Item,
    len: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    bytes: usize,
    /// Nothing more will be queued; the writer ends once the queue is empty.
    finished: bool,
    /// The limits were exceeded: the queue was dropped and the socket is to close.
    overflowed: bool,
    /// Messages that replaced an older one in place.
    coalesced: u64,
}

/// One socket's outgoing queue.
pub struct Outbox {
    limits: OutboxLimits,
    state: Mutex<State>,
    ready: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Outbox")
            .field("queued", &s.queue.len())
            .field("bytes", &s.bytes)
            .field("finished", &s.finished)
            .field("overflowed", &s.overflowed)
            .finish()
    }
}

/// `msg` as the text every socket receives.
pub fn serialize(msg: &ServerMessage) -> Utf8Bytes {
    Utf8Bytes::from(msg.to_json())
}

impl Outbox {
    /// An empty queue.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            limits,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    /// Queue `msg`.
    pub fn push(&self, msg: &ServerMessage) -> Result<(), Overflow> {
        self.push_text(Key::of(msg), serialize(msg))
    }

    /// Queue an already serialized message; a `key`ed one replaces a queued message with
    /// the same key.
    pub fn push_text(&self, key: Option<Key>, text: Utf8Bytes) -> Result<(), Overflow> {
        let mut s = self.lock();
        if s.overflowed {
            return Err(Overflow);
        }
        if s.finished {
            // The socket is closing: what it would have been told no longer matters.
            return Ok(());
        }
        let len = text.len();
        if let Some(k) = key
            && let Some(e) = s.queue.iter_mut().find(|e| e.key == Some(k))
        {
            let old = std::mem::replace(&mut e.len, len);
            e.item = Item::Text(text);
            s.bytes = s.bytes - old + len;
            s.coalesced += 1;
        } else {
            s.queue.push_back(Entry {
                key,
                item: Item::Text(text),
                len,
            });
            s.bytes += len;
        }
        if s.queue.len() > self.limits.messages || s.bytes > self.limits.bytes {
            s.overflowed = true;
            s.queue.clear();
            s.bytes = 0;
            drop(s);
            self.ready.notify_one();
            return Err(Overflow);
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queue `msg` as the last message, then a close frame with `code`. Nothing queued
    /// after it is sent.
    pub fn close(&self, code: u16, msg: &ServerMessage) {
        let reason = match msg {
            ServerMessage::Closing { reason, .. } => close_reason(*reason),
            _ => String::new(),
        };
        let mut s = self.lock();
        if s.finished || s.overflowed {
            return;
        }
        let text = serialize(msg);
        // The close goes out even on a full queue: it is what tells the client why.
        s.bytes += text.len();
        s.queue.push_back(Entry {
            key: None,
            len: text.len(),
            item: Item::Close(code, text, reason),
        });
        s.finished = true;
        drop(s);
        self.ready.notify_one();
    }

    /// Nothing more will be queued: the writer sends what is queued, then ends.
    pub fn finish(&self) {
        self.lock().finished = true;
        self.ready.notify_one();
    }

    /// Did the queue overflow?
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Messages that replaced an older queued one.
    pub fn coalesced(&self) -> u64 {
        self.lock().coalesced
    }

    /// The next thing to send, waiting for one; `None` once finished and empty. After an
    /// overflow: a close for a slow client, then `None`.
    pub async fn next(&self) -> Option<Item> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.overflowed {
                    if s.finished {
                        return None;
                    }
                    s.finished = true;
                    let msg = ServerMessage::Closing {
                        reason: CloseReason::Policy,
                        message: "too slow to keep up with the room's messages".into(),
                    };
                    return Some(Item::Close(
                        1008,
                        serialize(&msg),
                        close_reason(CloseReason::Policy),
                    ));
                }
                if let Some(e) = s.queue.pop_front() {
                    s.bytes -= e.len;
                    return Some(e.item);
                }
                if s.finished {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few field and queue operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The close frame's reason text for `reason`.
fn close_reason(reason: CloseReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_api::Identity;
    use manifold_api::protocol::ParticipantInfo;

    fn update(id: u64, name: &str) -> ServerMessage {
        ServerMessage::ParticipantUpdated {
            participant: ParticipantInfo {
                id: ParticipantId(id),
                identity: Identity::parse("x").unwrap(),
                name: name.into(),
                metadata: serde_json::Value::Null,
                tracks: Vec::new(),
            },
        }
    }

    fn text(item: Option<Item>) -> String {
        match item {
            Some(Item::Text(t)) => t.as_str().to_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn updates_of_one_participant_coalesce_in_place() {
        let o = Outbox::new(OutboxLimits {
            messages: 4,
            bytes: 1 << 20,
        });
        o.push(&update(1, "a")).unwrap();
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(7.into()),
        })
        .unwrap();
        for i in 0..1000 {
            o.push(&update(1, &format!("n{i}"))).unwrap();
        }
        o.push(&update(2, "b")).unwrap();
        assert_eq!(o.coalesced(), 1000);
        assert!(text(o.next().await).contains("n999"));
        assert!(text(o.next().await).contains("pong"));
        assert!(text(o.next().await).contains("\"b\""));
    }

    #[tokio::test]
    async fn an_overflow_closes_with_1008_and_drops_the_queue() {
        let o = Outbox::new(OutboxLimits {
            messages: 2,
            bytes: 1 << 20,
        });
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(1.into()),
        })
        .unwrap();
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(2.into()),
        })
        .unwrap();
        assert_eq!(
            o.push(&ServerMessage::Pong {
                id: None,
                ts: Some(3.into())
            }),
            Err(Overflow)
        );
        assert!(o.overflowed());
        assert!(matches!(o.next().await, Some(Item::Close(1008, _, _))));
        assert!(o.next().await.is_none());
        // Bytes count too.
        let o = Outbox::new(OutboxLimits {
            messages: 100,
            bytes: 64,
        });
        assert_eq!(o.push(&update(1, &"x".repeat(100))), Err(Overflow));
    }

    #[tokio::test]
    async fn close_is_last_and_finish_drains() {
        let o = Outbox::new(OutboxLimits::default());
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(1.into()),
        })
        .unwrap();
        o.close(
            1000,
            &ServerMessage::Closing {
                reason: CloseReason::Kicked,
                message: "bye".into(),
            },
        );
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(2.into()),
        })
        .unwrap();
        assert!(text(o.next().await).contains("pong"));
        match o.next().await {
            Some(Item::Close(1000, _, reason)) => assert_eq!(reason, "kicked"),
            other => panic!("{other:?}"),
        }
        assert!(o.next().await.is_none());
        let o = Outbox::new(OutboxLimits::default());
        o.push(&ServerMessage::Pong {
            id: None,
            ts: Some(1.into()),
        })
        .unwrap();
        o.finish();
        assert!(text(o.next().await).contains("pong"));
        assert!(o.next().await.is_none());
    }
}
