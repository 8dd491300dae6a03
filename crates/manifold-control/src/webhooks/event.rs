//! Webhook events: owns what can happen to a room that an application hears of, and the
//! JSON body each becomes (see docs/webhooks.md).

use std::time::SystemTime;

use manifold_api::protocol::{ParticipantInfo, TrackInfo};
use manifold_api::{LeaveReason, RoomName, TrackId};
use serde::Serialize;

/// Something that happened in a room on this node.
#[derive(Clone, Copy, Debug)]
pub enum WebhookEvent<'a> {
    /// The room's first session on this node (publisher, player or room participant).
    RoomStarted,
    /// Its last session on this node ended.
    RoomFinished,
    /// A participant others see joined (room participant or WHIP publisher).
    ParticipantJoined(&'a ParticipantInfo),
    /// It left, for this reason.
    ParticipantLeft(&'a ParticipantInfo, LeaveReason),
    /// It published a track.
    TrackPublished(&'a ParticipantInfo, &'a TrackInfo),
    /// It stopped publishing one.
    TrackUnpublished(&'a ParticipantInfo, TrackId),
}

impl WebhookEvent<'_> {
    /// The message's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookEvent::RoomStarted => "room_started",
            WebhookEvent::RoomFinished => "room_finished",
            WebhookEvent::ParticipantJoined(_) => "participant_joined",
            WebhookEvent::ParticipantLeft(..) => "participant_left",
            WebhookEvent::TrackPublished(..) => "track_published",
            WebhookEvent::TrackUnpublished(..) => "track_unpublished",
        }
    }
}

/// The JSON body (see docs/webhooks.md).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// RFC 3339, UTC, milliseconds.
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    room: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    participant: Option<Participant<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    track: Option<Track<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Participant<'a> {
    id: String,
    identity: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Track<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a manifold_api::MediaKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a manifold_api::protocol::TrackSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    muted: Option<bool>,
}

fn participant(p: &ParticipantInfo) -> Participant<'_> {
    Participant {
        id: p.id.to_string(),
        identity: p.identity.as_str(),
        name: &p.name,
    }
}

/// The body of `event` in `room` on `node`, at `now`.
pub(super) fn body(
    room: &RoomName,
    node: &str,
    event: WebhookEvent<'_>,
    now: SystemTime,
) -> String {
    let (who, track, reason) = match event {
        WebhookEvent::RoomStarted | WebhookEvent::RoomFinished => (None, None, None),
        WebhookEvent::ParticipantJoined(p) => (Some(participant(p)), None, None),
        WebhookEvent::ParticipantLeft(p, why) => (Some(participant(p)), None, Some(why.as_str())),
        WebhookEvent::TrackPublished(p, t) => (
            Some(participant(p)),
            Some(Track {
                id: t.id.to_string(),
                kind: Some(&t.kind),
                source: Some(&t.source),
                name: Some(&t.name),
                muted: Some(t.muted),
            }),
            None,
        ),
        WebhookEvent::TrackUnpublished(p, id) => (
            Some(participant(p)),
            Some(Track {
                id: id.to_string(),
                kind: None,
                source: None,
                name: None,
                muted: None,
            }),
            None,
        ),
    };
    let body = Body {
        kind: event.kind(),
        timestamp: humantime::format_rfc3339_millis(now).to_string(),
        data: Data {
            room: room.as_str(),
            node,
            participant: who,
            track,
            reason,
        },
    };
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_string(&body).expect("webhook body serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_type_room_participant_and_track() {
        let p = ParticipantInfo {
            id: manifold_api::ParticipantId(7),
            identity: manifold_api::Identity::parse("alice").unwrap(),
            name: "Alice".into(),
            metadata: serde_json::json!({"big": "not sent"}),
            tracks: Vec::new(),
        };
        let room = RoomName::parse("demo").unwrap();
        let b: serde_json::Value = serde_json::from_str(&body(
            &room,
            "local",
            WebhookEvent::ParticipantLeft(&p, LeaveReason::Kicked),
            SystemTime::UNIX_EPOCH,
        ))
        .unwrap();
        assert_eq!(b["type"], "participant_left");
        assert_eq!(b["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(b["data"]["room"], "demo");
        assert_eq!(b["data"]["participant"]["identity"], "alice");
        assert_eq!(b["data"]["reason"], "kicked");
        assert!(b["data"]["participant"].get("metadata").is_none());
        assert!(b["data"].get("track").is_none());
    }
}
