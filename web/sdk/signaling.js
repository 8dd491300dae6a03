/**
 * One signaling WebSocket: JSON text frames in and out, `"v": 1` added to everything sent.
 * Reconnection lives in reconnection.js; a SignalingSocket is never reopened.
 *
 * @module manifold/signaling
 */

import { ManifoldError } from './errors.js';

export const PROTOCOL_VERSION = 1;

/**
 * @typedef {{type: string, [key: string]: any}} Message
 */

export class SignalingSocket {
  /** @type {WebSocket} */
  #ws;
  /** Messages that arrived before anyone listened. @type {Message[]} */
  #early = [];
  /** @type {((message: Message) => void) | null} */
  #onMessage = null;
  /** @type {((event: {code: number, reason: string}) => void) | null} */
  #onClose = null;
  #closed = false;
  /** `Date.now()` of the last frame received. */
  lastReceivedAt = Date.now();

  /**
   * Opens a socket; rejects with a ManifoldError (`network` or `timeout`) if it does not
   * open within `timeoutMs`.
   *
   * @param {string} url
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<SignalingSocket>}
   */
  static open(url, { timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (error) {
        reject(new ManifoldError(`Invalid signaling URL ${url}`, { code: 'network', cause: error }));
        return;
      }
      const socket = new SignalingSocket(ws);
      const timer = setTimeout(() => {
        fail(new ManifoldError(`No answer from ${url} within ${Math.round(timeoutMs / 1000)} s`, { code: 'timeout' }));
        ws.close();
      }, timeoutMs);
      /** @param {ManifoldError | null} error */
      const fail = (error) => {
        clearTimeout(timer);
        ws.removeEventListener('open', onOpen);
        ws.removeEventListener('close', onEarlyClose);
        if (error) reject(error);
      };
      const onOpen = () => {
        fail(null);
        resolve(socket);
      };
      /** @param {CloseEvent} event */
      const onEarlyClose = (event) => {
        fail(new ManifoldError(
          `Could not open the signaling connection to ${url}` + (event.reason ? `: ${event.reason}` : ''),
          { code: 'network' },
        ));
      };
      ws.addEventListener('open', onOpen);
      ws.addEventListener('close', onEarlyClose);
    });
  }

  /** @param {WebSocket} ws */
  constructor(ws) {
    this.#ws = ws;
    ws.addEventListener('message', (event) => {
      this.lastReceivedAt = Date.now();
      if (typeof event.data !== 'string') return;
      /** @type {Message} */
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('manifold: ignoring a signaling frame that is not JSON');
        return;
      }
      if (!message || typeof message !== 'object' || typeof message.type !== 'string') return;
      if (this.#onMessage) this.#onMessage(message);
      else this.#early.push(message);
    });
    ws.addEventListener('close', (event) => {
      if (this.#closed) return;
      this.#closed = true;
      this.#onClose?.({ code: event.code, reason: event.reason });
    });
  }

  /**
   * Sets the message and close handlers; messages that arrived before are delivered now.
   *
   * @param {(message: Message) => void} onMessage
   * @param {(event: {code: number, reason: string}) => void} onClose
   */
  listen(onMessage, onClose) {
    this.#onMessage = onMessage;
    this.#onClose = onClose;
    const early = this.#early;
    this.#early = [];
    for (const message of early) onMessage(message);
  }

  /** Whether messages can be sent. */
  get isOpen() {
    return !this.#closed && this.#ws.readyState === WebSocket.OPEN;
  }

  /**
   * Sends one message; returns false if the socket is not open.
   * @param {Record<string, unknown> & {type: string}} message
   * @returns {boolean}
   */
  send(message) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
    return true;
  }

  /**
   * Closes the socket as if the network had dropped it: the close handler runs (with
   * code 4000), so the Room reconnects. For a socket that went silent.
   * @param {string} reason
   */
  drop(reason) {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#ws.close(4000, reason.slice(0, 100));
    } catch {
      // Already closing.
    }
    this.#onClose?.({ code: 4000, reason });
  }

  /**
   * Closes the socket. The close handler does not run for a close asked for here.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    this.#closed = true;
    try {
      this.#ws.close(code, reason);
    } catch {
      // Already closing.
    }
  }
}

/**
 * The WebSocket URL of the room endpoint: `ws(s)://` URLs are kept as they are; an
 * `http(s)://` URL (or a relative one, resolved against the page) becomes `ws(s)://`, with
 * `/rtc` appended when its path is empty or `/`.
 *
 * @param {string} url
 * @returns {string}
 */
export function signalingUrl(url) {
  const base = globalThis.location?.href;
  const parsed = new URL(url, base);
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  else if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new ManifoldError(`Unsupported URL scheme in ${url}`, { code: 'state' });
  }
  if (parsed.pathname === '' || parsed.pathname === '/') parsed.pathname = '/rtc';
  parsed.hash = '';
  return parsed.href;
}
