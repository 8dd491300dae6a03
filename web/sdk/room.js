/**
 * A Manifold room: one signaling WebSocket and one peer connection, per docs/protocol.md.
 *
 * The server always offers; this client only answers, one offer at a time. Publishing
 * asks the server for an m-line (`publish`), then attaches the track to the transceiver
 * the next offer names by `cid`. Remote tracks arrive on m-lines the offer names by
 * `track`; their receivers' tracks are reported as `trackSubscribed`.
 *
 * @module manifold/room
 */

import { Emitter } from './events.js';
import { ManifoldError, errorText } from './errors.js';
import { SignalingSocket, signalingUrl } from './signaling.js';
import { LocalTrack, Participant, RemoteTrack } from './tracks.js';
import { readPeerStats } from './stats.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').TrackInfo} TrackInfo */
/** @typedef {import('./tracks.js').ParticipantInfo} ParticipantInfo */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */
/** @typedef {Participant<RemoteTrack>} RemoteParticipant */
/** @typedef {Participant<LocalTrack>} LocalParticipant */

/** @typedef {'connecting' | 'connected' | 'reconnecting' | 'disconnected'} ConnectionState */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [room] Room name (required here unless the URL has `?room=`).
 * @property {string} [identity] Who this is; honoured by the server in dev mode only (a
 *   token carries the identity otherwise).
 * @property {string} [name] Display name.
 * @property {unknown} [metadata] Any JSON value up to 4 KiB.
 * @property {boolean} [autoSubscribe] Receive every track of the room (default: yes when
 *   the token has the subscribe grant, no otherwise; true without the grant is refused);
 *   with false, call `subscribe(trackId)` for the ones wanted.
 * @property {number} [reconnectGraceMs] How long to try to resume a dropped signaling
 *   connection before giving up (default 10 000, the server's default grace period).
 */

/**
 * A chat message, as received, or as sent by this client (`local`).
 * @typedef {object} ChatMessage
 * @property {{id: string, identity: string, name: string}} from
 * @property {RemoteParticipant | LocalParticipant | null} participant The sender, if known.
 * @property {string} text
 * @property {string | null} to Recipient's participant id for a private message.
 * @property {boolean} private
 * @property {boolean} local Sent by this client.
 * @property {number} ts Milliseconds since the Unix epoch (server's clock; the client's
 *   for this client's own messages).
 * @property {number | null} requestId For local messages: the `id` of the `chat` request,
 *   as in a ManifoldError's `requestId` if the server refuses it.
 */

/**
 * Events and the `detail` each carries.
 * @typedef {object} RoomEvents
 * @property {{participant: RemoteParticipant}} participantJoined
 * @property {{participant: RemoteParticipant, reason: string}} participantLeft
 * @property {{participant: RemoteParticipant | LocalParticipant}} participantUpdated
 * @property {{participant: RemoteParticipant, track: RemoteTrack}} trackPublished
 * @property {{participant: RemoteParticipant, track: RemoteTrack}} trackUnpublished
 * @property {{participant: RemoteParticipant | null, track: RemoteTrack, mediaStreamTrack: MediaStreamTrack, mid: string}} trackSubscribed
 * @property {{participant: RemoteParticipant | null, track: RemoteTrack, mediaStreamTrack: MediaStreamTrack | null, mid: string | null}} trackUnsubscribed
 * @property {{participant: RemoteParticipant | LocalParticipant, track: RemoteTrack | LocalTrack, muted: boolean}} trackMuted
 * @property {{track: LocalTrack}} localTrackPublished
 * @property {{track: LocalTrack}} localTrackUnpublished
 * @property {ChatMessage} chat
 * @property {{state: ConnectionState, previous: ConnectionState}} connectionStateChanged
 * @property {{cause: 'signaling' | 'media'}} reconnecting
 * @property {{}} reconnected
 * @property {{reason: string, message: string}} disconnected
 * @property {{error: ManifoldError}} error
 */

/** Keepalive period; the server wants a ping at least every 30 s. */
export const PING_INTERVAL_MS = 15_000;
/** With pings every 15 s and pongs back, this much silence means a dead socket. */
const SILENCE_LIMIT_MS = 45_000;
/** Default for `reconnectGraceMs`: the server keeps a dropped session this long. */
export const RECONNECT_GRACE_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 10_000;
/**
 * How long a request the server may answer only by its effect waits for an error before
 * it counts as accepted. Later errors still arrive, as `error` events.
 */
const OPTIONAL_REPLY_MS = 3_000;
const PUBLISH_TIMEOUT_MS = 20_000;
/** Waits between reconnection attempts; the last one repeats. */
const RECONNECT_DELAYS_MS = [0, 250, 500, 1000, 2000];
/** ICE `disconnected` often recovers by itself; restart only if it lasts this long. */
const ICE_DISCONNECTED_WAIT_MS = 2_000;
const ICE_RESTART_RETRY_MS = 5_000;
const ICE_RESTART_GIVE_UP_MS = 20_000;
const CHAT_MAX_CHARS = 2000;

/**
 * @typedef {object} PendingRequest
 * @property {(message: Message | null) => void} resolve
 * @property {(error: ManifoldError) => void} reject
 * @property {string} type
 * @property {string | null} expect Only a reply of this type resolves it (errors always reject).
 * @property {boolean} failOnClose Rejected when the socket closes (join, resume).
 * @property {string | null} cid For publish: resolved by `published` with this cid.
 * @property {((message: Message) => boolean) | null} until Also resolved by a message this accepts.
 * @property {ReturnType<typeof setTimeout>} timer
 */

/**
 * @extends {Emitter<RoomEvents>}
 */
export class Room extends Emitter {
  /**
   * Joins a room. Resolves once the server said `joined`; the peer connection comes up
   * right after. Listeners added right after `await Room.connect(...)` see every event
   * that follows the join; the state at join time is in `participants`.
   *
   * @param {string} url WebSocket URL (`ws://host:8080/rtc`) or the server's http(s) base
   *   URL (`http://host:8080`), from which `/rtc` is derived.
   * @param {string | null | undefined} token Access token (JWT); null in dev mode.
   * @param {ConnectOptions} [options]
   * @returns {Promise<Room>}
   */
  static async connect(url, token, options = {}) {
    const room = new Room(url, token, options);
    await room.#join();
    return room;
  }

  /** Room name. */
  name = '';
  /** @type {ConnectionState} */
  connectionState = 'connecting';
  /**
   * This client's participant; `tracks` maps each LocalTrack's `cid` to it.
   * @type {LocalParticipant}
   */
  localParticipant = new Participant({ id: '', identity: '' }, true);
  /**
   * Everyone else in the room, by participant id.
   * @type {Map<string, RemoteParticipant>}
   */
  participants = new Map();

  #url;
  /** @type {string | null} */
  #token;
  /** @type {ConnectOptions} */
  #options;
  #graceMs;

  /** @type {SignalingSocket | null} */
  #socket = null;
  /** @type {RTCPeerConnection | null} */
  #pc = null;
  /** @type {string | null} */
  #resumeToken = null;
  #joined = false;
  #nextId = 1;
  /** @type {Map<number, PendingRequest>} */
  #pending = new Map();
  /** Messages that wait for the signaling connection to come back. @type {Message[]} */
  #outbox = [];
  /** Incoming messages are handled strictly in order, offers included. */
  #inbox = Promise.resolve();

  /** Receive m-lines: mid → the remote track on it. @type {Map<string, RemoteTrack>} */
  #mids = new Map();
  /** Our publications by cid, until unpublished and settled. @type {Map<string, LocalTrack>} */
  #localByCid = new Map();
  /** `muted` as sent in each publish, to catch up if it changed before `published`. */
  /** @type {Map<string, boolean>} */
  #mutedAtPublish = new Map();
  #cidCounter = 0;
  /** The last answer, resent if the server repeats its offer after a resume. */
  /** @type {{offerId: unknown, sdp: string} | null} */
  #lastAnswer = null;
  /** Own chat messages shown already, whose server copy is to be dropped. */
  /** @type {{requestId: number, text: string, to: string | null, at: number}[]} */
  #chatEchoes = [];

  /** @type {ReturnType<typeof setInterval> | undefined} */
  #pingTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #iceTimer;
  /** When the current ICE trouble began, or null while ICE is fine. @type {number | null} */
  #iceTroubleSince = null;
  #iceRestartWanted = false;
  #reconnecting = false;
  #leaving = false;
  /** What `closing` said before the server closed the socket. */
  /** @type {{reason: string, message: string} | null} */
  #closing = null;
  /** Resolves when the socket closes while leaving. @type {(() => void) | null} */
  #onLeaveClosed = null;

  /**
   * Use `Room.connect`.
   * @param {string} url
   * @param {string | null | undefined} token
   * @param {ConnectOptions} options
   */
  constructor(url, token, options) {
    super();
    this.#url = signalingUrl(url);
    this.#token = token || null;
    this.#options = { ...options };
    this.#graceMs = options.reconnectGraceMs ?? RECONNECT_GRACE_MS;
    const fromUrl = new URL(this.#url).searchParams.get('room');
    this.name = options.room ?? fromUrl ?? '';
    if (!this.name) throw new ManifoldError('A room name is required.', { code: 'state' });
  }

  /** The peer connection, once joined (for stats and debugging). */
  get peerConnection() {
    return this.#pc;
  }

  /** The media connection's state: the peer connection's `connectionState`. */
  get mediaState() {
    return this.#pc?.connectionState ?? 'new';
  }

  /** Every remote track, of every participant. */
  get remoteTracks() {
    return [...this.participants.values()].flatMap((p) => [...p.tracks.values()]);
  }

  // ---------------------------------------------------------------------------------
  // Publishing

  /**
   * Captures the camera and publishes it.
   * @param {MediaTrackConstraints} [constraints]
   * @returns {Promise<LocalTrack>}
   */
  async publishCamera(constraints) {
    const stream = await getMedia(() => navigator.mediaDevices.getUserMedia({
      video: constraints ?? { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    }), 'camera');
    const track = stream.getVideoTracks()[0];
    return this.publishTrack(track, { source: 'camera', name: track.label });
  }

  /**
   * Captures the microphone and publishes it.
   * @param {MediaTrackConstraints} [constraints]
   * @returns {Promise<LocalTrack>}
   */
  async publishMicrophone(constraints) {
    const stream = await getMedia(() => navigator.mediaDevices.getUserMedia({
      audio: constraints ?? { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    }), 'microphone');
    const track = stream.getAudioTracks()[0];
    return this.publishTrack(track, { source: 'microphone', name: track.label });
  }

  /**
   * Asks the user for a screen, window or tab and publishes it, with its audio if it has
   * any. Resolves once the video is published; the audio follows and then appears as the
   * returned track's `audio` companion. When the user stops sharing from the browser's
   * own UI, both are unpublished.
   * @param {DisplayMediaStreamOptions} [options]
   * @returns {Promise<LocalTrack>}
   */
  async publishScreen(options) {
    const stream = await getMedia(() => navigator.mediaDevices.getDisplayMedia(
      options ?? { video: { frameRate: { ideal: 15, max: 30 } }, audio: true },
    ), 'screen');
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    if ('contentHint' in video) video.contentHint = 'detail';
    let screen;
    try {
      screen = await this.publishTrack(video, { source: 'screen', name: video.label });
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw error;
    }
    if (audio) {
      // In the background: the picture matters first. It joins `companions` once accepted.
      this.publishTrack(audio, { source: 'screen_audio', name: audio.label }).then(
        (companion) => {
          if (screen.state === 'published' || screen.state === 'publishing') screen.companions.push(companion);
          else this.unpublish(companion).catch(() => {});
        },
        (error) => {
          audio.stop();
          if (this.connectionState !== 'disconnected') this.#emitError(error);
        },
      );
    }
    return screen;
  }

  /**
   * Publishes any MediaStreamTrack (a canvas, a processed camera, a file...). Resolves
   * once the server accepted it (`trackId` set). When the track ends (device unplugged,
   * sharing stopped), it is unpublished.
   *
   * @param {MediaStreamTrack} mediaStreamTrack
   * @param {{source?: TrackSource, name?: string, muted?: boolean, stopOnUnpublish?: boolean}} [options]
   *   `stopOnUnpublish` (default true) stops the track when it is unpublished.
   * @returns {Promise<LocalTrack>}
   */
  async publishTrack(mediaStreamTrack, options = {}) {
    this.#assertJoined();
    const kind = mediaStreamTrack.kind === 'audio' ? 'audio' : 'video';
    const source = options.source ?? (kind === 'audio' ? 'microphone' : 'camera');
    const muted = options.muted ?? false;
    const cid = `${source}-${++this.#cidCounter}`;
    const local = new LocalTrack({
      cid,
      source,
      name: (options.name ?? '').slice(0, 128),
      mediaStreamTrack,
      muted,
      stopOnUnpublish: options.stopOnUnpublish ?? true,
    });
    mediaStreamTrack.enabled = !muted;
    this.#localByCid.set(cid, local);
    this.#mutedAtPublish.set(cid, muted);
    this.localParticipant.tracks.set(cid, local);
    mediaStreamTrack.addEventListener('ended', () => {
      if (local.state === 'publishing' || local.state === 'published') this.unpublish(local).catch(() => {});
    });
    try {
      await this.#request(
        { type: 'publish', cid, kind, source, name: local.name, muted },
        { expect: 'published', cid, timeoutMs: PUBLISH_TIMEOUT_MS },
      );
    } catch (error) {
      if (local.state === 'publishing') {
        local.state = 'failed';
        this.localParticipant.tracks.delete(cid);
        this.#localByCid.delete(cid);
        this.#detachSender(mediaStreamTrack);
      }
      throw error;
    }
    return local;
  }

  /**
   * Stops publishing a track (and its companions). The track is stopped too unless it was
   * published with `stopOnUnpublish: false`.
   * @param {LocalTrack} local
   * @returns {Promise<void>}
   */
  async unpublish(local) {
    if (local.state === 'unpublished' || local.state === 'failed') return;
    local.state = 'unpublished';
    this.localParticipant.tracks.delete(local.cid);
    // Stop sending at once; the server's next offer turns the m-line inactive.
    this.#detachSender(local.mediaStreamTrack);
    if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
    this.emit('localTrackUnpublished', { track: local });
    const companions = local.companions;
    if (local.trackId) {
      this.#localByCid.delete(local.cid);
      if (this.connectionState !== 'disconnected') {
        const trackId = local.trackId;
        await this.#request({ type: 'unpublish', track: trackId }, {
          optional: true,
          until: (m) => m.type === 'offer' || (m.type === 'track_unpublished' && m.track === trackId),
        })
          .catch((error) => this.#emitError(error));
      }
    }
    // Without a track id yet, `published` will find it unpublished and undo it.
    for (const companion of companions) await this.unpublish(companion);
  }

  /**
   * Mutes or unmutes a local track: tells the room (`mute`) and disables the track, so
   * it sends silence or black frames.
   * @param {LocalTrack} local
   * @param {boolean} muted
   * @returns {Promise<void>}
   */
  async setMuted(local, muted) {
    muted = Boolean(muted);
    local.mediaStreamTrack.enabled = !muted;
    if (local.muted === muted) return;
    local.muted = muted;
    this.emit('trackMuted', { participant: this.localParticipant, track: local, muted });
    if (local.trackId && local.state === 'published' && this.connectionState !== 'disconnected') {
      const trackId = local.trackId;
      await this.#request({ type: 'mute', track: trackId, muted }, {
        optional: true,
        until: (m) => m.type === 'track_muted' && m.track === trackId,
      });
    }
    // Still publishing: `published` sends the mute if it differs from the publish.
  }

  // ---------------------------------------------------------------------------------
  // Receiving, chat, metadata

  /**
   * Starts receiving a track (for `autoSubscribe: false`, or after `unsubscribe`). It is
   * reported as `trackSubscribed` once the server's offer for it is answered.
   * @param {string} trackId
   * @returns {Promise<void>}
   */
  async subscribe(trackId) {
    this.#assertJoined();
    await this.#request({ type: 'subscribe', track: trackId }, { optional: true, until: (m) => m.type === 'offer' });
  }

  /**
   * Stops receiving a track; `trackUnsubscribed` follows with the server's next offer.
   * @param {string} trackId
   * @returns {Promise<void>}
   */
  async unsubscribe(trackId) {
    this.#assertJoined();
    await this.#request({ type: 'unsubscribe', track: trackId }, { optional: true, until: (m) => m.type === 'offer' });
  }

  /**
   * Sends a chat message to the room, or privately to one participant (`to`: participant
   * id). The message is emitted as a local `chat` event at once; the promise rejects with
   * the server's error (`rate_limited`, `too_large`, `not_found`) if it refuses it.
   * @param {string} text
   * @param {{to?: string | null}} [options]
   * @returns {Promise<ChatMessage>}
   */
  async sendChat(text, { to = null } = {}) {
    this.#assertJoined();
    text = String(text);
    if (!text.trim()) throw new ManifoldError('The message is empty.', { code: 'bad_message' });
    if (text.length > CHAT_MAX_CHARS) {
      throw new ManifoldError(`Messages are limited to ${CHAT_MAX_CHARS} characters.`, { code: 'too_large' });
    }
    const requestId = this.#nextId++;
    const now = Date.now();
    this.#chatEchoes = this.#chatEchoes.filter((echo) => now - echo.at < 10_000);
    this.#chatEchoes.push({ requestId, text, to, at: now });
    const me = this.localParticipant;
    /** @type {ChatMessage} */
    const message = {
      from: { id: me.id, identity: me.identity, name: me.name },
      participant: me,
      text,
      to,
      private: to !== null,
      local: true,
      ts: now,
      requestId,
    };
    this.emit('chat', message);
    try {
      await this.#request({ type: 'chat', text, ...(to ? { to } : {}) }, {
        id: requestId,
        optional: true,
        until: (m) => m.type === 'chat' && m.from?.id === me.id && m.text === text,
      });
    } catch (error) {
      this.#chatEchoes = this.#chatEchoes.filter((echo) => echo.requestId !== requestId);
      throw error;
    }
    return message;
  }

  /**
   * Changes this participant's display name and/or metadata.
   * @param {{name?: string, metadata?: unknown}} changes
   * @returns {Promise<void>}
   */
  async updateMetadata({ name, metadata }) {
    this.#assertJoined();
    /** @type {Message} */
    const message = { type: 'update' };
    if (name !== undefined) message.name = name;
    if (metadata !== undefined) message.metadata = metadata;
    const me = this.localParticipant.id;
    await this.#request(message, {
      optional: true,
      until: (m) => m.type === 'participant_updated' && m.participant?.id === me,
    });
  }

  /**
   * Per-track counters: one entry per received track (`remote`) and per published track
   * (`local`), from the peer connection's inbound-rtp and outbound-rtp stats.
   * @returns {Promise<{remote: TrackStats[], local: TrackStats[], roundTripTime: number | null}>}
   */
  async getStats() {
    const pc = this.#pc;
    if (!pc) return { remote: [], local: [], roundTripTime: null };
    const stats = await readPeerStats(pc);
    /** @type {TrackStats[]} */
    const remote = [];
    for (const participant of this.participants.values()) {
      for (const track of participant.tracks.values()) {
        if (!track.mid) continue;
        const stream = stats.inbound.get(track.mid);
        remote.push({
          participantId: participant.id,
          participantName: participant.name,
          trackId: track.id,
          kind: track.kind,
          source: track.source,
          mid: track.mid,
          packets: stream?.packets ?? 0,
          bytes: stream?.bytes ?? 0,
          frames: stream?.frames ?? 0,
          packetsLost: stream?.packetsLost ?? 0,
          frameWidth: stream?.frameWidth ?? 0,
          frameHeight: stream?.frameHeight ?? 0,
          codec: stream?.codec ?? null,
        });
      }
    }
    /** @type {TrackStats[]} */
    const local = [];
    for (const track of this.localParticipant.tracks.values()) {
      const stream = track.mid ? stats.outbound.get(track.mid) : undefined;
      local.push({
        participantId: this.localParticipant.id,
        participantName: this.localParticipant.name,
        trackId: track.trackId ?? '',
        kind: track.kind,
        source: track.source,
        mid: track.mid ?? '',
        packets: stream?.packets ?? 0,
        bytes: stream?.bytes ?? 0,
        frames: stream?.frames ?? 0,
        packetsLost: 0,
        frameWidth: stream?.frameWidth ?? 0,
        frameHeight: stream?.frameHeight ?? 0,
        codec: stream?.codec ?? null,
      });
    }
    return { remote, local, roundTripTime: stats.roundTripTime };
  }

  /**
   * Leaves the room: tells the server, closes the connections and stops the local
   * tracks. Emits `disconnected` with reason `left`.
   * @returns {Promise<void>}
   */
  async leave() {
    if (this.connectionState === 'disconnected') return;
    this.#leaving = true;
    const socket = this.#socket;
    if (socket?.isOpen && !this.#reconnecting) {
      const closed = new Promise((resolve) => {
        this.#onLeaveClosed = () => resolve(undefined);
        setTimeout(resolve, 1_000);
      });
      socket.send({ type: 'leave' });
      await closed;
    }
    this.#teardown('left', 'You left the room.');
  }

  // ---------------------------------------------------------------------------------
  // Joining, the socket, reconnection

  async #join() {
    let socket;
    try {
      socket = await SignalingSocket.open(this.#url, { timeoutMs: CONNECT_TIMEOUT_MS });
    } catch (error) {
      this.#teardown('failed', errorText(error), { silent: true });
      throw error;
    }
    this.#attach(socket);
    /** @type {Message} */
    const join = {
      type: 'join',
      room: this.name,
    };
    // Unset, the server decides from the token's grants.
    if (this.#options.autoSubscribe !== undefined) join.auto_subscribe = this.#options.autoSubscribe;
    if (this.#token) join.token = this.#token;
    if (this.#options.identity) join.identity = this.#options.identity;
    if (this.#options.name) join.name = this.#options.name;
    if (this.#options.metadata !== undefined) join.metadata = this.#options.metadata;
    try {
      await this.#request(join, { expect: 'joined', failOnClose: true, direct: true, timeoutMs: CONNECT_TIMEOUT_MS });
    } catch (error) {
      this.#teardown('failed', errorText(error), { silent: true });
      throw error;
    }
    this.#pingTimer = setInterval(() => this.#keepalive(), PING_INTERVAL_MS);
  }

  /** @param {SignalingSocket} socket */
  #attach(socket) {
    this.#socket = socket;
    socket.listen(
      (message) => {
        if (this.#socket === socket) this.#receive(message);
      },
      (event) => this.#onSocketClose(socket, event),
    );
  }

  /**
   * @param {SignalingSocket} socket
   * @param {{code: number, reason: string}} event
   */
  #onSocketClose(socket, { code, reason }) {
    if (socket !== this.#socket) return;
    this.#socket = null;
    for (const [id, request] of this.#pending) {
      if (!request.failOnClose) continue;
      this.#pending.delete(id);
      clearTimeout(request.timer);
      request.reject(new ManifoldError(
        this.#closing?.message || reason || 'The signaling connection closed.',
        { code: this.#closing ? this.#closing.reason : 'closed' },
      ));
    }
    // Let messages already received (`closing` in particular) be handled first.
    this.#inbox = this.#inbox.then(() => {
      if (this.connectionState === 'disconnected') return;
      if (this.#leaving) {
        this.#onLeaveClosed?.();
      } else if (this.#closing) {
        this.#teardown(this.#closing.reason, this.#closing.message || closingText(this.#closing.reason));
      } else if (code === 1008) {
        this.#teardown('policy', reason || 'The server closed the connection (policy violation).');
      } else if (this.#joined && !this.#reconnecting) {
        this.#reconnect();
      }
    });
  }

  async #reconnect() {
    this.#reconnecting = true;
    this.#setState('reconnecting');
    this.emit('reconnecting', { cause: 'signaling' });
    const deadline = Date.now() + this.#graceMs;
    for (let attempt = 0; ; attempt++) {
      const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
      if (Date.now() + delay >= deadline) break;
      await sleep(delay);
      if (this.#closed) return;
      let socket;
      try {
        socket = await SignalingSocket.open(this.#url, { timeoutMs: clamp(deadline - Date.now(), 500, 4_000) });
      } catch {
        continue;
      }
      if (this.#closed) {
        socket.close();
        return;
      }
      this.#attach(socket);
      try {
        await this.#request(
          { type: 'resume', participant: this.localParticipant.id, resume_token: this.#resumeToken },
          { expect: 'resumed', failOnClose: true, direct: true, timeoutMs: clamp(deadline - Date.now(), 500, 5_000) },
        );
      } catch (error) {
        if (this.#closed) return;
        const code = error instanceof ManifoldError ? error.code : '';
        if (code === 'timeout' || code === 'closed') {
          if (this.#socket === socket) {
            this.#socket = null;
            socket.close();
          }
          continue;
        }
        // The server refused: the session is gone (expired, replaced, unauthorized).
        this.#reconnecting = false;
        this.#teardown('resume_failed', `Could not resume the session: ${errorText(error)}`);
        return;
      }
      this.#reconnecting = false;
      this.#flushOutbox();
      this.#republishPending();
      const ice = this.#pc?.iceConnectionState;
      if (this.#iceRestartWanted || (ice !== 'connected' && ice !== 'completed')) {
        this.#restartIce();
      } else {
        this.#setState('connected');
        this.emit('reconnected', {});
      }
      return;
    }
    this.#reconnecting = false;
    this.#teardown(
      'timeout',
      `Lost the connection to the server and could not get it back within ${Math.round(this.#graceMs / 1000)} s.`,
    );
  }

  #keepalive() {
    const socket = this.#socket;
    if (!socket || this.#reconnecting || this.connectionState === 'disconnected') return;
    if (Date.now() - socket.lastReceivedAt > SILENCE_LIMIT_MS) {
      socket.drop('no answer to keepalive pings');
      return;
    }
    socket.send({ type: 'ping', ts: Date.now() });
  }

  /**
   * Sends now, or queues until the signaling connection is back.
   * @param {Message} message
   * @param {{direct?: boolean}} [options] `direct`: send on the current socket even while
   *   reconnecting (join, resume), never queue.
   */
  #send(message, { direct = false } = {}) {
    if (this.#socket?.isOpen && (direct || !this.#reconnecting)) {
      this.#socket.send(message);
    } else if (!direct && this.connectionState !== 'disconnected') {
      this.#outbox.push(message);
    }
  }

  #flushOutbox() {
    const queued = this.#outbox;
    this.#outbox = [];
    for (const message of queued) this.#send(message);
  }

  /**
   * Publications whose offer never came may have been lost with the old socket; ask
   * again. A duplicate is refused by the server, which is harmless.
   */
  #republishPending() {
    for (const local of this.#localByCid.values()) {
      if (local.state !== 'publishing' || local.mid !== null) continue;
      const { cid, kind, source, name, muted } = local;
      this.#request({ type: 'publish', cid, kind, source, name, muted }, { optional: true, expect: 'published' })
        .catch(() => {});
    }
  }

  /**
   * Sends a request with an `id` and resolves with the server's reply carrying that id
   * (of type `expect`, if given), or with the first message `until` accepts: the effect
   * of a request the server answers without echoing its id (`track_muted` for `mute`).
   * An `error` with the id rejects. Without either within `timeoutMs`, `optional` requests
   * resolve with null and others reject (`timeout`); an error arriving after that is
   * emitted as an `error` event carrying the request's id.
   *
   * @param {Message} message
   * @param {{expect?: string, optional?: boolean, failOnClose?: boolean, direct?: boolean,
   *   timeoutMs?: number, cid?: string, id?: number, until?: (message: Message) => boolean}} [options]
   * @returns {Promise<Message | null>}
   */
  #request(message, options = {}) {
    const id = options.id ?? this.#nextId++;
    const timeoutMs = options.timeoutMs ?? (options.optional ? OPTIONAL_REPLY_MS : REQUEST_TIMEOUT_MS);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        if (options.optional) resolve(null);
        else reject(new ManifoldError(`No answer to ${message.type} within ${Math.round(timeoutMs / 1000)} s.`, { code: 'timeout', requestId: id }));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve,
        reject,
        type: message.type,
        expect: options.expect ?? null,
        failOnClose: options.failOnClose ?? false,
        cid: options.cid ?? null,
        until: options.until ?? null,
        timer,
      });
      this.#send({ ...message, id }, { direct: options.direct });
    });
  }

  /**
   * Settles the request a reply belongs to.
   * @param {Message} message
   */
  #settle(message) {
    if (message.type !== 'error') {
      for (const [pendingId, request] of this.#pending) {
        if (pendingId === message.id || !request.until?.(message)) continue;
        this.#pending.delete(pendingId);
        clearTimeout(request.timer);
        request.resolve(message);
      }
    }
    let id = message.id;
    if (message.type === 'published' && !this.#pending.has(id)) {
      // A server that does not copy the id into `published`: match by cid.
      for (const [pendingId, request] of this.#pending) {
        if (request.cid === message.cid) id = pendingId;
      }
    }
    const request = this.#pending.get(id);
    if (!request) return false;
    if (message.type === 'error') {
      this.#pending.delete(id);
      clearTimeout(request.timer);
      request.reject(new ManifoldError(message.message || message.code || 'The server refused the request.', {
        code: message.code || 'error',
        requestId: id,
      }));
      return true;
    }
    if (request.expect && request.expect !== message.type) return false;
    this.#pending.delete(id);
    clearTimeout(request.timer);
    request.resolve(message);
    return true;
  }

  /** @param {Message} message */
  #receive(message) {
    this.#inbox = this.#inbox
      .then(() => this.#process(message))
      .catch((error) => {
        console.error('manifold: failed to handle', message.type, error);
        this.#emitError(error);
      });
  }

  /** @param {Message} message */
  async #process(message) {
    if (this.connectionState === 'disconnected') return;
    switch (message.type) {
      case 'joined':
        this.#onJoined(message, false);
        break;
      case 'resumed':
        this.#onJoined(message, true);
        break;
      case 'offer':
        await this.#onOffer(message);
        break;
      case 'published':
        this.#onPublished(message);
        break;
      case 'participant_joined':
        this.#onParticipantJoined(message.participant);
        break;
      case 'participant_updated':
        this.#onParticipantUpdated(message.participant);
        break;
      case 'participant_left':
        this.#removeParticipant(message.participant, message.reason ?? 'left');
        break;
      case 'track_published':
        this.#onTrackPublished(message.participant, message.track);
        break;
      case 'track_unpublished':
        this.#onTrackUnpublished(message.participant, message.track);
        break;
      case 'track_muted':
        this.#onTrackMuted(message.participant, message.track, Boolean(message.muted));
        break;
      case 'chat':
        this.#onChat(message);
        break;
      case 'closing':
        this.#closing = { reason: String(message.reason ?? 'closed'), message: String(message.message ?? '') };
        break;
      case 'pong':
        break;
      case 'error':
        break;
      default:
        // Newer servers may say more; ignore what we do not know.
        break;
    }
    const settled = this.#settle(message);
    if (message.type === 'error' && !settled) {
      this.#emitError(new ManifoldError(message.message || message.code, { code: message.code, requestId: message.id ?? null }));
    }
    if (message.type === 'joined') {
      // Give the caller of Room.connect a turn to add listeners before the next event.
      await sleep(0);
    }
  }

  /**
   * @param {Message} message
   * @param {boolean} resumed
   */
  #onJoined(message, resumed) {
    if (message.room) this.name = message.room;
    if (message.resume_token) this.#resumeToken = message.resume_token;
    /** @type {ParticipantInfo} */
    const me = message.participant ?? { id: this.localParticipant.id, identity: this.localParticipant.identity };
    /** @type {ParticipantInfo[]} */
    const others = (message.participants ?? []).filter((/** @type {ParticipantInfo} */ p) => p.id !== me.id);
    if (!resumed) {
      this.localParticipant.id = me.id;
      this.localParticipant.update(me);
      for (const info of others) this.#addParticipant(info, false);
      const iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
      this.#pc = this.#createPeerConnection(iceServers);
      this.#joined = true;
      this.#setState('connected');
      return;
    }
    if (this.localParticipant.update(me)) this.emit('participantUpdated', { participant: this.localParticipant });
    // The room may have changed while we were away: reconcile.
    const present = new Set();
    for (const info of others) {
      present.add(info.id);
      if (this.participants.has(info.id)) this.#onParticipantUpdated(info);
      else this.#addParticipant(info, true);
    }
    for (const id of [...this.participants.keys()]) {
      if (!present.has(id)) this.#removeParticipant(id, 'left');
    }
  }

  // ---------------------------------------------------------------------------------
  // The peer connection

  /**
   * @param {RTCIceServer[]} iceServers
   * @returns {RTCPeerConnection}
   */
  #createPeerConnection(iceServers) {
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    pc.addEventListener('icecandidate', (event) => {
      // Trickled; the end-of-candidates null is not worth a message.
      if (event.candidate?.candidate) this.#send({ type: 'candidate', candidate: event.candidate.candidate });
    });
    pc.addEventListener('iceconnectionstatechange', () => this.#onIceState());
    return pc;
  }

  /** @param {Message} message */
  async #onOffer(message) {
    const pc = this.#pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (this.#lastAnswer && message.offer_id === this.#lastAnswer.offerId && pc.signalingState === 'stable') {
      // The same offer again (the answer was lost with a socket): answer it again.
      this.#send({ type: 'answer', offer_id: message.offer_id, sdp: this.#lastAnswer.sdp });
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
    } catch (error) {
      throw new ManifoldError(`Could not apply the server's offer: ${errorText(error)}`, { code: 'bad_sdp', cause: error });
    }
    try {
      /** @type {Map<string, RemoteTrack>} */
      const next = new Map();
      /** @type {Map<string, RTCRtpTransceiver>} */
      const receivers = new Map();
      const transceivers = pc.getTransceivers();
      for (const entry of Array.isArray(message.mids) ? message.mids : []) {
        if (entry.kind === 'application') continue;
        const mid = String(entry.mid);
        const transceiver = transceivers.find((t) => t.mid === mid);
        if (!transceiver || transceiver.currentDirection === 'stopped') continue;
        if (entry.cid !== undefined && entry.cid !== null) {
          const local = this.#localByCid.get(entry.cid);
          if (local && (local.state === 'publishing' || local.state === 'published')) {
            await transceiver.sender.replaceTrack(local.mediaStreamTrack);
            transceiver.direction = 'sendonly';
            local.mid = mid;
          } else {
            await transceiver.sender.replaceTrack(null);
            transceiver.direction = 'inactive';
          }
        } else {
          if (transceiver.sender.track) {
            const sent = transceiver.sender.track;
            for (const local of this.#localByCid.values()) if (local.mediaStreamTrack === sent) local.mid = null;
            await transceiver.sender.replaceTrack(null);
          }
          if (entry.track) {
            transceiver.direction = 'recvonly';
            next.set(mid, this.#remoteTrackFor(entry));
            receivers.set(mid, transceiver);
          } else {
            transceiver.direction = 'inactive';
          }
        }
      }
      await pc.setLocalDescription(await pc.createAnswer());
      const sdp = pc.localDescription?.sdp ?? '';
      this.#lastAnswer = { offerId: message.offer_id, sdp };
      this.#send({ type: 'answer', offer_id: message.offer_id, sdp });

      const previous = this.#mids;
      this.#mids = next;
      for (const [mid, track] of previous) {
        if (next.get(mid) !== track && track.mid === mid) this.#markUnsubscribed(track);
      }
      for (const [mid, track] of next) {
        if (previous.get(mid) === track && track.subscribed) continue;
        const transceiver = /** @type {RTCRtpTransceiver} */ (receivers.get(mid));
        track.subscribed = true;
        track.mid = mid;
        track.mediaStreamTrack = transceiver.receiver.track;
        this.emit('trackSubscribed', {
          participant: this.participants.get(track.participantId) ?? null,
          track,
          mediaStreamTrack: transceiver.receiver.track,
          mid,
        });
      }
    } catch (error) {
      // Leave the connection usable for the server's next offer.
      if (pc.signalingState === 'have-remote-offer') {
        await pc.setRemoteDescription({ type: 'rollback' }).catch(() => {});
      }
      throw new ManifoldError(`Could not answer the server's offer: ${errorText(error)}`, { code: 'bad_sdp', cause: error });
    }
  }

  /**
   * The RemoteTrack an offer's receive m-line names, made up from the entry if the room
   * has not announced it (yet).
   * @param {{kind: string, track: string, participant?: string}} entry
   * @returns {RemoteTrack}
   */
  #remoteTrackFor(entry) {
    const participant = entry.participant ? this.participants.get(entry.participant) : undefined;
    const known = participant?.tracks.get(entry.track)
      ?? this.remoteTracks.find((track) => track.id === entry.track);
    if (known) return known;
    const track = new RemoteTrack(
      { id: entry.track, kind: entry.kind === 'audio' ? 'audio' : 'video', source: 'other' },
      entry.participant ?? '',
    );
    participant?.tracks.set(track.id, track);
    return track;
  }

  /** @param {RemoteTrack} track */
  #markUnsubscribed(track) {
    if (!track.subscribed) return;
    const { mid, mediaStreamTrack } = track;
    if (mid !== null && this.#mids.get(mid) === track) this.#mids.delete(mid);
    track.subscribed = false;
    track.mid = null;
    track.mediaStreamTrack = null;
    this.emit('trackUnsubscribed', {
      participant: this.participants.get(track.participantId) ?? null,
      track,
      mediaStreamTrack,
      mid,
    });
  }

  /** @param {MediaStreamTrack} mediaStreamTrack */
  #detachSender(mediaStreamTrack) {
    for (const transceiver of this.#pc?.getTransceivers() ?? []) {
      if (transceiver.sender.track === mediaStreamTrack) transceiver.sender.replaceTrack(null).catch(() => {});
    }
  }

  #onIceState() {
    const pc = this.#pc;
    if (!pc || this.connectionState === 'disconnected') return;
    const state = pc.iceConnectionState;
    if (state === 'connected' || state === 'completed') {
      clearTimeout(this.#iceTimer);
      this.#iceTroubleSince = null;
      this.#iceRestartWanted = false;
      if (this.connectionState === 'reconnecting' && !this.#reconnecting) {
        this.#setState('connected');
        this.emit('reconnected', {});
      }
    } else if (state === 'failed') {
      this.#restartIce();
    } else if (state === 'disconnected') {
      clearTimeout(this.#iceTimer);
      this.#iceTimer = setTimeout(() => {
        const now = this.#pc?.iceConnectionState;
        if (now === 'disconnected' || now === 'failed') this.#restartIce();
      }, ICE_DISCONNECTED_WAIT_MS);
    }
  }

  /** Asks the server for an offer with new ICE credentials; retries until ICE is back. */
  #restartIce() {
    if (this.connectionState === 'disconnected') return;
    clearTimeout(this.#iceTimer);
    const now = Date.now();
    this.#iceTroubleSince ??= now;
    if (now - this.#iceTroubleSince > ICE_RESTART_GIVE_UP_MS) {
      this.#teardown('media_failed', 'The media connection failed and could not be restored.');
      return;
    }
    if (this.connectionState === 'connected') {
      this.#setState('reconnecting');
      this.emit('reconnecting', { cause: 'media' });
    }
    if (this.#reconnecting || !this.#socket?.isOpen) {
      // Asked for after the resume.
      this.#iceRestartWanted = true;
      return;
    }
    this.#iceRestartWanted = false;
    this.#request({ type: 'ice_restart' }, { optional: true, until: (m) => m.type === 'offer' }).catch((error) => this.#emitError(error));
    this.#iceTimer = setTimeout(() => {
      const ice = this.#pc?.iceConnectionState;
      if (ice !== 'connected' && ice !== 'completed') this.#restartIce();
    }, ICE_RESTART_RETRY_MS);
  }

  // ---------------------------------------------------------------------------------
  // Room state

  /** @param {Message} message */
  #onPublished(message) {
    const local = this.#localByCid.get(message.cid);
    if (!local || !message.track) return;
    local.trackId = message.track;
    if (local.state !== 'publishing') {
      // Unpublished (or given up) while the server was still setting it up.
      this.#localByCid.delete(local.cid);
      this.#send({ type: 'unpublish', id: this.#nextId++, track: message.track });
      return;
    }
    local.state = 'published';
    if (this.#mutedAtPublish.get(local.cid) !== local.muted) {
      this.#send({ type: 'mute', id: this.#nextId++, track: local.trackId, muted: local.muted });
    }
    this.#mutedAtPublish.delete(local.cid);
    this.emit('localTrackPublished', { track: local });
  }

  /**
   * @param {ParticipantInfo} info
   * @param {boolean} announce
   */
  #addParticipant(info, announce) {
    const participant = /** @type {RemoteParticipant} */ (new Participant(info, false));
    for (const trackInfo of info.tracks ?? []) {
      participant.tracks.set(trackInfo.id, new RemoteTrack(trackInfo, participant.id));
    }
    this.participants.set(participant.id, participant);
    if (!announce) return;
    this.emit('participantJoined', { participant });
    for (const track of participant.tracks.values()) this.emit('trackPublished', { participant, track });
  }

  /** @param {ParticipantInfo} info */
  #onParticipantJoined(info) {
    if (!info?.id || info.id === this.localParticipant.id) return;
    if (this.participants.has(info.id)) {
      this.#onParticipantUpdated(info);
      return;
    }
    this.#addParticipant(info, true);
  }

  /** @param {ParticipantInfo} info */
  #onParticipantUpdated(info) {
    if (!info?.id) return;
    if (info.id === this.localParticipant.id) {
      if (this.localParticipant.update(info)) this.emit('participantUpdated', { participant: this.localParticipant });
      return;
    }
    const participant = this.participants.get(info.id);
    if (!participant) {
      this.#addParticipant(info, true);
      return;
    }
    if (participant.update(info)) this.emit('participantUpdated', { participant });
    if (!Array.isArray(info.tracks)) return;
    const listed = new Set();
    for (const trackInfo of info.tracks) {
      listed.add(trackInfo.id);
      this.#onTrackPublished(participant.id, trackInfo);
    }
    for (const track of [...participant.tracks.values()]) {
      if (!listed.has(track.id)) this.#onTrackUnpublished(participant.id, track.id);
    }
  }

  /**
   * @param {string} id
   * @param {string} reason
   */
  #removeParticipant(id, reason) {
    const participant = this.participants.get(id);
    if (!participant) return;
    for (const track of [...participant.tracks.values()]) this.#onTrackUnpublished(id, track.id);
    this.participants.delete(id);
    this.emit('participantLeft', { participant, reason });
  }

  /**
   * @param {string} participantId
   * @param {TrackInfo} info
   */
  #onTrackPublished(participantId, info) {
    if (!info?.id || participantId === this.localParticipant.id) return;
    const participant = this.participants.get(participantId);
    if (!participant) return;
    const existing = participant.tracks.get(info.id);
    if (!existing) {
      const track = new RemoteTrack(info, participantId);
      participant.tracks.set(track.id, track);
      this.emit('trackPublished', { participant, track });
      return;
    }
    if (existing.source === 'other' && info.source && info.source !== 'other') {
      // Made up from an offer that came first; now we know what it is.
      Object.assign(existing, new RemoteTrack(info, participantId), {
        subscribed: existing.subscribed,
        mid: existing.mid,
        mediaStreamTrack: existing.mediaStreamTrack,
      });
      this.emit('trackPublished', { participant, track: existing });
      if (existing.subscribed && existing.mediaStreamTrack && existing.mid) {
        this.emit('trackSubscribed', { participant, track: existing, mediaStreamTrack: existing.mediaStreamTrack, mid: existing.mid });
      }
      return;
    }
    if (existing.update(info)) this.emit('trackMuted', { participant, track: existing, muted: existing.muted });
  }

  /**
   * @param {string} participantId
   * @param {string} trackId
   */
  #onTrackUnpublished(participantId, trackId) {
    if (participantId === this.localParticipant.id) {
      // The server took one of ours down (an administrator, a limit).
      const local = [...this.localParticipant.tracks.values()].find((t) => t.trackId === trackId);
      if (local && local.state === 'published') {
        local.state = 'unpublished';
        this.localParticipant.tracks.delete(local.cid);
        this.#localByCid.delete(local.cid);
        this.#detachSender(local.mediaStreamTrack);
        if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
        this.emit('localTrackUnpublished', { track: local });
      }
      return;
    }
    const participant = this.participants.get(participantId);
    const track = participant?.tracks.get(trackId);
    if (!participant || !track) return;
    this.#markUnsubscribed(track);
    participant.tracks.delete(trackId);
    this.emit('trackUnpublished', { participant, track });
  }

  /**
   * @param {string} participantId
   * @param {string} trackId
   * @param {boolean} muted
   */
  #onTrackMuted(participantId, trackId, muted) {
    if (participantId === this.localParticipant.id) {
      const local = [...this.localParticipant.tracks.values()].find((t) => t.trackId === trackId);
      if (!local || local.muted === muted) return;
      local.muted = muted;
      local.mediaStreamTrack.enabled = !muted;
      this.emit('trackMuted', { participant: this.localParticipant, track: local, muted });
      return;
    }
    const participant = this.participants.get(participantId);
    const track = participant?.tracks.get(trackId);
    if (!participant || !track || track.muted === muted) return;
    track.muted = muted;
    this.emit('trackMuted', { participant, track, muted });
  }

  /** @param {Message} message */
  #onChat(message) {
    const from = message.from ?? {};
    const local = from.id === this.localParticipant.id;
    const to = message.to ?? null;
    if (local) {
      // Our own message, already shown when sent.
      const index = this.#chatEchoes.findIndex((echo) =>
        echo.requestId === message.id || (echo.text === message.text && echo.to === to));
      if (index >= 0) {
        this.#chatEchoes.splice(index, 1);
        return;
      }
    }
    const participant = local ? this.localParticipant : this.participants.get(from.id) ?? null;
    this.emit('chat', {
      from: {
        id: String(from.id ?? ''),
        identity: String(from.identity ?? ''),
        name: String(from.name || from.identity || participant?.name || 'Someone'),
      },
      participant,
      text: String(message.text ?? ''),
      to,
      private: to !== null,
      local,
      ts: typeof message.ts === 'number' ? message.ts : Date.now(),
      requestId: null,
    });
  }

  // ---------------------------------------------------------------------------------
  // Helpers

  /** @param {ConnectionState} state */
  #setState(state) {
    const previous = this.connectionState;
    if (previous === state) return;
    this.connectionState = state;
    this.emit('connectionStateChanged', { state, previous });
  }

  /** Whether the room is over (checked after awaits, where the state may have changed). */
  get #closed() {
    return this.connectionState === 'disconnected';
  }

  #assertJoined() {
    if (!this.#joined || this.connectionState === 'disconnected') {
      throw new ManifoldError('Not connected to the room.', { code: 'state' });
    }
  }

  /** @param {unknown} error */
  #emitError(error) {
    const wrapped = error instanceof ManifoldError ? error : new ManifoldError(errorText(error), { cause: error });
    this.emit('error', { error: wrapped });
  }

  /**
   * Ends everything. Local tracks are stopped (unless published with
   * `stopOnUnpublish: false`); pending requests fail with `closed`.
   * @param {string} reason
   * @param {string} message
   * @param {{silent?: boolean}} [options] `silent`: no `disconnected` event (a failed join).
   */
  #teardown(reason, message, { silent = false } = {}) {
    if (this.connectionState === 'disconnected') return;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#iceTimer);
    this.#socket?.close();
    this.#socket = null;
    this.#pc?.close();
    for (const local of this.localParticipant.tracks.values()) {
      if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
      local.state = 'unpublished';
    }
    for (const track of this.remoteTracks) {
      track.subscribed = false;
      track.mid = null;
      track.mediaStreamTrack = null;
    }
    this.#mids.clear();
    this.#outbox = [];
    for (const request of this.#pending.values()) {
      clearTimeout(request.timer);
      request.reject(new ManifoldError(message || 'Disconnected.', { code: 'closed' }));
    }
    this.#pending.clear();
    this.#setState('disconnected');
    if (!silent) this.emit('disconnected', { reason, message });
  }
}

/**
 * Counters of one track, from `Room.getStats()`.
 * @typedef {object} TrackStats
 * @property {string} participantId
 * @property {string} participantName
 * @property {string} trackId
 * @property {'audio' | 'video'} kind
 * @property {TrackSource} source
 * @property {string} mid
 * @property {number} packets Received (remote) or sent (local).
 * @property {number} bytes
 * @property {number} frames Decoded (remote) or sent (local) video frames.
 * @property {number} packetsLost
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {string | null} codec
 */

/**
 * Runs a getUserMedia or getDisplayMedia call, turning its DOMException into a
 * ManifoldError with a sentence a user can read (the DOMException is its `cause`).
 * @param {() => Promise<MediaStream>} capture
 * @param {'camera' | 'microphone' | 'screen'} what
 * @returns {Promise<MediaStream>}
 */
async function getMedia(capture, what) {
  if (!navigator.mediaDevices) {
    throw new ManifoldError('This page cannot capture media: it needs HTTPS (or localhost).', { code: 'media' });
  }
  try {
    return await capture();
  } catch (error) {
    const name = error instanceof DOMException ? error.name : '';
    const device = what === 'screen' ? 'Screen sharing' : what === 'camera' ? 'Camera access' : 'Microphone access';
    const text = {
      NotAllowedError: what === 'screen' ? 'Screen sharing was cancelled or blocked.' : `${device} was denied.`,
      NotFoundError: `No ${what} was found.`,
      NotReadableError: `The ${what} is in use by another program.`,
      OverconstrainedError: `The ${what} does not support the requested settings.`,
    }[name] ?? `${device} failed: ${errorText(error)}`;
    throw new ManifoldError(text, { code: 'media', cause: error });
  }
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * @param {number} value
 * @param {number} min
 * @param {number} max
 */
function clamp(value, min, max) {
  return Math.min(max, Math.max(min, value));
}

/** @param {string} reason */
function closingText(reason) {
  return {
    left: 'You left the room.',
    replaced: 'You joined this room from another tab or device.',
    kicked: 'You were removed from the room.',
    room_closed: 'The room was closed.',
    draining: 'The server is restarting.',
    timeout: 'The connection timed out.',
    policy: 'The server closed the connection (policy violation).',
  }[reason] ?? `The server closed the connection (${reason}).`;
}
