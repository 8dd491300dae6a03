/**
 * Publishing over WHIP and playing over WHEP: one peer connection and the HTTP session
 * behind it (POST the offer, keep the `Location` and `ETag`, DELETE to end). Owns nothing
 * on the page.
 *
 * The server is ICE-lite and reads the client's candidates only from the offer, so we
 * wait for ICE gathering before sending it instead of trickling candidates afterwards.
 *
 * @example
 * import { WhipPublisher, WhepPlayer } from '/sdk/manifold.js';
 * const publisher = new WhipPublisher({ url: '/whip/demo' });
 * await publisher.publish(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
 * const player = new WhepPlayer({ url: '/whep/demo' });
 * video.srcObject = await player.play();
 *
 * @module manifold/whip-whep
 */

import { ManifoldError, errorText } from './errors.js';
import { PREFERRED_VIDEO_CODEC, createPeerConnection, preferCodec, waitForConnection, waitForIceGathering } from './peer.js';
import { sendEncodings } from './simulcast.js';

export const SDP_CONTENT_TYPE = 'application/sdp';

/**
 * The session a successful WHIP or WHEP POST created.
 * @typedef {object} SdpExchange
 * @property {string} answer SDP answer.
 * @property {string} location Absolute URL of the session, for PATCH and DELETE.
 * @property {string | null} etag Entity tag of the ICE session, for ICE restarts.
 */

/**
 * POSTs an SDP offer to a WHIP or WHEP endpoint and returns the answer and the session
 * URL. Throws a ManifoldError carrying the server's own message when it refuses.
 *
 * @param {string} url Endpoint, e.g. `/whip/demo`; relative URLs resolve against the page.
 * @param {string} offer SDP offer.
 * @param {{token?: string, signal?: AbortSignal}} [options]
 * @returns {Promise<SdpExchange>}
 */
export async function postSdpOffer(url, offer, { token, signal } = {}) {
  const endpoint = new URL(url, globalThis.location?.href);
  let response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': SDP_CONTENT_TYPE, ...authorization(token) },
      body: offer,
      signal,
    });
  } catch (error) {
    throw new ManifoldError(`Could not reach ${endpoint.origin}: ${errorText(error)}`, { code: 'network', cause: error });
  }
  if (!response.ok) throw await errorFromResponse(response);

  const answer = await response.text();
  const location = response.headers.get('Location');
  if (!location) {
    throw new ManifoldError('The server answered without a Location header, so the session could not be ended later.', {
      status: response.status,
      code: 'protocol',
    });
  }
  if (!answer.startsWith('v=')) {
    throw new ManifoldError('The server did not answer with an SDP body.', { status: response.status, code: 'protocol' });
  }
  return {
    answer,
    location: new URL(location, response.url || endpoint).href,
    etag: response.headers.get('ETag'),
  };
}

/**
 * Ends a WHIP or WHEP session. A session the server no longer knows counts as ended.
 *
 * @param {string} location Session URL from the POST.
 * @param {{token?: string}} [options]
 * @returns {Promise<void>}
 */
export async function deleteSession(location, { token } = {}) {
  let response;
  try {
    // keepalive lets the DELETE outlive the page when stop() runs on pagehide.
    response = await fetch(location, { method: 'DELETE', headers: authorization(token), keepalive: true });
  } catch (error) {
    throw new ManifoldError(`Could not end the session: ${errorText(error)}`, { code: 'network', cause: error });
  }
  if (!response.ok && response.status !== 404) throw await errorFromResponse(response);
}

/**
 * Shared by publisher and player: one peer connection and the HTTP session that set it up.
 * Fires `statechange` whenever the peer connection's state changes; read `state`.
 */
class HttpSession extends EventTarget {
  /** @type {RTCPeerConnection | null} */
  #pc = null;
  /** @type {string | null} */
  #location = null;
  /** @type {string | null} */
  #etag = null;
  #started = false;
  /** Aborted by stop(), so a pending publish() or play() settles at once. */
  #stopping = new AbortController();

  /**
   * @param {{url: string, token?: string, iceServers?: RTCIceServer[], iceTransportPolicy?: RTCIceTransportPolicy}} options
   *   `url` is the WHIP or WHEP endpoint; `iceServers` (e.g. TURN) and `iceTransportPolicy`
   *   (`'relay'`: through TURN only) configure the peer connection.
   */
  constructor({ url, token, iceServers, iceTransportPolicy }) {
    super();
    if (!url) throw new ManifoldError('An endpoint URL is required.', { code: 'state' });
    /** Endpoint the offer is POSTed to. */
    this.url = url;
    /** Bearer token sent with every request, if any. */
    this.token = token || undefined;
    /** STUN/TURN servers for the peer connection. @type {RTCIceServer[]} */
    this.iceServers = iceServers ?? [];
    /** @type {RTCIceTransportPolicy} */
    this.iceTransportPolicy = iceTransportPolicy ?? 'all';
  }

  /**
   * Ends the session on the server and closes the peer connection. Safe to call twice,
   * and before the session was ever started.
   * @returns {Promise<void>}
   */
  async stop() {
    const location = this.#location;
    const pc = this.#pc;
    this.#location = null;
    this.#stopping.abort();
    if (pc && pc.signalingState !== 'closed') {
      pc.close();
      // Browsers fire no connectionstatechange for close(); tell listeners ourselves.
      this.dispatchEvent(new Event('statechange'));
    }
    if (location) {
      try {
        await deleteSession(location, { token: this.token });
      } catch (error) {
        // The media is already gone on our side; the server reaps the session on timeout.
        console.warn(`manifold: ${errorText(error)}`);
      }
    }
  }

  /** The peer connection, or null before start. */
  get pc() {
    return this.#pc;
  }

  /** Absolute URL of the session on the server, once the offer was accepted. */
  get location() {
    return this.#location;
  }

  /** ETag the server gave the session, needed for an ICE restart. */
  get etag() {
    return this.#etag;
  }

  /** `new` before start, then the peer connection's `connectionState`. */
  get state() {
    return this.#pc ? this.#pc.connectionState : 'new';
  }

  /**
   * Creates the peer connection and lets `addTransceivers` set it up; one call per session.
   * @protected
   * @param {(pc: RTCPeerConnection) => void} addTransceivers
   * @returns {RTCPeerConnection}
   */
  createPeerConnection(addTransceivers) {
    if (this.#started) throw new ManifoldError('This session was already started; create a new one.', { code: 'state' });
    this.#started = true;
    const pc = createPeerConnection(this.iceServers, this.iceTransportPolicy);
    this.#pc = pc;
    pc.addEventListener('connectionstatechange', () => this.dispatchEvent(new Event('statechange')));
    addTransceivers(pc);
    return pc;
  }

  /**
   * Offers, waits for our candidates, POSTs, applies the answer and waits until media can
   * flow. On any failure the session is torn down before the error propagates.
   * @protected
   * @returns {Promise<void>}
   */
  async negotiate() {
    const pc = this.#pc;
    if (!pc) throw new ManifoldError('No peer connection to negotiate.', { code: 'state' });
    const stoppedError = () => new ManifoldError('Stopped before the connection came up.', { code: 'closed' });
    try {
      const stopped = this.#stopping.signal;
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      const offer = pc.localDescription?.sdp;
      if (!offer) throw new ManifoldError('The browser produced no SDP offer.', { code: 'media' });
      if (stopped.aborted) throw stoppedError();
      // Not aborted by stop(): a session the server created must come back to be deleted.
      const exchange = await postSdpOffer(this.url, offer, { token: this.token });
      this.#location = exchange.location;
      this.#etag = exchange.etag;
      if (stopped.aborted) throw stoppedError();
      await pc.setRemoteDescription({ type: 'answer', sdp: exchange.answer });
      await waitForConnection(pc, { signal: stopped });
    } catch (error) {
      await this.stop();
      throw error instanceof ManifoldError ? error : new ManifoldError(errorText(error), { code: 'media', cause: error });
    }
  }
}

/**
 * Sends a camera and microphone to a room over WHIP.
 *
 * @example
 * const publisher = new WhipPublisher({ url: '/whip/demo' });
 * await publisher.publish(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
 */
export class WhipPublisher extends HttpSession {
  /**
   * Publishes the stream's first audio and first video track. Always offers both kinds,
   * so a track added later needs no renegotiation. Resolves once connected. The stream
   * stays the caller's: stop() does not stop its tracks.
   *
   * With `simulcast`, the video is offered in three layers (RIDs `q`, `h`, `f`: a quarter,
   * half and full size, see `LAYER_ENCODINGS`); a server that does not take them gets one.
   *
   * @param {MediaStream} mediaStream
   * @param {{simulcast?: boolean}} [options]
   * @returns {Promise<void>}
   */
  async publish(mediaStream, { simulcast = false } = {}) {
    this.createPeerConnection((pc) => {
      for (const kind of /** @type {const} */ (['audio', 'video'])) {
        const track = mediaStream.getTracks().find((t) => t.kind === kind);
        /** @type {RTCRtpTransceiverInit} */
        const init = { direction: 'sendonly', streams: [mediaStream] };
        if (kind === 'video' && track && simulcast) init.sendEncodings = sendEncodings(3);
        const transceiver = pc.addTransceiver(track ?? kind, init);
        if (kind === 'video') preferCodec(transceiver, 'video', PREFERRED_VIDEO_CODEC);
      }
    });
    await this.negotiate();
  }
}

/**
 * Plays a room's publisher over WHEP.
 *
 * @example
 * const player = new WhepPlayer({ url: '/whep/demo' });
 * video.srcObject = await player.play();
 */
export class WhepPlayer extends HttpSession {
  /** @type {MediaStream | null} */
  #stream = null;

  /**
   * Offers to receive one audio and one video track. Resolves with a stream holding both
   * once connected; its tracks end when the player stops.
   *
   * @returns {Promise<MediaStream>}
   */
  async play() {
    /** @type {MediaStreamTrack[]} */
    const tracks = [];
    this.createPeerConnection((pc) => {
      for (const kind of /** @type {const} */ (['audio', 'video'])) {
        const transceiver = pc.addTransceiver(kind, { direction: 'recvonly' });
        if (kind === 'video') preferCodec(transceiver, 'video', PREFERRED_VIDEO_CODEC);
        // A recvonly transceiver's track exists from the start; no need to wait for ontrack.
        tracks.push(transceiver.receiver.track);
      }
    });
    this.#stream = new MediaStream(tracks);
    await this.negotiate();
    return this.#stream;
  }

  /** The stream play() resolved with, or null before play(). */
  get stream() {
    return this.#stream;
  }
}

/**
 * Builds a ManifoldError from a failed response, preferring the server's
 * `{"error", "message"}` body over the bare status line.
 *
 * @param {Response} response
 * @returns {Promise<ManifoldError>}
 */
async function errorFromResponse(response) {
  let code = `http-${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === 'string' && body.error) code = body.error;
    if (typeof body?.message === 'string' && body.message) message = body.message;
  } catch {
    // Not JSON: a short plain-text body still says more than the status line; HTML does not.
    const plain = text.trim();
    if (plain && plain.length <= 200 && !plain.startsWith('<')) message = `${response.status}: ${plain}`;
  }
  return new ManifoldError(message, { status: response.status, code });
}

/**
 * @param {string | undefined} token
 * @returns {Record<string, string>}
 */
function authorization(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
