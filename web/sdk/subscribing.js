/**
 * Everything remote in a room: the other participants and the tracks they publish, kept
 * up to date from the server's messages, which of those tracks this client receives on
 * which m-line, subscribe and unsubscribe, and the events about all of it
 * (`participantJoined` ... `trackSubscribed`, `trackUnsubscribed`, `trackMuted`).
 *
 * @module manifold/subscribing
 */

import { Participant, RemoteTrack } from './tracks.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').TrackInfo} TrackInfo */
/** @typedef {import('./tracks.js').ParticipantInfo} ParticipantInfo */
/** @typedef {Participant<RemoteTrack>} RemoteParticipant */
/** @typedef {import('./negotiation.js').Receiver} Receiver */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */

/** Former participant ids of this client remembered (`forgetSelf`). */
const MAX_FORMER_IDS = 8;

/**
 * What the subscriptions need from the rest of the room.
 * @typedef {object} SubscriptionHooks
 * @property {(name: string, detail: any) => void} emit A Room event.
 * @property {SignalingChannel} channel
 * @property {() => string} localId This client's participant id.
 * @property {(track: RemoteTrack) => void} onSubscribed Received from now on (again).
 * @property {(track: RemoteTrack) => void} onUnsubscribed No longer received.
 * @property {(track: RemoteTrack) => void} onRemoved Gone from the room.
 */

export class Subscriptions {
  /**
   * Every other participant, by id: the Room's `participants`.
   * @type {Map<string, RemoteParticipant>}
   */
  participants;
  /** Receive m-lines: mid → the remote track on it. @type {Map<string, RemoteTrack>} */
  #mids = new Map();
  /**
   * Ids this client had in sessions it left for another node: the room may still show
   * them for a while (until the cluster notices the old node is gone); they are not
   * someone else.
   * @type {Set<string>}
   */
  #formerIds = new Set();
  /** @type {SubscriptionHooks} */
  #hooks;

  /**
   * @param {Map<string, RemoteParticipant>} participants
   * @param {SubscriptionHooks} hooks
   */
  constructor(participants, hooks) {
    this.participants = participants;
    this.#hooks = hooks;
  }

  /** Every remote track, of every participant. */
  get remoteTracks() {
    return [...this.participants.values()].flatMap((p) => [...p.tracks.values()]);
  }

  /**
   * Asks to receive (`subscribe`) or stop receiving (`unsubscribe`) a track; the events
   * follow with the server's next offer.
   * @param {'subscribe' | 'unsubscribe'} type
   * @param {string} trackId
   * @returns {Promise<void>}
   */
  async request(type, trackId) {
    await this.#hooks.channel.request({ type, track: trackId }, { optional: true, until: (m) => m.type === 'offer' });
  }

  /**
   * Takes a message about other participants and their tracks; returns whether it was
   * one. Messages about this client's own tracks are the publisher's.
   * @param {Message} message
   * @returns {boolean}
   */
  handle(message) {
    if (this.#isMe(message.participant)) return false;
    switch (message.type) {
      case 'participant_joined':
        this.#onParticipantJoined(message.participant);
        return true;
      case 'participant_updated':
        if (this.#isMe(message.participant?.id)) return false;
        this.#onParticipantUpdated(message.participant);
        return true;
      case 'participant_left':
        this.#onParticipantLeft(message.participant, message.reason ?? 'left');
        return true;
      case 'track_published':
        this.#onTrackPublished(message.participant, message.track);
        return true;
      case 'track_unpublished':
        this.#onTrackUnpublished(message.participant, message.track);
        return true;
      case 'track_muted':
        this.#onTrackMuted(message.participant, message.track, Boolean(message.muted));
        return true;
      default:
        return false;
    }
  }

  /**
   * Adds a participant the server described, with its tracks.
   * @param {ParticipantInfo} info
   * @param {boolean} announce Emit `participantJoined` and `trackPublished` (not at join).
   */
  add(info, announce) {
    const participant = /** @type {RemoteParticipant} */ (new Participant(info, false));
    for (const trackInfo of info.tracks ?? []) {
      participant.tracks.set(trackInfo.id, new RemoteTrack(trackInfo, participant.id));
    }
    this.participants.set(participant.id, participant);
    if (!announce) return;
    this.#hooks.emit('participantJoined', { participant });
    for (const track of participant.tracks.values()) this.#hooks.emit('trackPublished', { participant, track });
  }

  /**
   * Takes the room as `resumed` describes it: whoever came, changed or left meanwhile.
   * @param {ParticipantInfo[]} others
   */
  reconcile(others) {
    const present = new Set();
    for (const info of others) {
      if (this.#isMe(info.id)) continue;
      present.add(info.id);
      if (this.participants.has(info.id)) this.#onParticipantUpdated(info);
      else this.add(info, true);
    }
    for (const id of [...this.participants.keys()]) {
      if (!present.has(id)) this.#onParticipantLeft(id, 'left');
    }
  }

  /**
   * The RemoteTrack an offer's receive m-line names, made up from the entry if the room
   * has not announced it (yet).
   * @param {{kind: string, track: string, participant?: string}} entry
   * @returns {RemoteTrack}
   */
  remoteTrackFor(entry) {
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

  /**
   * Takes the receive m-lines of the offer just answered: a track that left its m-line
   * is `trackUnsubscribed`, one that arrived on one is `trackSubscribed`.
   * @param {Map<string, Receiver>} receivers
   */
  applyAnswer(receivers) {
    const previous = this.#mids;
    this.#mids = new Map([...receivers].map(([mid, { track }]) => [mid, track]));
    for (const [mid, track] of previous) {
      if (this.#mids.get(mid) !== track && track.mid === mid) this.#markUnsubscribed(track);
    }
    for (const [mid, { track, mediaStreamTrack }] of receivers) {
      if (previous.get(mid) === track && track.subscribed) continue;
      track.subscribed = true;
      track.mid = mid;
      track.mediaStreamTrack = mediaStreamTrack;
      this.#hooks.onSubscribed(track);
      this.#hooks.emit('trackSubscribed', {
        participant: this.participants.get(track.participantId) ?? null,
        track,
        mediaStreamTrack,
        mid,
      });
    }
  }

  /**
   * Every received track stops being received (`trackUnsubscribed`): its peer connection
   * is gone. The next offers subscribe them again.
   */
  dropMedia() {
    for (const track of this.remoteTracks) this.#markUnsubscribed(track);
    this.#mids.clear();
  }

  /** Forgets every subscription, without events; the room is over. */
  reset() {
    for (const track of this.remoteTracks) {
      track.subscribed = false;
      track.mid = null;
      track.mediaStreamTrack = null;
    }
    this.#mids.clear();
  }

  /**
   * This client's participant id before it joined afresh elsewhere: never shown as
   * someone else (the last few are remembered).
   * @param {string} id
   */
  forgetSelf(id) {
    if (!id) return;
    this.#formerIds.add(id);
    for (const old of this.#formerIds) {
      if (this.#formerIds.size <= MAX_FORMER_IDS) break;
      this.#formerIds.delete(old);
    }
  }

  /** @param {unknown} id */
  #isMe(id) {
    return id === this.#hooks.localId() || (typeof id === 'string' && this.#formerIds.has(id));
  }

  /** @param {ParticipantInfo} info */
  #onParticipantJoined(info) {
    if (!info?.id || this.#isMe(info.id)) return;
    if (this.participants.has(info.id)) {
      this.#onParticipantUpdated(info);
      return;
    }
    this.add(info, true);
  }

  /**
   * A remote participant's new name, metadata and, if listed, tracks.
   * @param {ParticipantInfo} info
   */
  #onParticipantUpdated(info) {
    if (!info?.id) return;
    const participant = this.participants.get(info.id);
    if (!participant) {
      this.add(info, true);
      return;
    }
    if (participant.update(info)) this.#hooks.emit('participantUpdated', { participant });
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
  #onParticipantLeft(id, reason) {
    const participant = this.participants.get(id);
    if (!participant) return;
    for (const track of [...participant.tracks.values()]) this.#onTrackUnpublished(id, track.id);
    this.participants.delete(id);
    this.#hooks.emit('participantLeft', { participant, reason });
  }

  /**
   * @param {string} participantId
   * @param {TrackInfo} info
   */
  #onTrackPublished(participantId, info) {
    if (!info?.id || this.#isMe(participantId)) return;
    const participant = this.participants.get(participantId);
    if (!participant) return;
    const existing = participant.tracks.get(info.id);
    if (!existing) {
      const track = new RemoteTrack(info, participantId);
      participant.tracks.set(track.id, track);
      this.#hooks.emit('trackPublished', { participant, track });
      return;
    }
    if (existing.source === 'other' && info.source && info.source !== 'other') {
      // Made up from an offer that came first; now we know what it is.
      const { subscribed, mid, mediaStreamTrack, videoQuality, streamState, streamQuality } = existing;
      Object.assign(existing, new RemoteTrack(info, participantId), {
        subscribed, mid, mediaStreamTrack, videoQuality, streamState, streamQuality,
      });
      this.#hooks.emit('trackPublished', { participant, track: existing });
      if (existing.subscribed && existing.mediaStreamTrack && existing.mid) {
        this.#hooks.emit('trackSubscribed', { participant, track: existing, mediaStreamTrack: existing.mediaStreamTrack, mid: existing.mid });
      }
      return;
    }
    if (existing.update(info)) this.#hooks.emit('trackMuted', { participant, track: existing, muted: existing.muted });
  }

  /**
   * @param {string} participantId
   * @param {string} trackId
   */
  #onTrackUnpublished(participantId, trackId) {
    const participant = this.participants.get(participantId);
    const track = participant?.tracks.get(trackId);
    if (!participant || !track) return;
    this.#markUnsubscribed(track);
    participant.tracks.delete(trackId);
    this.#hooks.onRemoved(track);
    this.#hooks.emit('trackUnpublished', { participant, track });
  }

  /**
   * @param {string} participantId
   * @param {string} trackId
   * @param {boolean} muted
   */
  #onTrackMuted(participantId, trackId, muted) {
    const participant = this.participants.get(participantId);
    const track = participant?.tracks.get(trackId);
    if (!participant || !track || track.muted === muted) return;
    track.muted = muted;
    this.#hooks.emit('trackMuted', { participant, track, muted });
  }

  /** @param {RemoteTrack} track */
  #markUnsubscribed(track) {
    if (!track.subscribed) return;
    const { mid, mediaStreamTrack } = track;
    if (mid !== null && this.#mids.get(mid) === track) this.#mids.delete(mid);
    track.subscribed = false;
    track.mid = null;
    track.mediaStreamTrack = null;
    this.#hooks.onUnsubscribed(track);
    this.#hooks.emit('trackUnsubscribed', {
      participant: this.participants.get(track.participantId) ?? null,
      track,
      mediaStreamTrack,
      mid,
    });
  }
}
