/**
 * Who is speaking: the server's `speakers_changed` (loudest first, at most three, from the
 * audio levels of their microphones) kept as the Room's `activeSpeakers` and reported as
 * `activeSpeakersChanged`.
 *
 * @module manifold/speakers
 */

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').Participant<any>} AnyParticipant */

/**
 * One speaker, as `activeSpeakersChanged` reports it.
 * @typedef {object} ActiveSpeaker
 * @property {string} participantId
 * @property {AnyParticipant | null} participant This client's own participant included.
 * @property {number} level From 0 (silence) to 1 (loudest).
 */

export class ActiveSpeakers {
  /** Participant ids, loudest first. @type {string[]} */
  ids = [];
  /** @type {ActiveSpeaker[]} */
  speakers = [];
  /** @type {(participantId: string) => AnyParticipant | null} */
  #participant;
  /** @type {(name: string, detail: any) => void} */
  #emit;

  /**
   * @param {(participantId: string) => AnyParticipant | null} participant Anyone in the
   *   room by id, this client included.
   * @param {(name: string, detail: any) => void} emit A Room event.
   */
  constructor(participant, emit) {
    this.#participant = participant;
    this.#emit = emit;
  }

  /**
   * `speakers_changed`.
   * @param {Message} message
   */
  handle(message) {
    const list = Array.isArray(message.speakers) ? message.speakers : [];
    this.speakers = list
      .filter((/** @type {any} */ entry) => typeof entry?.participant === 'string')
      .map((/** @type {any} */ entry) => ({
        participantId: entry.participant,
        participant: this.#participant(entry.participant),
        level: Number.isFinite(entry.level) ? Math.min(1, Math.max(0, entry.level)) : 0,
      }));
    this.ids = this.speakers.map((speaker) => speaker.participantId);
    this.#emit('activeSpeakersChanged', { activeSpeakers: [...this.ids], speakers: this.speakers });
  }

  /** Nobody speaks any more; the room is over. */
  reset() {
    this.ids = [];
    this.speakers = [];
  }
}
