/**
 * The stage: one tile per participant (video, or an avatar with initials), plus one tile
 * per screen share. Without screen shares the tiles fill the stage in the largest grid
 * that fits; with one, the shares take the spotlight and the people move to a strip.
 * Tiles also show who is speaking, a video paused for lack of bandwidth, and, on others'
 * cameras, a menu for the quality to receive.
 * @module app/stage
 */

import { icon } from './icons.js';
import { h, hue, initials } from './util.js';

const ASPECT = 16 / 9;
const GAP = 12;

/** The quality menu's choices, as `Room.setVideoQuality` takes them. */
const QUALITY_CHOICES = [
  ['auto', 'Auto'],
  ['high', 'High'],
  ['medium', 'Medium'],
  ['low', 'Low'],
];

/**
 * @typedef {object} TileState
 * @property {HTMLElement} element
 * @property {HTMLVideoElement} video
 * @property {MediaStreamTrack | null} track
 * @property {boolean} videoMuted The publisher muted the video.
 * @property {HTMLSelectElement | null} quality The quality menu (others' cameras only).
 * @property {() => void} detach Removes the track listeners.
 */

/**
 * @typedef {object} StageOptions
 * @property {(participantId: string, quality: string) => void} onQuality The quality menu
 *   of a participant's tile was changed.
 */

export class Stage {
  /** @type {Map<string, TileState>} participant id → tile */
  #people = new Map();
  /** @type {Map<string, TileState>} screen key → tile */
  #screens = new Map();
  #root;
  #spotlight;
  #strip;
  /** @type {StageOptions} */
  #options;

  /**
   * @param {HTMLElement} root
   * @param {StageOptions} options
   */
  constructor(root, options) {
    this.#root = root;
    this.#options = options;
    this.#spotlight = h('div', { class: 'spotlight', 'data-testid': 'spotlight' });
    this.#strip = h('div', { class: 'tiles', 'data-testid': 'tiles' });
    root.replaceChildren(this.#spotlight, this.#strip);
    new ResizeObserver(() => this.layout()).observe(root);
  }

  /** Number of participant tiles (screen shares not counted). */
  get size() {
    return this.#people.size;
  }

  /**
   * Adds a participant's tile, or renames it.
   * @param {{id: string, name: string, identity: string}} participant
   * @param {{local?: boolean, quality?: string}} [options] `quality`: what the tile's
   *   quality menu shows at first (others' tiles only).
   */
  upsertParticipant(participant, { local = false, quality = 'auto' } = {}) {
    let tile = this.#people.get(participant.id);
    if (!tile) {
      const onQuality = local ? null : (/** @type {string} */ value) => this.#options.onQuality(participant.id, value);
      tile = createTile({ testid: 'tile', participantId: participant.id, local, screen: false, onQuality });
      if (tile.quality) tile.quality.value = quality;
      this.#people.set(participant.id, tile);
      // The local tile goes first; others in join order.
      if (local) this.#strip.prepend(tile.element);
      else this.#strip.append(tile.element);
      this.layout();
    }
    setName(tile, participant, local ? 'You' : '');
  }

  /** @param {string} participantId */
  removeParticipant(participantId) {
    const tile = this.#people.get(participantId);
    if (!tile) return;
    tile.detach();
    tile.element.remove();
    this.#people.delete(participantId);
    for (const [key, screen] of this.#screens) {
      if (screen.element.dataset.participant === participantId) this.removeScreen(key);
    }
    this.layout();
  }

  /**
   * Shows a participant's camera, or the avatar with null.
   * @param {string} participantId
   * @param {MediaStreamTrack | null} track
   */
  setVideo(participantId, track) {
    const tile = this.#people.get(participantId);
    if (tile) attach(tile, track);
  }

  /**
   * The publisher muted (or unmuted) its camera: show the avatar meanwhile.
   * @param {string} participantId
   * @param {boolean} muted
   */
  setVideoMuted(participantId, muted) {
    const tile = this.#people.get(participantId);
    if (!tile) return;
    tile.videoMuted = muted;
    refresh(tile);
  }

  /**
   * Shows or hides the microphone-off badge.
   * @param {string} participantId
   * @param {boolean} muted
   */
  setMicMuted(participantId, muted) {
    const tile = this.#people.get(participantId);
    if (!tile) return;
    const badge = /** @type {HTMLElement} */ (tile.element.querySelector('[data-testid="muted"]'));
    badge.hidden = !muted;
    tile.element.classList.toggle('mic-muted', muted);
  }

  /**
   * The element a participant's camera is shown in (its size is what `auto` quality
   * follows).
   * @param {string} participantId
   * @returns {HTMLVideoElement | null}
   */
  videoElement(participantId) {
    return this.#people.get(participantId)?.video ?? null;
  }

  /**
   * Marks the tiles of who is speaking (class `speaking`, `data-speaking="true"`).
   * @param {Iterable<string>} participantIds
   */
  setSpeaking(participantIds) {
    const speaking = new Set(participantIds);
    for (const [id, tile] of this.#people) {
      const on = speaking.has(id);
      tile.element.classList.toggle('speaking', on);
      if (on) tile.element.dataset.speaking = 'true';
      else delete tile.element.dataset.speaking;
    }
  }

  /**
   * Shows or hides the "paused: low bandwidth" badge on a participant's tile, or on a
   * screen share's (`screen`: its key).
   * @param {{participantId?: string, screen?: string}} which
   * @param {boolean} paused
   */
  setPaused({ participantId, screen }, paused) {
    const tile = screen !== undefined ? this.#screens.get(screen) : this.#people.get(participantId ?? '');
    if (!tile) return;
    /** @type {HTMLElement} */ (tile.element.querySelector('[data-testid="paused"]')).hidden = !paused;
    tile.element.classList.toggle('paused', paused);
  }

  /**
   * Adds a screen share tile to the spotlight.
   * @param {string} key Unique per share (the track id).
   * @param {{id: string, name: string, identity: string}} participant
   * @param {MediaStreamTrack} track
   * @param {{local?: boolean}} [options]
   */
  addScreen(key, participant, track, { local = false } = {}) {
    let tile = this.#screens.get(key);
    if (!tile) {
      tile = createTile({ testid: 'screen-tile', participantId: participant.id, local, screen: true, onQuality: null });
      tile.element.dataset.track = key;
      this.#screens.set(key, tile);
      this.#spotlight.append(tile.element);
    }
    setName(tile, participant, local ? 'Your screen' : `${participant.name}’s screen`, true);
    attach(tile, track);
    this.layout();
  }

  /** @param {string} key */
  removeScreen(key) {
    const tile = this.#screens.get(key);
    if (!tile) return;
    tile.detach();
    tile.element.remove();
    this.#screens.delete(key);
    this.layout();
  }

  /** Removes every tile. */
  clear() {
    for (const tile of [...this.#people.values(), ...this.#screens.values()]) {
      tile.detach();
      tile.element.remove();
    }
    this.#people.clear();
    this.#screens.clear();
    this.layout();
  }

  /** Sizes the tiles to the stage; runs on every change and resize. */
  layout() {
    const spotlight = this.#screens.size > 0;
    this.#root.dataset.layout = spotlight ? 'spotlight' : 'grid';
    this.#root.dataset.count = String(this.#people.size);
    const { width, height } = this.#root.getBoundingClientRect();
    if (!width || !height) return;
    if (!spotlight) {
      fit(this.#strip, width, height, this.#people.size);
      return;
    }
    // Spotlight: the strip is a column on wide screens and a row on narrow ones.
    const wide = width >= 760;
    this.#root.dataset.strip = wide ? 'side' : 'bottom';
    const people = this.#people.size;
    if (wide) {
      const stripWidth = Math.min(260, Math.max(180, width * 0.2));
      const tileWidth = Math.min(stripWidth, (height - GAP * (people - 1)) / Math.max(people, 1) * ASPECT);
      this.#strip.style.setProperty('--tile-w', `${Math.floor(tileWidth)}px`);
      this.#strip.style.width = `${Math.floor(stripWidth)}px`;
      this.#strip.style.height = '';
      fit(this.#spotlight, width - stripWidth - GAP, height, this.#screens.size);
    } else {
      const stripHeight = Math.min(120, height * 0.25);
      this.#strip.style.setProperty('--tile-w', `${Math.floor(stripHeight * ASPECT)}px`);
      this.#strip.style.height = `${Math.floor(stripHeight)}px`;
      this.#strip.style.width = '';
      fit(this.#spotlight, width, height - stripHeight - GAP, this.#screens.size);
    }
  }
}

/**
 * Sets `--tile-w` on `container` to the widest 16:9 tile of which `count` fit in
 * `width` × `height`.
 * @param {HTMLElement} container
 * @param {number} width
 * @param {number} height
 * @param {number} count
 */
function fit(container, width, height, count) {
  container.style.width = '';
  container.style.height = '';
  let best = 0;
  for (let columns = 1; columns <= Math.max(count, 1); columns++) {
    const rows = Math.ceil(count / columns);
    const byWidth = (width - GAP * (columns - 1)) / columns;
    const byHeight = ((height - GAP * (rows - 1)) / rows) * ASPECT;
    best = Math.max(best, Math.min(byWidth, byHeight));
  }
  container.style.setProperty('--tile-w', `${Math.max(80, Math.floor(best))}px`);
}

/**
 * @param {{testid: string, participantId: string, local: boolean, screen: boolean,
 *   onQuality: ((quality: string) => void) | null}} options With `onQuality`, the tile
 *   gets a quality menu.
 * @returns {TileState}
 */
function createTile({ testid, participantId, local, screen, onQuality }) {
  const video = /** @type {HTMLVideoElement} */ (h('video', { autoplay: true, playsinline: true }));
  video.muted = true; // Sound plays through separate audio elements.
  const avatar = h('div', { class: 'avatar' }, [h('span', { class: 'avatar-initials' })]);
  const mic = h('span', { class: 'tile-mic', 'data-testid': 'muted', title: 'Microphone off', hidden: true });
  mic.innerHTML = icon('micOff', { size: 16, label: 'Microphone off' });
  const label = h('div', { class: 'tile-label' }, [mic, h('span', { class: 'tile-name' })]);
  const paused = h('span', {
    class: 'tile-badge',
    'data-testid': 'paused',
    title: 'The connection cannot carry this video right now',
    hidden: true,
  }, ['Paused: low bandwidth']);
  /** @type {HTMLSelectElement | null} */
  let quality = null;
  if (onQuality) {
    quality = /** @type {HTMLSelectElement} */ (h('select', {
      class: 'tile-quality',
      'data-testid': 'quality',
      'aria-label': 'Video quality',
      title: 'Video quality to receive (Auto: what this tile’s size needs)',
      hidden: true,
    }, QUALITY_CHOICES.map(([value, text]) => h('option', { value }, [text]))));
    const menu = quality;
    menu.addEventListener('change', () => onQuality(menu.value));
  }
  const element = h('article', {
    class: `tile${screen ? ' tile-screen' : ''}${local ? ' tile-local' : ''}`,
    'data-testid': testid,
    'data-participant': participantId,
    'data-local': local ? 'true' : undefined,
  }, [video, avatar, label, paused, ...(quality ? [quality] : [])]);
  return { element, video, track: null, videoMuted: false, quality, detach: () => {} };
}

/**
 * @param {TileState} tile
 * @param {{name: string, identity: string}} participant
 * @param {string} suffix
 * @param {boolean} [replace] Use `suffix` as the whole label.
 */
function setName(tile, participant, suffix, replace = false) {
  const name = participant.name || participant.identity || 'Guest';
  const label = /** @type {HTMLElement} */ (tile.element.querySelector('.tile-name'));
  label.textContent = replace ? suffix : suffix ? `${name} (${suffix.toLowerCase()})` : name;
  tile.element.setAttribute('aria-label', label.textContent);
  const avatar = /** @type {HTMLElement} */ (tile.element.querySelector('.avatar'));
  avatar.style.setProperty('--hue', String(hue(participant.identity || name)));
  /** @type {HTMLElement} */ (avatar.querySelector('.avatar-initials')).textContent = initials(name);
}

/**
 * @param {TileState} tile
 * @param {MediaStreamTrack | null} track
 */
function attach(tile, track) {
  if (tile.track === track) {
    refresh(tile);
    return;
  }
  tile.detach();
  tile.track = track;
  if (!track) {
    tile.video.srcObject = null;
    tile.detach = () => {};
    refresh(tile);
    return;
  }
  tile.video.srcObject = new MediaStream([track]);
  tile.video.play().catch(() => {
    // Autoplay of muted video is always allowed; a rejection means it was replaced.
  });
  // A received track is "muted" until its first frames arrive, and again when they stop.
  const onChange = () => refresh(tile);
  track.addEventListener('mute', onChange);
  track.addEventListener('unmute', onChange);
  track.addEventListener('ended', onChange);
  tile.detach = () => {
    track.removeEventListener('mute', onChange);
    track.removeEventListener('unmute', onChange);
    track.removeEventListener('ended', onChange);
  };
  refresh(tile);
}

/** @param {TileState} tile */
function refresh(tile) {
  const track = tile.track;
  const showing = Boolean(track && track.readyState === 'live' && !track.muted && !tile.videoMuted);
  tile.element.classList.toggle('has-video', showing);
  // A quality to choose while there is a camera to receive, shown or paused.
  if (tile.quality) tile.quality.hidden = !track || tile.videoMuted;
}
