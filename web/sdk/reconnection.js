/**
 * Getting a room back after a failure: a dropped signaling socket is reopened with
 * backoff and the session resumed (`resume`) within the grace period; when the node
 * itself is gone (it refuses connections, or does not answer), the room is joined afresh
 * on one of the other nodes `joined` named (`alternatives`), in turn; a media connection
 * that failed, or stayed disconnected, is restarted (`ice_restart`) until it recovers or
 * the give-up time passes. Owns the timers and the `reconnecting` / `reconnected` events;
 * the Room decides what a failure that cannot be recovered means (`disconnected`).
 *
 * @module manifold/reconnection
 */

import { ManifoldError, errorText } from './errors.js';
import { SignalingSocket } from './signaling.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */
/** @typedef {'connecting' | 'connected' | 'reconnecting' | 'disconnected'} ConnectionState */

/** Default for `reconnectGraceMs`: the server keeps a dropped session this long. */
export const RECONNECT_GRACE_MS = 10_000;
/** Waits between reconnection attempts; the last one repeats. */
const RECONNECT_DELAYS_MS = [0, 250, 500, 1000, 2000];
/** ICE `disconnected` often recovers by itself; restart only if it lasts this long. */
const ICE_DISCONNECTED_WAIT_MS = 2_000;
const ICE_RESTART_RETRY_MS = 5_000;
const ICE_RESTART_GIVE_UP_MS = 20_000;
/** This many attempts in a row that cannot even reach the node mean it is gone. */
const NODE_GONE_AFTER = 3;
/** While there are other nodes to go to, a node that does not answer is given this long. */
const NODE_ANSWER_MS = 2_000;
/** Joining afresh elsewhere: at most this many nodes, each tried this many times. */
const MAX_FAILOVER_NODES = 8;
const FAILOVER_ROUNDS = 2;
/** Waits before each round of failover attempts. */
const FAILOVER_DELAYS_MS = [0, 1_000];
/** How long one failover join may take (socket and `joined`). */
const FAILOVER_JOIN_MS = 4_000;

/**
 * What the reconnection needs from the rest of the room.
 * @typedef {object} ReconnectionHooks
 * @property {() => string} url The signaling URL of the node holding the session.
 * @property {() => string[]} alternatives Other nodes to join afresh at (base URLs).
 * @property {(url: string, timeoutMs: number) => Promise<{url: string, previousId: string}>} rejoin
 *   Joins the room afresh at `url` (a new session; redirects followed), resolving with
 *   the signaling URL of the node that took it and the participant id given up.
 * @property {number} graceMs How long to try to resume.
 * @property {SignalingChannel} channel
 * @property {(socket: SignalingSocket) => void} attach Makes a new socket the room's.
 * @property {() => Message} resumeMessage The `resume` request to send.
 * @property {() => void} onResumed Catch up after a resume (outbox, pending publications).
 * @property {() => RTCIceConnectionState | undefined} iceState
 * @property {() => ConnectionState} state
 * @property {(state: ConnectionState) => void} setState
 * @property {(name: string, detail: any) => void} emit A Room event.
 * @property {(error: unknown) => void} emitError An `error` event.
 * @property {(reason: string, message: string) => void} fail Ends the room (`disconnected`).
 */

export class Reconnector {
  /** @type {ReconnectionHooks} */
  #hooks;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #iceTimer;
  /** When the current ICE trouble began, or null while ICE is fine. @type {number | null} */
  #iceTroubleSince = null;
  #iceRestartWanted = false;

  /** @param {ReconnectionHooks} hooks */
  constructor(hooks) {
    this.#hooks = hooks;
  }

  /** The signaling socket dropped: reopen and resume, or give up after the grace period. */
  async handleSignalingLost() {
    const hooks = this.#hooks;
    const channel = hooks.channel;
    const closed = () => hooks.state() === 'disconnected';
    channel.resuming = true;
    hooks.setState('reconnecting');
    hooks.emit('reconnecting', { cause: 'signaling' });
    const deadline = Date.now() + hooks.graceMs;
    // Attempts in a row that could not reach the node at all.
    let unreachable = 0;
    for (let attempt = 0; ; attempt++) {
      const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
      if (Date.now() + delay >= deadline) break;
      await sleep(delay);
      if (closed()) return;
      const elsewhere = hooks.alternatives();
      let socket;
      try {
        const wait = elsewhere.length ? NODE_ANSWER_MS : 4_000;
        socket = await SignalingSocket.open(hooks.url(), { timeoutMs: clamp(deadline - Date.now(), 500, wait) });
      } catch {
        unreachable++;
        if (unreachable >= NODE_GONE_AFTER && elsewhere.length) {
          // The node is gone, and the session with it: join afresh on another one.
          if (await this.#failover(elsewhere)) return;
          if (closed()) return;
          unreachable = 0;
        }
        continue;
      }
      unreachable = 0;
      if (closed()) {
        socket.close();
        return;
      }
      hooks.attach(socket);
      try {
        await channel.request(
          hooks.resumeMessage(),
          { expect: 'resumed', failOnClose: true, direct: true, timeoutMs: clamp(deadline - Date.now(), 500, 5_000) },
        );
      } catch (error) {
        if (closed()) return;
        const code = error instanceof ManifoldError ? error.code : '';
        if (code === 'timeout' || code === 'closed') {
          if (channel.socket === socket) channel.detach();
          continue;
        }
        // The server refused: the session is gone (expired, replaced, unauthorized).
        channel.resuming = false;
        hooks.fail('resume_failed', `Could not resume the session: ${errorText(error)}`);
        return;
      }
      channel.resuming = false;
      hooks.onResumed();
      const ice = hooks.iceState();
      if (this.#iceRestartWanted || (ice !== 'connected' && ice !== 'completed')) {
        this.restartIce();
      } else {
        hooks.setState('connected');
        hooks.emit('reconnected', {});
      }
      return;
    }
    channel.resuming = false;
    hooks.fail(
      'timeout',
      `Lost the connection to the server and could not get it back within ${Math.round(hooks.graceMs / 1000)} s.`,
    );
  }

  /**
   * Joins the room afresh at each of `urls` in turn (a few rounds, with backoff) until one
   * takes it. Resolves true when one did (or the room ended meanwhile), false when none.
   * @param {string[]} urls
   * @returns {Promise<boolean>}
   */
  async #failover(urls) {
    const hooks = this.#hooks;
    const closed = () => hooks.state() === 'disconnected';
    const nodes = urls.slice(0, MAX_FAILOVER_NODES);
    for (let round = 0; round < FAILOVER_ROUNDS; round++) {
      await sleep(FAILOVER_DELAYS_MS[Math.min(round, FAILOVER_DELAYS_MS.length - 1)]);
      for (const url of nodes) {
        if (closed()) return true;
        let rejoined;
        try {
          rejoined = await hooks.rejoin(url, FAILOVER_JOIN_MS);
        } catch (error) {
          if (closed()) return true;
          console.warn(`manifold: could not join at ${url}: ${errorText(error)}`);
          continue;
        }
        if (closed()) return true;
        // The old peer connection's troubles are over with it.
        clearTimeout(this.#iceTimer);
        this.#iceTroubleSince = null;
        this.#iceRestartWanted = false;
        hooks.channel.resuming = false;
        hooks.setState('connected');
        hooks.emit('reconnected', { failover: true, ...rejoined });
        return true;
      }
    }
    return false;
  }

  /** The peer connection's ICE state changed. */
  handleIceStateChange() {
    const hooks = this.#hooks;
    const state = hooks.iceState();
    if (state === undefined || hooks.state() === 'disconnected') return;
    if (state === 'connected' || state === 'completed') {
      clearTimeout(this.#iceTimer);
      this.#iceTroubleSince = null;
      this.#iceRestartWanted = false;
      if (hooks.state() === 'reconnecting' && !hooks.channel.resuming) {
        hooks.setState('connected');
        hooks.emit('reconnected', {});
      }
    } else if (state === 'failed') {
      this.restartIce();
    } else if (state === 'disconnected') {
      clearTimeout(this.#iceTimer);
      this.#iceTimer = setTimeout(() => {
        const now = hooks.iceState();
        if (now === 'disconnected' || now === 'failed') this.restartIce();
      }, ICE_DISCONNECTED_WAIT_MS);
    }
  }

  /** Asks the server for an offer with new ICE credentials; retries until ICE is back. */
  restartIce() {
    const hooks = this.#hooks;
    if (hooks.state() === 'disconnected') return;
    clearTimeout(this.#iceTimer);
    const now = Date.now();
    this.#iceTroubleSince ??= now;
    if (now - this.#iceTroubleSince > ICE_RESTART_GIVE_UP_MS) {
      hooks.fail('media_failed', 'The media connection failed and could not be restored.');
      return;
    }
    if (hooks.state() === 'connected') {
      hooks.setState('reconnecting');
      hooks.emit('reconnecting', { cause: 'media' });
    }
    if (hooks.channel.resuming || !hooks.channel.isOpen) {
      // Asked for after the resume.
      this.#iceRestartWanted = true;
      return;
    }
    this.#iceRestartWanted = false;
    hooks.channel.request({ type: 'ice_restart' }, { optional: true, until: (m) => m.type === 'offer' })
      .catch((error) => hooks.emitError(error));
    this.#iceTimer = setTimeout(() => {
      const ice = hooks.iceState();
      if (ice !== 'connected' && ice !== 'completed') this.restartIce();
    }, ICE_RESTART_RETRY_MS);
  }

  /** Clears the timers; the room is over. */
  stop() {
    clearTimeout(this.#iceTimer);
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
