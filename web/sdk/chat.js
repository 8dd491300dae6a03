/**
 * A room's chat: sending messages (shown locally at once), and receiving them, with the
 * server's copy of our own messages dropped since they were shown already.
 *
 * @module manifold/chat
 */

import { ManifoldError } from './errors.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */
/** @typedef {import('./tracks.js').Participant<import('./tracks.js').RemoteTrack>} RemoteParticipant */
/** @typedef {import('./tracks.js').Participant<import('./tracks.js').LocalTrack>} LocalParticipant */

const CHAT_MAX_CHARS = 2000;
/** How long our own message waits for its server copy to be dropped. */
const ECHO_WINDOW_MS = 10_000;

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

export class Chat {
  /** Own messages shown already, whose server copy is to be dropped. */
  /** @type {{requestId: number, text: string, to: string | null, at: number}[]} */
  #echoes = [];
  #channel;
  #me;
  #participants;
  #emit;

  /**
   * @param {SignalingChannel} channel
   * @param {LocalParticipant} localParticipant
   * @param {Map<string, RemoteParticipant>} participants
   * @param {(message: ChatMessage) => void} emit Emits the `chat` event.
   */
  constructor(channel, localParticipant, participants, emit) {
    this.#channel = channel;
    this.#me = localParticipant;
    this.#participants = participants;
    this.#emit = emit;
  }

  /**
   * Emits the message as a local `chat` event at once, then sends it; rejects with the
   * server's error (`rate_limited`, `too_large`, `not_found`) if it refuses it.
   * @param {string} text
   * @param {string | null} to
   * @returns {Promise<ChatMessage>}
   */
  async send(text, to) {
    text = String(text);
    if (!text.trim()) throw new ManifoldError('The message is empty.', { code: 'bad_message' });
    if (text.length > CHAT_MAX_CHARS) {
      throw new ManifoldError(`Messages are limited to ${CHAT_MAX_CHARS} characters.`, { code: 'too_large' });
    }
    const requestId = this.#channel.nextId();
    const now = Date.now();
    this.#echoes = this.#echoes.filter((echo) => now - echo.at < ECHO_WINDOW_MS);
    this.#echoes.push({ requestId, text, to, at: now });
    const me = this.#me;
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
    this.#emit(message);
    try {
      await this.#channel.request({ type: 'chat', text, ...(to ? { to } : {}) }, {
        id: requestId,
        optional: true,
        until: (m) => m.type === 'chat' && m.from?.id === me.id && m.text === text,
      });
    } catch (error) {
      this.#echoes = this.#echoes.filter((echo) => echo.requestId !== requestId);
      throw error;
    }
    return message;
  }

  /** @param {Message} message `chat` */
  handle(message) {
    const from = message.from ?? {};
    const local = from.id === this.#me.id;
    const to = message.to ?? null;
    if (local) {
      // Our own message, already shown when sent.
      const index = this.#echoes.findIndex((echo) =>
        echo.requestId === message.id || (echo.text === message.text && echo.to === to));
      if (index >= 0) {
        this.#echoes.splice(index, 1);
        return;
      }
    }
    const participant = local ? this.#me : this.#participants.get(from.id) ?? null;
    this.#emit({
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
}
