/**
 * Manifold's browser client: publishing over WHIP, playing over WHEP, and a flat
 * summary of a peer connection's stats.
 *
 * It owns the peer connection and the HTTP session behind it, and nothing on the page.
 * The server is ICE-lite and reads the client's candidates only from the offer, so we
 * wait for ICE gathering before sending it instead of trickling candidates afterwards.
 * No STUN or TURN: the server's host candidates in the answer are all we need.
 *
 * @module manifold-webrtc
 */

export const SDP_CONTENT_TYPE = 'application/sdp';

/** How long to wait for our own candidates before offering what we have. */
export const ICE_GATHERING_TIMEOUT_MS = 2000;

/** How long publish() and play() wait for ICE and DTLS after the answer. */
export const CONNECT_TIMEOUT_MS = 15000;

/** Video codec we ask for first; the server forwards packets, so everyone must decode it. */
export const PREFERRED_VIDEO_CODEC = 'video/VP8';

/**
 * A failure the user can read: the server's JSON error, a network error, or a connection
 * that never came up. `code` is the server's machine-readable code where it sent one.
 */
export class ManifoldError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string}} [details]
   */
  constructor(message, { status = 0, code = 'client' } = {}) {
    super(message);
    this.name = 'ManifoldError';
    /** HTTP status, or 0 when the request never got an answer. */
    this.status = status;
    /** @type {string} */
    this.code = code;
  }
}

/**
 * Resolves once `pc` has gathered all its candidates, or after `timeoutMs`, whichever
 * comes first. Never rejects: an offer with fewer candidates may still connect.
 *
 * @param {RTCPeerConnection} pc
 * @param {number} [timeoutMs]
 * @returns {Promise<void>}
 */
export function waitForIceGathering(pc, timeoutMs = ICE_GATHERING_TIMEOUT_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onStateChange);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onStateChange = () => {
      if (pc.iceGatheringState === 'complete') finish();
    };
    /** @param {RTCPeerConnectionIceEvent} event */
    const onCandidate = (event) => {
      // A null candidate marks the end of gathering in browsers that lag on the state.
      if (!event.candidate) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onStateChange);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/**
 * Resolves when `pc` is connected; rejects if it fails, closes, takes longer than
 * `timeoutMs`, or `signal` aborts (close() alone fires no event to notice it by).
 *
 * @param {RTCPeerConnection} pc
 * @param {{timeoutMs?: number, signal?: AbortSignal}} [options]
 * @returns {Promise<void>}
 */
export function waitForConnection(pc, { timeoutMs = CONNECT_TIMEOUT_MS, signal } = {}) {
  if (pc.connectionState === 'connected') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (/** @type {Error | null} */ error) => {
      clearTimeout(timer);
      pc.removeEventListener('connectionstatechange', onChange);
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    };
    const onAbort = () => finish(stoppedError());
    const onChange = () => {
      switch (pc.connectionState) {
        case 'connected':
          finish(null);
          break;
        case 'failed':
          finish(new ManifoldError(
            'Could not reach the media server: ICE or DTLS failed. Is its UDP port reachable from this browser?',
            { code: 'connection-failed' },
          ));
          break;
        case 'closed':
          finish(new ManifoldError('The connection was closed before it came up.', { code: 'connection-closed' }));
          break;
      }
    };
    const timer = setTimeout(() => finish(new ManifoldError(
      `No media connection after ${Math.round(timeoutMs / 1000)} s. Is the server's UDP port reachable from this browser?`,
      { code: 'connection-timeout' },
    )), timeoutMs);
    pc.addEventListener('connectionstatechange', onChange);
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted) onAbort();
    else onChange();
  });
}

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
  const endpoint = resolveUrl(url);
  let response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': SDP_CONTENT_TYPE, ...authorization(token) },
      body: offer,
      signal,
    });
  } catch (error) {
    throw new ManifoldError(`Could not reach ${endpoint.origin}: ${errorText(error)}`, { code: 'network' });
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
    throw new ManifoldError(`Could not end the session: ${errorText(error)}`, { code: 'network' });
  }
  if (!response.ok && response.status !== 404) throw await errorFromResponse(response);
}

/**
 * Counters from `pc.getStats()`, summed over streams of the same kind and direction.
 * @typedef {object} StatsSummary
 * @property {number} timestamp `performance.now()` when the stats were read, in ms.
 * @property {RTCPeerConnectionState} connectionState
 * @property {RTCIceConnectionState} iceConnectionState
 * @property {number} framesSent Video frames sent (publisher).
 * @property {number} framesEncoded
 * @property {number} framesReceived Video frames assembled from packets (player).
 * @property {number} framesDecoded
 * @property {number} framesDropped
 * @property {number} frameWidth Width of the sent or received video, 0 if none yet.
 * @property {number} frameHeight
 * @property {number} framesPerSecond
 * @property {number} audioPacketsSent
 * @property {number} audioPacketsReceived
 * @property {number} audioPacketsLost
 * @property {number} videoPacketsSent
 * @property {number} videoPacketsReceived
 * @property {number} videoPacketsLost
 * @property {number} bytesSent RTP payload and header bytes over all outbound streams.
 * @property {number} bytesReceived RTP payload and header bytes over all inbound streams.
 * @property {number} nackCount NACKs sent by a player, or received by a publisher.
 * @property {number} pliCount PLIs sent by a player, or received by a publisher.
 * @property {number} firCount
 * @property {number | null} roundTripTime Current RTT of the selected candidate pair, in s.
 * @property {string | null} videoCodec MIME type, e.g. `video/VP8`.
 * @property {string | null} audioCodec
 */

/**
 * Reads `pc.getStats()` into one flat object of counters.
 *
 * @param {RTCPeerConnection} pc
 * @returns {Promise<StatsSummary>}
 */
export async function statsSummary(pc) {
  /** @type {StatsSummary} */
  const summary = {
    timestamp: performance.now(),
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
    framesSent: 0,
    framesEncoded: 0,
    framesReceived: 0,
    framesDecoded: 0,
    framesDropped: 0,
    frameWidth: 0,
    frameHeight: 0,
    framesPerSecond: 0,
    audioPacketsSent: 0,
    audioPacketsReceived: 0,
    audioPacketsLost: 0,
    videoPacketsSent: 0,
    videoPacketsReceived: 0,
    videoPacketsLost: 0,
    bytesSent: 0,
    bytesReceived: 0,
    nackCount: 0,
    pliCount: 0,
    firCount: 0,
    roundTripTime: null,
    videoCodec: null,
    audioCodec: null,
  };
  const report = await pc.getStats();

  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((stat) => byId.set(stat.id, stat));
  const codecOf = (/** @type {any} */ stat) => byId.get(stat.codecId)?.mimeType ?? null;

  report.forEach((stat) => {
    const kind = stat.kind ?? stat.mediaType;
    if (stat.type === 'inbound-rtp') {
      summary.bytesReceived += stat.bytesReceived ?? 0;
      summary.nackCount += stat.nackCount ?? 0;
      summary.pliCount += stat.pliCount ?? 0;
      summary.firCount += stat.firCount ?? 0;
      if (kind === 'audio') {
        summary.audioPacketsReceived += stat.packetsReceived ?? 0;
        summary.audioPacketsLost += stat.packetsLost ?? 0;
        summary.audioCodec ??= codecOf(stat);
      } else if (kind === 'video') {
        summary.videoPacketsReceived += stat.packetsReceived ?? 0;
        summary.videoPacketsLost += stat.packetsLost ?? 0;
        summary.framesReceived += stat.framesReceived ?? 0;
        summary.framesDecoded += stat.framesDecoded ?? 0;
        summary.framesDropped += stat.framesDropped ?? 0;
        takeVideoShape(summary, stat);
        summary.videoCodec ??= codecOf(stat);
      }
    } else if (stat.type === 'outbound-rtp') {
      summary.bytesSent += stat.bytesSent ?? 0;
      summary.nackCount += stat.nackCount ?? 0;
      summary.pliCount += stat.pliCount ?? 0;
      summary.firCount += stat.firCount ?? 0;
      if (kind === 'audio') {
        summary.audioPacketsSent += stat.packetsSent ?? 0;
        summary.audioCodec ??= codecOf(stat);
      } else if (kind === 'video') {
        summary.videoPacketsSent += stat.packetsSent ?? 0;
        summary.framesSent += stat.framesSent ?? 0;
        summary.framesEncoded += stat.framesEncoded ?? 0;
        takeVideoShape(summary, stat);
        summary.videoCodec ??= codecOf(stat);
      }
    } else if (stat.type === 'transport' && stat.selectedCandidatePairId) {
      const pair = byId.get(stat.selectedCandidatePairId);
      if (pair?.currentRoundTripTime !== undefined) summary.roundTripTime = pair.currentRoundTripTime;
    }
  });
  return summary;
}

/**
 * Shared by publisher and player: one peer connection and the HTTP session that set it up.
 * Fires `statechange` whenever the peer connection's state changes; read `state`.
 */
class Session extends EventTarget {
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
   * @param {{url: string, token?: string}} options `url` is the WHIP or WHEP endpoint.
   */
  constructor({ url, token }) {
    super();
    if (!url) throw new ManifoldError('An endpoint URL is required.');
    /** Endpoint the offer is POSTed to. */
    this.url = url;
    /** Bearer token sent with every request, if any. */
    this.token = token || undefined;
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
    if (this.#started) throw new ManifoldError('This session was already started; create a new one.');
    this.#started = true;
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
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
    if (!pc) throw new ManifoldError('No peer connection to negotiate.');
    try {
      const stopped = this.#stopping.signal;
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      const offer = pc.localDescription?.sdp;
      if (!offer) throw new ManifoldError('The browser produced no SDP offer.');
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
      throw error instanceof ManifoldError ? error : new ManifoldError(errorText(error));
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
export class WhipPublisher extends Session {
  /**
   * Publishes the stream's first audio and first video track. Always offers both kinds,
   * so a track added later needs no renegotiation. Resolves once connected. The stream
   * stays the caller's: stop() does not stop its tracks.
   *
   * @param {MediaStream} mediaStream
   * @returns {Promise<void>}
   */
  async publish(mediaStream) {
    this.createPeerConnection((pc) => {
      for (const kind of ['audio', 'video']) {
        const track = mediaStream.getTracks().find((t) => t.kind === kind);
        const transceiver = pc.addTransceiver(track ?? kind, { direction: 'sendonly', streams: [mediaStream] });
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
export class WhepPlayer extends Session {
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
      for (const kind of ['audio', 'video']) {
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
 * Moves `mimeType` to the front of the transceiver's codec list, keeping the rest
 * (RTX, RED, FEC and fallbacks) behind it. Browsers without setCodecPreferences, or that
 * refuse the list, keep their own order.
 *
 * @param {RTCRtpTransceiver} transceiver
 * @param {'audio' | 'video'} kind
 * @param {string} mimeType
 */
function preferCodec(transceiver, kind, mimeType) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const wanted = mimeType.toLowerCase();
  // Browsers disagree on whether preferences are checked against sender or receiver
  // capabilities, so the one matching the direction goes first and the other is a fallback.
  const sources = transceiver.direction === 'sendonly'
    ? [RTCRtpSender, RTCRtpReceiver]
    : [RTCRtpReceiver, RTCRtpSender];
  for (const source of sources) {
    const codecs = source.getCapabilities?.(kind)?.codecs ?? [];
    const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
    if (preferred.length === 0) continue;
    try {
      transceiver.setCodecPreferences([...preferred, ...codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)]);
      return;
    } catch {
      // Try the other capability list, then leave the choice to the browser.
    }
  }
}

/**
 * @param {StatsSummary} summary
 * @param {any} stat An inbound-rtp or outbound-rtp video stat.
 */
function takeVideoShape(summary, stat) {
  if (stat.frameWidth && stat.frameWidth * (stat.frameHeight ?? 0) > summary.frameWidth * summary.frameHeight) {
    summary.frameWidth = stat.frameWidth;
    summary.frameHeight = stat.frameHeight ?? 0;
    summary.framesPerSecond = stat.framesPerSecond ?? 0;
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

/** @param {string} url */
function resolveUrl(url) {
  return new URL(url, globalThis.location?.href);
}

function stoppedError() {
  return new ManifoldError('Stopped before the connection came up.', { code: 'stopped' });
}

/** @param {unknown} error */
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}
