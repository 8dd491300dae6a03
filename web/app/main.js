/**
 * The demo app: a join screen (camera preview, room, name, token when the server needs
 * one), the room, and a screen after leaving. Tests reach the current Room through
 * `window.manifoldApp.room`.
 * @module app/main
 */

import { Room, captureMedia, errorText } from '../sdk/manifold.js';
import { icon } from './icons.js';
import { RoomView } from './room-view.js';
import { $, hue, initials, randomRoomName, roomName as validRoomName, slug } from './util.js';

/** @typedef {import('../sdk/manifold.js').ManifoldError} ManifoldError */

const query = new URLSearchParams(location.search);

const els = {
  joinScreen: $('#join-screen'),
  roomScreen: $('#room-screen'),
  leftScreen: $('#left-screen'),
  form: /** @type {HTMLFormElement} */ ($('#join-form')),
  room: /** @type {HTMLInputElement} */ ($('#join-room')),
  name: /** @type {HTMLInputElement} */ ($('#join-name')),
  token: /** @type {HTMLTextAreaElement} */ ($('#join-token')),
  tokenField: $('#token-field'),
  error: $('#join-error'),
  submit: /** @type {HTMLButtonElement} */ ($('#join-submit')),
  mode: $('#join-mode'),
  previewVideo: /** @type {HTMLVideoElement} */ ($('#preview-video')),
  previewAvatar: $('#preview-avatar'),
  previewNote: $('#preview-note'),
  preview: $('#preview'),
  mic: /** @type {HTMLButtonElement} */ ($('#join-mic')),
  camera: /** @type {HTMLButtonElement} */ ($('#join-camera')),
};

/**
 * What the app knows and holds.
 * @type {{
 *   devMode: boolean | null,
 *   room: Room | null,
 *   view: RoomView | null,
 *   cameraOn: boolean,
 *   micOn: boolean,
 *   cameraTrack: MediaStreamTrack | null,
 *   micTrack: MediaStreamTrack | null,
 *   joining: boolean,
 * }}
 */
const state = {
  devMode: null,
  room: null,
  view: null,
  cameraOn: true,
  micOn: true,
  cameraTrack: null,
  micTrack: null,
  joining: false,
  /** The join screen's device start-up, awaited before joining. @type {Promise<void>} */
  preview: Promise.resolve(),
};

/** For tests and the console. */
const app = {
  /** The current Room, or null outside one. */
  get room() {
    return state.room;
  },
  /** The room screen's controller, or null outside a room. */
  get view() {
    return state.view;
  },
  /**
   * Shares `track` (e.g. a canvas's `captureStream()` track) as the screen, as if picked
   * in the browser's screen-sharing dialog.
   * @param {MediaStreamTrack} track
   */
  publishScreenTrack(track) {
    if (!state.view) throw new Error('Not in a room.');
    return state.view.publishScreenTrack(track);
  },
};
/** @type {any} */ (window).manifoldApp = app;

// ---------------------------------------------------------------------------------------
// Join screen

function init() {
  const lastName = localStorage.getItem('manifold.name') ?? '';
  els.room.value = query.get('room') ?? '';
  if (!els.room.value) els.room.placeholder = randomRoomName();
  els.name.value = query.get('name') ?? lastName;
  const token = query.get('token');
  if (token) {
    els.token.value = token;
    els.tokenField.hidden = false;
  }
  els.name.addEventListener('input', renderPreview);
  els.mic.addEventListener('click', () => setMic(!state.micOn));
  els.camera.addEventListener('click', () => setCamera(!state.cameraOn));
  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    join();
  });
  $('#rejoin').addEventListener('click', () => showJoin());
  window.addEventListener('pagehide', () => {
    state.room?.leave();
  });
  detectMode();
  showJoin();
  // Focus what is missing.
  (els.name.value ? els.room.value ? els.submit : els.room : els.name).focus();
}

/** Learns whether the server is in dev mode: then it mints tokens for anyone. */
async function detectMode() {
  const { dev } = await devToken(els.room.value.trim() || 'lobby', 'probe', 'probe');
  state.devMode = dev;
  if (dev) {
    els.mode.textContent = 'Development server: no token needed.';
  } else {
    els.tokenField.hidden = false;
    els.mode.textContent = 'This server requires an access token.';
  }
}

/**
 * Asks a dev-mode server for a token. `dev` is false when the server has no such endpoint
 * (production mode) or cannot be reached.
 * @param {string} room
 * @param {string} identity
 * @param {string} name
 * @returns {Promise<{dev: boolean, token: string | null}>}
 */
async function devToken(room, identity, name) {
  try {
    const params = new URLSearchParams({ room, identity, name });
    const response = await fetch(`/dev/token?${params}`, { cache: 'no-store' });
    if (!response.ok) return { dev: false, token: null };
    const body = await response.json().catch(() => ({}));
    return { dev: true, token: typeof body?.token === 'string' && body.token ? body.token : null };
  } catch {
    return { dev: false, token: null };
  }
}

/** This tab's identity: stable across reloads (a rejoin replaces the old session). */
function identityFor(/** @type {string} */ name) {
  let identity = sessionStorage.getItem('manifold.identity');
  if (!identity) {
    const random = crypto.getRandomValues(new Uint8Array(4));
    const suffix = Array.from(random, (b) => b.toString(16).padStart(2, '0')).join('');
    identity = `${slug(name) || 'guest'}-${suffix}`;
    sessionStorage.setItem('manifold.identity', identity);
  }
  return identity;
}

function showJoin() {
  showScreen('join');
  document.title = 'Manifold · Rooms';
  $('#room-meta').hidden = true;
  els.submit.disabled = false;
  els.submit.textContent = 'Join room';
  state.preview = startPreview();
}

/** @param {'join' | 'room' | 'left'} which */
function showScreen(which) {
  els.joinScreen.hidden = which !== 'join';
  els.roomScreen.hidden = which !== 'room';
  els.leftScreen.hidden = which !== 'left';
  document.body.dataset.screen = which;
}

async function startPreview() {
  renderPreview();
  if (state.cameraOn && !state.cameraTrack) await setCamera(true);
  if (state.micOn && !state.micTrack) await setMic(true);
}

/** @param {boolean} on */
async function setCamera(on) {
  state.cameraOn = on;
  if (!on) {
    state.cameraTrack?.stop();
    state.cameraTrack = null;
  } else if (!state.cameraTrack) {
    try {
      const stream = await captureMedia('camera', {
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      });
      state.cameraTrack = stream.getVideoTracks()[0];
      // Turned off again while the camera was starting.
      if (!state.cameraOn) {
        state.cameraTrack.stop();
        state.cameraTrack = null;
      }
    } catch (error) {
      state.cameraOn = false;
      els.previewNote.textContent = errorText(error);
    }
  }
  renderPreview();
}

/** @param {boolean} on */
async function setMic(on) {
  state.micOn = on;
  if (!on) {
    state.micTrack?.stop();
    state.micTrack = null;
  } else if (!state.micTrack) {
    try {
      const stream = await captureMedia('microphone', {
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      state.micTrack = stream.getAudioTracks()[0];
      if (!state.micOn) {
        state.micTrack.stop();
        state.micTrack = null;
      }
    } catch (error) {
      state.micOn = false;
      els.previewNote.textContent = errorText(error);
    }
  }
  renderPreview();
}

function renderPreview() {
  const name = els.name.value.trim();
  const avatar = els.previewAvatar;
  avatar.style.setProperty('--hue', String(hue(name || 'guest')));
  $('.avatar-initials', avatar).textContent = name ? initials(name) : '?';
  const track = state.cameraTrack;
  const current = els.previewVideo.srcObject instanceof MediaStream ? els.previewVideo.srcObject.getVideoTracks()[0] : null;
  if (current !== track) els.previewVideo.srcObject = track ? new MediaStream([track]) : null;
  els.preview.classList.toggle('has-video', Boolean(track));
  if (track) els.previewNote.textContent = '';
  else if (!els.previewNote.textContent || els.previewNote.textContent === 'Starting camera…') {
    els.previewNote.textContent = 'Camera is off';
  }
  setToggle(els.mic, state.micOn, icon(state.micOn ? 'mic' : 'micOff'), state.micOn ? 'Turn microphone off' : 'Turn microphone on');
  setToggle(els.camera, state.cameraOn, icon(state.cameraOn ? 'camera' : 'cameraOff'), state.cameraOn ? 'Turn camera off' : 'Turn camera on');
}

/**
 * @param {HTMLButtonElement} button
 * @param {boolean} on
 * @param {string} html
 * @param {string} title
 */
function setToggle(button, on, html, title) {
  button.innerHTML = html;
  button.title = title;
  button.setAttribute('aria-label', title);
  button.setAttribute('aria-pressed', String(on));
  button.dataset.on = String(on);
}

/** @param {string} text */
function showJoinError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

// ---------------------------------------------------------------------------------------
// Joining and leaving

async function join() {
  if (state.joining) return;
  const roomName = validRoomName(els.room.value) || (els.room.value.trim() ? '' : validRoomName(els.room.placeholder));
  const name = els.name.value.trim();
  if (!roomName) {
    showJoinError('Enter a room name (letters, digits, dashes, dots and underscores).');
    els.room.focus();
    return;
  }
  if (!name) {
    showJoinError('Enter your name, so the others know who you are.');
    els.name.focus();
    return;
  }
  els.room.value = roomName;
  showJoinError('');
  state.joining = true;
  els.submit.disabled = true;
  els.submit.textContent = 'Joining…';
  // A camera or microphone still starting would otherwise be left out of the room: wait
  // for the preview to settle (devices that never answer are given up on after 5 s).
  await Promise.race([state.preview, new Promise((resolve) => setTimeout(resolve, 5000))]);
  localStorage.setItem('manifold.name', name);

  try {
    if (state.devMode === null) await detectMode();
    const identity = identityFor(name);
    let token = els.token.value.trim() || null;
    if (state.devMode && !token) token = (await devToken(roomName, identity, name)).token;
    if (!state.devMode && !token) {
      els.tokenField.hidden = false;
      els.token.focus();
      throw new Error('This server requires an access token: paste it above.');
    }
    const room = await Room.connect(location.origin, token, {
      room: roomName,
      identity: state.devMode ? identity : undefined,
      name,
    });
    state.room = room;
    enterRoom(room);
  } catch (error) {
    const code = /** @type {ManifoldError} */ (error)?.code;
    if (code === 'unauthorized' || code === 'forbidden') {
      els.tokenField.hidden = false;
      showJoinError(`The server refused the token: ${errorText(error)}`);
    } else if (code === 'network' || code === 'timeout') {
      showJoinError(`Could not reach the server. ${errorText(error)}`);
    } else {
      showJoinError(errorText(error));
    }
    els.submit.disabled = false;
    els.submit.textContent = 'Join room';
  } finally {
    state.joining = false;
  }
}

/** @param {Room} room */
function enterRoom(room) {
  const camera = state.cameraOn ? state.cameraTrack : null;
  const microphone = state.micOn ? state.micTrack : null;
  // The room owns them now: they stop when unpublished.
  state.cameraTrack = null;
  state.micTrack = null;
  els.previewVideo.srcObject = null;

  showScreen('room');
  document.title = `${room.name} · Manifold`;
  const url = new URL(location.href);
  url.search = new URLSearchParams({ room: room.name }).toString();
  history.replaceState(null, '', url);

  const view = new RoomView(room, {
    onExit: (reason, message) => {
      view.destroy();
      if (state.view === view) state.view = null;
      if (state.room === room) state.room = null;
      showLeft(reason, message);
    },
  });
  state.view = view;
  view.publishInitial({ camera, microphone });
}

/**
 * @param {string} reason
 * @param {string} message
 */
function showLeft(reason, message) {
  showScreen('left');
  $('#room-meta').hidden = true;
  document.title = 'Manifold · Rooms';
  const titles = {
    left: 'You left the room',
    replaced: 'You joined from another tab',
    kicked: 'You were removed from the room',
    room_closed: 'The room was closed',
    draining: 'The server is restarting',
  };
  $('#left-title').textContent = titles[/** @type {keyof typeof titles} */ (reason)] ?? 'You were disconnected';
  $('#left-message').textContent = reason === 'left' ? 'Rejoin whenever you like, or share the link with others.' : message;
  $('#left-icon').innerHTML = icon(reason === 'left' ? 'leave' : 'alert', { size: 28 });
  $('#left-icon').dataset.kind = reason === 'left' ? 'left' : 'error';
  /** @type {HTMLButtonElement} */ ($('#rejoin')).focus();
}

init();
