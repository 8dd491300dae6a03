/**
 * The objects a Room hands out: participants, the tracks they publish, and the local
 * tracks this client publishes. They are plain data kept up to date by the Room; read
 * them, do not change them (use the Room's methods).
 *
 * @module manifold/tracks
 */

import { layerRids } from './simulcast.js';

/** @typedef {'audio' | 'video'} TrackKind */
/** @typedef {'low' | 'medium' | 'high' | 'auto'} VideoQuality */
/** @typedef {'camera' | 'microphone' | 'screen' | 'screen_audio' | 'other'} TrackSource */

/**
 * A track as the server describes it (`participant.tracks[]`, `track_published`).
 * @typedef {object} TrackInfo
 * @property {string} id Track id, `t` and 16 hex digits.
 * @property {TrackKind} kind
 * @property {TrackSource} source
 * @property {string} [name]
 * @property {boolean} [muted]
 */

/**
 * A participant as the server describes it.
 * @typedef {object} ParticipantInfo
 * @property {string} id Participant id, `p` and 16 hex digits.
 * @property {string} identity
 * @property {string} [name]
 * @property {unknown} [metadata]
 * @property {TrackInfo[]} [tracks]
 */

const SOURCES = new Set(['camera', 'microphone', 'screen', 'screen_audio', 'other']);

/**
 * A track another participant publishes. `mediaStreamTrack` is set while this client
 * receives it (`subscribed`), and stays null otherwise.
 */
export class RemoteTrack {
  /**
   * @param {TrackInfo} info
   * @param {string} participantId
   */
  constructor(info, participantId) {
    /** @type {string} */
    this.id = info.id;
    /** @type {TrackKind} */
    this.kind = info.kind === 'audio' ? 'audio' : 'video';
    /** @type {TrackSource} */
    this.source = /** @type {TrackSource} */ (SOURCES.has(info.source) ? info.source : 'other');
    /** @type {string} */
    this.name = info.name ?? '';
    /** @type {boolean} */
    this.muted = Boolean(info.muted);
    /** Id of the participant who publishes it. */
    this.participantId = participantId;
    /** Whether this client currently receives it. */
    this.subscribed = false;
    /** The m-line it arrives on, while subscribed. @type {string | null} */
    this.mid = null;
    /** The received track, while subscribed. @type {MediaStreamTrack | null} */
    this.mediaStreamTrack = null;
    /**
     * Video: the most this client asked for (`Room.setVideoQuality`); the server's
     * default is `high`. @type {VideoQuality}
     */
    this.videoQuality = 'high';
    /**
     * Video: what the server last said it sends (`stream_state`): `active`, `paused` (the
     * link cannot carry even the lowest layer), or null before it said anything.
     * @type {'active' | 'paused' | null}
     */
    this.streamState = null;
    /** Video: the layer received while `active` (`low`, `medium`, `high`). @type {string | null} */
    this.streamQuality = null;
  }

  /**
   * Takes the server's newer description of the same track. Returns whether `muted`
   * changed.
   * @param {TrackInfo} info
   * @returns {boolean}
   */
  update(info) {
    if (info.name !== undefined) this.name = info.name;
    const muted = Boolean(info.muted);
    const changed = muted !== this.muted;
    this.muted = muted;
    return changed;
  }
}

/**
 * Someone in the room. For remote participants `tracks` maps track id → RemoteTrack; for
 * the local participant it maps the client's own `cid` → LocalTrack (a local track has no
 * track id until the server has accepted it).
 *
 * @template {RemoteTrack | LocalTrack} T
 */
export class Participant {
  /**
   * @param {ParticipantInfo} info
   * @param {boolean} isLocal
   */
  constructor(info, isLocal) {
    /** @type {string} */
    this.id = info.id;
    /** @type {string} */
    this.identity = info.identity ?? '';
    /** Display name; falls back to the identity. @type {string} */
    this.name = info.name || info.identity || '';
    /** Any JSON value the participant set. @type {unknown} */
    this.metadata = info.metadata ?? null;
    /** @type {Map<string, T>} */
    this.tracks = new Map();
    /** Whether this is the participant of this client. */
    this.isLocal = isLocal;
  }

  /**
   * Takes a newer name and metadata; returns whether anything changed.
   * @param {ParticipantInfo} info
   * @returns {boolean}
   */
  update(info) {
    const name = info.name || info.identity || this.identity;
    const metadata = info.metadata ?? null;
    const changed = name !== this.name || JSON.stringify(metadata) !== JSON.stringify(this.metadata);
    this.name = name;
    this.metadata = metadata;
    if (info.identity) this.identity = info.identity;
    return changed;
  }

  /**
   * The first track from `source`, if any.
   * @param {TrackSource} source
   * @returns {T | undefined}
   */
  trackBySource(source) {
    for (const track of this.tracks.values()) if (track.source === source) return track;
    return undefined;
  }
}

/** @typedef {'publishing' | 'published' | 'unpublished' | 'failed'} LocalTrackState */

/**
 * A track this client publishes. `trackId` is null until the server accepted it
 * (`published`). Change it only through the Room: `setMuted`, `unpublish`.
 */
export class LocalTrack {
  /**
   * @param {{cid: string, source: TrackSource, name?: string, mediaStreamTrack: MediaStreamTrack,
   *   muted?: boolean, stopOnUnpublish?: boolean, layers?: number}} init
   */
  constructor({ cid, source, name = '', mediaStreamTrack, muted = false, stopOnUnpublish = true, layers = 1 }) {
    /** The client's name for the track, unique in this Room. */
    this.cid = cid;
    /** The server's id, once published. @type {string | null} */
    this.trackId = null;
    /** @type {TrackKind} */
    this.kind = mediaStreamTrack.kind === 'audio' ? 'audio' : 'video';
    /** @type {TrackSource} */
    this.source = source;
    /** @type {string} */
    this.name = name;
    /** The browser track being sent. */
    this.mediaStreamTrack = mediaStreamTrack;
    /** @type {boolean} */
    this.muted = muted;
    /** @type {LocalTrackState} */
    this.state = 'publishing';
    /** The m-line it is sent on, once negotiated. @type {string | null} */
    this.mid = null;
    /**
     * Tracks published and unpublished together with this one: the audio of a screen
     * share hangs off its video track.
     * @type {LocalTrack[]}
     */
    this.companions = [];
    /** Whether unpublishing stops `mediaStreamTrack` (turning the camera light off). */
    this.stopOnUnpublish = stopOnUnpublish;
    /** Simulcast layers asked of the server (`layers` in `publish`); 1 is no simulcast. */
    this.layers = layers;
    /**
     * The RIDs the browser encodes, lowest first (`q`, `h`, `f`), once negotiated; empty
     * for one layer, also when the browser made no simulcast encodings.
     * @type {string[]}
     */
    this.rids = [];
    /**
     * The layers being sent: all of them at first, then those the server's `dynacast`
     * says someone receives.
     * @type {string[]}
     */
    this.activeLayers = layerRids(layers);
  }

  /**
   * The screen share's audio, if this is a screen share that has some.
   * @returns {LocalTrack | null}
   */
  get audio() {
    return this.companions.find((track) => track.kind === 'audio') ?? null;
  }
}
