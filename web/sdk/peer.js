/**
 * The RTCPeerConnection shared by rooms and by WHIP/WHEP sessions: how it is created,
 * the codec we ask for first, and waiting for ICE gathering and for the connection.
 * Owns no connection itself; callers keep theirs.
 *
 * The server is ICE-lite with host candidates only, so no STUN or TURN is configured
 * unless the room's `joined` names some (its `[turn]` servers, with a credential) or the
 * caller passes some; `iceTransportPolicy: 'relay'` forces every path through TURN.
 *
 * @module manifold/peer
 */

import { ManifoldError } from './errors.js';

/** How long to wait for our own candidates before offering what we have. */
export const ICE_GATHERING_TIMEOUT_MS = 2000;

/** How long a WHIP or WHEP session waits for ICE and DTLS after the answer. */
export const MEDIA_CONNECT_TIMEOUT_MS = 15000;

/** Video codec we ask for first; the server forwards packets, so everyone must decode it. */
export const PREFERRED_VIDEO_CODEC = 'video/VP8';

/**
 * A peer connection as the server wants it: one bundled transport, RTCP muxed.
 * @param {RTCIceServer[]} [iceServers]
 * @param {RTCIceTransportPolicy} [iceTransportPolicy] `'relay'`: TURN candidates only (with
 *   no TURN server the connection then never comes up).
 * @returns {RTCPeerConnection}
 */
export function createPeerConnection(iceServers = [], iceTransportPolicy = 'all') {
  return new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
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
 * Resolves when `pc` is connected; rejects with a ManifoldError if it fails (`media`),
 * closes (`closed`), takes longer than `timeoutMs` (`timeout`), or `signal` aborts
 * (`closed`; close() alone fires no event to notice it by).
 *
 * @param {RTCPeerConnection} pc
 * @param {{timeoutMs?: number, signal?: AbortSignal}} [options]
 * @returns {Promise<void>}
 */
export function waitForConnection(pc, { timeoutMs = MEDIA_CONNECT_TIMEOUT_MS, signal } = {}) {
  if (pc.connectionState === 'connected') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (/** @type {Error | null} */ error) => {
      clearTimeout(timer);
      pc.removeEventListener('connectionstatechange', onChange);
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    };
    const onAbort = () => finish(new ManifoldError('Stopped before the connection came up.', { code: 'closed' }));
    const onChange = () => {
      switch (pc.connectionState) {
        case 'connected':
          finish(null);
          break;
        case 'failed':
          finish(new ManifoldError(
            'Could not reach the media server: ICE or DTLS failed. Is its UDP port reachable from this browser?',
            { code: 'media' },
          ));
          break;
        case 'closed':
          finish(new ManifoldError('The connection was closed before it came up.', { code: 'closed' }));
          break;
      }
    };
    const timer = setTimeout(() => finish(new ManifoldError(
      `No media connection after ${Math.round(timeoutMs / 1000)} s. Is the server's UDP port reachable from this browser?`,
      { code: 'timeout' },
    )), timeoutMs);
    pc.addEventListener('connectionstatechange', onChange);
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted) onAbort();
    else onChange();
  });
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
export function preferCodec(transceiver, kind, mimeType) {
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
