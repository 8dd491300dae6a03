/**
 * Reading `RTCPeerConnection.getStats()`: one pass over the report turns every RTP
 * stream into the same record, which is then grouped by m-line (`readPeerStats`, behind
 * `Room.getStats()`), by room track (`trackStats`), or summed into one flat line of
 * counters (`statsSummary`, for the WHIP and WHEP pages).
 *
 * @module manifold/stats
 */

/** @typedef {import('./tracks.js').TrackSource} TrackSource */
/** @typedef {import('./tracks.js').Participant<import('./tracks.js').RemoteTrack>} RemoteParticipant */
/** @typedef {import('./tracks.js').Participant<import('./tracks.js').LocalTrack>} LocalParticipant */

/**
 * One simulcast layer of a sent video.
 * @typedef {object} LayerStats
 * @property {string} rid
 * @property {boolean} active Whether the browser sends it (dynacast may pause it).
 * @property {number} packets
 * @property {number} bytes
 * @property {number} frames framesSent.
 * @property {number} frameWidth
 * @property {number} frameHeight
 */

/**
 * Counters of one RTP stream, in or out, as `readPeerStats` reports them. A simulcast
 * video sent on one m-line counts as one stream: packets and bytes summed over its
 * layers, the most frames of any layer, the largest picture; `layers` has each.
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
 * @property {LayerStats[]} layers Outbound simulcast only: per layer, in the browser's order.
 */

/**
 * @typedef {object} PeerStats
 * @property {Map<string, StreamStats>} inbound By mid.
 * @property {Map<string, StreamStats>} outbound By mid.
 * @property {number | null} roundTripTime Of the selected candidate pair, in seconds.
 */

/**
 * Counters of one track, from `Room.getStats()`.
 * @typedef {object} TrackStats
 * @property {string} participantId
 * @property {string} participantName
 * @property {string} trackId
 * @property {'audio' | 'video'} kind
 * @property {TrackSource} source
 * @property {string} mid
 * @property {number} packets Received (remote) or sent (local).
 * @property {number} bytes
 * @property {number} frames Decoded (remote) or sent (local) video frames.
 * @property {number} packetsLost
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {string | null} codec
 * @property {LayerStats[]} layers Local simulcast video only: per layer.
 */

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
 * One `inbound-rtp` or `outbound-rtp` entry, read once for every view above.
 * @typedef {object} RtpStream
 * @property {boolean} inbound
 * @property {string | null} mid Null when the browser does not say.
 * @property {string | null} rid Outbound simulcast layers only.
 * @property {boolean} active Outbound: whether the browser sends it.
 * @property {'audio' | 'video'} kind
 * @property {number} packets
 * @property {number} bytes
 * @property {number} packetsLost
 * @property {number} framesSent
 * @property {number} framesEncoded
 * @property {number} framesReceived
 * @property {number} framesDecoded
 * @property {number} framesDropped
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {number} framesPerSecond
 * @property {number} nackCount
 * @property {number} pliCount
 * @property {number} firCount
 * @property {string | null} codec
 * @property {string | null} trackIdentifier
 */

/**
 * Every RTP stream of `pc` and the round-trip time of its selected candidate pair.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<{streams: RtpStream[], roundTripTime: number | null}>}
 */
async function readRtpStreams(pc) {
  const report = await pc.getStats();
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((stat) => byId.set(stat.id, stat));
  /** @type {RtpStream[]} */
  const streams = [];
  /** @type {number | null} */
  let roundTripTime = null;
  report.forEach((stat) => {
    const inbound = stat.type === 'inbound-rtp';
    if (inbound || stat.type === 'outbound-rtp') {
      const mid = stat.mid ?? byId.get(stat.transceiverId)?.mid;
      streams.push({
        inbound,
        mid: mid === undefined || mid === null ? null : String(mid),
        rid: !inbound && stat.rid ? String(stat.rid) : null,
        active: stat.active ?? true,
        kind: (stat.kind ?? stat.mediaType) === 'audio' ? 'audio' : 'video',
        packets: (inbound ? stat.packetsReceived : stat.packetsSent) ?? 0,
        bytes: (inbound ? stat.bytesReceived : stat.bytesSent) ?? 0,
        packetsLost: inbound ? stat.packetsLost ?? 0 : 0,
        framesSent: stat.framesSent ?? 0,
        framesEncoded: stat.framesEncoded ?? 0,
        framesReceived: stat.framesReceived ?? 0,
        framesDecoded: stat.framesDecoded ?? 0,
        framesDropped: stat.framesDropped ?? 0,
        frameWidth: stat.frameWidth ?? 0,
        frameHeight: stat.frameHeight ?? 0,
        framesPerSecond: stat.framesPerSecond ?? 0,
        nackCount: stat.nackCount ?? 0,
        pliCount: stat.pliCount ?? 0,
        firCount: stat.firCount ?? 0,
        codec: byId.get(stat.codecId)?.mimeType ?? null,
        trackIdentifier: inbound ? stat.trackIdentifier ?? null : null,
      });
    } else if (stat.type === 'transport' && stat.selectedCandidatePairId) {
      const pair = byId.get(stat.selectedCandidatePairId);
      if (pair?.currentRoundTripTime !== undefined) roundTripTime = pair.currentRoundTripTime;
    }
  });
  return { streams, roundTripTime };
}

/**
 * Per-m-line counters, in and out.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<PeerStats>}
 */
export async function readPeerStats(pc) {
  const { streams, roundTripTime } = await readRtpStreams(pc);
  /** @type {PeerStats} */
  const result = { inbound: new Map(), outbound: new Map(), roundTripTime };
  for (const stream of streams) {
    if (stream.mid === null) continue;
    const map = stream.inbound ? result.inbound : result.outbound;
    const frames = stream.inbound ? stream.framesDecoded : stream.framesSent;
    /** @type {LayerStats[]} */
    const layers = stream.rid === null ? [] : [{
      rid: stream.rid,
      active: stream.active,
      packets: stream.packets,
      bytes: stream.bytes,
      frames,
      frameWidth: stream.frameWidth,
      frameHeight: stream.frameHeight,
    }];
    // Simulcast gives several outbound streams per mid: one stream, summed.
    const previous = map.get(stream.mid);
    if (previous) {
      previous.packets += stream.packets;
      previous.bytes += stream.bytes;
      previous.frames = Math.max(previous.frames, frames);
      previous.layers.push(...layers);
      if (stream.frameWidth * stream.frameHeight > previous.frameWidth * previous.frameHeight) {
        previous.frameWidth = stream.frameWidth;
        previous.frameHeight = stream.frameHeight;
        previous.framesPerSecond = stream.framesPerSecond;
      }
      continue;
    }
    map.set(stream.mid, {
      mid: stream.mid,
      kind: stream.kind,
      packets: stream.packets,
      bytes: stream.bytes,
      packetsLost: stream.packetsLost,
      frames,
      frameWidth: stream.frameWidth,
      frameHeight: stream.frameHeight,
      framesPerSecond: stream.framesPerSecond,
      codec: stream.codec,
      trackIdentifier: stream.trackIdentifier,
      layers,
    });
  }
  return result;
}

/**
 * Per-m-line counters matched to a room's tracks: one entry per received track
 * (`remote`) and per published one (`local`).
 * @param {PeerStats} stats
 * @param {Iterable<RemoteParticipant>} participants
 * @param {LocalParticipant} localParticipant
 * @returns {{remote: TrackStats[], local: TrackStats[], roundTripTime: number | null}}
 */
export function trackStats(stats, participants, localParticipant) {
  /**
   * @param {{id: string, name: string}} participant
   * @param {{kind: 'audio' | 'video', source: TrackSource}} track
   * @param {string} trackId
   * @param {string} mid
   * @param {StreamStats | undefined} stream
   * @returns {TrackStats}
   */
  const entry = (participant, track, trackId, mid, stream) => ({
    participantId: participant.id,
    participantName: participant.name,
    trackId,
    kind: track.kind,
    source: track.source,
    mid,
    packets: stream?.packets ?? 0,
    bytes: stream?.bytes ?? 0,
    frames: stream?.frames ?? 0,
    packetsLost: stream?.packetsLost ?? 0,
    frameWidth: stream?.frameWidth ?? 0,
    frameHeight: stream?.frameHeight ?? 0,
    codec: stream?.codec ?? null,
    layers: stream?.layers ?? [],
  });
  /** @type {TrackStats[]} */
  const remote = [];
  for (const participant of participants) {
    for (const track of participant.tracks.values()) {
      if (track.mid) remote.push(entry(participant, track, track.id, track.mid, stats.inbound.get(track.mid)));
    }
  }
  /** @type {TrackStats[]} */
  const local = [];
  for (const track of localParticipant.tracks.values()) {
    const stream = track.mid ? stats.outbound.get(track.mid) : undefined;
    local.push(entry(localParticipant, track, track.trackId ?? '', track.mid ?? '', stream));
  }
  return { remote, local, roundTripTime: stats.roundTripTime };
}

/**
 * Reads `pc.getStats()` into one flat object of counters.
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
  const { streams, roundTripTime } = await readRtpStreams(pc);
  summary.roundTripTime = roundTripTime;
  for (const s of streams) {
    summary.nackCount += s.nackCount;
    summary.pliCount += s.pliCount;
    summary.firCount += s.firCount;
    if (s.inbound) summary.bytesReceived += s.bytes;
    else summary.bytesSent += s.bytes;
    if (s.kind === 'audio') {
      if (s.inbound) {
        summary.audioPacketsReceived += s.packets;
        summary.audioPacketsLost += s.packetsLost;
      } else {
        summary.audioPacketsSent += s.packets;
      }
      summary.audioCodec ??= s.codec;
      continue;
    }
    if (s.inbound) {
      summary.videoPacketsReceived += s.packets;
      summary.videoPacketsLost += s.packetsLost;
      summary.framesReceived += s.framesReceived;
      summary.framesDecoded += s.framesDecoded;
      summary.framesDropped += s.framesDropped;
    } else {
      summary.videoPacketsSent += s.packets;
      summary.framesSent += s.framesSent;
      summary.framesEncoded += s.framesEncoded;
    }
    // The largest picture stands for the video (simulcast layers, several players).
    if (s.frameWidth && s.frameWidth * s.frameHeight > summary.frameWidth * summary.frameHeight) {
      summary.frameWidth = s.frameWidth;
      summary.frameHeight = s.frameHeight;
      summary.framesPerSecond = s.framesPerSecond;
    }
    summary.videoCodec ??= s.codec;
  }
  return summary;
}
