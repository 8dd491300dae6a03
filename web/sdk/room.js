/**
 * A Manifold room: one signaling WebSocket and one peer connection, per docs/protocol.md.
 * The Room owns the public API, the room's name, connection state and participants, and
 * composes the parts that do the work; none of them imports another:
 *
 * - `session.js`: joining, routing incoming messages in order, what a closed socket means;
 * - `channel.js`: the current socket, requests and their replies, outbox, keepalive;
 * - `negotiation.js`: the peer connection, answering the server's offers;
 * - `publishing.js`: local tracks: publish, mute, unpublish, dynacast (`simulcast.js`: layers);
 * - `subscribing.js`: remote participants and tracks, subscriptions;
 * - `quality.js`: the video quality asked of each subscription, and what the server sends;
 * - `speakers.js`: who is speaking;
 * - `reconnection.js`: resuming a dropped socket, restarting failed ICE;
 * - `chat.js`: chat messages.
 *
 * @module manifold/room
 */

import { SignalingChannel } from './channel.js';
import { Chat } from './chat.js';
import { ManifoldError, closingText, errorText } from './errors.js';
import { Emitter } from './events.js';
import { Negotiator } from './negotiation.js';
import { Publisher } from './publishing.js';
import { QualityControl } from './quality.js';
import { RECONNECT_GRACE_MS, Reconnector } from './reconnection.js';
import { Session } from './session.js';
import { signalingUrl } from './signaling.js';
import { ActiveSpeakers } from './speakers.js';
import { readPeerStats, trackStats } from './stats.js';
import { Subscriptions } from './subscribing.js';
import { Participant } from './tracks.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').ParticipantInfo} ParticipantInfo */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */
/** @typedef {import('./tracks.js').LocalTrack} LocalTrack */
/** @typedef {import('./tracks.js').RemoteTrack} RemoteTrack */
/** @typedef {import('./tracks.js').VideoQuality} VideoQuality */
/** @typedef {import('./publishing.js').PublishOptions} PublishOptions */
/** @typedef {import('./simulcast.js').SimulcastOption} SimulcastOption */
/** @typedef {import('./quality.js').QualityOptions} QualityOptions */
/** @typedef {Participant<RemoteTrack>} RemoteParticipant */
/** @typedef {Participant<LocalTrack>} LocalParticipant */
/** @typedef {import('./chat.js').ChatMessage} ChatMessage */
/** @typedef {import('./stats.js').TrackStats} TrackStats */
/** @typedef {import('./events.js').ConnectionState} ConnectionState */
/** @typedef {import('./events.js').RoomEvents} RoomEvents */

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
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'relay'` sends all media through
 *   the TURN servers `joined` names (the server's `[turn]`), e.g. to test TURN or to hide
 *   the client's address; default `'all'`.
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
  /** The room's metadata, as an administrator last set it (`roomUpdated`). @type {unknown} */
  metadata = null;
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

  /** The signaling URL of the node that holds the session. */
  #url;
  /** Other nodes to join at if this one goes away, as `joined` / `resumed` said. @type {string[]} */
  #alternatives = [];
  /** Set while joining afresh on another node, until its `joined`. */
  #rejoining = false;
  /** @type {string | null} */
  #token;
  /** @type {ConnectOptions} */
  #options;
  /** @type {string | null} */
  #resumeToken = null;

  #channel = new SignalingChannel();
  /** @type {Session} */
  #session;
  /** @type {Negotiator} */
  #negotiator;
  /** @type {Publisher} */
  #publisher;
  /** @type {Subscriptions} */
  #subscriptions;
  /** @type {Reconnector} */
  #reconnector;
  /** @type {Chat} */
  #chat;
  /** @type {QualityControl} */
  #quality;
  /** @type {ActiveSpeakers} */
  #speakers;

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
    const fromUrl = new URL(this.#url).searchParams.get('room');
    this.name = options.room ?? fromUrl ?? '';
    if (!this.name) throw new ManifoldError('A room name is required.', { code: 'state' });

    const channel = this.#channel;
    /** @type {(name: string, detail: any) => void} */
    const emit = (name, detail) => this.emit(/** @type {any} */ (name), detail);
    const emitError = (/** @type {unknown} */ error) => this.#emitError(error);
    const isClosed = () => this.connectionState === 'disconnected';
    const end = (/** @type {string} */ reason, /** @type {string} */ message) => this.#teardown(reason, message);
    this.#quality = new QualityControl({
      channel,
      track: (trackId) => this.#subscriptions.remoteTracks.find((track) => track.id === trackId),
      participant: (id) => this.participants.get(id),
      emit,
      emitError,
    });
    this.#speakers = new ActiveSpeakers(
      (id) => (id === this.localParticipant.id ? this.localParticipant : this.participants.get(id) ?? null),
      emit,
    );
    this.#subscriptions = new Subscriptions(this.participants, {
      emit,
      channel,
      localId: () => this.localParticipant.id,
      onSubscribed: (track) => this.#quality.subscribed(track),
      onUnsubscribed: (track) => this.#quality.unsubscribed(track),
      onRemoved: (track) => this.#quality.forget(track),
    });
    this.#publisher = new Publisher(this.localParticipant, {
      emit,
      emitError,
      channel,
      detachSender: (track) => this.#negotiator.detachSender(track),
      senderOf: (local) => this.#negotiator.senderOf(local),
      assertJoined: () => this.#assertJoined(),
      isClosed,
    });
    this.#negotiator = new Negotiator({
      send: (message) => channel.send(message),
      publication: (cid) => this.#publisher.publication(cid),
      publications: () => this.#publisher.publications(),
      remoteTrackFor: (entry) => this.#subscriptions.remoteTrackFor(entry),
      onAnswered: (receivers) => this.#subscriptions.applyAnswer(receivers),
      onIceStateChange: () => this.#reconnector.handleIceStateChange(),
    });
    this.#chat = new Chat(channel, this.localParticipant, this.participants, (message) => this.emit('chat', message));
    this.#session = new Session(
      {
        channel,
        negotiator: this.#negotiator,
        publisher: this.#publisher,
        subscriptions: this.#subscriptions,
        quality: this.#quality,
        speakers: this.#speakers,
        chat: this.#chat,
      },
      {
        onJoined: (message, resumed) => this.#onJoined(message, resumed),
        onRoomUpdated: (metadata) => {
          this.metadata = metadata;
          this.emit('roomUpdated', { metadata });
        },
        onDropped: () => this.#reconnector.handleSignalingLost(),
        end,
        emitError,
        isClosed,
      },
    );
    this.#reconnector = new Reconnector({
      url: () => this.#url,
      alternatives: () => this.#alternatives,
      rejoin: (url, timeoutMs) => this.#rejoin(url, timeoutMs),
      graceMs: options.reconnectGraceMs ?? RECONNECT_GRACE_MS,
      channel,
      attach: (socket) => this.#session.attach(socket),
      resumeMessage: () => ({ type: 'resume', participant: this.localParticipant.id, resume_token: this.#resumeToken }),
      onResumed: () => {
        channel.flush();
        this.#publisher.republishPending();
      },
      iceState: () => this.#negotiator.pc?.iceConnectionState,
      state: () => this.connectionState,
      setState: (state) => this.#setState(state),
      emit,
      emitError,
      fail: end,
    });
  }

  /** The peer connection, once joined (for stats and debugging). */
  get peerConnection() {
    return this.#negotiator.pc;
  }

  /** The media connection's state: the peer connection's `connectionState`. */
  get mediaState() {
    return this.#negotiator.pc?.connectionState ?? 'new';
  }

  /** Every remote track, of every participant. */
  get remoteTracks() {
    return this.#subscriptions.remoteTracks;
  }

  /**
   * Who is speaking now, loudest first (participant ids, this client's own included), as
   * the server last said (`activeSpeakersChanged`).
   * @returns {string[]}
   */
  get activeSpeakers() {
    return [...this.#speakers.ids];
  }

  // ---------------------------------------------------------------------------------
  // Publishing (publishing.js)

  /**
   * Captures the camera and publishes it, by default in simulcast layers (see
   * `publishTrack`).
   * @param {MediaTrackConstraints} [constraints]
   * @param {{simulcast?: SimulcastOption}} [options]
   * @returns {Promise<LocalTrack>}
   */
  publishCamera(constraints, options) {
    return this.#publisher.publishCamera(constraints, options);
  }

  /**
   * Captures the microphone and publishes it.
   * @param {MediaTrackConstraints} [constraints]
   * @returns {Promise<LocalTrack>}
   */
  publishMicrophone(constraints) {
    return this.#publisher.publishMicrophone(constraints);
  }

  /**
   * Asks the user for a screen, window or tab and publishes it, with its audio if it has
   * any. Resolves once the video is published; the audio follows and then appears as the
   * returned track's `audio` companion. When the user stops sharing from the browser's
   * own UI, both are unpublished.
   * @param {DisplayMediaStreamOptions} [options]
   * @returns {Promise<LocalTrack>}
   */
  publishScreen(options) {
    return this.#publisher.publishScreen(options);
  }

  /**
   * Publishes any MediaStreamTrack (a canvas, a processed camera, a file...). Resolves
   * once the server accepted it (`trackId` set). When the track ends (device unplugged,
   * sharing stopped), it is unpublished.
   *
   * Camera video goes out in simulcast layers the server forwards to each receiver as it
   * can take them: three (full, half and quarter size) when the capture is at least 540
   * pixels on its shorter side, two (full and half) from 360, else one. `simulcast`
   * changes that: `false` or 1 for one layer, 2 or 3, or `true` for the camera's rule on
   * any video. Audio and screen shares always have one.
   *
   * @param {MediaStreamTrack} mediaStreamTrack
   * @param {PublishOptions} [options] `stopOnUnpublish` (default true) stops the track
   *   when it is unpublished.
   * @returns {Promise<LocalTrack>}
   */
  publishTrack(mediaStreamTrack, options = {}) {
    return this.#publisher.publishTrack(mediaStreamTrack, options);
  }

  /**
   * Stops publishing a track (and its companions). The track is stopped too unless it was
   * published with `stopOnUnpublish: false`.
   * @param {LocalTrack} local
   * @returns {Promise<void>}
   */
  unpublish(local) {
    return this.#publisher.unpublish(local);
  }

  /**
   * Mutes or unmutes a local track: tells the room (`mute`) and disables the track, so
   * it sends silence or black frames.
   * @param {LocalTrack} local
   * @param {boolean} muted
   * @returns {Promise<void>}
   */
  setMuted(local, muted) {
    return this.#publisher.setMuted(local, muted);
  }

  // ---------------------------------------------------------------------------------
  // Receiving (subscribing.js), chat (chat.js), metadata, stats

  /**
   * Starts receiving a track (for `autoSubscribe: false`, or after `unsubscribe`). It is
   * reported as `trackSubscribed` once the server's offer for it is answered.
   * @param {string} trackId
   * @returns {Promise<void>}
   */
  async subscribe(trackId) {
    this.#assertJoined();
    await this.#subscriptions.request('subscribe', trackId);
  }

  /**
   * Stops receiving a track; `trackUnsubscribed` follows with the server's next offer.
   * @param {string} trackId
   * @returns {Promise<void>}
   */
  async unsubscribe(trackId) {
    this.#assertJoined();
    await this.#subscriptions.request('unsubscribe', trackId);
  }

  /**
   * The most this client wants of a remote video: `low`, `medium`, `high` (the server's
   * default), or `auto`: the smallest layer that covers the size the video is shown at,
   * followed as `element` is resized (debounced, sent only when it changes) or fixed with
   * `width` and `height` (device pixels). The server may send less when the link cannot
   * carry it (`streamStateChanged`). Kept across resubscriptions; switching away from
   * `auto` stops following the element. Resolves once sent (a refusal within a few seconds
   * rejects), or at once while the track is not received: it is sent when it is.
   * @param {string} trackId
   * @param {VideoQuality} quality
   * @param {QualityOptions} [options]
   * @returns {Promise<void>}
   */
  async setVideoQuality(trackId, quality, options) {
    this.#assertJoined();
    await this.#quality.set(trackId, quality, options);
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
    return this.#chat.send(text, to);
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
    await this.#channel.request(message, {
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
    const pc = this.#negotiator.pc;
    if (!pc) return { remote: [], local: [], roundTripTime: null };
    return trackStats(await readPeerStats(pc), this.participants.values(), this.localParticipant);
  }

  /**
   * Leaves the room: tells the server, closes the connections and stops the local
   * tracks. Emits `disconnected` with reason `left`.
   * @returns {Promise<void>}
   */
  async leave() {
    if (this.connectionState === 'disconnected') return;
    await this.#session.leave();
    this.#teardown('left', closingText('left'));
  }

  // ---------------------------------------------------------------------------------
  // Joining (session.js)

  async #join() {
    try {
      this.#url = await this.#session.join(this.#url, this.name, this.#token, this.#options);
    } catch (error) {
      this.#teardown('failed', errorText(error), { silent: true });
      throw error;
    }
  }

  /**
   * Joins the room afresh on another node (ours is gone, and our session with it): a new
   * participant id, a new peer connection, every publication published again and every
   * track received again as on a first join. Rejects, changing nothing, if that node
   * does not take the join.
   * @param {string} url The node's base URL.
   * @param {number} timeoutMs
   * @returns {Promise<{url: string, previousId: string}>} The signaling URL of the node
   *   that took it, and the participant id given up.
   */
  async #rejoin(url, timeoutMs) {
    const previousId = this.localParticipant.id;
    this.#rejoining = true;
    try {
      this.#url = await this.#session.join(signalingUrl(url), this.name, this.#token, this.#options, { timeoutMs });
    } finally {
      this.#rejoining = false;
    }
    // What waited for the old session is meaningless to the new one.
    this.#channel.resuming = false;
    this.#channel.discardOutbox();
    this.#publisher.republishAll();
    return { url: this.#url, previousId };
  }

  /**
   * @param {Message} message `joined` or `resumed`
   * @param {boolean} resumed
   */
  #onJoined(message, resumed) {
    if (message.room) this.name = message.room;
    if (message.resume_token) this.#resumeToken = message.resume_token;
    this.#alternatives = (Array.isArray(message.alternatives) ? message.alternatives : [])
      .filter((/** @type {unknown} */ url) => typeof url === 'string')
      .slice(0, 8);
    /** @type {ParticipantInfo} */
    const me = message.participant ?? { id: this.localParticipant.id, identity: this.localParticipant.identity };
    /** @type {ParticipantInfo[]} */
    const others = (message.participants ?? []).filter((/** @type {ParticipantInfo} */ p) => p.id !== me.id);
    if (resumed) {
      if (this.localParticipant.update(me)) this.emit('participantUpdated', { participant: this.localParticipant });
      // The room may have changed while we were away.
      this.#subscriptions.reconcile(others);
      return;
    }
    const iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
    if (this.#rejoining) {
      // A new session on another node: the room as it sees it, on a new peer connection.
      this.#subscriptions.forgetSelf(this.localParticipant.id);
      this.localParticipant.id = me.id;
      if (this.localParticipant.update(me)) this.emit('participantUpdated', { participant: this.localParticipant });
      this.#subscriptions.dropMedia();
      this.#subscriptions.reconcile(others);
      this.#negotiator.restart();
      this.#negotiator.start(iceServers, this.#options.iceTransportPolicy);
      return;
    }
    this.localParticipant.id = me.id;
    this.localParticipant.update(me);
    for (const info of others) this.#subscriptions.add(info, false);
    this.#negotiator.start(iceServers, this.#options.iceTransportPolicy);
    this.#setState('connected');
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

  #assertJoined() {
    if (!this.#session.joined || this.connectionState === 'disconnected') {
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
    this.#reconnector.stop();
    this.#channel.close(new ManifoldError(message || 'Disconnected.', { code: 'closed' }));
    this.#negotiator.close();
    this.#publisher.stopAll();
    this.#subscriptions.reset();
    this.#quality.reset();
    this.#speakers.reset();
    this.#setState('disconnected');
    if (!silent) this.emit('disconnected', { reason, message });
  }
}
