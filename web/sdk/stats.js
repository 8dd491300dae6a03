/**
 * Per-m-line counters from `RTCPeerConnection.getStats()`.
 *
 * @module manifold/stats
 */

/**
 * Counters of one RTP stream, in or out.
 * @typedef {object} StreamStats
 * @property {string} mid
 * @property {'audio' | 'video'} kind
 * @property {number} packets packetsReceived (inbound) or packetsSent (outbound).
 * @property {number} bytes bytesReceived or bytesSent.
 * @property {number} packetsLost Inbound only; 0 outbound.
 * @property {number} frames framesDecoded (inbound) or framesSent (outbound); 0 for audio.
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {number} framesPerSecond
 * @property {string | null} codec MIME type, e.g. `video/VP8`.
 * @property {string | null} trackIdentifier Inbound only: the receiving MediaStreamTrack's id.
 */

/**
 * @typedef {object} PeerStats
 * @property {Map<string, StreamStats>} inbound By mid.
 * @property {Map<string, StreamStats>} outbound By mid.
 * @property {number | null} roundTripTime Of the selected candidate pair, in seconds.
 */

/**
 * @param {RTCPeerConnection} pc
 * @returns {Promise<PeerStats>}
 */
export async function readPeerStats(pc) {
  const report = await pc.getStats();
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((stat) => byId.set(stat.id, stat));
  /** @type {PeerStats} */
  const result = { inbound: new Map(), outbound: new Map(), roundTripTime: null };
  report.forEach((stat) => {
    const inbound = stat.type === 'inbound-rtp';
    if (inbound || stat.type === 'outbound-rtp') {
      const mid = stat.mid ?? byId.get(stat.transceiverId)?.mid;
      if (mid === undefined || mid === null) return;
      const kind = (stat.kind ?? stat.mediaType) === 'audio' ? 'audio' : 'video';
      /** @type {StreamStats} */
      const stream = {
        mid: String(mid),
        kind,
        packets: (inbound ? stat.packetsReceived : stat.packetsSent) ?? 0,
        bytes: (inbound ? stat.bytesReceived : stat.bytesSent) ?? 0,
        packetsLost: inbound ? stat.packetsLost ?? 0 : 0,
        frames: (inbound ? stat.framesDecoded : stat.framesSent) ?? 0,
        frameWidth: stat.frameWidth ?? 0,
        frameHeight: stat.frameHeight ?? 0,
        framesPerSecond: stat.framesPerSecond ?? 0,
        codec: byId.get(stat.codecId)?.mimeType ?? null,
        trackIdentifier: inbound ? stat.trackIdentifier ?? null : null,
      };
      const map = inbound ? result.inbound : result.outbound;
      // Simulcast would give several outbound streams per mid; sum them.
      const previous = map.get(stream.mid);
      if (previous) {
        previous.packets += stream.packets;
        previous.bytes += stream.bytes;
        previous.frames += stream.frames;
      } else {
        map.set(stream.mid, stream);
      }
    } else if (stat.type === 'transport' && stat.selectedCandidatePairId) {
      const pair = byId.get(stat.selectedCandidatePairId);
      if (pair?.currentRoundTripTime !== undefined) result.roundTripTime = pair.currentRoundTripTime;
    }
  });
  return result;
}
