//! The WebSocket room protocol, version 1 (`docs/protocol.md`): every message a client and
//! the server exchange, as serde types.
//!
//! Parsing is the first line of defence: [`ClientMessage::parse`] enforces the version, the
//! size limit and every field's bounds, and returns a [`ProtocolError`] whose code and text
//! go back to the client as they are.

use serde::{Deserialize, Serialize};

use crate::{Identity, MediaKind, ParticipantId, TrackId};

/// The protocol version this server speaks.
pub const VERSION: u32 = 1;
/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Largest `metadata` value, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest client track name (`cid`) and track label.
pub const MAX_CID_CHARS: usize = 64;
/// Longest request id.
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// A client's request id, echoed in answers: a string or a number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageId {
    /// A number.
    Number(i64),
    /// A string (at most [`MAX_REQUEST_ID_CHARS`]).
    Text(String),
}

/// Where a published track comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A screen share's video.
    Screen,
    /// A screen share's audio.
    ScreenAudio,
    /// Anything else.
    Other,
}

/// Most simulcast layers one video track may have.
pub const MAX_LAYERS: u8 = 3;
/// Largest rendered size `set_video_quality` accepts, per side.
pub const MAX_RENDER_SIDE: u32 = 16384;

/// A video quality: which of a track's layers, lowest to highest. With fewer than three
/// layers, `medium` and `high` name the top one when there is no middle one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// The lowest layer.
    Low,
    /// The middle layer.
    Medium,
    /// The highest layer.
    High,
}

/// What a subscriber asks of one video subscription (`set_video_quality`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityRequest {
    /// At most this layer.
    Low,
    /// At most this layer.
    Medium,
    /// At most this layer (the default).
    High,
    /// The smallest layer that covers the rendered size given with it.
    Auto,
}

/// Whether a subscriber receives a video subscription (`stream_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Video flows.
    Active,
    /// The subscriber's link cannot carry even the lowest layer, or the server is
    /// overloaded and sheds this subscription's video for now.
    Paused,
}

/// One entry of `speakers_changed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    /// Who.
    pub participant: ParticipantId,
    /// How loud, 0 (silence) to 1.
    pub level: f32,
}

/// A track as the room sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackInfo {
    /// Its id.
    pub id: TrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone, screen...
    pub source: TrackSource,
    /// The publisher's label.
    #[serde(default)]
    pub name: String,
    /// Muted by its publisher.
    #[serde(default)]
    pub muted: bool,
}

/// A participant as the room sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Its id.
    pub id: ParticipantId,
    /// Who it is.
    pub identity: Identity,
    /// Display name.
    pub name: String,
    /// Application data.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// What it publishes.
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
}

/// Sender of a chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatSender {
    /// Id.
    pub id: ParticipantId,
    /// Identity.
    pub identity: Identity,
    /// Display name.
    pub name: String,
}

/// One m-line of an offer and what it is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MidInfo {
    /// The mid.
    pub mid: String,
    /// `audio`, `video` or `application`.
    pub kind: String,
    /// Set when the client publishes on it: the client's name for the track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Set when the client receives on it: the track behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackId>,
    /// The publisher of `track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantId>,
}

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ClientMessage {
    /// Enter a room.
    Join {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Protocol version (checked by [`ClientMessage::parse`]).
        v: u32,
        /// Room name.
        room: String,
        /// Access token (or `?access_token=`).
        #[serde(default)]
        token: Option<String>,
        /// Identity (dev mode only).
        #[serde(default)]
        identity: Option<String>,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
        /// Application data.
        #[serde(default)]
        metadata: Option<serde_json::Value>,
        /// Subscribe to everything (default true).
        #[serde(default)]
        auto_subscribe: Option<bool>,
    },
    /// Re-attach to a session after a dropped socket.
    Resume {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The participant id from `joined`.
        participant: ParticipantId,
        /// The resume token from `joined`.
        resume_token: String,
    },
    /// Answer to the server's offer.
    Answer {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The offer answered.
        offer_id: u64,
        /// SDP.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The candidate line, or null at the end.
        candidate: Option<String>,
        /// Ignored (browsers send these).
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<serde_json::Value>,
        /// Ignored (browsers send these).
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_mline_index: Option<serde_json::Value>,
        /// Ignored (browsers send these).
        #[serde(default, rename = "usernameFragment")]
        username_fragment: Option<serde_json::Value>,
    },
    /// Ask to publish a track.
    Publish {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The client's name for the track.
        cid: String,
        /// Kind.
        kind: MediaKind,
        /// Source.
        source: TrackSource,
        /// Label.
        #[serde(default)]
        name: Option<String>,
        /// Start muted.
        #[serde(default)]
        muted: Option<bool>,
        /// Simulcast layers to offer for a video track (1 to [`MAX_LAYERS`]; default 1).
        #[serde(default)]
        layers: Option<u8>,
    },
    /// Stop publishing a track.
    Unpublish {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The track.
        track: TrackId,
    },
    /// Mute or unmute one's own track.
    Mute {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The track.
        track: TrackId,
        /// Muted?
        muted: bool,
    },
    /// Receive a track.
    Subscribe {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The track.
        track: TrackId,
    },
    /// Stop receiving a track.
    Unsubscribe {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The track.
        track: TrackId,
    },
    /// The most one wants of a video subscription.
    SetVideoQuality {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// The track.
        track: TrackId,
        /// At most this, or `auto` with the rendered size.
        quality: QualityRequest,
        /// Rendered width in device pixels (`auto`).
        #[serde(default)]
        width: Option<u32>,
        /// Rendered height in device pixels (`auto`).
        #[serde(default)]
        height: Option<u32>,
    },
    /// Change one's name or metadata.
    Update {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// New name.
        #[serde(default)]
        name: Option<String>,
        /// New metadata.
        #[serde(default)]
        metadata: Option<serde_json::Value>,
    },
    /// A chat message.
    Chat {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// Text.
        text: String,
        /// Recipient, for a private message.
        #[serde(default)]
        to: Option<ParticipantId>,
    },
    /// Ask for an offer with new ICE credentials.
    IceRestart {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
    },
    /// Keepalive.
    Ping {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
        /// Echoed.
        #[serde(default)]
        ts: Option<serde_json::Value>,
    },
    /// Leave the room.
    Leave {
        /// Request id.
        #[serde(default)]
        id: Option<MessageId>,
        /// Version.
        v: u32,
    },
}

/// Why a client message was refused. `code()` and the display text go to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not JSON, unknown type, missing or wrong fields.
    BadMessage(String),
    /// `v` is not [`VERSION`].
    UnsupportedVersion(u64),
    /// Over a size limit.
    TooLarge(String),
}

impl std::error::Error for ProtocolError {}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::BadMessage(m) => f.write_str(m),
            ProtocolError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v} is not supported; this server speaks v{VERSION}"
                )
            }
            ProtocolError::TooLarge(m) => f.write_str(m),
        }
    }
}

impl ProtocolError {
    /// The `code` of the error message.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BadMessage(_) => "bad_message",
            ProtocolError::UnsupportedVersion(_) => "unsupported_version",
            ProtocolError::TooLarge(_) => "too_large",
        }
    }
}

impl ClientMessage {
    /// Parse one text frame of at most `max_bytes`. On failure the request id is still
    /// returned when it could be read, so the error can carry it.
    pub fn parse(
        text: &str,
        max_bytes: usize,
    ) -> Result<ClientMessage, (Option<MessageId>, ProtocolError)> {
        if text.len() > max_bytes {
            return Err((
                None,
                ProtocolError::TooLarge(format!(
                    "message of {} bytes is over the {max_bytes}-byte limit",
                    text.len()
                )),
            ));
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| (None, ProtocolError::BadMessage(format!("not JSON: {e}"))))?;
        let obj = value.as_object().ok_or((
            None,
            ProtocolError::BadMessage("a message must be a JSON object".into()),
        ))?;
        let id = obj
            .get("id")
            .and_then(|v| serde_json::from_value::<MessageId>(v.clone()).ok())
            .filter(|id| match id {
                MessageId::Text(t) => t.chars().count() <= MAX_REQUEST_ID_CHARS,
                MessageId::Number(_) => true,
            });
        let fail = |e: ProtocolError| (id.clone(), e);
        match obj.get("v") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
            Some(serde_json::Value::Number(n)) => {
                return Err(fail(ProtocolError::UnsupportedVersion(
                    n.as_u64().unwrap_or(0),
                )));
            }
            _ => {
                return Err(fail(ProtocolError::BadMessage(
                    "missing protocol version `v`".into(),
                )));
            }
        }
        if let Some(serde_json::Value::String(t)) = obj.get("id")
            && t.chars().count() > MAX_REQUEST_ID_CHARS
        {
            return Err(fail(ProtocolError::TooLarge(format!(
                "`id` is over {MAX_REQUEST_ID_CHARS} characters"
            ))));
        }
        let msg: ClientMessage = serde_json::from_value(value)
            .map_err(|e| fail(ProtocolError::BadMessage(e.to_string())))?;
        msg.check_bounds().map_err(fail)?;
        Ok(msg)
    }

    /// Every value [`ClientMessage::kind`] returns.
    pub const KINDS: &'static [&'static str] = &[
        "join",
        "resume",
        "answer",
        "candidate",
        "publish",
        "unpublish",
        "mute",
        "subscribe",
        "unsubscribe",
        "set_video_quality",
        "update",
        "chat",
        "ice_restart",
        "ping",
        "leave",
    ];

    /// The message's `type`, as it is spelled on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Unpublish { .. } => "unpublish",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::SetVideoQuality { .. } => "set_video_quality",
            ClientMessage::Update { .. } => "update",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::IceRestart { .. } => "ice_restart",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Leave { .. } => "leave",
        }
    }

    /// The request id, if the client sent one.
    pub fn id(&self) -> Option<&MessageId> {
        match self {
            ClientMessage::Join { id, .. }
            | ClientMessage::Resume { id, .. }
            | ClientMessage::Answer { id, .. }
            | ClientMessage::Candidate { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Unpublish { id, .. }
            | ClientMessage::Mute { id, .. }
            | ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::SetVideoQuality { id, .. }
            | ClientMessage::Update { id, .. }
            | ClientMessage::Chat { id, .. }
            | ClientMessage::IceRestart { id, .. }
            | ClientMessage::Ping { id, .. }
            | ClientMessage::Leave { id, .. } => id.as_ref(),
        }
    }

    fn check_bounds(&self) -> Result<(), ProtocolError> {
        let too_large = |what: &str| Err(ProtocolError::TooLarge(what.to_owned()));
        match self {
            ClientMessage::Join { name, metadata, .. }
            | ClientMessage::Update { name, metadata, .. } => {
                if name
                    .as_ref()
                    .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
                {
                    return too_large("`name` is over 128 characters");
                }
                if let Some(m) = metadata
                    && serde_json::to_string(m).map_or(usize::MAX, |s| s.len()) > MAX_METADATA_BYTES
                {
                    return too_large("`metadata` is over 4096 bytes");
                }
            }
            ClientMessage::Publish {
                cid,
                name,
                kind,
                layers,
                ..
            } => {
                match (kind, layers) {
                    (_, None) | (MediaKind::Video, Some(1..=MAX_LAYERS)) => {}
                    (MediaKind::Audio, Some(_)) => {
                        return Err(ProtocolError::BadMessage(
                            "`layers` is for video tracks only".into(),
                        ));
                    }
                    (MediaKind::Video, Some(_)) => {
                        return Err(ProtocolError::BadMessage(format!(
                            "`layers` must be 1 to {MAX_LAYERS}"
                        )));
                    }
                }
                if cid.is_empty() || cid.chars().count() > MAX_CID_CHARS {
                    return Err(ProtocolError::BadMessage(
                        "`cid` must be 1 to 64 characters".into(),
                    ));
                }
                if name
                    .as_ref()
                    .is_some_and(|n| n.chars().count() > MAX_CID_CHARS)
                {
                    return too_large("`name` is over 64 characters");
                }
            }
            ClientMessage::SetVideoQuality {
                quality,
                width,
                height,
                ..
            } => {
                let side = |v: &Option<u32>| v.is_some_and(|v| (1..=MAX_RENDER_SIDE).contains(&v));
                match quality {
                    QualityRequest::Auto if !(side(width) && side(height)) => {
                        return Err(ProtocolError::BadMessage(format!(
                            "`auto` needs `width` and `height`, 1 to {MAX_RENDER_SIDE} each"
                        )));
                    }
                    QualityRequest::Auto => {}
                    _ if width.is_some() || height.is_some() => {
                        return Err(ProtocolError::BadMessage(
                            "`width` and `height` go with `auto` only".into(),
                        ));
                    }
                    _ => {}
                }
            }
            ClientMessage::Chat { text, .. } => {
                if text.trim().is_empty() {
                    return Err(ProtocolError::BadMessage("empty chat message".into()));
                }
                if text.chars().count() > MAX_CHAT_CHARS {
                    return too_large("chat message is over 2000 characters");
                }
            }
            ClientMessage::Resume { resume_token, .. } if resume_token.len() > 128 => {
                return too_large("`resume_token` is too long");
            }
            ClientMessage::Candidate {
                candidate: Some(c), ..
            } if c.len() > 1024 => {
                return too_large("`candidate` is too long");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why the server closes a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The client left.
    Left,
    /// A newer session of the same identity took over.
    Replaced,
    /// An administrator removed it.
    Kicked,
    /// The room was closed.
    RoomClosed,
    /// The server is shutting down.
    Draining,
    /// It stayed away too long.
    Timeout,
    /// It broke the protocol's rules too often.
    Policy,
    /// It sent a message far over the size limit (WebSocket close code 1009).
    TooLarge,
}

/// Messages the server sends.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Joined (or, with `resumed`, re-attached).
    Joined {
        /// The join's request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// Room.
        room: String,
        /// Oneself.
        participant: ParticipantInfo,
        /// Everyone else.
        participants: Vec<ParticipantInfo>,
        /// For `resume`.
        resume_token: String,
        /// ICE servers to use (none: the server is ICE-lite with host candidates).
        ice_servers: Vec<serde_json::Value>,
        /// Base URLs of the cluster's other nodes that take joins, best first: where to join
        /// afresh if this node goes away. Left out when there is none.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        alternatives: Vec<String>,
    },
    /// Same content as `joined`, after a `resume`.
    Resumed {
        /// The resume's request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// Room.
        room: String,
        /// Oneself.
        participant: ParticipantInfo,
        /// Everyone else.
        participants: Vec<ParticipantInfo>,
        /// The same resume token.
        resume_token: String,
        /// ICE servers.
        ice_servers: Vec<serde_json::Value>,
        /// As in `joined`, as of now.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        alternatives: Vec<String>,
    },
    /// A `join` this node does not take (it is draining or full): join at `url` instead.
    Redirect {
        /// The join's request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// The other node's base URL (its `advertise_url`).
        url: String,
    },
    /// An SDP offer to answer.
    Offer {
        /// Answer with this id.
        offer_id: u64,
        /// SDP.
        sdp: String,
        /// What every m-line is for.
        mids: Vec<MidInfo>,
    },
    /// A publication is live.
    Published {
        /// The publish request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// The client's name for it.
        cid: String,
        /// The track id.
        track: TrackId,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone changed name or metadata.
    ParticipantUpdated {
        /// Who, now.
        participant: ParticipantInfo,
    },
    /// The room's metadata changed (an administrator set it).
    RoomUpdated {
        /// Room.
        room: String,
        /// Its metadata, now.
        metadata: serde_json::Value,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: crate::LeaveReason,
    },
    /// A track appeared.
    TrackPublished {
        /// Publisher.
        participant: ParticipantId,
        /// Track.
        track: TrackInfo,
    },
    /// A track went away.
    TrackUnpublished {
        /// Publisher.
        participant: ParticipantId,
        /// Track.
        track: TrackId,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// Publisher.
        participant: ParticipantId,
        /// Track.
        track: TrackId,
        /// Muted?
        muted: bool,
    },
    /// To a subscriber: what it now receives of one of its video subscriptions.
    StreamState {
        /// The track.
        track: TrackId,
        /// Flowing or paused.
        state: StreamState,
        /// The layer received while active.
        quality: Option<Quality>,
    },
    /// To a publisher: the layers of its simulcast track that someone receives.
    Dynacast {
        /// The track.
        track: TrackId,
        /// The RIDs to keep sending; the others may be paused.
        active: Vec<String>,
    },
    /// Who speaks now, loudest first.
    SpeakersChanged {
        /// At most three.
        speakers: Vec<Speaker>,
    },
    /// A chat message.
    Chat {
        /// Sender.
        from: ChatSender,
        /// Text.
        text: String,
        /// Recipient of a private message.
        to: Option<ParticipantId>,
        /// Server time, ms since the Unix epoch.
        ts: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The ping's request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// Echo of the ping's `ts`.
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<serde_json::Value>,
    },
    /// A request failed.
    Error {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// Machine-readable code.
        code: String,
        /// Human-readable text.
        message: String,
    },
    /// The server is about to close the socket.
    Closing {
        /// Why.
        reason: CloseReason,
        /// Details.
        message: String,
    },
}

impl ServerMessage {
    /// Serialize with the version field.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(obj) = value.as_object_mut() {
            obj.insert("v".into(), VERSION.into());
        }
        value.to_string()
    }

    /// An error answer.
    pub fn error(id: Option<MessageId>, code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMessage, (Option<MessageId>, ProtocolError)> {
        ClientMessage::parse(s, 64 * 1024)
    }

    #[test]
    fn join_parses() {
        let m =
            parse(r#"{"v":1,"type":"join","id":1,"room":"demo","name":"Ada","metadata":{"a":1}}"#)
                .unwrap();
        assert!(matches!(m, ClientMessage::Join { ref room, .. } if room == "demo"));
        assert_eq!(m.id(), Some(&MessageId::Number(1)));
        assert_eq!(m.kind(), "join");
        assert!(ClientMessage::KINDS.contains(&m.kind()));
        let m = parse(r#"{"v":1,"type":"ping","ts":5}"#);
        assert_eq!(m.map(|m| m.kind()).ok(), Some("ping"));
    }

    #[test]
    fn browser_candidates_parse() {
        let m = parse(
            r#"{"v":1,"type":"candidate","candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Candidate {
                candidate: Some(_),
                ..
            }
        ));
        assert!(parse(r#"{"v":1,"type":"candidate","candidate":null}"#).is_ok());
    }

    #[test]
    fn malformed_input_is_named() {
        let (_, e) = parse("not json").unwrap_err();
        assert_eq!(e.code(), "bad_message");
        let (_, e) = parse("[1,2]").unwrap_err();
        assert_eq!(e.code(), "bad_message");
        let (id, e) = parse(r#"{"v":2,"type":"ping","id":"x"}"#).unwrap_err();
        assert_eq!(e.code(), "unsupported_version");
        assert_eq!(id, Some(MessageId::Text("x".into())));
        let (_, e) = parse(r#"{"type":"ping"}"#).unwrap_err();
        assert!(e.to_string().contains("version"));
        let (id, e) = parse(r#"{"v":1,"type":"fly","id":3}"#).unwrap_err();
        assert_eq!(e.code(), "bad_message");
        assert!(e.to_string().contains("fly"), "{e}");
        assert_eq!(id, Some(MessageId::Number(3)));
        let (_, e) = parse(r#"{"v":1,"type":"join"}"#).unwrap_err();
        assert!(e.to_string().contains("room"), "{e}");
        let (_, e) = parse(r#"{"v":1,"type":"ping","extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let (_, e) = parse(r#"{"v":1,"type":"subscribe","track":"nope"}"#).unwrap_err();
        assert_eq!(e.code(), "bad_message");
    }

    #[test]
    fn limits_are_enforced() {
        let (_, e) = ClientMessage::parse(&"x".repeat(100), 10).unwrap_err();
        assert_eq!(e.code(), "too_large");
        let long = "a".repeat(2001);
        let (_, e) = parse(&format!(r#"{{"v":1,"type":"chat","text":"{long}"}}"#)).unwrap_err();
        assert_eq!(e.code(), "too_large");
        let (_, e) = parse(r#"{"v":1,"type":"chat","text":"   "}"#).unwrap_err();
        assert_eq!(e.code(), "bad_message");
        let meta = "b".repeat(5000);
        let (_, e) =
            parse(&format!(r#"{{"v":1,"type":"update","metadata":"{meta}"}}"#)).unwrap_err();
        assert_eq!(e.code(), "too_large");
        let (_, e) = parse(r#"{"v":1,"type":"publish","cid":"","kind":"video","source":"camera"}"#)
            .unwrap_err();
        assert_eq!(e.code(), "bad_message");
        let id = "i".repeat(65);
        let (_, e) = parse(&format!(r#"{{"v":1,"type":"ping","id":"{id}"}}"#)).unwrap_err();
        assert_eq!(e.code(), "too_large");
    }

    #[test]
    fn simulcast_and_quality_requests_are_checked() {
        let m = parse(
            r#"{"v":1,"type":"publish","cid":"c","kind":"video","source":"camera","layers":3}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Publish {
                layers: Some(3),
                ..
            }
        ));
        for bad in [
            r#"{"v":1,"type":"publish","cid":"c","kind":"video","source":"camera","layers":4}"#,
            r#"{"v":1,"type":"publish","cid":"c","kind":"video","source":"camera","layers":0}"#,
            r#"{"v":1,"type":"publish","cid":"c","kind":"audio","source":"microphone","layers":2}"#,
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"auto"}"#,
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"auto","width":0,"height":9}"#,
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"auto","width":99999,"height":9}"#,
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"low","width":3}"#,
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"ultra"}"#,
        ] {
            let (_, e) = parse(bad).unwrap_err();
            assert_eq!(e.code(), "bad_message", "{bad}");
        }
        let m = parse(
            r#"{"v":1,"type":"set_video_quality","track":"t0000000000000001","quality":"auto","width":320,"height":180}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::SetVideoQuality {
                quality: QualityRequest::Auto,
                width: Some(320),
                ..
            }
        ));
    }

    #[test]
    fn quality_messages_serialize() {
        let s = ServerMessage::StreamState {
            track: TrackId(1),
            state: StreamState::Paused,
            quality: None,
        }
        .to_json();
        assert!(
            s.contains(r#""type":"stream_state""#) && s.contains(r#""state":"paused""#),
            "{s}"
        );
        let s = ServerMessage::SpeakersChanged {
            speakers: vec![Speaker {
                participant: ParticipantId(2),
                level: 0.5,
            }],
        }
        .to_json();
        assert!(
            s.contains(r#""type":"speakers_changed""#) && s.contains(r#""level":0.5"#),
            "{s}"
        );
    }

    #[test]
    fn alternatives_and_redirect_serialize() {
        let joined = |alternatives: Vec<String>| ServerMessage::Joined {
            id: None,
            room: "r".into(),
            participant: ParticipantInfo {
                id: ParticipantId(1),
                identity: crate::Identity::parse("ann").unwrap(),
                name: "Ann".into(),
                metadata: serde_json::Value::Null,
                tracks: Vec::new(),
            },
            participants: Vec::new(),
            resume_token: "t".into(),
            ice_servers: Vec::new(),
            alternatives,
        };
        // A node alone says nothing new: older clients see the frame they always saw.
        let alone: serde_json::Value = serde_json::from_str(&joined(Vec::new()).to_json()).unwrap();
        assert!(alone.get("alternatives").is_none(), "{alone}");
        let v: serde_json::Value =
            serde_json::from_str(&joined(vec!["http://b:8080".into()]).to_json()).unwrap();
        assert_eq!(v["alternatives"], serde_json::json!(["http://b:8080"]));
        let r = ServerMessage::Redirect {
            id: Some(MessageId::Number(1)),
            url: "http://b:8080".into(),
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"v": 1, "type": "redirect", "id": 1, "url": "http://b:8080"})
        );
    }

    #[test]
    fn server_messages_carry_the_version() {
        let s = ServerMessage::error(Some(MessageId::Number(2)), "not_found", "no such track")
            .to_json();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], 2);
        assert_eq!(v["code"], "not_found");
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let alphabet = br#"{}[]":,vtype1 join\"#;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[(x as usize + i * 7) % alphabet.len()])
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }
    }
}
