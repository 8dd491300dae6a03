/**
 * A room's signaling channel: the SignalingSocket in use (a new one after each
 * reconnection), requests matched with the server's replies, the outbox that holds
 * messages while the session is being resumed, and keepalive pings. Which socket to open
 * and when is the Room's and the reconnection's business; the channel only carries.
 *
 * @module manifold/channel
 */

import { ManifoldError } from './errors.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./signaling.js').SignalingSocket} SignalingSocket */

/** Keepalive period; the server wants a ping at least every 30 s. */
export const PING_INTERVAL_MS = 15_000;
/** With pings every 15 s and pongs back, this much silence means a dead socket. */
const SILENCE_LIMIT_MS = 45_000;
const REQUEST_TIMEOUT_MS = 10_000;
/**
 * How long a request the server may answer only by its effect waits for an error before
 * it counts as accepted. Later errors still arrive, as `error` events.
 */
const OPTIONAL_REPLY_MS = 3_000;

/**
 * @typedef {object} RequestOptions
 * @property {string | string[]} [expect] Only a reply of this type (or of one of these)
 *   resolves it (errors always reject).
 * @property {boolean} [optional] Resolves with null, instead of rejecting, on timeout.
 * @property {boolean} [failOnClose] Rejected when the socket closes (join, resume).
 * @property {boolean} [direct] Sent on the current socket even while resuming, never queued.
 * @property {number} [timeoutMs]
 * @property {string} [cid] For publish: resolved by `published` with this cid.
 * @property {number} [id] Use this id (taken with `nextId()`) instead of a new one.
 * @property {(message: Message) => boolean} [until] Also resolved by a message this accepts.
 */

/**
 * @typedef {object} PendingRequest
 * @property {(message: Message | null) => void} resolve
 * @property {(error: ManifoldError) => void} reject
 * @property {string | string[] | null} expect
 * @property {boolean} failOnClose
 * @property {string | null} cid
 * @property {((message: Message) => boolean) | null} until
 * @property {ReturnType<typeof setTimeout>} timer
 */

export class SignalingChannel {
  /** The socket in use; null between a drop and the next socket. @type {SignalingSocket | null} */
  socket = null;
  /**
   * True from a signaling drop until the session is resumed: messages wait in the outbox,
   * only `direct` ones (join, resume) go out. Set by the reconnection.
   */
  resuming = false;
  #closed = false;
  #nextId = 1;
  /** @type {Map<number, PendingRequest>} */
  #pending = new Map();
  /** Messages that wait for the signaling connection to come back. @type {Message[]} */
  #outbox = [];
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #pingTimer;

  /** A request id no other request of this room uses. */
  nextId() {
    return this.#nextId++;
  }

  /** Whether the current socket can send. */
  get isOpen() {
    return Boolean(this.socket?.isOpen);
  }

  /**
   * Makes `socket` the current one. Its messages go to `onMessage` while it is current;
   * when it closes by itself while current, it stops being current and `onClose` runs.
   *
   * @param {SignalingSocket} socket
   * @param {(message: Message) => void} onMessage
   * @param {(event: {code: number, reason: string}) => void} onClose
   */
  attach(socket, onMessage, onClose) {
    this.socket = socket;
    socket.listen(
      (message) => {
        if (this.socket === socket) onMessage(message);
      },
      (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        onClose(event);
      },
    );
  }

  /** Closes and forgets the current socket, without running its close handler. */
  detach() {
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  /**
   * Sends now, or queues until the session is resumed.
   * @param {Message} message
   * @param {{direct?: boolean}} [options] `direct`: send on the current socket even while
   *   resuming (join, resume), never queue.
   */
  send(message, { direct = false } = {}) {
    if (this.socket?.isOpen && (direct || !this.resuming)) {
      this.socket.send(message);
    } else if (!direct && !this.#closed) {
      this.#outbox.push(message);
    }
  }

  /** Forgets what waited in the outbox: it was for a session that is gone. */
  discardOutbox() {
    this.#outbox = [];
  }

  /** Sends what waited in the outbox; after a resume. */
  flush() {
    const queued = this.#outbox;
    this.#outbox = [];
    for (const message of queued) this.send(message);
  }

  /**
   * Sends a request with an `id` and resolves with the server's reply carrying that id
   * (of type `expect`, if given), or with the first message `until` accepts: the effect
   * of a request the server answers without echoing its id (`track_muted` for `mute`).
   * An `error` with the id rejects. Without either within `timeoutMs`, `optional` requests
   * resolve with null and others reject (`timeout`); an error arriving after that is
   * emitted by the Room as an `error` event carrying the request's id.
   *
   * @param {Message} message
   * @param {RequestOptions} [options]
   * @returns {Promise<Message | null>}
   */
  request(message, options = {}) {
    const id = options.id ?? this.nextId();
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
        expect: options.expect ?? null,
        failOnClose: options.failOnClose ?? false,
        cid: options.cid ?? null,
        until: options.until ?? null,
        timer,
      });
      this.send({ ...message, id }, { direct: options.direct });
    });
  }

  /**
   * Settles the request a reply belongs to. Returns whether one was (an `error` that
   * settled nothing is for the Room to report).
   * @param {Message} message
   * @returns {boolean}
   */
  settle(message) {
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
    if (request.expect && ![request.expect].flat().includes(message.type)) return false;
    this.#pending.delete(id);
    clearTimeout(request.timer);
    request.resolve(message);
    return true;
  }

  /**
   * Rejects the requests that cannot outlive their socket (join, resume); for a socket
   * that just closed.
   * @param {ManifoldError} error
   */
  rejectOnClose(error) {
    for (const [id, request] of this.#pending) {
      if (!request.failOnClose) continue;
      this.#pending.delete(id);
      clearTimeout(request.timer);
      request.reject(error);
    }
  }

  /** Pings every PING_INTERVAL_MS; a socket silent for too long is dropped (and resumed). */
  startKeepalive() {
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => {
      const socket = this.socket;
      if (!socket || this.resuming || this.#closed) return;
      if (Date.now() - socket.lastReceivedAt > SILENCE_LIMIT_MS) {
        socket.drop('no answer to keepalive pings');
        return;
      }
      socket.send({ type: 'ping', ts: Date.now() });
    }, PING_INTERVAL_MS);
  }

  /**
   * Ends the channel for good: the socket closes, queued messages are dropped, and every
   * pending request fails with `error`.
   * @param {ManifoldError} error
   */
  close(error) {
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.detach();
    this.#outbox = [];
    for (const request of this.#pending.values()) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this.#pending.clear();
  }
}
