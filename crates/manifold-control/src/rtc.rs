//! The WebSocket room protocol at `/rtc` (`docs/protocol.md`): one task per socket reads
//! client messages in order and turns them into shard commands; a writer task sends what
//! the roster queues for the socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use manifold_api::command::{Command, NegotiatedSession, NewSession, Publication};
use manifold_api::negotiation::SdpFragment;
use manifold_api::protocol::{
    ChatSender, ClientMessage, CloseReason, MessageId, ParticipantInfo, ServerMessage,
};
use manifold_api::{
    CommandError, Identity, LeaveReason, ParticipantId, ReplyValue, RoomName, SessionKind,
};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::error::ApiError;
use crate::federation::LocalChange;
use crate::listener::ClientAddr;
use crate::outbox::{Item, Outbox};
use crate::roster::{Member, TokenBucket};
use crate::sessions::SessionQuery;
use crate::state::{AppState, SessionEntry};
use crate::ws::{self, Socket, UnjoinedSlot};

/// A socket silent this long is closed (clients ping every 15-30 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// More protocol errors than this within [`ABUSE_WINDOW`] closes the socket with 1008.
const ABUSE_LIMIT: usize = 20;
const ABUSE_WINDOW: Duration = Duration::from_secs(60);
/// WebSocket close code for a policy violation.
const POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code for a message too big to process (RFC 6455 §7.4.1).
const MESSAGE_TOO_BIG: u16 = 1009;
/// Chat: messages per second and burst.
const CHAT_RATE: f64 = 5.0;
const CHAT_BURST: f64 = 10.0;
/// A send to the client that makes no progress this long ends the socket.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// `GET /rtc`: the WebSocket opening handshake (`ws.rs`), then the protocol on the socket.
pub async fn upgrade(
    State(state): State<AppState>,
    from: ClientAddr,
    Query(query): Query<SessionQuery>,
    req: Request,
) -> Response {
    // Messages over the protocol limit get a `too_large` error from the parser; only far
    // larger ones are cut off by the WebSocket layer itself (close code 1009).
    let hard_cap = state
        .config
        .max_ws_message_bytes
        .saturating_mul(16)
        .max(1 << 20);
    match ws::accept(req, state.unjoined.clone(), hard_cap) {
        Ok((response, socket)) => {
            tokio::spawn(async move {
                if let Some((socket, slot)) = socket.await {
                    run(state, socket, query.access_token, slot, from).await;
                }
            });
            response
        }
        Err(e) => e.into_response(),
    }
}

struct Conn {
    state: AppState,
    tx: Arc<Outbox>,
    participant: Option<(ParticipantId, u64)>,
    query_token: Option<String>,
    errors: VecDeque<Instant>,
    /// Held until the socket joins: unjoined sockets are bounded.
    unjoined: Option<UnjoinedSlot>,
    /// Every message the client sends, whatever its type.
    rate: TokenBucket,
    /// Where the socket comes from.
    from: ClientAddr,
}

/// How the socket's read side ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// We or the client closed, or the connection broke.
    Closed,
    /// The client sent a frame over the cap; the rest of it is still arriving.
    Oversized,
}

async fn run(
    state: AppState,
    socket: Socket,
    query_token: Option<String>,
    slot: UnjoinedSlot,
    from: ClientAddr,
) {
    let (mut sink, mut stream) = socket.split();
    let tx = Arc::new(Outbox::new(state.config.outbox));
    let outbox = tx.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(item) = outbox.next().await {
            // A client that stops reading stalls the send once the kernel's buffers fill:
            // past the stall limit it is given up on, and its session begins the grace
            // period like any dropped socket.
            let sent = match item {
                Item::Text(text) => {
                    tokio::time::timeout(WRITE_STALL, sink.send(Message::Text(text))).await
                }
                Item::Close(code, text, reason) => {
                    let _ = tokio::time::timeout(WRITE_STALL, sink.send(Message::Text(text))).await;
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ =
                        tokio::time::timeout(WRITE_STALL, sink.send(Message::Close(Some(frame))))
                            .await;
                    return sink;
                }
            };
            if !matches!(sent, Ok(Ok(()))) {
                return sink;
            }
        }
        let _ = tokio::time::timeout(WRITE_STALL, sink.send(Message::Close(None))).await;
        sink
    });

    let mut conn = Conn {
        state: state.clone(),
        tx: tx.clone(),
        participant: None,
        query_token,
        errors: VecDeque::new(),
        unjoined: Some(slot),
        rate: TokenBucket::new(
            state.config.ws_message_rate,
            state.config.ws_message_burst,
            Instant::now(),
        ),
        from,
    };
    // A socket must have joined (or resumed) within the join timeout of opening, whatever
    // else it sends meanwhile: pings do not buy an unjoined socket more time.
    let mut deadline = Instant::now() + state.config.join_timeout;
    let mut ending = Ending::Closed;
    let mut finished = None;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let next = tokio::select! {
            next = tokio::time::timeout(wait, stream.next()) => next,
            // The writer gave up (overflow, a stalled or broken connection): so do we.
            done = &mut writer => {
                finished = Some(done);
                break;
            }
        };
        let frame = match next {
            Err(_) => {
                let why = if conn.participant.is_some() {
                    "no message for too long"
                } else {
                    "no join within the time allowed"
                };
                conn.close(1000, CloseReason::Timeout, why).await;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "websocket read failed");
                if matches!(e, WsError::Capacity(_)) {
                    ending = Ending::Oversized;
                    conn.close(
                        MESSAGE_TOO_BIG,
                        CloseReason::TooLarge,
                        "a message far over the size limit",
                    )
                    .await;
                }
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Until it has joined, a socket lives on its join deadline alone.
        if conn.participant.is_some() {
            deadline = Instant::now() + IDLE_TIMEOUT;
        }
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                if conn
                    .fail(
                        None,
                        "bad_message",
                        "binary frames are not part of the protocol",
                    )
                    .await
                {
                    break;
                }
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => break,
        };
        if !conn.rate.take(Instant::now()) {
            let message = format!(
                "at most {} messages per second (bursts of {})",
                state.config.ws_message_rate, state.config.ws_message_burst
            );
            if conn.fail(None, "rate_limited", &message).await {
                break;
            }
            continue;
        }
        let msg = match ClientMessage::parse(text.as_str(), state.config.max_ws_message_bytes) {
            Ok(m) => {
                tracing::trace!(participant = ?conn.participant.map(|p| p.0), message = ?m, "client message");
                m
            }
            Err((id, e)) => {
                if conn.fail(id, e.code(), &e.to_string()).await {
                    break;
                }
                continue;
            }
        };
        let joined_before = conn.participant.is_some();
        let kind = msg.kind();
        let started = Instant::now();
        let flow = conn.handle(msg).await;
        let took = started.elapsed();
        state.histograms.ws_message(kind, took);
        if !joined_before && conn.participant.is_some() {
            state
                .histograms
                .joined(manifold_api::SessionKind::Room, took);
            conn.unjoined = None;
            deadline = Instant::now() + IDLE_TIMEOUT;
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break,
            Err((id, e)) => {
                if conn.fail(id, e.0, &e.1).await {
                    break;
                }
            }
        }
    }
    if let Some((id, generation)) = conn.participant {
        state.detach_socket(id, generation);
    }
    drop(conn);
    tx.finish();
    let done = match finished {
        Some(done) => done,
        None => writer.await,
    };
    let Ok(sink) = done else {
        return;
    };
    match ending {
        Ending::Closed => {
            // Our close frame is out; read what the client still sends until it answers
            // it. Closing with unread data would make the kernel reset the connection, and
            // the client could lose the close frame (and its reason) on the way.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        Ending::Oversized => {
            // The WebSocket layer is done with this socket, but the oversized frame is
            // still arriving: read it off the connection itself.
            if let Ok(mut socket) = sink.reunite(stream) {
                ws::drain_raw(&mut socket).await;
            }
        }
    }
}

enum Flow {
    Continue,
    Stop,
}

/// An error for the client: code and message.
struct Refusal(&'static str, String);

type Handled = Result<Flow, (Option<MessageId>, Refusal)>;

fn refuse(
    id: &Option<MessageId>,
    code: &'static str,
    message: impl Into<String>,
) -> (Option<MessageId>, Refusal) {
    (id.clone(), Refusal(code, message.into()))
}

fn from_api(id: &Option<MessageId>, e: ApiError) -> (Option<MessageId>, Refusal) {
    let code = match &e {
        ApiError::Unauthorized(_) => "unauthorized",
        ApiError::Forbidden(_) => "forbidden",
        ApiError::NotFound(_) => "not_found",
        ApiError::BadSdp(_) => "bad_sdp",
        ApiError::LimitReached(_) => "limit_reached",
        ApiError::Unavailable(_) => "unavailable",
        ApiError::BadRequest(_) => "bad_message",
        ApiError::TooLarge(_) => "too_large",
        _ => "internal",
    };
    (id.clone(), Refusal(code, e.to_string()))
}

fn from_command(id: &Option<MessageId>, e: CommandError) -> (Option<MessageId>, Refusal) {
    match e {
        CommandError::NoOfferPending(m) => refuse(id, "no_offer_pending", m),
        CommandError::BadSdp(m) => refuse(id, "bad_sdp", m),
        CommandError::NotFound(m) => refuse(id, "not_found", m),
        CommandError::LimitReached(m) => refuse(id, "limit_reached", m),
        CommandError::Forbidden(m) => refuse(id, "forbidden", m),
        CommandError::UnknownParticipant => refuse(id, "not_found", "your session is gone"),
        other => refuse(id, "bad_message", other.to_string()),
    }
}

impl Conn {
    /// Send an error; returns true when the client has now misbehaved too often and the
    /// socket was closed.
    async fn fail(&mut self, id: Option<MessageId>, code: &str, message: &str) -> bool {
        tracing::debug!(participant = ?self.participant.map(|p| p.0), code, message, "request refused");
        let now = Instant::now();
        self.errors.push_back(now);
        while self
            .errors
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > ABUSE_WINDOW)
        {
            self.errors.pop_front();
        }
        if self
            .tx
            .push(&ServerMessage::error(id, code, message))
            .is_err()
        {
            // Its own queue overflowed: the socket is closing already.
            return true;
        }
        if self.errors.len() > ABUSE_LIMIT {
            tracing::info!(participant = ?self.participant.map(|p| p.0), "closing an abusive socket");
            self.close(
                POLICY_VIOLATION,
                CloseReason::Policy,
                "too many bad messages",
            )
            .await;
            return true;
        }
        false
    }

    async fn close(&mut self, code: u16, reason: CloseReason, message: &str) {
        self.tx.close(
            code,
            &ServerMessage::Closing {
                reason,
                message: message.into(),
            },
        );
    }

    fn reply(&self, msg: ServerMessage) {
        // An overflow closes the socket; nothing more to do here.
        let _ = self.tx.push(&msg);
    }

    async fn handle(&mut self, msg: ClientMessage) -> Handled {
        let id = msg.id().cloned();
        let Some((me, _)) = self.participant else {
            return match msg {
                ClientMessage::Join {
                    room,
                    token,
                    identity,
                    name,
                    metadata,
                    auto_subscribe,
                    ..
                } => {
                    self.join(id, room, token, identity, name, metadata, auto_subscribe)
                        .await
                }
                ClientMessage::Resume {
                    participant,
                    resume_token,
                    ..
                } => self.resume(id, participant, resume_token).await,
                ClientMessage::Ping { ts, .. } => {
                    self.reply(ServerMessage::Pong { id, ts });
                    Ok(Flow::Continue)
                }
                _ => Err(refuse(&id, "not_joined", "send `join` (or `resume`) first")),
            };
        };
        let state = self.state.clone();
        let (room, worker) = state
            .with_member(me, |m| (m.room.clone(), m.worker))
            .ok_or_else(|| refuse(&id, "not_found", "your session is gone"))?;
        match msg {
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } => Err(refuse(
                &id,
                "already_joined",
                "this socket has already joined",
            )),
            ClientMessage::Ping { ts, .. } => {
                self.reply(ServerMessage::Pong { id, ts });
                Ok(Flow::Continue)
            }
            ClientMessage::Answer { offer_id, sdp, .. } => {
                self.command(&id, worker, |request| Command::Answer {
                    request,
                    participant: me,
                    offer_id,
                    sdp,
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Candidate { candidate, .. } => {
                let Some(c) = candidate.filter(|c| !c.trim().is_empty()) else {
                    return Ok(Flow::Continue);
                };
                let line = c.trim().trim_start_matches("a=").to_owned();
                let fragment = SdpFragment {
                    candidates: vec![line],
                    ..Default::default()
                };
                self.command(&id, worker, |request| Command::Trickle {
                    request,
                    participant: me,
                    fragment,
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Publish {
                cid,
                kind,
                source,
                name,
                muted,
                layers,
                ..
            } => {
                let can = state.with_member(me, |m| m.publishing.len()).unwrap_or(0);
                if !self.may_publish(me) {
                    return Err(refuse(
                        &id,
                        "forbidden",
                        "the token lacks the publish grant",
                    ));
                }
                if can >= 16 {
                    return Err(refuse(
                        &id,
                        "limit_reached",
                        "too many publications pending",
                    ));
                }
                let duplicate = state
                    .with_member(me, |m| m.publishing.contains_key(&cid))
                    .unwrap_or(false);
                if duplicate {
                    return Err(refuse(
                        &id,
                        "bad_message",
                        format!("cid {cid:?} is already being published"),
                    ));
                }
                state.with_member_mut(me, |m| {
                    m.publishing.insert(cid.clone(), id.clone());
                });
                let publication = Publication {
                    cid: cid.clone(),
                    kind,
                    source,
                    name: name.unwrap_or_default(),
                    muted: muted.unwrap_or(false),
                    layers: layers.unwrap_or(1),
                };
                let result = self
                    .command(&id, worker, |request| Command::Publish {
                        request,
                        participant: me,
                        publication,
                    })
                    .await;
                if result.is_err() {
                    state.with_member_mut(me, |m| {
                        m.publishing.remove(&cid);
                    });
                }
                result?;
                Ok(Flow::Continue)
            }
            ClientMessage::Unpublish { track, .. } => {
                if state.owner_of(&room, track) != Some(me) {
                    return Err(refuse(
                        &id,
                        "not_found",
                        format!("you publish no track {track}"),
                    ));
                }
                self.command(&id, worker, |request| Command::Unpublish {
                    request,
                    participant: me,
                    track,
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Mute { track, muted, .. } => {
                if state.owner_of(&room, track) != Some(me) {
                    return Err(refuse(
                        &id,
                        "not_found",
                        format!("you publish no track {track}"),
                    ));
                }
                // The shard stops (or resumes) forwarding first; then the room is told.
                self.command(&id, worker, |request| Command::SetMuted {
                    request,
                    participant: me,
                    track,
                    muted,
                })
                .await?;
                state.set_muted(me, track, muted);
                Ok(Flow::Continue)
            }
            ClientMessage::Subscribe { track, .. } | ClientMessage::Unsubscribe { track, .. } => {
                let subscribe = matches!(msg, ClientMessage::Subscribe { .. });
                if subscribe && !state.with_member(me, |m| m.may_subscribe).unwrap_or(false) {
                    return Err(refuse(
                        &id,
                        "forbidden",
                        "the token lacks the subscribe grant",
                    ));
                }
                match state.owner_of(&room, track) {
                    None => {
                        return Err(refuse(
                            &id,
                            "not_found",
                            format!("no track {track} in this room"),
                        ));
                    }
                    Some(owner) if owner == me => {
                        return Err(refuse(
                            &id,
                            "bad_message",
                            "you cannot subscribe to your own track",
                        ));
                    }
                    Some(_) => {}
                }
                self.command(&id, worker, |request| {
                    if subscribe {
                        Command::Subscribe {
                            request,
                            participant: me,
                            track,
                        }
                    } else {
                        Command::Unsubscribe {
                            request,
                            participant: me,
                            track,
                        }
                    }
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::SetVideoQuality {
                track,
                quality,
                width,
                height,
                ..
            } => {
                // The shard knows what this member receives; it answers `not_found` for
                // anything else.
                self.command(&id, worker, |request| Command::SetVideoQuality {
                    request,
                    participant: me,
                    track,
                    quality,
                    size: width.zip(height),
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Update { name, metadata, .. } => {
                let allowed = state
                    .with_member_mut(me, |m| m.updates.take(Instant::now()))
                    .unwrap_or(false);
                if !allowed {
                    return Err(refuse(
                        &id,
                        "rate_limited",
                        format!("at most {} updates per second", state.config.update_rate),
                    ));
                }
                state.update_member(me, name, metadata);
                Ok(Flow::Continue)
            }
            ClientMessage::Chat { text, to, .. } => {
                let allowed = state
                    .with_member_mut(me, |m| m.chat.take(Instant::now()))
                    .unwrap_or(false);
                if !allowed {
                    return Err(refuse(
                        &id,
                        "rate_limited",
                        "at most 5 chat messages per second",
                    ));
                }
                state
                    .chat(me, &room, text, to)
                    .map_err(|e| from_api(&id, e))?;
                Ok(Flow::Continue)
            }
            ClientMessage::IceRestart { .. } => {
                self.command(&id, worker, |request| Command::RestartIce {
                    request,
                    participant: me,
                })
                .await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Leave { .. } => {
                self.close(1000, CloseReason::Left, "goodbye").await;
                state.forget_socket(me);
                let _ = state.tell(
                    worker,
                    Command::Leave {
                        participant: me,
                        reason: LeaveReason::Requested,
                    },
                );
                Ok(Flow::Stop)
            }
            _ => Err(refuse(&id, "bad_message", "unsupported message")),
        }
    }

    fn may_publish(&self, me: ParticipantId) -> bool {
        self.state
            .with_member(me, |m| m.may_publish)
            .unwrap_or(false)
    }

    async fn command(
        &self,
        id: &Option<MessageId>,
        worker: u16,
        command: impl FnOnce(manifold_api::RequestId) -> Command,
    ) -> Result<ReplyValue, (Option<MessageId>, Refusal)> {
        match self.state.request_raw(worker, command).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(from_command(id, e)),
            Err(e) => Err(from_api(id, e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn join(
        &mut self,
        id: Option<MessageId>,
        room: String,
        token: Option<String>,
        identity: Option<String>,
        name: Option<String>,
        metadata: Option<serde_json::Value>,
        auto_subscribe: Option<bool>,
    ) -> Handled {
        let state = self.state.clone();
        let room = RoomName::parse(&room)
            .map_err(|e| refuse(&id, "bad_message", format!("room name {e}")))?;
        let token = token.or_else(|| self.query_token.clone());
        if token.is_none() && !state.auth.is_dev() {
            // The HTTP wording points at an Authorization header a browser's WebSocket
            // cannot send.
            return Err(refuse(
                &id,
                "unauthorized",
                "an access token is required (the token field of join, or ?access_token= on /rtc)",
            ));
        }
        let access = state
            .auth
            .verify(token.as_deref())
            .map_err(|e| from_api(&id, e))?;
        access.check_room(&room).map_err(|e| from_api(&id, e))?;
        if !(access.grants.may_subscribe() || access.grants.may_publish()) {
            return Err(refuse(
                &id,
                "forbidden",
                "the token grants neither publish nor subscribe",
            ));
        }
        // Receiving needs the subscribe grant: without it a client joins to publish only,
        // and asking for automatic subscription is an error rather than silently ignored.
        let auto_subscribe = match auto_subscribe {
            Some(true) if !access.grants.may_subscribe() => {
                return Err(refuse(
                    &id,
                    "forbidden",
                    "the token lacks the subscribe grant (auto_subscribe)",
                ));
            }
            Some(v) => v,
            None => access.grants.may_subscribe(),
        };
        // A draining or full node sends the join to another node, as it does WHIP and
        // WHEP, once the token has passed (every node shares the key, so it holds there).
        if let Some(url) = crate::placement::elsewhere(&state).await {
            tracing::info!(%room, %url, "join redirected to another node");
            self.tx.close(1000, &ServerMessage::Redirect { id, url });
            return Ok(Flow::Stop);
        }
        state
            .admit_session(self.from)
            .map_err(|e| from_api(&id, e))?;
        let pid = ParticipantId(rand::random());
        let identity = match (&access.identity, identity) {
            (Some(i), _) => i.clone(),
            (None, Some(requested)) => Identity::parse(&requested)
                .map_err(|e| refuse(&id, "bad_message", format!("identity {e}")))?,
            (None, None) => {
                Identity::parse(&pid.to_string()).expect("participant ids are valid identities")
            }
        };
        let name = name
            .or_else(|| access.name.clone())
            .unwrap_or_else(|| identity.as_str().to_owned());
        let resume_token = format!("{:032x}", rand::random::<u128>());
        let worker = state
            .reserve(pid, |worker| SessionEntry {
                room: room.clone(),
                worker,
                kind: SessionKind::Room,
                etag: String::new(),
                remote_ufrag: None,
                owner: access.identity.clone(),
                resource: String::new(),
            })
            .map_err(|e| from_api(&id, e))?;
        let info = ParticipantInfo {
            id: pid,
            identity: identity.clone(),
            name,
            metadata: metadata.unwrap_or(serde_json::Value::Null),
            tracks: Vec::new(),
        };
        state.add_member(Member {
            info: info.clone(),
            room: room.clone(),
            worker,
            tx: Some(self.tx.clone()),
            generation: 1,
            resume_token: resume_token.clone(),
            protocol: true,
            chat: TokenBucket::new(CHAT_RATE, CHAT_BURST, Instant::now()),
            updates: TokenBucket::new(
                state.config.update_rate,
                state.config.update_burst,
                Instant::now(),
            ),
            publishing: Default::default(),
            announced: false,
            may_publish: access.grants.may_publish(),
            may_subscribe: access.grants.may_subscribe(),
        });

        let result = self
            .start_session(&id, worker, |negotiated| NewSession {
                id: pid,
                identity,
                room: room.clone(),
                kind: SessionKind::Room,
                source: None,
                auto_subscribe,
                grants: access.grants,
                negotiated,
            })
            .await;
        let (offer_id, sdp, mids) = match result {
            Ok(v) => v,
            Err(e) => {
                state.remove_member(pid);
                state.forget(pid);
                return Err(e);
            }
        };
        self.participant = Some((pid, 1));
        tracing::info!(participant = %pid, %room, "joined over the room protocol");
        self.reply(ServerMessage::Joined {
            id,
            room: room.to_string(),
            participant: info,
            participants: state.others(&room, pid),
            resume_token,
            ice_servers: ice_servers(&state, pid),
            alternatives: crate::placement::alternatives(&state),
        });
        self.reply(ServerMessage::Offer {
            offer_id,
            sdp,
            mids,
        });
        self.tell_speakers(&state, &room);
        Ok(Flow::Continue)
    }

    /// Someone arriving (or coming back) while others speak hears who does: the room is
    /// told only of changes.
    fn tell_speakers(&self, state: &AppState, room: &RoomName) {
        if let Some(speakers) = state.roster().speakers(room) {
            self.reply(ServerMessage::SpeakersChanged {
                speakers: speakers.to_vec(),
            });
        }
    }

    async fn start_session(
        &self,
        id: &Option<MessageId>,
        worker: u16,
        session: impl FnOnce(NegotiatedSession) -> NewSession,
    ) -> Result<(u64, String, Vec<manifold_api::protocol::MidInfo>), (Option<MessageId>, Refusal)>
    {
        let state = &self.state;
        let candidates = state
            .workers
            .get(usize::from(worker))
            .map(|w| w.candidates().to_vec())
            .unwrap_or_default();
        let factory = state.factory.clone();
        let negotiated =
            tokio::task::spawn_blocking(move || factory.offer(&candidates, Instant::now()))
                .await
                .map_err(|e| refuse(id, "internal", format!("negotiation task failed: {e}")))?
                .map_err(|e| from_api(id, e.into()))?;
        let sdp = negotiated.sdp.clone();
        let mids = negotiated.mids.clone();
        let session = Box::new(session(negotiated));
        self.command(id, worker, |request| Command::Join { request, session })
            .await?;
        Ok((1, sdp, mids))
    }

    async fn resume(
        &mut self,
        id: Option<MessageId>,
        participant: ParticipantId,
        token: String,
    ) -> Handled {
        let state = self.state.clone();
        let generation = state
            .reattach(participant, &token, self.tx.clone())
            .ok_or_else(|| {
                refuse(
                    &id,
                    "not_found",
                    "no session to resume (it may have timed out)",
                )
            })?;
        self.participant = Some((participant, generation));
        let (room, worker, info, resume_token) = state
            .with_member(participant, |m| {
                (
                    m.room.clone(),
                    m.worker,
                    m.info.clone(),
                    m.resume_token.clone(),
                )
            })
            .ok_or_else(|| refuse(&id, "not_found", "your session is gone"))?;
        tracing::info!(%participant, %room, "resumed");
        self.reply(ServerMessage::Resumed {
            id,
            room: room.to_string(),
            participant: info,
            participants: state.others(&room, participant),
            resume_token,
            ice_servers: ice_servers(&state, participant),
            alternatives: crate::placement::alternatives(&state),
        });
        // An offer the client may have missed while away is sent again.
        let _ = state.tell(worker, Command::Resync { participant });
        self.tell_speakers(&state, &room);
        Ok(Flow::Continue)
    }
}

/// Room-protocol operations on the shared state.
impl AppState {
    /// Run `f` on a member.
    pub fn with_member<R>(&self, id: ParticipantId, f: impl FnOnce(&Member) -> R) -> Option<R> {
        self.roster().get(id).map(f)
    }

    /// Run `f` on a member, mutably.
    pub fn with_member_mut<R>(
        &self,
        id: ParticipantId,
        f: impl FnOnce(&mut Member) -> R,
    ) -> Option<R> {
        self.roster().get_mut(id).map(f)
    }

    fn add_member(&self, member: Member) {
        self.roster().insert(member);
    }

    fn remove_member(&self, id: ParticipantId) {
        self.roster().remove(id);
    }

    fn others(&self, room: &RoomName, except: ParticipantId) -> Vec<ParticipantInfo> {
        self.roster().others(room, except)
    }

    fn owner_of(&self, room: &RoomName, track: manifold_api::TrackId) -> Option<ParticipantId> {
        self.roster().owner_of(room, track)
    }

    pub(crate) fn set_muted(
        &self,
        me: ParticipantId,
        track: manifold_api::TrackId,
        muted: bool,
    ) -> bool {
        let mut roster = self.roster();
        let Some(t) = roster.track_mut(me, track) else {
            return false;
        };
        t.muted = muted;
        let Some(m) = roster.get(me) else {
            return false;
        };
        let room = m.room.clone();
        self.federate(&room, LocalChange::TrackMuted(&m.info, track, muted));
        roster.broadcast(
            &room,
            None,
            &ServerMessage::TrackMuted {
                participant: me,
                track,
                muted,
            },
        );
        true
    }

    pub(crate) fn update_member(
        &self,
        me: ParticipantId,
        name: Option<String>,
        metadata: Option<serde_json::Value>,
    ) {
        let mut roster = self.roster();
        let Some(m) = roster.get_mut(me) else {
            return;
        };
        if let Some(n) = name {
            m.info.name = n;
        }
        if let Some(md) = metadata {
            m.info.metadata = md;
        }
        let (room, info) = (m.room.clone(), m.info.clone());
        self.federate(&room, LocalChange::Updated(&info));
        roster.broadcast(
            &room,
            None,
            &ServerMessage::ParticipantUpdated { participant: info },
        );
    }

    fn chat(
        &self,
        me: ParticipantId,
        room: &RoomName,
        text: String,
        to: Option<ParticipantId>,
    ) -> Result<(), ApiError> {
        let mut roster = self.roster();
        let from = roster
            .get(me)
            .map(|m| ChatSender {
                id: me,
                identity: m.info.identity.clone(),
                name: m.info.name.clone(),
            })
            .ok_or_else(|| ApiError::NotFound("your session is gone".into()))?;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Members on other nodes hear it through theirs.
        let here = to.is_some_and(|target| {
            roster
                .get(target)
                .is_some_and(|m| &m.room == room && m.protocol)
        });
        if let Some(target) = to.filter(|_| !here)
            && !roster.remote_ids(room).contains(&target)
        {
            return Err(ApiError::NotFound(format!(
                "no participant {target} in this room"
            )));
        }
        if !here {
            self.federate(room, LocalChange::Chat(&from, &text, to, ts));
        }
        let msg = ServerMessage::Chat { from, text, to, ts };
        match to {
            None => roster.broadcast(room, None, &msg),
            Some(target) => {
                if here {
                    roster.send(target, msg.clone());
                }
                roster.send(me, msg);
            }
        }
        Ok(())
    }

    /// A socket attached anew to a member within the grace period.
    fn reattach(&self, id: ParticipantId, token: &str, tx: Arc<Outbox>) -> Option<u64> {
        let mut roster = self.roster();
        let m = roster.get_mut(id)?;
        if !m.protocol || m.resume_token != token {
            return None;
        }
        if let Some(old) = m.tx.take() {
            old.close(
                1000,
                &ServerMessage::Closing {
                    reason: CloseReason::Replaced,
                    message: "the session resumed on another connection".into(),
                },
            );
        }
        m.generation += 1;
        m.tx = Some(tx);
        Some(m.generation)
    }

    /// The member's socket is about to end on purpose (leave): no grace period.
    fn forget_socket(&self, id: ParticipantId) {
        if let Some(m) = self.roster().get_mut(id) {
            m.tx = None;
            m.generation += 1;
        }
    }

    /// A member's socket ended. Unless another socket took over meanwhile, the member has
    /// the grace period to come back before it leaves the room.
    fn detach_socket(&self, id: ParticipantId, generation: u64) {
        let worker = {
            let mut roster = self.roster();
            let Some(m) = roster.get_mut(id) else {
                return;
            };
            if m.generation != generation {
                return;
            }
            m.tx = None;
            m.worker
        };
        let state = self.clone();
        let grace = self.config.reconnect_grace;
        tracing::info!(participant = %id, ?grace, "socket lost; waiting for the client to resume");
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = state
                .with_member(id, |m| m.generation == generation && m.tx.is_none())
                .unwrap_or(false);
            if expired {
                tracing::info!(participant = %id, "did not resume in time");
                let _ = state.tell(
                    worker,
                    Command::Leave {
                        participant: id,
                        reason: LeaveReason::Timeout,
                    },
                );
            }
        });
    }
}

/// The TURN servers (with a fresh REST credential for this participant) a `joined` or
/// `resumed` carries; empty without `[turn]`.
fn ice_servers(state: &AppState, participant: ParticipantId) -> Vec<serde_json::Value> {
    state
        .config
        .turn
        .as_ref()
        .map(|t| t.ice_servers(&participant.to_string(), crate::turn::now_unix()))
        .unwrap_or_default()
}
