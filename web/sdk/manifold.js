/**
 * Manifold's browser SDK: rooms of participants publishing and receiving audio and video
 * through a Manifold server, over its WebSocket room protocol (docs/protocol.md).
 *
 * @example
 * import { Room } from '/sdk/manifold.js';
 * const room = await Room.connect('http://127.0.0.1:8080', null, { room: 'demo', name: 'Ada' });
 * room.on('trackSubscribed', ({ participant, track, mediaStreamTrack }) => { ... });
 * await room.publishCamera();
 * await room.publishMicrophone();
 *
 * @module manifold
 */

export { Room, PING_INTERVAL_MS, RECONNECT_GRACE_MS } from './room.js';
export { LocalTrack, RemoteTrack, Participant } from './tracks.js';
export { ManifoldError } from './errors.js';
export { Emitter } from './events.js';
export { signalingUrl, PROTOCOL_VERSION } from './signaling.js';

/** @typedef {import('./room.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./room.js').ConnectionState} ConnectionState */
/** @typedef {import('./room.js').ChatMessage} ChatMessage */
/** @typedef {import('./room.js').RoomEvents} RoomEvents */
/** @typedef {import('./room.js').TrackStats} TrackStats */
/** @typedef {import('./room.js').RemoteParticipant} RemoteParticipant */
/** @typedef {import('./room.js').LocalParticipant} LocalParticipant */
/** @typedef {import('./tracks.js').TrackInfo} TrackInfo */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */
