/**
 * Manifold's browser SDK: rooms of participants publishing and receiving audio and video
 * through a Manifold server, over its WebSocket room protocol (docs/protocol.md); and
 * single-stream publishing over WHIP and playing over WHEP. This entry point only
 * re-exports; see README.md for the modules behind it.
 *
 * @example
 * import { Room } from '/sdk/manifold.js';
 * const room = await Room.connect('http://127.0.0.1:8080', null, { room: 'demo', name: 'Ada' });
 * room.on('trackSubscribed', ({ participant, track, mediaStreamTrack }) => { ... });
 * await room.publishCamera();
 * await room.publishMicrophone();
 *
 * @example
 * import { WhipPublisher } from '/sdk/manifold.js';
 * await new WhipPublisher({ url: '/whip/demo' }).publish(stream);
 *
 * @module manifold
 */

export { Room } from './room.js';
export { PING_INTERVAL_MS } from './channel.js';
export { RECONNECT_GRACE_MS } from './reconnection.js';
export { LocalTrack, RemoteTrack, Participant } from './tracks.js';
export { ManifoldError, errorText } from './errors.js';
export { Emitter } from './events.js';
export { signalingUrl, PROTOCOL_VERSION } from './signaling.js';
export { captureMedia } from './capture.js';
export { statsSummary } from './stats.js';
export { LAYER_ENCODINGS } from './simulcast.js';
export { VIDEO_QUALITIES } from './quality.js';
export { WhipPublisher, WhepPlayer, postSdpOffer, deleteSession, SDP_CONTENT_TYPE } from './whip-whep.js';
export {
  waitForIceGathering, waitForConnection, PREFERRED_VIDEO_CODEC, ICE_GATHERING_TIMEOUT_MS, MEDIA_CONNECT_TIMEOUT_MS,
} from './peer.js';

/** @typedef {import('./room.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./events.js').ConnectionState} ConnectionState */
/** @typedef {import('./events.js').RoomEvents} RoomEvents */
/** @typedef {import('./chat.js').ChatMessage} ChatMessage */
/** @typedef {import('./stats.js').TrackStats} TrackStats */
/** @typedef {import('./stats.js').StatsSummary} StatsSummary */
/** @typedef {import('./room.js').RemoteParticipant} RemoteParticipant */
/** @typedef {import('./room.js').LocalParticipant} LocalParticipant */
/** @typedef {import('./tracks.js').TrackInfo} TrackInfo */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */
/** @typedef {import('./tracks.js').VideoQuality} VideoQuality */
/** @typedef {import('./simulcast.js').SimulcastOption} SimulcastOption */
/** @typedef {import('./speakers.js').ActiveSpeaker} ActiveSpeaker */
/** @typedef {import('./capture.js').CaptureKind} CaptureKind */
