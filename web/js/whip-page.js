/**
 * The publisher page: camera preview, Start and Stop, the simulcast choice, status and
 * stats. Tests drive it through `window.manifold`, `?autostart=1` and `?simulcast=1`.
 */

import { WhipPublisher, captureMedia, errorText, statsSummary } from '../sdk/manifold.js';
import { StatusLine, byId, input, query, showStats } from './ui.js';

const form = /** @type {HTMLFormElement} */ (byId('controls'));
const room = input('room');
const token = input('token');
const simulcast = input('simulcast');
const startButton = /** @type {HTMLButtonElement} */ (byId('start'));
const stopButton = /** @type {HTMLButtonElement} */ (byId('stop'));
const preview = /** @type {HTMLVideoElement} */ (byId('preview'));
const playerLink = /** @type {HTMLAnchorElement} */ (byId('player-link'));
const status = new StatusLine(byId('status'));
const statsLine = byId('stats');

room.value = query.get('room') || 'demo';
token.value = query.get('token') || '';
simulcast.checked = query.get('simulcast') === '1';

/** @type {WhipPublisher | null} */
let publisher = null;
/** @type {MediaStream | null} */
let camera = null;
/** @type {(() => void) | null} */
let stopStats = null;

window.manifold = {
  get publisher() {
    return publisher;
  },
  stats: async () => (publisher?.pc ? statsSummary(publisher.pc) : null),
  get status() {
    return { kind: status.kind, text: status.text };
  },
};

function updatePlayerLink() {
  const params = new URLSearchParams({ room: room.value.trim() || 'demo' });
  if (token.value) params.set('token', token.value);
  playerLink.href = `/whep.html?${params}`;
}

/** @param {boolean} running */
function setRunning(running) {
  startButton.disabled = running;
  stopButton.disabled = !running;
  room.disabled = running;
  token.disabled = running;
  simulcast.disabled = running;
}

async function start() {
  if (publisher) return;
  const roomName = room.value.trim();
  setRunning(true);
  const session = new WhipPublisher({ url: `/whip/${encodeURIComponent(roomName)}`, token: token.value.trim() });
  publisher = session;
  session.addEventListener('statechange', () => {
    if (publisher !== session) return;
    if (session.state === 'connected') {
      status.set('live', `Publishing to room “${roomName}”${simulcast.checked ? ' in three layers' : ''}.`);
    }
    else if (session.state === 'disconnected') status.set('busy', 'Connection interrupted, waiting for it to recover…');
    else if (session.state === 'failed') status.set('error', 'Connection to the server was lost.');
  });
  try {
    status.set('busy', 'Asking for camera and microphone…');
    camera = await captureMedia('camera and microphone', {
      audio: true,
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
    });
    if (publisher !== session) return;
    preview.srcObject = camera;
    status.set('busy', `Connecting to room “${roomName}”…`);
    stopStats = showStats(statsLine, () => window.manifold.stats(), 'publisher');
    await session.publish(camera, { simulcast: simulcast.checked });
  } catch (error) {
    if (publisher !== session) return;
    await stop();
    status.set('error', `Could not publish: ${errorText(error)}`);
  }
}

async function stop() {
  const session = publisher;
  publisher = null;
  stopStats?.();
  stopStats = null;
  camera?.getTracks().forEach((track) => track.stop());
  camera = null;
  preview.srcObject = null;
  setRunning(false);
  status.set('idle', 'Stopped.');
  await session?.stop();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  start();
});
stopButton.addEventListener('click', () => stop());
room.addEventListener('input', updatePlayerLink);
token.addEventListener('input', updatePlayerLink);
// End the server session with the page, not when the server notices the silence.
window.addEventListener('pagehide', () => publisher?.stop());

updatePlayerLink();
status.set('idle', 'Ready. Press Start to publish your camera and microphone.');
if (query.get('autostart') === '1') start();
