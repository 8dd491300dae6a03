/**
 * How much of each remote video this client receives: the quality it asks the server for
 * (`set_video_quality`: `low`, `medium`, `high`, or `auto` with the size the video is
 * rendered at, followed as the element showing it is resized), asked again when a
 * subscription starts anew, and what the server says it sends (`stream_state`, kept on the
 * RemoteTrack and reported as `streamStateChanged`).
 *
 * @module manifold/quality
 */

import { ManifoldError } from './errors.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */
/** @typedef {import('./tracks.js').RemoteTrack} RemoteTrack */
/** @typedef {import('./tracks.js').VideoQuality} VideoQuality */

export const VIDEO_QUALITIES = /** @type {const} */ (['low', 'medium', 'high', 'auto']);
/** The server's quality for a subscription nobody asked anything for. */
const DEFAULT_QUALITY = 'high';
/** A resize waits this long for the next one before the new size is sent. */
export const AUTO_SIZE_DEBOUNCE_MS = 300;
/** The largest size the server takes, per side, in device pixels. */
const MAX_SIDE = 16384;

/**
 * @typedef {object} QualityOptions
 * @property {Element} [element] For `auto`: the element the video is shown in; its
 *   rendered size (CSS pixels × devicePixelRatio) is sent, and sent again when it changes.
 * @property {number} [width] For `auto` without an element: a fixed size, in device pixels.
 * @property {number} [height]
 */

/**
 * What the quality control needs from the rest of the room.
 * @typedef {object} QualityHooks
 * @property {SignalingChannel} channel
 * @property {(trackId: string) => RemoteTrack | undefined} track A remote track by id.
 * @property {(participantId: string) => unknown} participant A remote participant by id.
 * @property {(name: string, detail: any) => void} emit A Room event.
 * @property {(error: unknown) => void} emitError An `error` event.
 */

/**
 * One track's wish, and what of it the server was told.
 * @typedef {object} Wish
 * @property {VideoQuality} quality
 * @property {{width: number, height: number} | null} size For `auto`.
 * @property {Element | null} element For `auto`: the element followed.
 * @property {ResizeObserver | null} observer Following `element`.
 * @property {ReturnType<typeof setTimeout> | undefined} timer The pending debounced resize.
 * @property {string | null} sent What was last sent to this subscription, as a key.
 */

export class QualityControl {
  /** @type {Map<string, Wish>} by track id */
  #wishes = new Map();
  /** @type {QualityHooks} */
  #hooks;

  /** @param {QualityHooks} hooks */
  constructor(hooks) {
    this.#hooks = hooks;
  }

  /**
   * Sets the most this client wants of a remote video, and tells the server if the track
   * is received now (otherwise once it is). Rejects with a ManifoldError: `state` for a
   * bad quality, an audio track or `auto` without an element or size, `not_found` for an
   * unknown track, or the server's refusal (then the previous wish stands).
   *
   * @param {string} trackId
   * @param {VideoQuality} quality
   * @param {QualityOptions} [options]
   * @returns {Promise<void>}
   */
  async set(trackId, quality, { element, width, height } = {}) {
    if (!VIDEO_QUALITIES.includes(quality)) {
      throw new ManifoldError(`Unknown video quality "${quality}": use ${VIDEO_QUALITIES.join(', ')}.`, { code: 'state' });
    }
    const track = this.#hooks.track(trackId);
    if (!track) throw new ManifoldError(`No track ${trackId} in this room.`, { code: 'not_found' });
    if (track.kind !== 'video') throw new ManifoldError('Only video has a quality to choose.', { code: 'state' });
    /** @type {{width: number, height: number} | null} */
    let size = null;
    if (quality === 'auto') {
      size = element ? renderedSize(element) : width && height ? clampSize(width, height) : null;
      if (!element && !size) {
        throw new ManifoldError('"auto" needs the element the video is shown in, or its size.', { code: 'state' });
      }
    }
    const previous = this.#wishes.get(trackId);
    this.#stopObserving(previous);
    /** @type {Wish} */
    const wish = {
      quality,
      size,
      element: quality === 'auto' ? element ?? null : null,
      observer: null,
      timer: undefined,
      sent: previous?.sent ?? null,
    };
    this.#use(track, wish);
    try {
      await this.#tell(track, wish);
    } catch (error) {
      if (this.#wishes.get(trackId) === wish) {
        this.#stopObserving(wish);
        if (previous) this.#use(track, { ...previous, sent: wish.sent });
        else this.#forgetWish(track);
      }
      throw error;
    }
  }

  /**
   * A subscription (re)started: the server starts it at its default, so it is told the
   * wish again.
   * @param {RemoteTrack} track
   */
  subscribed(track) {
    const wish = this.#wishes.get(track.id);
    if (!wish) return;
    wish.sent = null;
    this.#tell(track, wish).catch((error) => this.#hooks.emitError(error));
  }

  /**
   * A subscription ended: what the server said about it no longer holds.
   * @param {RemoteTrack} track
   */
  unsubscribed(track) {
    track.streamState = null;
    track.streamQuality = null;
    const wish = this.#wishes.get(track.id);
    if (wish) wish.sent = null;
  }

  /**
   * The track is gone from the room: stop following its element.
   * @param {RemoteTrack} track
   */
  forget(track) {
    this.#forgetWish(track);
  }

  /**
   * `stream_state`: updates the track and emits `streamStateChanged`.
   * @param {Message} message
   */
  handle(message) {
    const track = this.#hooks.track(message.track);
    if (!track) return;
    const state = message.state === 'paused' ? 'paused' : 'active';
    const quality = state === 'active' && typeof message.quality === 'string' ? message.quality : null;
    if (track.streamState === state && track.streamQuality === quality) return;
    track.streamState = state;
    track.streamQuality = quality;
    this.#hooks.emit('streamStateChanged', {
      participant: this.#hooks.participant(track.participantId) ?? null,
      track,
      state,
      quality,
    });
  }

  /** Stops following every element; the room is over. */
  reset() {
    for (const wish of this.#wishes.values()) this.#stopObserving(wish);
    this.#wishes.clear();
  }

  /**
   * Makes `wish` the track's, following its element if it has one.
   * @param {RemoteTrack} track
   * @param {Wish} wish
   */
  #use(track, wish) {
    this.#wishes.set(track.id, wish);
    track.videoQuality = wish.quality;
    if (wish.element) this.#observe(track.id, wish, wish.element);
  }

  /** @param {RemoteTrack} track */
  #forgetWish(track) {
    this.#stopObserving(this.#wishes.get(track.id));
    this.#wishes.delete(track.id);
    track.videoQuality = DEFAULT_QUALITY;
  }

  /**
   * Sends the wish unless the server has it already, or the track is not received (then
   * it is sent on `subscribed`). The default asked of a new subscription is not sent.
   * @param {RemoteTrack} track
   * @param {Wish} wish
   * @returns {Promise<void>}
   */
  async #tell(track, wish) {
    if (!track.subscribed) return;
    if (wish.quality === 'auto' && !wish.size) return;
    /** @type {Message} */
    const message = { type: 'set_video_quality', track: track.id, quality: wish.quality };
    if (wish.quality === 'auto' && wish.size) Object.assign(message, wish.size);
    const key = JSON.stringify([message.quality, message.width, message.height]);
    if (wish.sent === key || (wish.sent === null && wish.quality === DEFAULT_QUALITY)) {
      wish.sent = key;
      return;
    }
    const before = wish.sent;
    wish.sent = key;
    try {
      await this.#hooks.channel.request(message, { optional: true });
    } catch (error) {
      // Refused: the server still has what it had.
      if (wish.sent === key) wish.sent = before;
      throw error;
    }
  }

  /**
   * Follows the element's size, debounced, for as long as the wish is `auto`.
   * @param {string} trackId
   * @param {Wish} wish
   * @param {Element} element
   */
  #observe(trackId, wish, element) {
    if (typeof ResizeObserver !== 'function') return;
    wish.observer = new ResizeObserver(() => {
      clearTimeout(wish.timer);
      wish.timer = setTimeout(() => {
        if (this.#wishes.get(trackId) !== wish) return;
        const size = renderedSize(element);
        // Not rendered (detached, display: none): keep what the server has.
        if (!size) return;
        wish.size = size;
        const track = this.#hooks.track(trackId);
        if (track) this.#tell(track, wish).catch((error) => this.#hooks.emitError(error));
      }, AUTO_SIZE_DEBOUNCE_MS);
    });
    wish.observer.observe(element);
  }

  /** @param {Wish | undefined} wish */
  #stopObserving(wish) {
    if (!wish) return;
    wish.observer?.disconnect();
    wish.observer = null;
    clearTimeout(wish.timer);
  }
}

/**
 * The size `element` is laid out at (transforms aside), in device pixels; null while it is
 * not rendered.
 * @param {Element} element
 * @returns {{width: number, height: number} | null}
 */
function renderedSize(element) {
  const ratio = globalThis.devicePixelRatio || 1;
  return clampSize(element.clientWidth * ratio, element.clientHeight * ratio);
}

/**
 * @param {number} width
 * @param {number} height
 * @returns {{width: number, height: number} | null}
 */
function clampSize(width, height) {
  const side = (/** @type {number} */ value) => Math.min(MAX_SIDE, Math.max(1, Math.round(value)));
  return Number.isFinite(width) && Number.isFinite(height) && width > 0 && height > 0
    ? { width: side(width), height: side(height) }
    : null;
}
