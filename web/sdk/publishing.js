/**
 * What this client publishes: capturing camera, microphone and screen, the LocalTracks
 * and their lifecycle (`publish` until `published`, mute, unpublish, a track the server
 * or the browser ended), asking again for publications a signaling drop may have lost,
 * the layers the server's `dynacast` wants sent, and the local participant's own
 * updates. Which m-line a publication is sent on is the negotiation's; it looks
 * publications up here by `cid`. What a layer is lives in `simulcast.js`.
 *
 * @module manifold/publishing
 */

import { captureMedia } from './capture.js';
import { applyLayers, layerCount, layerRids } from './simulcast.js';
import { LocalTrack } from './tracks.js';

/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {import('./tracks.js').TrackSource} TrackSource */
/** @typedef {import('./tracks.js').Participant<LocalTrack>} LocalParticipant */
/** @typedef {import('./channel.js').SignalingChannel} SignalingChannel */
/** @typedef {import('./simulcast.js').SimulcastOption} SimulcastOption */

/**
 * @typedef {object} PublishOptions
 * @property {TrackSource} [source] Default `microphone` for audio, `camera` for video.
 * @property {string} [name]
 * @property {boolean} [muted]
 * @property {boolean} [stopOnUnpublish] Stop the track when it is unpublished (default true).
 * @property {SimulcastOption} [simulcast] Video layers: default, camera video in as many
 *   layers as its size allows (3 from 540 px on the shorter side, 2 from 360) and other
 *   video in one; `true` that for any video, `false` one layer, or 1 to 3. Audio and
 *   screen shares always have one.
 */

const PUBLISH_TIMEOUT_MS = 20_000;

/**
 * What the publisher needs from the rest of the room.
 * @typedef {object} PublishingHooks
 * @property {(name: string, detail: any) => void} emit A Room event.
 * @property {(error: unknown) => void} emitError An `error` event.
 * @property {SignalingChannel} channel
 * @property {(mediaStreamTrack: MediaStreamTrack) => void} detachSender Stops sending it now.
 * @property {(local: LocalTrack) => RTCRtpSender | null} senderOf The sender a publication
 *   is negotiated on, if it is.
 * @property {() => void} assertJoined Throws a ManifoldError (`state`) unless in the room.
 * @property {() => boolean} isClosed Whether the room is over.
 */

export class Publisher {
  /** @type {LocalParticipant} */
  #me;
  /** Our publications by cid, until unpublished and settled. @type {Map<string, LocalTrack>} */
  #byCid = new Map();
  /** `muted` as sent in each publish, to catch up if it changed before `published`. */
  /** @type {Map<string, boolean>} */
  #mutedAtPublish = new Map();
  #cidCounter = 0;
  /** @type {PublishingHooks} */
  #hooks;

  /**
   * @param {LocalParticipant} localParticipant The Room's; its `tracks` are kept here.
   * @param {PublishingHooks} hooks
   */
  constructor(localParticipant, hooks) {
    this.#me = localParticipant;
    this.#hooks = hooks;
  }

  /**
   * A publication by cid, for the negotiation.
   * @param {string} cid
   * @returns {LocalTrack | undefined}
   */
  publication(cid) {
    return this.#byCid.get(cid);
  }

  /** Every publication not yet settled. */
  publications() {
    return this.#byCid.values();
  }

  /**
   * @param {MediaTrackConstraints} [constraints]
   * @param {{simulcast?: SimulcastOption}} [options]
   * @returns {Promise<LocalTrack>}
   */
  async publishCamera(constraints, { simulcast } = {}) {
    const stream = await captureMedia('camera', {
      video: constraints ?? { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    });
    const track = stream.getVideoTracks()[0];
    return this.publishTrack(track, { source: 'camera', name: track.label, simulcast });
  }

  /**
   * @param {MediaTrackConstraints} [constraints]
   * @returns {Promise<LocalTrack>}
   */
  async publishMicrophone(constraints) {
    const stream = await captureMedia('microphone', {
      audio: constraints ?? { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const track = stream.getAudioTracks()[0];
    return this.publishTrack(track, { source: 'microphone', name: track.label });
  }

  /**
   * Resolves once the video is published; the audio, if any, follows in the background
   * and joins the returned track's `companions`.
   * @param {DisplayMediaStreamOptions} [options]
   * @returns {Promise<LocalTrack>}
   */
  async publishScreen(options) {
    const stream = await captureMedia('screen', options ?? { video: { frameRate: { ideal: 15, max: 30 } }, audio: true });
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    if ('contentHint' in video) video.contentHint = 'detail';
    let screen;
    try {
      screen = await this.publishTrack(video, { source: 'screen', name: video.label });
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw error;
    }
    if (audio) {
      // In the background: the picture matters first. It joins `companions` once accepted.
      this.publishTrack(audio, { source: 'screen_audio', name: audio.label }).then(
        (companion) => {
          if (screen.state === 'published' || screen.state === 'publishing') screen.companions.push(companion);
          else this.unpublish(companion).catch(() => {});
        },
        (error) => {
          audio.stop();
          if (!this.#hooks.isClosed()) this.#hooks.emitError(error);
        },
      );
    }
    return screen;
  }

  /**
   * Asks the server for an m-line; resolves once it accepted (`published`). A track that
   * ends (device unplugged, sharing stopped) is unpublished.
   * @param {MediaStreamTrack} mediaStreamTrack
   * @param {PublishOptions} [options]
   * @returns {Promise<LocalTrack>}
   */
  async publishTrack(mediaStreamTrack, options = {}) {
    this.#hooks.assertJoined();
    const kind = mediaStreamTrack.kind === 'audio' ? 'audio' : 'video';
    const source = options.source ?? (kind === 'audio' ? 'microphone' : 'camera');
    const muted = options.muted ?? false;
    const cid = `${source}-${++this.#cidCounter}`;
    const local = new LocalTrack({
      cid,
      source,
      name: (options.name ?? '').slice(0, 128),
      mediaStreamTrack,
      muted,
      stopOnUnpublish: options.stopOnUnpublish ?? true,
      layers: layerCount(mediaStreamTrack, source, options.simulcast),
    });
    mediaStreamTrack.enabled = !muted;
    this.#byCid.set(cid, local);
    this.#mutedAtPublish.set(cid, muted);
    this.#me.tracks.set(cid, local);
    mediaStreamTrack.addEventListener('ended', () => {
      if (local.state === 'publishing' || local.state === 'published') this.unpublish(local).catch(() => {});
    });
    try {
      await this.#hooks.channel.request(publishMessage(local), { expect: 'published', cid, timeoutMs: PUBLISH_TIMEOUT_MS });
    } catch (error) {
      if (local.state === 'publishing') {
        local.state = 'failed';
        this.#me.tracks.delete(cid);
        this.#byCid.delete(cid);
        this.#hooks.detachSender(mediaStreamTrack);
      }
      throw error;
    }
    return local;
  }

  /**
   * Stops publishing a track and its companions; stops the track unless published with
   * `stopOnUnpublish: false`.
   * @param {LocalTrack} local
   * @returns {Promise<void>}
   */
  async unpublish(local) {
    if (local.state === 'unpublished' || local.state === 'failed') return;
    local.state = 'unpublished';
    this.#me.tracks.delete(local.cid);
    // Stop sending at once; the server's next offer turns the m-line inactive.
    this.#hooks.detachSender(local.mediaStreamTrack);
    if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
    this.#hooks.emit('localTrackUnpublished', { track: local });
    const companions = local.companions;
    if (local.trackId) {
      this.#byCid.delete(local.cid);
      if (!this.#hooks.isClosed()) {
        const trackId = local.trackId;
        await this.#hooks.channel.request({ type: 'unpublish', track: trackId }, {
          optional: true,
          until: (m) => m.type === 'offer' || (m.type === 'track_unpublished' && m.track === trackId),
        })
          .catch((error) => this.#hooks.emitError(error));
      }
    }
    // Without a track id yet, `published` will find it unpublished and undo it.
    for (const companion of companions) await this.unpublish(companion);
  }

  /**
   * Tells the room (`mute`) and disables the track, so it sends silence or black frames.
   * @param {LocalTrack} local
   * @param {boolean} muted
   * @returns {Promise<void>}
   */
  async setMuted(local, muted) {
    muted = Boolean(muted);
    local.mediaStreamTrack.enabled = !muted;
    if (local.muted === muted) return;
    local.muted = muted;
    this.#hooks.emit('trackMuted', { participant: this.#me, track: local, muted });
    if (local.trackId && local.state === 'published' && !this.#hooks.isClosed()) {
      const trackId = local.trackId;
      await this.#hooks.channel.request({ type: 'mute', track: trackId, muted }, {
        optional: true,
        until: (m) => m.type === 'track_muted' && m.track === trackId,
      });
    }
    // Still publishing: `published` sends the mute if it differs from the publish.
  }

  /**
   * Takes a message about this client's own tracks or participant; returns whether it
   * was one.
   * @param {Message} message
   * @returns {boolean}
   */
  handle(message) {
    const mine = message.participant === this.#me.id;
    switch (message.type) {
      case 'published':
        this.#onPublished(message);
        return true;
      case 'track_unpublished':
        if (mine) this.#onUnpublished(message.track);
        return mine;
      case 'track_muted':
        if (mine) this.#onMuted(message.track, Boolean(message.muted));
        return mine;
      case 'participant_updated':
        if (message.participant?.id !== this.#me.id) return false;
        if (this.#me.update(message.participant)) this.#hooks.emit('participantUpdated', { participant: this.#me });
        return true;
      default:
        return false;
    }
  }

  /**
   * Publications whose offer never came may have been lost with the old socket; ask
   * again. A duplicate is refused by the server, which is harmless.
   */
  republishPending() {
    for (const local of this.#byCid.values()) {
      if (local.state !== 'publishing' || local.mid !== null) continue;
      this.#hooks.channel.request(publishMessage(local), { optional: true, expect: 'published' }).catch(() => {});
    }
  }

  /**
   * After joining afresh on another node: every publication that was live or on its way
   * is published again, as a new track of the new participant.
   */
  republishAll() {
    for (const local of this.#byCid.values()) {
      if (local.state !== 'publishing' && local.state !== 'published') continue;
      local.state = 'publishing';
      local.trackId = null;
      local.mid = null;
      local.rids = [];
      local.activeLayers = layerRids(local.layers);
      this.#mutedAtPublish.set(local.cid, local.muted);
      this.#hooks.channel.request(publishMessage(local), { expect: 'published', cid: local.cid, timeoutMs: PUBLISH_TIMEOUT_MS })
        .catch((error) => {
          if (!this.#hooks.isClosed()) this.#hooks.emitError(error);
        });
    }
  }

  /**
   * `dynacast`: sends the layers someone receives and pauses the others. Layers of a
   * publication not negotiated yet are taken up when it is.
   * @param {Message} message
   * @returns {Promise<void>}
   */
  async applyDynacast(message) {
    const local = this.#byTrackId(message.track);
    if (!local || local.layers < 2 || !Array.isArray(message.active)) return;
    // Negotiated, but the browser made no simulcast encodings: one layer, nothing to switch.
    if (local.mid !== null && local.rids.length === 0) return;
    const active = message.active.filter((/** @type {unknown} */ rid) => typeof rid === 'string');
    local.activeLayers = local.rids.length ? local.rids.filter((rid) => active.includes(rid)) : active;
    const sender = this.#hooks.senderOf(local);
    if (sender) await applyLayers(sender, local);
  }

  /** The room is over: every local track counts as unpublished and, unless kept, stops. */
  stopAll() {
    for (const local of this.#me.tracks.values()) {
      if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
      local.state = 'unpublished';
    }
  }

  /** @param {Message} message `published` */
  #onPublished(message) {
    const local = this.#byCid.get(message.cid);
    if (!local || !message.track) return;
    local.trackId = message.track;
    if (local.state !== 'publishing') {
      // Unpublished (or given up) while the server was still setting it up.
      this.#byCid.delete(local.cid);
      this.#hooks.channel.send({ type: 'unpublish', id: this.#hooks.channel.nextId(), track: message.track });
      return;
    }
    local.state = 'published';
    if (this.#mutedAtPublish.get(local.cid) !== local.muted) {
      this.#hooks.channel.send({ type: 'mute', id: this.#hooks.channel.nextId(), track: local.trackId, muted: local.muted });
    }
    this.#mutedAtPublish.delete(local.cid);
    this.#hooks.emit('localTrackPublished', { track: local });
  }

  /**
   * The server took one of ours down (an administrator, a limit).
   * @param {string} trackId
   */
  #onUnpublished(trackId) {
    const local = this.#byTrackId(trackId);
    if (!local || local.state !== 'published') return;
    local.state = 'unpublished';
    this.#me.tracks.delete(local.cid);
    this.#byCid.delete(local.cid);
    this.#hooks.detachSender(local.mediaStreamTrack);
    if (local.stopOnUnpublish) local.mediaStreamTrack.stop();
    this.#hooks.emit('localTrackUnpublished', { track: local });
  }

  /**
   * The room says one of ours is (un)muted, e.g. muted by an administrator.
   * @param {string} trackId
   * @param {boolean} muted
   */
  #onMuted(trackId, muted) {
    const local = this.#byTrackId(trackId);
    if (!local || local.muted === muted) return;
    local.muted = muted;
    local.mediaStreamTrack.enabled = !muted;
    this.#hooks.emit('trackMuted', { participant: this.#me, track: local, muted });
  }

  /** @param {string} trackId */
  #byTrackId(trackId) {
    return [...this.#me.tracks.values()].find((t) => t.trackId === trackId);
  }
}

/**
 * The `publish` request for a publication; `layers` only for simulcast.
 * @param {LocalTrack} local
 * @returns {Message}
 */
function publishMessage({ cid, kind, source, name, muted, layers }) {
  /** @type {Message} */
  const message = { type: 'publish', cid, kind, source, name, muted };
  if (layers > 1) message.layers = layers;
  return message;
}
