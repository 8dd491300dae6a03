/**
 * Events: a small typed emitter on top of `EventTarget`, whose events are `CustomEvent`s
 * with the payload in `detail` (so both `addEventListener(name, e => e.detail)` and the
 * shorter `on(name, detail => ...)` work), and the catalogue of the Room's events.
 *
 * @module manifold/events
 */

/** @typedef {import('./tracks.js').LocalTrack} LocalTrack */
/** @typedef {import('./tracks.js').RemoteTrack} RemoteTrack */
/** @typedef {import('./tracks.js').Participant<RemoteTrack>} RemoteParticipant */
/** @typedef {import('./tracks.js').Participant<LocalTrack>} LocalParticipant */
/** @typedef {import('./chat.js').ChatMessage} ChatMessage */
/** @typedef {import('./errors.js').ManifoldError} ManifoldError */
/** @typedef {import('./speakers.js').ActiveSpeaker} ActiveSpeaker */
/** @typedef {'connecting' | 'connected' | 'reconnecting' | 'disconnected'} ConnectionState */

/**
 * The Room's events and the `detail` each carries.
 * @typedef {object} RoomEvents
 * @property {{participant: RemoteParticipant}} participantJoined
 * @property {{participant: RemoteParticipant, reason: string}} participantLeft
 * @property {{participant: RemoteParticipant | LocalParticipant}} participantUpdated
 * @property {{metadata: unknown}} roomUpdated
 * @property {{participant: RemoteParticipant, track: RemoteTrack}} trackPublished
 * @property {{participant: RemoteParticipant, track: RemoteTrack}} trackUnpublished
 * @property {{participant: RemoteParticipant | null, track: RemoteTrack, mediaStreamTrack: MediaStreamTrack, mid: string}} trackSubscribed
 * @property {{participant: RemoteParticipant | null, track: RemoteTrack, mediaStreamTrack: MediaStreamTrack | null, mid: string | null}} trackUnsubscribed
 * @property {{participant: RemoteParticipant | LocalParticipant, track: RemoteTrack | LocalTrack, muted: boolean}} trackMuted
 * @property {{track: LocalTrack}} localTrackPublished
 * @property {{track: LocalTrack}} localTrackUnpublished
 * @property {{participant: RemoteParticipant | null, track: RemoteTrack, state: 'active' | 'paused', quality: string | null}} streamStateChanged
 *   What the server sends of a received video changed: the layer (`quality`: low, medium,
 *   high) while `active`, or `paused` because the link cannot carry even the lowest.
 * @property {{activeSpeakers: string[], speakers: ActiveSpeaker[]}} activeSpeakersChanged
 *   Who is speaking, loudest first (participant ids, and with their levels).
 * @property {ChatMessage} chat
 * @property {{state: ConnectionState, previous: ConnectionState}} connectionStateChanged
 * @property {{cause: 'signaling' | 'media'}} reconnecting
 * @property {{failover?: boolean, url?: string, previousId?: string}} reconnected
 *   Back in the room: the same session resumed (`{}`), or, `failover`, joined afresh
 *   through another node (`url`, its signaling URL) as a new participant (the old id in
 *   `previousId`), because ours went away.
 * @property {{reason: string, message: string}} disconnected
 * @property {{error: ManifoldError}} error
 */


/**
 * @template {Record<string, any>} EventMap Event name → type of its `detail`.
 */
export class Emitter extends EventTarget {
  /** @type {Map<Function, Map<string, EventListener>>} */
  #wrapped = new Map();

  /**
   * Calls `listener(detail, event)` for every `name` event. Returns a function that
   * removes the listener again.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   * @returns {() => void}
   */
  on(name, listener) {
    /** @type {EventListener} */
    const wrapper = (event) => {
      const custom = /** @type {CustomEvent<EventMap[K]>} */ (event);
      listener(custom.detail, custom);
    };
    let byName = this.#wrapped.get(listener);
    if (!byName) {
      byName = new Map();
      this.#wrapped.set(listener, byName);
    }
    // One registration per (name, listener), as with addEventListener.
    if (byName.has(name)) return () => this.off(name, listener);
    byName.set(name, wrapper);
    this.addEventListener(name, wrapper);
    return () => this.off(name, listener);
  }

  /**
   * Like `on`, but only for the next event.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   * @returns {() => void}
   */
  once(name, listener) {
    const off = this.on(name, (detail, event) => {
      off();
      listener(detail, event);
    });
    return off;
  }

  /**
   * Removes a listener added with `on`.
   *
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {(detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void} listener
   */
  off(name, listener) {
    const byName = this.#wrapped.get(listener);
    const wrapper = byName?.get(name);
    if (!byName || !wrapper) return;
    this.removeEventListener(name, wrapper);
    byName.delete(name);
    if (byName.size === 0) this.#wrapped.delete(listener);
  }

  /**
   * Dispatches a `CustomEvent`. A listener that throws is reported by the browser as an
   * uncaught error but never interrupts the emitter.
   *
   * @protected
   * @template {keyof EventMap & string} K
   * @param {K} name
   * @param {EventMap[K]} detail
   */
  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}
