/**
 * A room's signaling session: opening the socket and joining, handing every incoming
 * message, strictly one at a time and in order (offers included), to the part of the
 * room that owns it, and deciding what a closed socket means: the end of a `leave`, the
 * server ending the session (`closing`, a policy close), or a drop to resume.
 *
 * @module manifold/session
 */

import { ManifoldError, closingText } from './errors.js';
import { SignalingSocket, signalingUrl } from './signaling.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */
/** @typedef {import('./room.js').ConnectOptions} ConnectOptions */

const CONNECT_TIMEOUT_MS = 10_000;
/** A `join` answered with `redirect` is followed this many times at most. */
const MAX_REDIRECTS = 3;

/**
 * The parts of the room that messages are routed to.
 * @typedef {object} SessionParts
 * @property {SignalingChannel} channel Settles requests with their replies.
 * @property {{handleOffer: (message: Message) => Promise<void>}} negotiator `offer`
 * @property {{handle: (message: Message) => boolean, applyDynacast: (message: Message) => Promise<void>}} publisher
 *   Our own tracks and participant; `dynacast`.
 * @property {{handle: (message: Message) => boolean}} subscriptions Everyone else's.
 * @property {{handle: (message: Message) => void}} quality `stream_state`
 * @property {{handle: (message: Message) => void}} speakers `speakers_changed`
 * @property {{handle: (message: Message) => void}} chat `chat`
 */

/**
 * What the session needs from the Room.
 * @typedef {object} SessionHooks
 * @property {(message: Message, resumed: boolean) => void} onJoined `joined` or `resumed`.
 * @property {(metadata: unknown) => void} onRoomUpdated `room_updated`: the room's new metadata.
 * @property {() => void} onDropped The socket dropped after the join: resume.
 * @property {(reason: string, message: string) => void} end Ends the room (`disconnected`).
 * @property {(error: unknown) => void} emitError An `error` event.
 * @property {() => boolean} isClosed Whether the room is over.
 */

export class Session {
  /** Whether `joined` arrived. */
  joined = false;
  /** Incoming messages are handled strictly in order, offers included. */
  #inbox = Promise.resolve();
  /** What `closing` said before the server closed the socket. */
  /** @type {{reason: string, message: string} | null} */
  #closing = null;
  #leaving = false;
  /** Resolves `leave()` when the socket closes. @type {(() => void) | null} */
  #onLeaveClosed = null;
  /** @type {SessionParts} */
  #parts;
  /** @type {SessionHooks} */
  #hooks;

  /**
   * @param {SessionParts} parts
   * @param {SessionHooks} hooks
   */
  constructor(parts, hooks) {
    this.#parts = parts;
    this.#hooks = hooks;
  }

  /**
   * Opens the signaling socket and sends `join`; resolves, with the URL of the node that
   * took it, once the server said `joined`. A `redirect` (a draining or full node) is
   * followed to the node it names. Rejects with a ManifoldError (`network`, `timeout`,
   * `unavailable` after too many redirects, or the server's refusal).
   * @param {string} url
   * @param {string} room
   * @param {string | null} token
   * @param {ConnectOptions} options
   * @param {{timeoutMs?: number}} [limits] How long to wait for the socket, and for `joined`.
   * @returns {Promise<string>}
   */
  async join(url, room, token, options, { timeoutMs = CONNECT_TIMEOUT_MS } = {}) {
    const channel = this.#parts.channel;
    /** @type {Message} */
    const join = { type: 'join', room };
    // Unset, the server decides from the token's grants.
    if (options.autoSubscribe !== undefined) join.auto_subscribe = options.autoSubscribe;
    if (token) join.token = token;
    if (options.identity) join.identity = options.identity;
    if (options.name) join.name = options.name;
    if (options.metadata !== undefined) join.metadata = options.metadata;
    for (let redirects = 0; ; redirects++) {
      const socket = await SignalingSocket.open(url, { timeoutMs });
      this.attach(socket);
      /** @type {Message | null} */
      let reply;
      try {
        reply = await channel.request(join, { expect: ['joined', 'redirect'], failOnClose: true, direct: true, timeoutMs });
      } catch (error) {
        if (channel.socket === socket) channel.detach();
        throw error;
      }
      if (reply?.type === 'joined') {
        channel.startKeepalive();
        return url;
      }
      // The server closes a redirected socket; it is no longer ours either way.
      if (channel.socket === socket) channel.detach();
      if (redirects >= MAX_REDIRECTS || typeof reply?.url !== 'string') {
        throw new ManifoldError('The servers kept sending the join elsewhere.', { code: 'unavailable' });
      }
      url = signalingUrl(reply.url);
    }
  }

  /**
   * Makes `socket` the room's: its messages are handled here, its close decided here.
   * @param {SignalingSocket} socket
   */
  attach(socket) {
    this.#parts.channel.attach(socket, (message) => this.#receive(message), (event) => this.#onSocketClose(event));
  }

  /**
   * Sends `leave` and waits (up to a second) for the server to close the socket; at
   * once while the socket is down.
   * @returns {Promise<void>}
   */
  async leave() {
    this.#leaving = true;
    const channel = this.#parts.channel;
    if (!channel.isOpen || channel.resuming) return;
    const closed = new Promise((resolve) => {
      this.#onLeaveClosed = () => resolve(undefined);
      setTimeout(resolve, 1_000);
    });
    channel.send({ type: 'leave' });
    await closed;
  }

  /** @param {{code: number, reason: string}} event */
  #onSocketClose({ code, reason }) {
    this.#parts.channel.rejectOnClose(new ManifoldError(
      this.#closing?.message || reason || 'The signaling connection closed.',
      { code: this.#closing ? this.#closing.reason : 'closed' },
    ));
    // Let messages already received (`closing` in particular) be handled first.
    this.#inbox = this.#inbox.then(() => {
      if (this.#hooks.isClosed()) return;
      if (this.#leaving) {
        this.#onLeaveClosed?.();
      } else if (this.#closing) {
        this.#hooks.end(this.#closing.reason, this.#closing.message || closingText(this.#closing.reason));
      } else if (code === 1008) {
        this.#hooks.end('policy', reason || closingText('policy'));
      } else if (this.joined && !this.#parts.channel.resuming) {
        this.#hooks.onDropped();
      }
    });
  }

  /** @param {Message} message */
  #receive(message) {
    this.#inbox = this.#inbox
      .then(() => this.#process(message))
      .catch((error) => {
        console.error('manifold: failed to handle', message.type, error);
        this.#hooks.emitError(error);
      });
  }

  /** @param {Message} message */
  async #process(message) {
    if (this.#hooks.isClosed()) return;
    const parts = this.#parts;
    switch (message.type) {
      case 'joined':
      case 'resumed':
        if (message.type === 'joined') this.joined = true;
        this.#hooks.onJoined(message, message.type === 'resumed');
        break;
      case 'offer':
        await parts.negotiator.handleOffer(message);
        break;
      case 'dynacast':
        // Awaited like offers: the sender's parameters change one step at a time.
        await parts.publisher.applyDynacast(message);
        break;
      case 'stream_state':
        parts.quality.handle(message);
        break;
      case 'speakers_changed':
        parts.speakers.handle(message);
        break;
      case 'chat':
        parts.chat.handle(message);
        break;
      case 'room_updated':
        this.#hooks.onRoomUpdated(message.metadata ?? null);
        break;
      case 'closing':
        this.#closing = { reason: String(message.reason ?? 'closed'), message: String(message.message ?? '') };
        break;
      default:
        // Participants and tracks: our own first, then everyone else's. Whatever neither
        // takes (`pong`, `error`, what newer servers say that we do not know) is ignored.
        if (!parts.publisher.handle(message)) parts.subscriptions.handle(message);
        break;
    }
    const settled = parts.channel.settle(message);
    if (message.type === 'error' && !settled) {
      this.#hooks.emitError(new ManifoldError(message.message || message.code, { code: message.code, requestId: message.id ?? null }));
    }
    if (message.type === 'joined') {
      // Give the caller of Room.connect a turn to add listeners before the next event.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
}
