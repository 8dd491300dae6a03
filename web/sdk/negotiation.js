/**
 * A room's peer connection and its negotiation: answering the server's offers one at a
 * time, putting each m-line the offer lists to its use (a local track to send by `cid`, a
 * remote track to receive by `track`, or inactive), giving a simulcast publication's
 * sender its layers before answering, trickling our ICE candidates, and answering a
 * repeated offer (after a resume) with the same answer. What the receive m-lines mean for
 * subscriptions is the caller's: it gets them once answered.
 *
 * @module manifold/negotiation
 */

import { ManifoldError, errorText } from './errors.js';
import { createPeerConnection } from './peer.js';
import { applyLayers } from './simulcast.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').LocalTrack} LocalTrack */
/** @typedef {import('./tracks.js').RemoteTrack} RemoteTrack */

/**
 * An m-line the answered offer receives on.
 * @typedef {object} Receiver
 * @property {RemoteTrack} track
 * @property {MediaStreamTrack} mediaStreamTrack The transceiver's receiver track.
 */

/**
 * What the negotiation needs from the rest of the room.
 * @typedef {object} NegotiationHooks
 * @property {(message: Message) => void} send Sends (or queues) a signaling message.
 * @property {(cid: string) => LocalTrack | undefined} publication Our publication by cid.
 * @property {() => Iterable<LocalTrack>} publications Every publication not yet settled.
 * @property {(entry: {kind: string, track: string, participant?: string}) => RemoteTrack} remoteTrackFor
 *   The remote track an offer's receive m-line names.
 * @property {(receivers: Map<string, Receiver>) => void} onAnswered Every receive m-line
 *   of the offer just answered, by mid.
 * @property {() => void} onIceStateChange
 */

export class Negotiator {
  /** The peer connection, from the join on. @type {RTCPeerConnection | null} */
  pc = null;
  /** The last answer, resent if the server repeats its offer after a resume. */
  /** @type {{offerId: unknown, sdp: string} | null} */
  #lastAnswer = null;
  /** @type {NegotiationHooks} */
  #hooks;

  /** @param {NegotiationHooks} hooks */
  constructor(hooks) {
    this.#hooks = hooks;
  }

  /**
   * Creates the peer connection, on `joined`: once, or again after `restart`.
   * @param {RTCIceServer[]} iceServers
   * @param {RTCIceTransportPolicy} [iceTransportPolicy]
   */
  start(iceServers, iceTransportPolicy) {
    const pc = createPeerConnection(iceServers, iceTransportPolicy);
    pc.addEventListener('icecandidate', (event) => {
      // Trickled; the end-of-candidates null is not worth a message.
      if (pc === this.pc && event.candidate?.candidate) this.#hooks.send({ type: 'candidate', candidate: event.candidate.candidate });
    });
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc === this.pc) this.#hooks.onIceStateChange();
    });
    this.pc = pc;
  }

  /**
   * Closes the peer connection and forgets its answers, for a session joined afresh on
   * another node; `start` makes the next one.
   */
  restart() {
    this.pc?.close();
    this.pc = null;
    this.#lastAnswer = null;
  }

  /**
   * Applies an `offer` and sends the answer. A failure leaves the connection ready for
   * the server's next offer and rejects with a ManifoldError (`bad_sdp`).
   * @param {Message} message
   * @returns {Promise<void>}
   */
  async handleOffer(message) {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (this.#lastAnswer && message.offer_id === this.#lastAnswer.offerId && pc.signalingState === 'stable') {
      // The same offer again (the answer was lost with a socket): answer it again.
      this.#hooks.send({ type: 'answer', offer_id: message.offer_id, sdp: this.#lastAnswer.sdp });
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
    } catch (error) {
      throw new ManifoldError(`Could not apply the server's offer: ${errorText(error)}`, { code: 'bad_sdp', cause: error });
    }
    try {
      /** @type {Map<string, Receiver>} */
      const receivers = new Map();
      const transceivers = pc.getTransceivers();
      for (const entry of Array.isArray(message.mids) ? message.mids : []) {
        if (entry.kind === 'application') continue;
        const mid = String(entry.mid);
        const transceiver = transceivers.find((t) => t.mid === mid);
        if (!transceiver || transceiver.currentDirection === 'stopped') continue;
        if (entry.cid !== undefined && entry.cid !== null) {
          await this.#send(transceiver, mid, this.#hooks.publication(entry.cid));
          continue;
        }
        if (transceiver.sender.track) {
          const sent = transceiver.sender.track;
          for (const local of this.#hooks.publications()) if (local.mediaStreamTrack === sent) local.mid = null;
          await transceiver.sender.replaceTrack(null);
        }
        if (entry.track) {
          transceiver.direction = 'recvonly';
          receivers.set(mid, { track: this.#hooks.remoteTrackFor(entry), mediaStreamTrack: transceiver.receiver.track });
        } else {
          transceiver.direction = 'inactive';
        }
      }
      await pc.setLocalDescription(await pc.createAnswer());
      const sdp = pc.localDescription?.sdp ?? '';
      this.#lastAnswer = { offerId: message.offer_id, sdp };
      this.#hooks.send({ type: 'answer', offer_id: message.offer_id, sdp });
      this.#hooks.onAnswered(receivers);
    } catch (error) {
      // Leave the connection usable for the server's next offer.
      if (pc.signalingState === 'have-remote-offer') {
        await pc.setRemoteDescription({ type: 'rollback' }).catch(() => {});
      }
      throw new ManifoldError(`Could not answer the server's offer: ${errorText(error)}`, { code: 'bad_sdp', cause: error });
    }
  }

  /**
   * Stops sending a track at once, ahead of the offer that turns its m-line inactive.
   * @param {MediaStreamTrack} mediaStreamTrack
   */
  detachSender(mediaStreamTrack) {
    for (const transceiver of this.pc?.getTransceivers() ?? []) {
      if (transceiver.sender.track === mediaStreamTrack) transceiver.sender.replaceTrack(null).catch(() => {});
    }
  }

  /**
   * The sender a publication is negotiated on, or null before (or after) that.
   * @param {LocalTrack} local
   * @returns {RTCRtpSender | null}
   */
  senderOf(local) {
    if (local.mid === null) return null;
    const transceiver = this.pc?.getTransceivers().find((t) => t.mid === local.mid);
    return transceiver?.sender.track === local.mediaStreamTrack ? transceiver.sender : null;
  }

  /** Closes the peer connection, for good. */
  close() {
    this.pc?.close();
  }

  /**
   * Puts a publication on the m-line the server gave its cid, or turns the m-line
   * inactive if the publication is gone. A simulcast publication newly put there gets its
   * layers now: the offer has just created one encoding per RID, and the answer follows.
   * @param {RTCRtpTransceiver} transceiver
   * @param {string} mid
   * @param {LocalTrack | undefined} local
   */
  async #send(transceiver, mid, local) {
    if (local && (local.state === 'publishing' || local.state === 'published')) {
      await transceiver.sender.replaceTrack(local.mediaStreamTrack);
      transceiver.direction = 'sendonly';
      const placed = local.mid === mid;
      local.mid = mid;
      if (!placed && local.layers > 1) await applyLayers(transceiver.sender, local);
    } else {
      await transceiver.sender.replaceTrack(null);
      transceiver.direction = 'inactive';
    }
  }
}
